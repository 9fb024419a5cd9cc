"""Frames on Colony's own libp2p protocols: the envelope around every CBOR frame.

A Colony protocol stream (`/colony/...`) carries `unsigned-varint(length) ‖ body`
frames (overlay.core.wire); the body is canonical CBOR of one envelope:

    [0, msg]            one-way message
    [1, rid, msg]       request; the peer answers on the same stream with
    [2, rid, msg]       its response, or
    [3, rid, reason]    a refusal (reason: text; the request failed on the peer)

`rid` is an unsigned integer chosen by the requester, unique among its requests
in flight on that stream. Request ids let one long-lived stream carry many
concurrent requests: opening a stream per request costs a multistream-select
round trip each time (DESIGN §3: ≈330 vs ≈1,700 req/s).

Raw protocols (the libp2p Kademlia and Bitswap wires) use the same length prefix
with a protobuf body and no envelope; responses there are matched by order.

`FrameReader` splits a received byte stream into frame bodies with one copy per
body (the core's FrameDecoder copies a large body twice: join, then slice).

This module is pure (no I/O); `decode_envelope` raises only `MalformedFrame`,
`FrameReader` only FrameTooLarge / MalformedFrame.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import IntEnum

from overlay.core.errors import FrameTooLarge, MalformedFrame, TruncatedFrame
from overlay.core.multiformats import MAX_VARINT_BYTES, decode_varint, encode_varint
from overlay.core.wire import DEFAULT_MAX_FRAME_BYTES, encode_frame

#: Request ids are CBOR unsigned integers below 2**64 (one major-type-0 item).
MAX_REQUEST_ID = 2**64 - 1
#: A refusal reason longer than this is cut; it is for logs, not for data.
MAX_REASON_CHARS = 512


class Kind(IntEnum):
    MESSAGE = 0
    REQUEST = 1
    RESPONSE = 2
    ERROR = 3


@dataclass(frozen=True, slots=True)
class Envelope:
    """One decoded frame on a Colony CBOR protocol."""

    kind: Kind
    rid: int  # 0 for MESSAGE
    body: object  # the message (not validated), or the reason text for ERROR


def encode_envelope(
    kind: Kind, body: object, rid: int = 0, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
) -> bytes:
    """A whole frame (length prefix included). Raises FrameTooLarge over the limit."""
    if kind is Kind.MESSAGE:
        value: list[object] = [0, body]
    else:
        if not 0 <= rid <= MAX_REQUEST_ID:
            raise ValueError(f"request id {rid} out of range")
        if kind is Kind.ERROR:
            body = str(body)[:MAX_REASON_CHARS]
        value = [int(kind), rid, body]
    return encode_frame(value, max_frame_bytes)


def decode_envelope(obj: object) -> Envelope:
    """Validate a decoded CBOR frame body as an envelope."""
    if not isinstance(obj, list) or not obj:
        raise MalformedFrame("envelope must be a non-empty array")
    kind = obj[0]
    if isinstance(kind, bool) or not isinstance(kind, int) or not 0 <= kind <= 3:
        raise MalformedFrame(f"envelope kind {kind!r} is not 0..3")
    if kind == Kind.MESSAGE:
        if len(obj) != 2:
            raise MalformedFrame("message envelope must be [0, msg]")
        return Envelope(Kind.MESSAGE, 0, obj[1])
    if len(obj) != 3:
        raise MalformedFrame(f"envelope of kind {kind} must have 3 elements")
    rid = obj[1]
    if isinstance(rid, bool) or not isinstance(rid, int) or not 0 <= rid <= MAX_REQUEST_ID:
        raise MalformedFrame(f"request id {rid!r} is not an unsigned 64-bit integer")
    if kind == Kind.ERROR and not isinstance(obj[2], str):
        raise MalformedFrame("error envelope reason must be text")
    return Envelope(Kind(kind), rid, obj[2])


def encode_raw_frame(body: bytes, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> bytes:
    """`unsigned-varint(len) ‖ body`: the framing of libp2p protobuf protocols."""
    if len(body) > max_frame_bytes:
        raise FrameTooLarge(f"frame of {len(body)} bytes exceeds limit {max_frame_bytes}")
    return encode_varint(len(body)) + body


class FrameReader:
    """Incremental `unsigned-varint(len) ‖ body` splitter.

    `feed(chunk)` keeps a reference to each chunk (no copy); `next_body()` returns
    the next whole body as bytes, built with one join of memoryview slices, or
    None. Oversize is refused from the length prefix alone, before buffering the
    body, so a peer can make us hold at most one frame limit of data.
    """

    __slots__ = ("_chunks", "_head", "_need", "_size", "max_frame_bytes")

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._chunks: deque[bytes | memoryview] = deque()
        self._size = 0  # bytes buffered (from `_head` on in the first chunk)
        self._head = 0  # offset of unread data in the first chunk
        self._need = -1  # body length of the frame whose prefix was read, or -1

    def feed(self, data: bytes | memoryview) -> None:
        if data:
            self._chunks.append(data)
            self._size += len(data)

    @property
    def buffered_bytes(self) -> int:
        return self._size

    def at_frame_boundary(self) -> bool:
        return self._size == 0 and self._need < 0

    def _take(self, n: int) -> list[bytes | memoryview]:
        """Remove the next `n` buffered bytes; return them as views/pieces."""
        out: list[bytes | memoryview] = []
        while n:
            first = self._chunks[0]
            avail = len(first) - self._head
            if avail <= n:
                out.append(memoryview(first)[self._head :] if self._head else first)
                self._chunks.popleft()
                self._head = 0
                n -= avail
                self._size -= avail
            else:
                out.append(memoryview(first)[self._head : self._head + n])
                self._head += n
                self._size -= n
                n = 0
        return out

    def _read_prefix(self) -> bool:
        first = self._chunks[0]
        head = memoryview(first)[self._head : self._head + MAX_VARINT_BYTES]
        if len(head) < MAX_VARINT_BYTES and len(self._chunks) > 1:
            head = memoryview(b"".join(bytes(p) for p in self._peek(MAX_VARINT_BYTES)))
        try:
            length, used = decode_varint(head)
        except TruncatedFrame:
            return False
        if length > self.max_frame_bytes:
            raise FrameTooLarge(f"frame announces {length} bytes; limit is {self.max_frame_bytes}")
        self._take(used)
        self._need = length
        return True

    def _peek(self, n: int) -> list[bytes | memoryview]:
        out: list[bytes | memoryview] = []
        offset = self._head
        for chunk in self._chunks:
            piece = memoryview(chunk)[offset : offset + n]
            offset = 0
            out.append(piece)
            n -= len(piece)
            if n <= 0:
                break
        return out

    def next_body(self) -> bytes | None:
        if self._need < 0:
            if not self._size or not self._read_prefix():
                return None
        if self._size < self._need:
            return None
        need, self._need = self._need, -1
        pieces = self._take(need)
        if len(pieces) == 1 and isinstance(pieces[0], bytes):
            return pieces[0]
        return b"".join(pieces)


__all__ = [
    "MAX_REQUEST_ID",
    "Envelope",
    "FrameReader",
    "Kind",
    "decode_envelope",
    "encode_envelope",
    "encode_raw_frame",
]
