"""CAR sections of the bulk DAG stream (`/colony/dag/1.0.0`, services/dag_stream.py),
reassembled from received pieces, and their hash check.

Split from dag_stream.py (module size). Bounded: a section is at most `MAX_SECTION`
bytes (a longer length is refused before anything is buffered for it); a CID at
most `store.car.MAX_CID`; the pieces held are those the reader fed and not yet
taken (the stream's Yamux window bounds them).
"""

from __future__ import annotations

from collections import deque

from overlay.core.cid import Cid
from overlay.core.errors import ColonyError, WireError
from overlay.core.multiformats import decode_varint
from store.car import MAX_CID, CarError, _cid_length, verify_section

MAX_SECTION = 4 * 1024 * 1024 + 1024


#: A section: its CID bytes and its block, a view of the received plaintext when
#: it lies whole in one piece, else the one copy joining its parts.
Section = tuple[bytes, "bytes | memoryview"]


class Sections:
    """CAR sections reassembled from the received pieces. A block that lies whole in
    one piece is not copied at all: it stays a read-only view of that piece (the
    decrypted plaintext of one socket read, which nothing else writes) through the
    hash check into LMDB's `put`; one that spans pieces is copied once, into the
    bytes that are verified and stored (profiled on a fetcher: these copies were
    ≈ 9 % of its event loop). Only a section's few header bytes are copied twice."""

    def __init__(self) -> None:
        self._parts: deque[memoryview] = deque()
        self._avail = 0
        #: Blocks copied because they spanned pieces (StreamStats.fetched_joined).
        self.joined = 0

    def feed(self, pieces: list[bytes | memoryview]) -> None:
        for p in pieces:
            if len(p):
                self._parts.append(memoryview(p))
                self._avail += len(p)

    def _take_block(self, n: int) -> bytes | memoryview:
        """The next `n` (≤ available) bytes: an uncopied view when they lie in one
        piece, else one bytes object."""
        first = self._parts[0]
        if not n or len(first) < n:
            self.joined += n > 0
            return self._take(n)
        self._drop(n)
        return first[:n]

    def _take(self, n: int, consume: bool = True) -> bytes:
        """The next `n` (≤ available) bytes as one bytes object."""
        if not n:
            return b""
        first = self._parts[0]
        if len(first) >= n:
            out = bytes(first[:n])
            if consume:
                self._drop(n)
            return out
        chunks: list[memoryview] = []
        need = n
        for p in self._parts:
            chunks.append(p[:need])
            need -= len(chunks[-1])
            if not need:
                break
        out = b"".join(chunks)
        if consume:
            self._drop(n)
        return out

    def _drop(self, n: int) -> None:
        self._avail -= n
        parts = self._parts
        while n:
            first = parts[0]
            if len(first) > n:
                parts[0] = first[n:]
                return
            n -= len(first)
            parts.popleft()

    def split(self, only_root: bool) -> tuple[bool, list[Section]]:
        """(finished, [(cid, block)]) for every whole section now available."""
        out: list[Section] = []
        while self._avail:
            head = self._take(min(self._avail, 10 + 2 * MAX_CID), consume=False)
            try:
                n, i = decode_varint(head)
            except WireError:
                if len(head) >= 10:
                    raise
                return False, out
            if n == 0:
                self._drop(i)
                return True, out
            if n > MAX_SECTION:
                raise ColonyError(f"section of {n} bytes")
            if self._avail < i + n:
                return False, out
            clen = _cid_length(head[i:i + min(n, 2 * MAX_CID)], 0)
            if clen > n:
                raise CarError("malformed stream: a CID runs past its section")
            self._drop(i + clen)
            out.append((head[i:i + clen], self._take_block(n - clen)))
            if only_root:
                return True, out
        return False, out


def verify_all(sections: list[Section]) -> list[Cid | None]:
    """Hash-check each block against its CID (on a worker thread: hashlib releases
    the GIL, so the event loop keeps receiving meanwhile)."""
    return [verify_section(cid, block) for cid, block in sections]
