"""Who may hold an LMDB transaction while the block store's map is replaced.

LMDB's `mdb_env_set_mapsize` may run only when no transaction is active in the
process; py-lmdb's `Environment.set_mapsize` invalidates every open transaction and
*replaces the memory map*. A zero-copy reader (`BlockStore.reader`, `buffers=True`)
holds memoryviews into that map, so a resize on one thread while another thread reads
made the reader touch unmapped memory: a segfault (tests/unit/store/resize_stress.py
crashed 3 of 3 runs before this gate). Threads that hold transactions: the event loop
(Bitswap serving, the API), the fetched-block commit thread, an import's batch writer,
executor threads materialising inputs.

The gate is a readers-writer lock with the resizer preferred:

- every transaction (read or write) is entered through `txn()`; it counts itself in
  and waits while a resize is pending or running, unless its thread already holds one
  (a nested transaction must not wait for a resize that waits for it);
- `resize(fn)` marks a resize pending (new transactions wait), waits until no
  transaction is active, runs `fn` (the `set_mapsize` call) and lets everyone go.

Invariant: `fn` runs only while `active == 0`, so no transaction and no memoryview
into the old map exists anywhere in the process. A thread that holds a transaction
cannot resize (it would wait for itself): `resize` raises `GateBusy` instead, which
the store reports as a clear error. Bound: a resize waits for the longest transaction
open when it was requested; transactions are short except streaming reads (a `cat` or
an executor's input copy), which the resize waits out.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")


class GateBusy(RuntimeError):
    """The calling thread holds a transaction, so it cannot replace the map."""


class TxnGate:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._active = 0
        self._resizing = False
        self._held = threading.local()
        #: Resizes run (for tests and stats).
        self.resizes = 0

    def _mine(self) -> int:
        n: int = getattr(self._held, "n", 0)
        return n

    @contextlib.contextmanager
    def txn(self) -> Iterator[None]:
        """Hold the gate for one transaction's life."""
        mine = self._mine()
        with self._cond:
            if mine == 0:
                while self._resizing:
                    self._cond.wait()
            self._active += 1
        self._held.n = mine + 1
        try:
            yield
        finally:
            self._held.n = mine
            with self._cond:
                self._active -= 1
                if self._active == 0:
                    self._cond.notify_all()

    def resize(self, fn: Callable[[], T]) -> T:
        """Run `fn` with no transaction open anywhere in the process."""
        if self._mine():
            raise GateBusy("this thread holds a transaction of the block store")
        with self._cond:
            while self._resizing:  # one resize at a time; the next sees its result
                self._cond.wait()
            self._resizing = True
            try:
                while self._active:
                    self._cond.wait()
                self.resizes += 1
                return fn()
            finally:
                self._resizing = False
                self._cond.notify_all()
