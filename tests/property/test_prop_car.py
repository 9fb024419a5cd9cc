"""CAR import under random truncation and bit flips: only CarError, only verified blocks."""

import contextlib
import io
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.core.cid import RAW, Cid
from overlay.core.dagcbor import encode_car_header
from overlay.core.multiformats import encode_varint
from store.blockstore import BlockStore
from store.car import CarError, import_car

BLOCKS = [bytes([i]) * (i * 37 + 1) for i in range(6)]


def _car() -> bytes:
    cids = [Cid.of(RAW, b) for b in BLOCKS]
    h = encode_car_header([cids[0].to_bytes()])
    out = encode_varint(len(h)) + h
    for c, b in zip(cids, BLOCKS, strict=True):
        out += encode_varint(len(c.to_bytes()) + len(b)) + c.to_bytes() + b
    return out


CAR = _car()
_TMP = tempfile.TemporaryDirectory()
_STORE = BlockStore(Path(_TMP.name) / "s")


@settings(max_examples=300, deadline=None)
@given(cut=st.integers(0, len(CAR)),
       flips=st.lists(st.tuples(st.integers(0, len(CAR) - 1), st.integers(0, 7)), max_size=3))
def test_mangled_car(cut: int, flips: list[tuple[int, int]]) -> None:
    data = bytearray(CAR[:cut])
    for pos, bit in flips:
        if pos < len(data):
            data[pos] ^= 1 << bit
    with contextlib.suppress(CarError):
        import_car(_STORE, io.BytesIO(bytes(data)))
    for batch in _STORE.iter_multihashes():
        for mh in batch:
            cid = Cid.from_multihash(mh, RAW)
            assert cid.verify(_STORE.get(cid, verify=False))
