"""A minimal protobuf (proto3) wire reader and writer for the libp2p protocols we speak.

The libp2p Kademlia `Message` and Bitswap `Message` are small schemas; writing their
encoding by hand keeps the sans-IO cores free of a protobuf runtime and lets decoding
validate every field as it goes. Only wire types 0 (varint) and 2 (length-delimited)
are produced; fixed32/64 are skipped on read, as proto3 requires for unknown fields.
Errors are `MalformedFrame`/`TruncatedFrame`, so callers catch one `WireError`.
"""

from __future__ import annotations

from collections.abc import Iterator

from overlay.core.errors import FrameTooLarge, MalformedFrame, TruncatedFrame
from overlay.core.multiformats import decode_varint, encode_varint

VARINT = 0
I64 = 1
LEN = 2
I32 = 5


def read_uvarint(buf: bytes | bytearray | memoryview, i: int,
                 end: int | None = None) -> tuple[int, int]:
    """(value, next offset) of the varint at `i`, reading no further than `end`.

    Protobuf varints may be up to 10 bytes and need not be minimal (unlike multiformats'
    unsigned-varint, `multiformats.decode_varint`)."""
    value = 0
    shift = 0
    if end is None:
        end = len(buf)
    start = i
    while True:
        if i >= end:
            raise TruncatedFrame("protobuf: input ended inside a varint")
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7
        if i - start >= 10:
            raise MalformedFrame("protobuf: varint longer than 10 bytes")


def iter_fields(buf: bytes | memoryview) -> Iterator[tuple[int, int, int | bytes]]:
    """Yield (field number, wire type, value); LEN values are bytes, VARINT values ints."""
    i = 0
    end = len(buf)
    while i < end:
        tag, i = read_uvarint(buf, i)
        field, wtype = tag >> 3, tag & 7
        if field == 0:
            raise MalformedFrame("protobuf: field number 0")
        if wtype == VARINT:
            v, i = read_uvarint(buf, i)
            yield field, wtype, v
        elif wtype == LEN:
            n, i = read_uvarint(buf, i)
            if i + n > end:
                raise TruncatedFrame(f"protobuf: field {field} claims {n} bytes, {end - i} left")
            yield field, wtype, bytes(buf[i : i + n])
            i += n
        elif wtype == I64:
            if i + 8 > end:
                raise TruncatedFrame("protobuf: truncated fixed64")
            yield field, wtype, int.from_bytes(buf[i : i + 8], "little")
            i += 8
        elif wtype == I32:
            if i + 4 > end:
                raise TruncatedFrame("protobuf: truncated fixed32")
            yield field, wtype, int.from_bytes(buf[i : i + 4], "little")
            i += 4
        else:
            raise MalformedFrame(f"protobuf: unsupported wire type {wtype} (field {field})")


def expect_bytes(field: int, wtype: int, value: int | bytes) -> bytes:
    if wtype != LEN or not isinstance(value, bytes):
        raise MalformedFrame(f"protobuf: field {field} must be length-delimited")
    return value


def expect_int(field: int, wtype: int, value: int | bytes) -> int:
    if wtype != VARINT or not isinstance(value, int):
        raise MalformedFrame(f"protobuf: field {field} must be a varint")
    return value


def as_int32(value: int) -> int:
    """Interpret a decoded varint as a (two's complement) int32/int64."""
    if value >= 1 << 63:
        value -= 1 << 64
    if not -(1 << 31) <= value < 1 << 31:
        raise MalformedFrame("protobuf: int32 out of range")
    return value


class Writer:
    """Append-only protobuf encoder. Default values are the caller's to skip."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def varint(self, field: int, value: int) -> Writer:
        if value < 0:
            value += 1 << 64  # int32/int64 negatives are 10-byte varints
        self._parts.append(encode_varint(field << 3 | VARINT))
        self._parts.append(_encode_uvarint(value))
        return self

    def blob(self, field: int, value: bytes | memoryview) -> Writer:
        self._parts.append(encode_varint(field << 3 | LEN))
        self._parts.append(encode_varint(len(value)))
        self._parts.append(bytes(value))
        return self

    def message(self, field: int, w: Writer) -> Writer:
        return self.blob(field, w.finish())

    def finish(self) -> bytes:
        return b"".join(self._parts)


def _encode_uvarint(n: int) -> bytes:
    if n < 1 << 63:
        return encode_varint(n)
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def read_length_prefixed(
    buf: bytes | bytearray | memoryview, max_bytes: int
) -> tuple[int, int] | None:
    """For varint-delimited protobuf streams: (start, end) of the next message, or None."""
    try:
        n, start = decode_varint(buf)
    except TruncatedFrame:
        return None
    if n > max_bytes:
        raise FrameTooLarge(f"message announces {n} bytes; limit is {max_bytes}")
    if len(buf) < start + n:
        return None
    return start, start + n
