"""Framing and canonical CBOR (DESIGN §3).

A frame is `unsigned-varint(length) ‖ body`, body = canonical CBOR (RFC 8949 §4.2.1:
shortest-form integers and lengths, definite lengths, map keys sorted bytewise).
Decoding untrusted bytes raises only `WireError` subclasses, never KeyError or a
cbor2 exception, so a reader needs exactly one `except` to drop a bad peer's stream.

`FrameDecoder` is incremental in the h11 style: `feed(data)` then `next_frame()`
until it returns None. It never buffers more than `max_frame_bytes` + 9 bytes.

No CBOR tags (RFC 8949 §3.4): any tagged item is refused with
`MalformedFrame("CBOR tag N is not allowed")`. cbor2 (≥ 6) decodes a set of tags
itself (bignums, dates, sets, self-describe, …) and calls `tag_hook(tag, immutable)`
only for the others, so both routes refuse: `_BUILTIN_TAGS` overrides its semantic
decoders and `_tag_refused` is the hook. cbor2 wraps an exception raised in either in
its own `CBORDecodeError`; `cbor_decode` re-raises ours, so the message names the tag.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

import cbor2

from overlay.core.errors import (
    FrameTooLarge,
    MalformedFrame,
    NonCanonical,
    TruncatedFrame,
    WireError,
)
from overlay.core.multiformats import decode_varint, encode_varint

DEFAULT_MAX_FRAME_BYTES = 4 * 1024 * 1024
#: Nested arrays/maps deeper than this are refused before cbor2 recurses into them.
MAX_NESTING = 32

_PLAIN_TYPES = (bool, int, float, str, bytes, type(None))


def cbor_encode(obj: Any) -> bytes:
    """Canonical CBOR (RFC 8949 §4.2.1)."""
    return cbor2.dumps(obj, canonical=True)


def _check_plain(obj: Any, depth: int = 0) -> None:
    """Accept only the CBOR data model we use: no tags, no undefined, no sets."""
    if depth > MAX_NESTING:
        raise MalformedFrame(f"CBOR nested deeper than {MAX_NESTING}")
    if isinstance(obj, _PLAIN_TYPES):
        return
    if isinstance(obj, list):
        for item in obj:
            _check_plain(item, depth + 1)
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, (str, int, bytes)):
                raise MalformedFrame(f"CBOR map key of type {type(k).__name__}")
            _check_plain(v, depth + 1)
        return
    raise MalformedFrame(f"CBOR value of unsupported type {type(obj).__name__}")


def _tag_refused(tag: cbor2.CBORTag, _immutable: bool) -> NoReturn:
    """cbor2's `tag_hook` (its signature since cbor2 6.0: the tag, then whether the
    value is to be immutable), called for every tag it has no decoder of its own for."""
    raise MalformedFrame(f"CBOR tag {tag.tag} is not allowed")


def _refuse_tag(number: int) -> Callable[[Any, bool], NoReturn]:
    def refuse(_value: Any, _immutable: bool) -> NoReturn:
        raise MalformedFrame(f"CBOR tag {number} is not allowed")

    return refuse


#: The tags cbor2 decodes itself (its docs: date/time 0, 1, 100, 1004; bignums 2, 3;
#: decimal and bigfloat 4, 5; string refs 25, 256; shared values 28, 29; rational 30;
#: regex 35; MIME 36; UUID 37; IP addresses and networks 52, 54, 260, 261; set 258;
#: complex 43000; self-describe 55799), each mapped to a refusal. A test probes every
#: tag number up to 2^16 and beyond, so a tag a later cbor2 adds cannot slip through.
_BUILTIN_TAGS: dict[int, Callable[[Any, bool], NoReturn]] = {
    n: _refuse_tag(n)
    for n in (0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100, 256, 258, 260,
              261, 1004, 43000, 55799)
}


def cbor_decode(data: bytes | memoryview, *, canonical: bool = True) -> Any:
    """Decode one CBOR item that must span all of `data`.

    With `canonical`, re-encode and compare: a peer cannot make two byte strings
    mean the same signed object. Costs one extra encode, which is cheap next to
    the Ed25519 verify that usually follows.
    """
    raw = bytes(data)
    if not raw:
        raise MalformedFrame("empty CBOR input")
    try:
        obj = cbor2.loads(raw, tag_hook=_tag_refused, semantic_decoders=_BUILTIN_TAGS)
    except WireError:
        raise
    except RecursionError:
        raise MalformedFrame("CBOR nested too deeply") from None
    except Exception as e:  # cbor2 raises a zoo: CBORDecodeError, ValueError, ...
        if isinstance(e.__cause__, WireError):
            raise e.__cause__ from None  # ours, raised in a hook and wrapped by cbor2
        raise MalformedFrame(f"invalid CBOR: {e}") from None
    _check_plain(obj)
    if canonical:
        try:
            again = cbor_encode(obj)
        except Exception as e:
            raise MalformedFrame(f"CBOR value cannot be re-encoded: {e}") from None
        if again != raw:
            if len(again) < len(raw) and raw.startswith(again):
                raise MalformedFrame("trailing bytes after CBOR item")
            raise NonCanonical("CBOR is not in canonical form (RFC 8949 §4.2)")
    return obj


def encode_frame(obj: Any, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> bytes:
    body = cbor_encode(obj)
    if len(body) > max_frame_bytes:
        raise FrameTooLarge(f"frame of {len(body)} bytes exceeds limit {max_frame_bytes}")
    return encode_varint(len(body)) + body


def decode_frame(data: bytes, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> Any:
    """Decode exactly one whole frame."""
    length, start = decode_varint(data)
    if length > max_frame_bytes:
        raise FrameTooLarge(f"frame announces {length} bytes; limit is {max_frame_bytes}")
    end = start + length
    if len(data) < end:
        raise TruncatedFrame(f"frame announces {length} bytes; {len(data) - start} present")
    if len(data) > end:
        raise MalformedFrame(f"{len(data) - end} trailing bytes after frame")
    return cbor_decode(memoryview(data)[start:end])


class FrameDecoder:
    """Incremental decoder for a stream of frames.

    Oversize is detected from the length prefix alone, before any body is buffered,
    so a peer cannot make us hold more than one frame's worth of memory.

    Input chunks are kept as a list and joined once per complete frame: appending to
    and trimming one bytearray copied every large body twice (profiled on the libp2p
    data path, where 256 KiB frames arrive as 64 KiB Yamux chunks).
    """

    __slots__ = ("_chunks", "_need", "_size", "max_frame_bytes")

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self._chunks: list[bytes] = []
        self._size = 0
        self.max_frame_bytes = max_frame_bytes
        self._need: tuple[int, int] | None = None  # (body start, body end)

    def feed(self, data: bytes) -> None:
        if data:
            self._chunks.append(bytes(data))
            self._size += len(data)

    def _header(self) -> tuple[int, int] | None:
        head = self._chunks[0]
        if len(head) < 9 and len(self._chunks) > 1:
            head = b"".join(self._chunks)[:9]
        try:
            length, start = decode_varint(head)
        except TruncatedFrame:
            return None
        if length > self.max_frame_bytes:
            raise FrameTooLarge(
                f"frame announces {length} bytes; limit is {self.max_frame_bytes}"
            )
        return start, start + length

    def next_raw(self) -> bytes | None:
        """Return the next whole frame body (undecoded), or None if more input is needed."""
        if self._need is None:
            if not self._size:
                return None
            self._need = self._header()
            if self._need is None:
                return None
        start, end = self._need
        if self._size < end:
            return None
        first = self._chunks[0]
        if len(first) >= end:
            body = first[start:end]
            rest = first[end:]
            del self._chunks[0]
        else:
            joined = b"".join(self._chunks)
            body = joined[start:end]
            rest = joined[end:]
            self._chunks.clear()
        if rest:
            self._chunks.insert(0, rest)
        self._size -= end
        self._need = None
        return body

    def next_frame(self) -> Any | None:
        """Return the next decoded frame, or None if more input is needed."""
        body = self.next_raw()
        if body is None:
            return None
        return cbor_decode(body)

    @property
    def buffered_bytes(self) -> int:
        return self._size

    def at_frame_boundary(self) -> bool:
        """True when no partial frame is buffered (a clean EOF is allowed here)."""
        return not self._size
