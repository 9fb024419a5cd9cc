"""Hypothesis: codec round-trips, and random bytes only ever raise WireError."""

import contextlib

from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.core.crypto import Envelope
from overlay.core.errors import WireError
from overlay.core.wire import FrameDecoder, cbor_decode, decode_frame, encode_frame

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64) + 1, max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=40)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5)
    | st.dictionaries(st.text(max_size=8) | st.integers(0, 1000), inner, max_size=5),
    max_leaves=30,
)


@given(values)
def test_frame_roundtrip(value: object) -> None:
    assert decode_frame(encode_frame(value)) == value


@given(st.binary(max_size=200))
@settings(max_examples=3000)
def test_random_bytes_raise_only_wire_errors(data: bytes) -> None:
    for decode in (cbor_decode, decode_frame, Envelope.from_bytes):
        with contextlib.suppress(WireError):
            decode(data)


@given(st.lists(st.binary(max_size=64), max_size=10), st.integers(1, 17))
def test_stream_decoder_never_raises_foreign_errors(chunks: list[bytes], _: int) -> None:
    dec = FrameDecoder(max_frame_bytes=256)
    try:
        for c in chunks:
            dec.feed(c)
            while dec.next_frame() is not None:
                pass
    except WireError:
        pass
