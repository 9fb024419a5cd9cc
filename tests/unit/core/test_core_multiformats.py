"""Varint, base58 and multihash helpers against spec vectors."""

import pytest

from overlay.core.errors import MalformedFrame, TruncatedFrame
from overlay.core.multiformats import (
    b32decode_lower,
    b32encode_lower,
    b58decode,
    b58encode,
    decode_varint,
    encode_varint,
    multihash_sha256,
    split_multihash,
)

# Vectors from the unsigned-varint spec README.
VARINTS = [
    (1, b"\x01"),
    (127, b"\x7f"),
    (128, b"\x80\x01"),
    (255, b"\xff\x01"),
    (300, b"\xac\x02"),
    (16384, b"\x80\x80\x01"),
]


@pytest.mark.parametrize(("value", "encoded"), VARINTS)
def test_varint_spec_vectors(value: int, encoded: bytes) -> None:
    assert encode_varint(value) == encoded
    assert decode_varint(encoded) == (value, len(encoded))


def test_varint_rejects_non_minimal_and_overlong() -> None:
    with pytest.raises(MalformedFrame, match="minimal"):
        decode_varint(b"\x81\x00")
    with pytest.raises(MalformedFrame, match="9 bytes"):
        decode_varint(b"\xff" * 10)
    with pytest.raises(TruncatedFrame):
        decode_varint(b"\x80")


def test_base58_known_vector_and_leading_zeros() -> None:
    assert b58encode(b"hello world") == "StV1DL6CwTryKyV"
    assert b58encode(b"\0\0\x01") == "112"
    assert b58decode("112") == b"\0\0\x01"
    with pytest.raises(MalformedFrame, match="base58"):
        b58decode("0OIl")


def test_base32_roundtrip_lowercase_unpadded() -> None:
    text = b32encode_lower(b"\x01\x55\x12")
    assert text == text.lower() and "=" not in text
    assert b32decode_lower(text) == b"\x01\x55\x12"


def test_multihash_sha256_and_split() -> None:
    mh = multihash_sha256(b"")
    code, digest = split_multihash(mh)
    assert code == 0x12 and len(digest) == 32
    assert digest.hex().startswith("e3b0c442")
    with pytest.raises(MalformedFrame, match="length"):
        split_multihash(mh[:-1])
