"""CAR export/import: round trips, CARv2 wrapping, and every kind of bad input."""

import hashlib
import io
import random
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from overlay.core.cid import DAG_PB, RAW, Cid
from overlay.core.dagcbor import decode_car_header, encode_car_header
from overlay.core.multiformats import encode_varint
from store.blockstore import BlockStore
from store.car import CARV2_PRAGMA, MAX_BLOCK, CarError, export_car, import_car, iter_dag
from store.exporter import Exporter
from store.importer import Importer, ImportOptions

DATA = random.Random(7).randbytes(3 * 262144 + 17)


def _car(store: BlockStore, root: Cid) -> bytes:
    out = io.BytesIO()
    export_car(store, root, out.write)
    return out.getvalue()


def _v1(roots: list[Cid], sections: list[tuple[bytes, bytes]]) -> bytes:
    h = encode_car_header([r.to_bytes() for r in roots])
    out = encode_varint(len(h)) + h
    for cb, block in sections:
        out += encode_varint(len(cb) + len(block)) + cb + block
    return out


def _v2(payload: bytes, pad: int = 0) -> bytes:
    offset = 11 + 40 + pad
    hdr = struct.pack("<16sQQQ", b"\x00" * 16, offset, len(payload), 0)
    return CARV2_PRAGMA + hdr + b"\x00" * pad + payload


@pytest.fixture
def src(tmp_path: Path) -> Iterator[tuple[BlockStore, Cid]]:
    store = BlockStore(tmp_path / "src")
    root = Importer(store, ImportOptions(cid_version=1)).add_bytes(DATA).cid
    yield store, root
    store.close()


@pytest.fixture
def dst(tmp_path: Path) -> Iterator[BlockStore]:
    with BlockStore(tmp_path / "dst") as s:
        yield s


def test_header_round_trip() -> None:
    c = Cid.of(RAW, b"x")
    assert decode_car_header(encode_car_header([c.to_bytes()])) == (1, [c.to_bytes()])


def test_round_trip(src: tuple[BlockStore, Cid], dst: BlockStore) -> None:
    store, root = src
    car = _car(store, root)
    got = import_car(dst, io.BytesIO(car))
    assert got.roots == [root]
    assert got.blocks == got.new == 5  # 4 leaves + root
    assert Exporter(dst).read_all(root) == DATA
    assert _car(dst, root) == car  # deterministic
    assert import_car(dst, io.BytesIO(car)).new == 0


def test_export_order_depth_first(src: tuple[BlockStore, Cid]) -> None:
    store, root = src
    order = [c for c, _ in iter_dag(store, root)]
    assert order[0] == root and len(set(order)) == len(order)


def test_carv2(src: tuple[BlockStore, Cid], dst: BlockStore) -> None:
    store, root = src
    car = _car(store, root)
    got = import_car(dst, io.BytesIO(_v2(car, pad=7) + b"index-ignored"))
    assert got.roots == [root] and Exporter(dst).read_all(root) == DATA


def test_identity_and_v0(dst: BlockStore) -> None:
    ident = b"\x01\x55\x00\x03abc"
    v0 = Cid(0, DAG_PB, hashlib.sha256(b"\x0a\x02\x08\x01").digest())
    car = _v1([v0], [(ident, b"abc"), (v0.to_bytes(), b"\x0a\x02\x08\x01")])
    got = import_car(dst, io.BytesIO(car))
    assert got.blocks == 2 and got.new == 1 and dst.has(v0)


def _bad(dst: BlockStore, data: bytes, match: str) -> None:
    with pytest.raises(CarError, match=match):
        import_car(dst, io.BytesIO(data))
    assert dst.stat().blocks == 0


def test_bad_inputs(dst: BlockStore) -> None:
    good = Cid.of(RAW, b"hello")
    _bad(dst, b"", "truncated")
    _bad(dst, b"\xff" * 12, "too long")
    _bad(dst, b"\x05ab", "truncated")
    _bad(dst, b"\x03\x01\x02\x03", "not dag-cbor|dag-cbor map")
    h = encode_car_header([good.to_bytes()], version=3)
    _bad(dst, encode_varint(len(h)) + h, "version 3")
    _bad(dst, _v1([good], [(good.to_bytes(), b"hellO")]), "does not match")
    _bad(dst, _v1([good], [(b"\x01\x55\x00\x03abc", b"abd")]), "identity")
    _bad(dst, _v1([good], [(good.to_bytes(), b"hello")])[:-2], "truncated")
    huge = _v1([good], []) + encode_varint(MAX_BLOCK + 1000) + good.to_bytes()
    _bad(dst, huge, "absurd")
    blake = b"\x01\x55\xa0\xe4\x02\x20" + bytes(32)
    _bad(dst, _v1([good], [(blake, b"x")]), "cannot verify")
    cbor = b"\x01\x71\x12\x20" + hashlib.sha256(b"\xa0").digest()
    _bad(dst, _v1([good], [(cbor, b"\xa0")]), "cannot be stored")
    bad_pb = Cid.of(DAG_PB, b"\xff\xff")
    _bad(dst, _v1([good], [(bad_pb.to_bytes(), b"\xff\xff")]), "dag-pb")
    _bad(dst, _v2(_v1([good], [])[:5]), "truncated")


def test_good_blocks_before_a_bad_one_are_verified(dst: BlockStore) -> None:
    a, b = Cid.of(RAW, b"a"), Cid.of(RAW, b"b")
    with pytest.raises(CarError):
        import_car(dst, io.BytesIO(_v1([a], [(a.to_bytes(), b"a"), (b.to_bytes(), b"x")])))
    assert dst.has(a) is False or dst.get(a) == b"a"
    assert not dst.has(b)
