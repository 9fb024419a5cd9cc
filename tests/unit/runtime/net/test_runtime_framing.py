"""Envelope codec of Colony CBOR protocols (overlay.runtime.net.framing)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overlay.core.errors import FrameTooLarge, MalformedFrame
from overlay.core.wire import decode_frame, encode_frame
from overlay.runtime.net.framing import (
    MAX_REQUEST_ID,
    Kind,
    decode_envelope,
    encode_envelope,
    encode_raw_frame,
)

values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text() | st.binary(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(kind=st.sampled_from([Kind.REQUEST, Kind.RESPONSE]), rid=st.integers(0, MAX_REQUEST_ID),
       body=values)
def test_request_response_round_trip(kind: Kind, rid: int, body: Any) -> None:
    env = decode_envelope(decode_frame(encode_envelope(kind, body, rid)))
    assert (env.kind, env.rid, env.body) == (kind, rid, body)


@given(body=values)
def test_message_round_trip(body: Any) -> None:
    env = decode_envelope(decode_frame(encode_envelope(Kind.MESSAGE, body)))
    assert (env.kind, env.rid, env.body) == (Kind.MESSAGE, 0, body)


def test_error_reason_is_text_and_capped() -> None:
    env = decode_envelope(decode_frame(encode_envelope(Kind.ERROR, "x" * 5000, 7)))
    assert env.kind is Kind.ERROR and env.rid == 7 and env.body == "x" * 512


@pytest.mark.parametrize(
    "obj",
    [
        None, 5, "a", [], [4, 1, 2], [-1, 1], [True, 1], [0], [0, 1, 2], [1, 1], [1, -1, "x"],
        [1, 2**64, "x"], [2, "id", 1], [3, 1, b"not text"], [1, True, 1],
    ],
)
def test_malformed_envelopes_raise_malformed_frame(obj: Any) -> None:
    with pytest.raises(MalformedFrame):
        decode_envelope(decode_frame(encode_frame(obj)))


def test_oversize_envelope_refused_before_sending() -> None:
    with pytest.raises(FrameTooLarge):
        encode_envelope(Kind.MESSAGE, b"x" * 100, max_frame_bytes=64)


def test_request_id_range_is_checked() -> None:
    with pytest.raises(ValueError):
        encode_envelope(Kind.REQUEST, 1, rid=MAX_REQUEST_ID + 1)


def test_raw_frame_is_varint_length_prefixed() -> None:
    assert encode_raw_frame(b"abc") == b"\x03abc"
    assert encode_raw_frame(b"x" * 300)[:2] == b"\xac\x02"
    with pytest.raises(FrameTooLarge):
        encode_raw_frame(b"x" * 10, max_frame_bytes=9)
