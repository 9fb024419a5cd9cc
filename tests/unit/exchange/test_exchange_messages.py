"""Bitswap 1.2.0 message codec: round-trips, known bytes, hostile input."""

import contextlib
import hashlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.core.cid import block_prefix, verify_bytes
from overlay.core.errors import WireError
from overlay.exchange.messages import (
    BitswapMessage,
    Block,
    BlockPresence,
    Presence,
    WantEntry,
    WantType,
)


def v1_raw(data: bytes) -> bytes:
    return b"\x01\x55\x12\x20" + hashlib.sha256(data).digest()


def v0(data: bytes) -> bytes:
    return b"\x12\x20" + hashlib.sha256(data).digest()


def test_want_entry_encoding_matches_protobuf_layout() -> None:
    cid = v0(b"x")
    msg = BitswapMessage(wants=(WantEntry(cid, 1, False, WantType.HAVE, True),))
    entry = b"\x0a\x22" + cid + b"\x10\x01\x20\x01\x28\x01"
    wantlist = b"\x0a" + bytes([len(entry)]) + entry
    assert msg.to_bytes() == b"\x0a" + bytes([len(wantlist)]) + wantlist


def test_block_prefix_rebuilds_cid() -> None:
    data = b"hello block"
    for cid in (v0(data), v1_raw(data)):
        back = BitswapMessage.from_bytes(BitswapMessage(blocks=(Block(cid, data),)).to_bytes())
        assert back.blocks == (Block(cid, data),)
        assert verify_bytes(cid, data)


def test_block_with_wrong_bytes_gets_a_different_cid() -> None:
    cid = v1_raw(b"good")
    wire = BitswapMessage(blocks=(Block(cid, b"evil"),)).to_bytes()
    (block,) = BitswapMessage.from_bytes(wire).blocks
    assert block.cid != cid and block.cid == v1_raw(b"evil")


@pytest.mark.parametrize(
    "wire",
    [
        b"\x0a\x05\x0a\x03\x0a\x01\x00",  # want entry with a 1-byte CID
        b"\x1a\x04\x0a\x02\x01\x55",  # block prefix truncated
        b"\x22\x04\x0a\x00\x10\x05",  # presence with empty CID and bad type
        b"\x0b",  # wire type 3 (groups) unsupported
        b"\x0a\xff\x01",  # length beyond input
    ],
)
def test_malformed_messages_raise_wire_errors(wire: bytes) -> None:
    with pytest.raises(WireError):
        BitswapMessage.from_bytes(wire)


cid_st = st.binary(min_size=1, max_size=50).map(v1_raw) | st.binary(max_size=8).map(v0)


@given(
    st.lists(
        st.builds(
            WantEntry,
            cid_st,
            st.integers(-(2**31), 2**31 - 1),
            st.booleans(),
            st.sampled_from(WantType),
            st.booleans(),
        ),
        max_size=5,
    ),
    st.booleans(),
    st.lists(st.binary(max_size=64), max_size=3),
    st.lists(st.builds(BlockPresence, cid_st, st.sampled_from(Presence)), max_size=3),
    st.integers(0, 2**31 - 1),
)
def test_roundtrip(
    wants: list[WantEntry], full: bool, datas: list[bytes], pres: list[BlockPresence], pend: int
) -> None:
    msg = BitswapMessage(
        tuple(wants), full, tuple(Block(v1_raw(d), d) for d in datas), tuple(pres), pend
    )
    assert BitswapMessage.from_bytes(msg.to_bytes()) == msg


@given(st.binary(max_size=300))
@settings(max_examples=2000)
def test_random_bytes_raise_only_wire_errors(data: bytes) -> None:
    with contextlib.suppress(WireError):
        BitswapMessage.from_bytes(data)


def _nested_encoding(msg: BitswapMessage) -> bytes:
    """The straightforward nested-Writer layout the hand-built block encoding replaced."""
    from overlay.core.protobuf import Writer

    w = Writer()
    for b in msg.blocks:
        w.message(3, Writer().blob(1, block_prefix(b.cid)).blob(2, b.data))
    for p in msg.presences:
        pw = Writer().blob(1, p.cid)
        if p.presence:
            pw.varint(2, int(p.presence))
        w.message(4, pw)
    if msg.pending_bytes:
        w.varint(5, msg.pending_bytes)
    return w.finish()


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=5), st.integers(0, 1 << 20))
def test_block_encoding_matches_nested_writer_layout(datas: list[bytes], pend: int) -> None:
    blocks = tuple(Block(v1_raw(d), d) for d in datas) + tuple(
        Block(v0(d), d) for d in datas[:1]
    )
    pres = (BlockPresence(v1_raw(b"x"), Presence.DONT_HAVE),)
    msg = BitswapMessage(blocks=blocks, presences=pres, pending_bytes=pend)
    assert msg.to_bytes() == _nested_encoding(msg)


def test_decoded_blocks_are_marked_verified_and_built_ones_are_not() -> None:
    data = b"block bytes"
    built = Block(v1_raw(data), data)
    assert not built.verified
    (got,) = BitswapMessage.from_bytes(BitswapMessage(blocks=(built,)).to_bytes()).blocks
    assert got.verified and got == built  # `verified` takes no part in equality


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_view_fields_decode_like_iter_fields(data: bytes) -> None:
    """The copy-free field reader yields what protobuf.iter_fields does, or raises alike."""
    from overlay.core.protobuf import iter_fields
    from overlay.exchange.messages import _view_fields

    def run(it: Any) -> Any:
        try:
            return [(f, w, bytes(v) if isinstance(v, memoryview) else v) for f, w, v in it]
        except WireError as e:
            return type(e)

    assert run(_view_fields(memoryview(data))) == run(iter_fields(data))
