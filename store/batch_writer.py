"""A writer thread that commits block batches while the importer chunks and hashes.

Why: importing is two streams of work that used to take turns on one thread — reading
and hashing chunks (CPU, ~1.4 GB/s of sha256) and committing batches to LMDB (copying
values into pages, writing them and fsync, ~40–50 % of import time when profiled).
py-lmdb releases the GIL inside LMDB calls and hashlib releases it for large buffers,
so with the commits on their own thread the two overlap on two cores.

Guarantees kept:

- Every batch is still one LMDB write transaction, committed with the store's sync
  setting (fsync per commit by default), in submission order. A ``kill -9`` therefore
  leaves whole batches, as before.
- `drain()` returns only when every submitted batch is committed, so a caller that
  drains before it reports an add ("acknowledged") has it on disk.
- Memory is bounded: at most `depth` batches wait in the queue plus the one being
  written (the importer holds one more while it fills it).
- A write error is raised in the importer's thread by the next `submit` or `drain`;
  the writer keeps taking (and dropping) batches after an error so `submit` never
  blocks forever.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence

from overlay.core.cid import Cid
from store.blockstore import BlockStore

Batch = Sequence[tuple[Cid, bytes, Sequence[bytes] | None]]

_STOP = None


class BatchWriter:
    """Commits `submit`ted batches to `store` on a thread of its own (started lazily)."""

    def __init__(self, store: BlockStore, depth: int = 1) -> None:
        if depth < 1:
            raise ValueError("the writer queue needs room for at least one batch")
        self.store = store
        self._q: queue.Queue[Batch | None] = queue.Queue(maxsize=depth)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        #: Blocks the store did not have before (summed over committed batches).
        self.new_blocks = 0

    def submit(self, batch: Batch) -> None:
        """Queue a batch; blocks while `depth` batches are already waiting."""
        self._raise_error()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="colony-block-writer",
                                            daemon=True)
            self._thread.start()
        self._q.put(batch)

    def drain(self) -> None:
        """Wait until every submitted batch is committed (and stop the thread)."""
        t = self._thread
        if t is not None:
            self._q.put(_STOP)
            t.join()
            self._thread = None
        self._raise_error()

    def _raise_error(self) -> None:
        err = self._error
        if err is not None:
            self._error = None
            raise err

    def _run(self) -> None:
        store = self.store
        while True:
            batch = self._q.get()
            if batch is _STOP:
                return
            if self._error is not None:
                continue  # already failed: drop, the importer will raise
            try:
                self.new_blocks += store.put_many(batch)
                # Inserting touches map pages (and fault-around maps their neighbours);
                # drop them so RSS stays flat however large the import.
                store.release_mapped_pages()
            except BaseException as e:  # re-raised in the importer thread
                self._error = e
