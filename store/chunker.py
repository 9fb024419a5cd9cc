"""Fixed-size chunking (kubo's default ``size-262144`` chunker).

Every chunk but the last is exactly `chunk_size` bytes, whatever the source's read
sizes (pipes and sockets return short reads; CIDs depend on the boundaries). An empty
source yields one empty chunk, as kubo and the js importer do, so the empty file has a
CID. Memory: one chunk at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

DEFAULT_CHUNK_SIZE = 256 * 1024
#: kubo refuses chunks above 1 MiB + overhead (a block must fit a Bitswap message).
MAX_CHUNK_SIZE = 1024 * 1024


class Readable(Protocol):
    """Anything with ``read(n)``: files (buffered or raw), pipes, sockets' makefile."""

    def read(self, n: int, /) -> bytes | None: ...


def check_chunk_size(size: int) -> int:
    if not 1 <= size <= MAX_CHUNK_SIZE:
        raise ValueError(f"chunk size must be 1..{MAX_CHUNK_SIZE} bytes, not {size}")
    return size


def chunks(src: Readable, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[bytes]:
    """Yield `chunk_size`-byte chunks of `src` (the last may be shorter)."""
    check_chunk_size(chunk_size)
    emitted = False
    while True:
        buf = src.read(chunk_size)
        if not buf:
            break
        if len(buf) < chunk_size:
            # Short read: keep reading until the chunk is full or the source ends.
            parts = [buf]
            have = len(buf)
            while have < chunk_size:
                more = src.read(chunk_size - have)
                if not more:
                    break
                parts.append(more)
                have += len(more)
            buf = b"".join(parts)
        emitted = True
        yield buf
        if len(buf) < chunk_size:
            break
    if not emitted:
        yield b""


def chunk_bytes(data: bytes, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[bytes]:
    """Chunk an in-memory buffer (same boundaries as `chunks`)."""
    check_chunk_size(chunk_size)
    if not data:
        yield b""
        return
    for off in range(0, len(data), chunk_size):
        yield data[off : off + chunk_size]
