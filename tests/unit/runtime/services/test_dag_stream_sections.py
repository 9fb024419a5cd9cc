"""The bulk stream's section reassembly (services/dag_sections.py `Sections`): whatever
the pieces the transport hands over (1 byte, a header split in two, several sections in
one), the (cid, block) pairs come out whole and in order, and malformed framing raises."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from overlay.core.cid import DAG_PB, RAW, Cid
from overlay.core.errors import ColonyError
from overlay.core.multiformats import encode_varint
from overlay.runtime.services.dag_sections import MAX_SECTION, Sections, verify_all
from store.blockstore import BlockStore
from store.car import CarError


def _stream(rng: random.Random) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    want = []
    out = b""
    for _ in range(40):
        block = rng.randbytes(rng.choice([0, 1, 100, 70_000, 262_144]))
        cid = Cid.of(rng.choice([RAW, DAG_PB]), block).to_bytes()
        if rng.random() < 0.2:
            cid = cid[2:]  # a CIDv0 (bare multihash), as kubo's DAGs have
        want.append((cid, block))
        out += encode_varint(len(cid) + len(block)) + cid + block
    return out + b"\x00", want


def test_sections_come_out_whole_whatever_the_pieces() -> None:
    rng = random.Random(16)
    data, want = _stream(rng)
    for _ in range(30):
        s = Sections()
        got: list[tuple[bytes, bytes | memoryview]] = []
        i = 0
        done = False
        while not done:
            assert i < len(data), "ran past the end marker"
            pieces: list[bytes | memoryview] = []
            for _ in range(rng.randint(1, 3)):
                k = rng.choice([1, 2, 7, 1000, 65_519, 300_000])
                pieces.append(memoryview(data[i:i + k]))
                i += k
            s.feed(pieces)
            done, out = s.split(only_root=False)
            got += out
        assert got == want


def test_only_root_stops_after_one_section() -> None:
    data, want = _stream(random.Random(1))
    s = Sections()
    s.feed([data])
    assert s.split(only_root=True) == (True, want[:1])


@pytest.mark.parametrize("bad, error", [
    (encode_varint(MAX_SECTION + 1), ColonyError),  # an absurd section length
    (encode_varint(10) + b"\x01\x55\x12\x20" + b"\x00" * 6, CarError),  # CID past the end
    (b"\xff" * 10, ColonyError),  # a varint that never ends
])
def test_malformed_framing_raises(bad: bytes, error: type[Exception]) -> None:
    s = Sections()
    s.feed([bad])
    with pytest.raises(error):
        s.split(only_root=False)


def test_a_block_inside_one_piece_is_not_copied_and_stores_as_bytes(tmp_path: Path) -> None:
    """A block that lies whole in one received piece comes out as a view of that piece
    (no copy on the event loop); one spanning pieces as bytes. Both verify and are
    stored byte for byte (LMDB's put copies a view)."""
    inside, spanning = bytes(range(256)) * 40, bytes(reversed(range(256))) * 40
    framed = []
    for block in (inside, spanning):
        cid = Cid.of(RAW, block).to_bytes()
        framed.append(encode_varint(len(cid) + len(block)) + cid + block)
    cut = len(framed[0]) + 100  # the second block spans the two pieces
    data = b"".join(framed) + b"\x00"
    plain = memoryview(bytearray(data)).toreadonly()  # as a decrypted socket read
    s = Sections()
    s.feed([plain[:cut], plain[cut:]])
    done, sections = s.split(False)
    assert done and [bytes(b) for _, b in sections] == [inside, spanning]
    assert isinstance(sections[0][1], memoryview) and isinstance(sections[1][1], bytes)
    cids = verify_all(sections)
    with BlockStore(tmp_path / "s") as store:
        store.put_many([(c, b, None) for c, (_, b) in zip(cids, sections, strict=True)
                        if c is not None])
        with store.reader() as r:
            assert [bytes(r.read(c)) for c in cids if c is not None] == [inside, spanning]


def test_the_provider_puts_each_256k_block_in_one_frame(tmp_path: Path) -> None:
    """The provider's pieces (`DagStreams._read_batch`), cut into Yamux frames as the
    send path cuts them (every MAX_DATA_FRAME bytes from a piece's start) and fed one
    frame a piece: every 256 KiB block lies whole in one frame, so the fetcher takes it
    uncopied (`Sections.joined` stays 0); the bytes are the plain CAR sections of the
    DAG, depth-first, as before. Small blocks (a 1 KiB-chunk file) still share pieces."""
    from overlay.p2p.yamux import MAX_DATA_FRAME
    from overlay.runtime.services.dag_stream import DagStreams
    from overlay.runtime.services.fetch import BlockWriter
    from store.importer import Importer, ImportOptions

    rng = random.Random(7)
    with BlockStore(tmp_path / "p") as store:
        big = Importer(store, ImportOptions(cid_version=1)).add_bytes(
            rng.randbytes(40 * 262_144 + 1000)).cid
        small = Importer(store, ImportOptions(cid_version=1, chunk_size=1024)).add_bytes(
            rng.randbytes(300 * 1024)).cid
        ds = DagStreams(None, store, BlockWriter(store))  # type: ignore[arg-type]
        for root, blocks in ((big, 42), (small, 303)):  # leaves + inner nodes
            stack, pieces = [root.to_bytes()], []
            while stack:
                batch, stack = ds._read_batch(stack, set())
                pieces += batch
            s = Sections()
            for p in pieces:
                s.feed([p[i:i + MAX_DATA_FRAME] for i in range(0, len(p), MAX_DATA_FRAME)])
            s.feed([b"\x00"])
            done, sections = s.split(False)
            assert done and len(sections) == blocks and s.joined == 0
            assert all(c is not None for c in verify_all(sections))
            assert sum(len(b) for _, b in sections if len(b) == 262_144) == (
                40 * 262_144 if root == big else 0)
        assert len(pieces) < 303 / 4  # small blocks: ~1 MiB pieces, not one per block
