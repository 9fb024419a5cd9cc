"""Reading a file's blocks ahead of the writer: the walk on its own thread, raw leaves
hash-checked on a small pool, pieces handed out in file order (`cat`/`get`).

Why a walk thread. py-lmdb's `get` touches every page of the value it returns
(`preload`, with the GIL released), so looking a block up is what reads it from disk:
the walk *is* the I/O. When the walk ran on the writer's thread, every wait for a hash
result and every write of the sink stopped the lookups, and so the disk (profiled on a
cold 1 GiB `cat`: the lookups alone read data.mdb at the flat-file rate; with the
hashing and writing on the same thread the disk was idle much of the time). On its own
thread the walk keeps looking blocks up while the writer waits or writes, up to
`window` bytes ahead; the kernel's read-around of each fault does the rest.

Guarantees (as before the thread; tests/unit/store/test_store_verify_ahead.py):

- order: a piece is handed out only after every piece before it, and a raw leaf only
  after its hash matched its CID; a corrupt leaf raises `CorruptBlock` in its place;
- an error of the walk itself (a missing block, a bad DAG) is raised only after every
  piece before it, so the first problem in file order is the one reported;
- bounds: at most `window` bytes (plus one block) are looked up and not yet handed out,
  so at most that much of the map is touched ahead of the writer (RSS);
- transactions: closing the generator stops the walk thread and waits for it and for
  the hash threads before returning, so no thread reads the map or uses the read
  transaction after the caller's transaction ends (a map resize then may replace the
  map: store/txn_gate.py). The read transaction is used by one thread at a time (the
  walk thread, while the caller only writes), which LMDB allows for read-only
  transactions under MDB_NOTLS, which py-lmdb always sets.
"""

from __future__ import annotations

import hashlib
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import NamedTuple

from overlay.core.cid import Cid
from store.blockstore import CorruptBlock

#: How far ahead of the writer `cat`/`get` look blocks up (and so read them from disk)
#: and hash raw leaves. Measured in docs/store.md ("Reads").
VERIFY_AHEAD_BYTES = 32 * 1024 * 1024
#: Threads hashing leaves ahead (hashlib releases the GIL on large buffers).
VERIFY_THREADS = 2
#: Bytes of leaves per hashing task: a hand-off between threads costs ~20 µs, a few
#: per cent of a 256 KiB block's hash; one per MiB is noise.
VERIFY_GROUP_BYTES = 1 << 20


class RawLeaf(NamedTuple):
    """A sha2-256 raw leaf looked up but not hash-checked yet (a view into the map)."""

    cid: Cid
    view: memoryview
    ctx: str


class _Group:
    """Raw leaves hashed by one thread task; `fut` gives the index of the first that
    does not match its CID, or -1. `leaves` is not appended to once `fut` is set."""

    __slots__ = ("fut", "leaves", "size")

    def __init__(self) -> None:
        self.leaves: list[RawLeaf] = []
        self.size = 0
        self.fut: Future[int] | None = None


def _first_bad(leaves: list[RawLeaf]) -> int:
    for i, leaf in enumerate(leaves):
        if hashlib.sha256(leaf.view).digest() != leaf.cid.digest:
            return i
    return -1


class _Ahead:
    """State shared by the walk thread and the writer, all of it under `cond`."""

    def __init__(self, window: int) -> None:
        self.cond = threading.Condition()
        self.window = window
        #: (piece, its group or None if already verified, index in the group), or the
        #: walk's exception, in file order.
        self.pending: deque[tuple[memoryview, _Group | None, int] | BaseException] = deque()
        self.ahead = 0  # bytes in `pending`
        self.group: _Group | None = None  # being filled, not submitted yet
        self.stop = False  # the writer left: the walk thread ends
        self.done = False  # the walk thread ended
        self.pool = ThreadPoolExecutor(VERIFY_THREADS, thread_name_prefix="colony-verify")

    def submit(self, g: _Group) -> None:
        """Start hashing `g` (caller holds `cond`); it takes no more leaves."""
        g.fut = self.pool.submit(_first_bad, g.leaves)
        if g is self.group:
            self.group = None

    def add(self, item: memoryview | RawLeaf) -> bool:
        """Queue one piece from the walk thread, waiting while the window is full;
        False when the writer has left."""
        n = len(item) if isinstance(item, memoryview) else len(item.view)
        with self.cond:
            while self.ahead > self.window and not self.stop:
                self.cond.wait()
            if self.stop:
                return False
            self.ahead += n
            if isinstance(item, memoryview):
                self.pending.append((item, None, 0))
            else:
                g = self.group
                if g is None:
                    g = self.group = _Group()
                self.pending.append((item.view, g, len(g.leaves)))
                g.leaves.append(item)
                g.size += n
                if g.size >= VERIFY_GROUP_BYTES:
                    self.submit(g)
            self.cond.notify()
        return True

    def walk(self, items: Iterator[memoryview | RawLeaf]) -> None:
        """The walk thread: look every block up, in order, until the end or `stop`."""
        try:
            for item in items:
                if not self.add(item):
                    return
        except BaseException as e:  # handed to the writer after the pieces before it
            with self.cond:
                self.pending.append(e)
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()  # the walk generator ends on the thread that ran it
            with self.cond:
                self.done = True
                if self.group is not None:
                    self.submit(self.group)
                self.cond.notify()

    def next_piece(self) -> memoryview | None:
        """The next piece for the writer, verified; None at the end."""
        with self.cond:
            while not self.pending and not self.done:
                self.cond.wait()
            if not self.pending:
                return None
            head = self.pending.popleft()
            if isinstance(head, BaseException):
                raise head
            view, g, i = head
            if g is not None and g.fut is None:
                self.submit(g)  # the walk is slower than the writer: hash what there is
            self.ahead -= len(view)
            self.cond.notify()
        if g is not None:
            assert g.fut is not None
            if g.fut.result() == i:
                raise CorruptBlock(g.leaves[i].cid, g.leaves[i].ctx)
        return view

    def close(self, walker: threading.Thread) -> None:
        with self.cond:
            self.stop = True
            self.cond.notify_all()
        walker.join()
        self.pool.shutdown(wait=True, cancel_futures=True)


def verified_ahead(items: Iterator[memoryview | RawLeaf], window: int) -> Iterator[memoryview]:
    """Yield `items` in order, running the walk `items` on a thread up to `window` bytes
    ahead and hash-checking raw leaves on `VERIFY_THREADS` threads (in groups of about
    `VERIFY_GROUP_BYTES`). See the module docstring for the guarantees; the caller must
    close the generator before its read transaction ends."""
    state = _Ahead(window)
    walker = threading.Thread(target=state.walk, args=(items,), name="colony-walk",
                              daemon=True)
    walker.start()
    try:
        while (piece := state.next_piece()) is not None:
            yield piece
    finally:
        state.close(walker)


__all__ = ["VERIFY_AHEAD_BYTES", "VERIFY_GROUP_BYTES", "VERIFY_THREADS", "RawLeaf",
           "verified_ahead"]
