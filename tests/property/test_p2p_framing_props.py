"""overlay.runtime.net.framing.FrameReader: the same bodies whatever the segmentation,
oversize refused from the prefix, garbage raises only WireError."""

from __future__ import annotations

from contextlib import suppress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.core.errors import FrameTooLarge, WireError
from overlay.core.multiformats import encode_varint
from overlay.runtime.net.framing import FrameReader, encode_raw_frame


def _cut(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, prev = [], 0
    for p in [*points, len(data)]:
        out.append(data[prev:p])
        prev = p
    return out


@settings(max_examples=300, deadline=None)
@given(bodies=st.lists(st.binary(max_size=3000), max_size=10),
       cuts=st.lists(st.integers(0, 10**5), max_size=30),
       as_views=st.booleans())
def test_any_segmentation_gives_the_same_bodies(
    bodies: list[bytes], cuts: list[int], as_views: bool
) -> None:
    wire = b"".join(encode_raw_frame(b) for b in bodies)
    r = FrameReader(4096)
    got = []
    for piece in _cut(wire, cuts):
        r.feed(memoryview(piece) if as_views else piece)
        while (body := r.next_body()) is not None:
            assert isinstance(body, bytes)
            got.append(body)
    assert got == bodies
    assert r.at_frame_boundary()


def test_oversize_is_refused_from_the_prefix() -> None:
    r = FrameReader(100)
    r.feed(encode_varint(101))
    with pytest.raises(FrameTooLarge):
        r.next_body()


def test_partial_frame_is_not_a_boundary() -> None:
    r = FrameReader(100)
    r.feed(encode_varint(10) + b"abc")
    assert r.next_body() is None
    assert not r.at_frame_boundary()
    r.feed(b"defghij")
    assert r.next_body() == b"abcdefghij"
    assert r.at_frame_boundary()


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200), cuts=st.lists(st.integers(0, 200), max_size=5))
def test_garbage_raises_only_wire_errors(data: bytes, cuts: list[int]) -> None:
    r = FrameReader(64)
    with suppress(WireError):
        for piece in _cut(data, cuts):
            r.feed(piece)
            while r.next_body() is not None:
                pass
