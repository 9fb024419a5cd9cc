"""Framing and canonical CBOR: limits, truncation, non-canonical input, no tags."""

from collections.abc import Callable
from typing import Any

import cbor2
import pytest

from overlay.core.dagcbor import decode_car_header, encode_car_header
from overlay.core.errors import (
    FrameTooLarge,
    MalformedFrame,
    NonCanonical,
    TruncatedFrame,
)
from overlay.core.multiformats import encode_varint
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


def _incremental(body: bytes) -> Any:
    dec = FrameDecoder()
    dec.feed(encode_varint(len(body)) + body)
    return dec.next_frame()


#: Every way untrusted CBOR is decoded here, each given a bare CBOR body.
ENTRY_POINTS: dict[str, Callable[[bytes], Any]] = {
    "cbor_decode": cbor_decode,
    "cbor_decode(canonical=False)": lambda b: cbor_decode(b, canonical=False),
    "decode_frame": lambda b: decode_frame(encode_varint(len(b)) + b),
    "FrameDecoder.next_frame": _incremental,
}

#: (tag number, tagged CBOR body): a tag cbor2 leaves to the hook, and tags it decodes
#: itself into a plain-looking value (a bignum is an int; self-describe wraps anything).
TAGGED = [
    (4242, bytes.fromhex("d91092820102")),  # 4242([1, 2]): no decoder in cbor2
    (2, bytes.fromhex("c249010000000000000000")),  # bignum 2^64
    (3, bytes.fromhex("c349010000000000000000")),  # negative bignum
    (55799, bytes.fromhex("d9d9f701")),  # self-described 1
    (0, cbor2.dumps(cbor2.CBORTag(0, "2020-01-01T00:00:00Z"))),  # date/time string
    (258, bytes.fromhex("d90102820102")),  # set {1, 2}
    (28, cbor2.dumps(cbor2.CBORTag(28, [1]))),  # shareable value
    (4242, bytes.fromhex("a1616b8201d9109201")),  # {"k": [1, 4242(1)]}: nested
]


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
@pytest.mark.parametrize(("tag", "body"), TAGGED, ids=[f"tag{t}" for t, _ in TAGGED])
def test_tagged_cbor_is_refused_naming_the_tag(entry: str, tag: int, body: bytes) -> None:
    with pytest.raises(MalformedFrame, match=f"^CBOR tag {tag} is not allowed$"):
        ENTRY_POINTS[entry](body)


def test_no_tag_number_gets_through() -> None:
    # cbor2 decodes some tags itself: every number must still meet our refusal, also
    # any tag a later cbor2 starts decoding (wire._BUILTIN_TAGS would then be stale).
    # The message compared as a string, not as `pytest.raises(match=...)`: a pattern per
    # number meant 65,540 regex compiles (~9 of the test's ~10 s).
    numbers = [*range(1 << 16), 1 << 16, (1 << 32) - 1, 1 << 32, (1 << 64) - 1]
    for n in numbers:
        with pytest.raises(MalformedFrame) as e:
            cbor_decode(cbor2.dumps(cbor2.CBORTag(n, 0)))
        assert str(e.value) == f"CBOR tag {n} is not allowed", (n, str(e.value))


def test_car_header_with_a_foreign_tag_names_it() -> None:
    good = encode_car_header([b"\x01\x55\x12\x20" + bytes(32)])
    assert decode_car_header(good)[0] == 1
    bad = cbor2.dumps({"roots": [cbor2.CBORTag(43, b"\x00\x01")], "version": 1})
    with pytest.raises(MalformedFrame, match=r"^CBOR tag 43 is not allowed in dag-cbor$"):
        decode_car_header(bad)
