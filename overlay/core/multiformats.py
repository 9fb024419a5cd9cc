"""Small multiformats primitives: unsigned varint, base58btc, base32, multihash.

Written here rather than imported because they are a few lines each, run on hot paths
(framing, CIDs) and the sans-IO layers must not pull in heavy dependencies.
Specs: github.com/multiformats/unsigned-varint, multibase, multihash.
"""

from __future__ import annotations

import base64
import hashlib

from overlay.core.errors import MalformedFrame, TruncatedFrame

# Multihash codes we use.
IDENTITY = 0x00
SHA2_256 = 0x12

#: The unsigned-varint spec caps varints at 9 bytes (63 bits of payload).
MAX_VARINT_BYTES = 9


def encode_varint(n: int) -> bytes:
    if n < 0:
        raise ValueError("varint must be non-negative")
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def decode_varint(buf: bytes | bytearray | memoryview, offset: int = 0) -> tuple[int, int]:
    """Decode a varint at `offset`; return (value, offset after it).

    Raises TruncatedFrame if `buf` ends first, MalformedFrame if it is longer than
    9 bytes or not minimally encoded (the spec requires minimal encodings).
    """
    value = 0
    shift = 0
    end = len(buf)
    i = offset
    while True:
        if i >= end:
            raise TruncatedFrame("input ended inside a varint")
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            if b == 0 and i - offset > 1:
                raise MalformedFrame("varint is not minimally encoded")
            return value, i
        shift += 7
        if i - offset >= MAX_VARINT_BYTES:
            raise MalformedFrame("varint longer than 9 bytes")


_B58_ALPHABET = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58_ALPHABET)}


def b58encode(data: bytes) -> str:
    n = int.from_bytes(data, "big")
    out = bytearray()
    while n:
        n, r = divmod(n, 58)
        out.append(_B58_ALPHABET[r])
    pad = len(data) - len(data.lstrip(b"\0"))
    return (b"1" * pad + bytes(reversed(out))).decode("ascii")


def b58decode(text: str) -> bytes:
    n = 0
    for ch in text.encode("ascii", "replace"):
        try:
            n = n * 58 + _B58_INDEX[ch]
        except KeyError:
            raise MalformedFrame(f"invalid base58 character {chr(ch)!r}") from None
    pad = len(text) - len(text.lstrip("1"))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\0" * pad + body


def b32encode_lower(data: bytes) -> str:
    """RFC 4648 base32, lower case, no padding (multibase prefix 'b')."""
    return base64.b32encode(data).decode("ascii").lower().rstrip("=")


def b32decode_lower(text: str) -> bytes:
    padded = text.upper() + "=" * (-len(text) % 8)
    try:
        return base64.b32decode(padded)
    except (ValueError, TypeError) as e:
        raise MalformedFrame(f"invalid base32: {e}") from None


_B36_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"


def b36encode_lower(data: bytes) -> str:
    """Multibase base36 (prefix 'k'): big-endian integer, leading zero bytes as '0'."""
    n = int.from_bytes(data, "big")
    out: list[str] = []
    while n:
        n, r = divmod(n, 36)
        out.append(_B36_ALPHABET[r])
    pad = len(data) - len(data.lstrip(b"\0"))
    return "0" * pad + "".join(reversed(out))


def b36decode(text: str) -> bytes:
    """Decode base36 (either case; the multibase prefix already stripped)."""
    t = text.lower()
    n = 0
    for ch in t:
        v = _B36_ALPHABET.find(ch)
        if v < 0:
            raise MalformedFrame(f"invalid base36 character {ch!r}")
        n = n * 36 + v
    pad = len(t) - len(t.lstrip("0"))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\0" * pad + body


def multihash_sha256(data: bytes | memoryview) -> bytes:
    return b"\x12\x20" + hashlib.sha256(data).digest()


def split_multihash(mh: bytes) -> tuple[int, bytes]:
    """Return (code, digest); raise MalformedFrame if lengths disagree."""
    code, i = decode_varint(mh)
    length, j = decode_varint(mh, i)
    digest = mh[j:]
    if len(digest) != length:
        raise MalformedFrame(f"multihash length {length} but {len(digest)} digest bytes")
    return code, bytes(digest)
