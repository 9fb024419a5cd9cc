"""A minimal protobuf (proto2/proto3) encoder and decoder for the few libp2p messages
we speak: PublicKey, NoiseHandshakePayload, Identify.

Only wire types 0 (varint), 1 (64-bit), 2 (length-delimited) and 5 (32-bit); the
decoder returns fields as (number, value) pairs in order and raises ProtobufError
on any malformed input. Pure; no generated code, no `protobuf` import (it is ~10 MiB
of RSS and we need a hundred lines).
"""

from __future__ import annotations

from overlay.core.errors import MalformedFrame, TruncatedFrame
from overlay.core.multiformats import decode_varint, encode_varint
from overlay.p2p.errors import ProtobufError

Field = tuple[int, int | bytes]


def field_bytes(number: int, value: bytes) -> bytes:
    return encode_varint(number << 3 | 2) + encode_varint(len(value)) + value


def field_varint(number: int, value: int) -> bytes:
    return encode_varint(number << 3) + encode_varint(value)


def decode(data: bytes | memoryview) -> list[Field]:
    """All fields of one message, in order. Length-delimited values are bytes."""
    buf = memoryview(data)
    out: list[Field] = []
    i = 0
    end = len(buf)
    try:
        while i < end:
            key, i = decode_varint(buf, i)
            number, wire = key >> 3, key & 7
            if number == 0:
                raise ProtobufError("field number 0")
            if wire == 0:
                value, i = decode_varint(buf, i)
                out.append((number, value))
            elif wire == 2:
                length, i = decode_varint(buf, i)
                if i + length > end:
                    raise ProtobufError("length-delimited field runs past the message")
                out.append((number, bytes(buf[i : i + length])))
                i += length
            elif wire in (1, 5):
                width = 8 if wire == 1 else 4
                if i + width > end:
                    raise ProtobufError("fixed-width field runs past the message")
                out.append((number, int.from_bytes(buf[i : i + width], "little")))
                i += width
            else:
                raise ProtobufError(f"unsupported wire type {wire}")
    except (TruncatedFrame, MalformedFrame) as e:
        raise ProtobufError(f"bad varint: {e}") from None
    return out


def get_bytes(fields: list[Field], number: int) -> bytes | None:
    """The last value of a length-delimited field (protobuf: last one wins)."""
    found: bytes | None = None
    for n, v in fields:
        if n == number:
            if not isinstance(v, bytes):
                raise ProtobufError(f"field {number} should be length-delimited")
            found = v
    return found


def get_all_bytes(fields: list[Field], number: int) -> list[bytes]:
    out = []
    for n, v in fields:
        if n == number:
            if not isinstance(v, bytes):
                raise ProtobufError(f"field {number} should be length-delimited")
            out.append(v)
    return out


def get_int(fields: list[Field], number: int) -> int | None:
    found: int | None = None
    for n, v in fields:
        if n == number:
            if not isinstance(v, int):
                raise ProtobufError(f"field {number} should be a varint")
            found = v
    return found
