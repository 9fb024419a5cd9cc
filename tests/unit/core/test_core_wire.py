"""Framing and canonical CBOR: limits, truncation, non-canonical input."""

import pytest

from overlay.core.errors import (
    FrameTooLarge,
    MalformedFrame,
    NonCanonical,
    TruncatedFrame,
)
from overlay.core.wire import (
    FrameDecoder,
    cbor_decode,
    cbor_encode,
    decode_frame,
    encode_frame,
)


def test_frame_roundtrip() -> None:
    obj = {"type": "ping", "seq": 7, "data": b"\x00\x01", "list": [1, -2, 3.5, None, True]}
    assert decode_frame(encode_frame(obj)) == obj


def test_canonical_map_key_order() -> None:
    # RFC 8949 §4.2.1: keys sorted by their encoded bytes (shorter first here).
    assert cbor_encode({"bb": 1, "a": 2}) == b"\xa2\x61a\x02\x62bb\x01"


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"\x18\x01", NonCanonical),  # 1 encoded in two bytes
        (b"\xa2\x62bb\x01\x61a\x02", NonCanonical),  # keys out of order
        (b"\x9f\x01\xff", NonCanonical),  # indefinite-length array
        (b"\xc1\x00", MalformedFrame),  # tag 1 (epoch time)
        (b"\xf7", MalformedFrame),  # undefined
        (b"\x01\x02", MalformedFrame),  # trailing bytes
        (b"\x82\x01", MalformedFrame),  # truncated array
        (b"", MalformedFrame),
        (b"\x81" * 100 + b"\x01", MalformedFrame),  # nested too deep
    ],
)
def test_bad_cbor_raises_typed_errors(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        cbor_decode(data)


def test_frame_limit_checked_on_encode_and_decode() -> None:
    with pytest.raises(FrameTooLarge):
        encode_frame(b"x" * 100, max_frame_bytes=50)
    big = encode_frame(b"x" * 100)
    with pytest.raises(FrameTooLarge):
        decode_frame(big, max_frame_bytes=50)
    with pytest.raises(TruncatedFrame):
        decode_frame(big[:-1])


def test_decoder_rejects_oversize_from_prefix_alone() -> None:
    dec = FrameDecoder(max_frame_bytes=1024)
    dec.feed(b"\xff\xff\xff\x7f")  # announces ~268 MB; no body buffered yet
    with pytest.raises(FrameTooLarge, match="limit is 1024"):
        dec.next_frame()


def test_decoder_reassembles_frames_split_anywhere() -> None:
    frames = [encode_frame({"i": i, "pad": b"p" * i}) for i in range(20)]
    stream = b"".join(frames)
    for step in (1, 3, 7, 64):
        dec = FrameDecoder()
        got = []
        for i in range(0, len(stream), step):
            dec.feed(stream[i : i + step])
            while (obj := dec.next_frame()) is not None:
                got.append(obj["i"])
        assert got == list(range(20))
        assert dec.at_frame_boundary()
