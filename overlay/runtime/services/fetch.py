"""Fetch a whole DAG by CID through the block exchange, resumably.

A `FetchSession` walks the DAG from its root: blocks already in the local store are
expanded from the store's reference index (no network, no re-hash), missing ones are
asked of the exchange engine, and every block that arrives (already hash-checked by
the engine) is buffered, committed in batches and expanded in turn. Re-running a fetch
after an interruption therefore only asks for what is still missing.

`BlockWriter` batches commits: LMDB fsyncs each write transaction, so one commit per
256 KiB block would cap a fetch at the disk's sync rate. While the daemon runs
`BlockWriter.run`, batches are committed on a worker thread (py-lmdb releases the GIL
inside LMDB calls), so receiving, hashing and the next batch overlap the fsync of the
previous one; profiled, the commit on the event loop was a third of the fetcher's time.

Invariants: one commit in flight at a time, in order; `flush()` and `drain()` return
True only when every block added so far is committed (a fetch is acknowledged after
them); buffered bytes are bounded by `MAX_BUFFERED_BYTES` plus what one wait admits,
plus the batch being committed. The bulk stream (services/dag_stream.py) and every
inbound Bitswap message that carries blocks (the router's `bitswap_admit`) wait for
room (`wait_room`) without blocking the event loop, so nothing is committed on it;
only beyond `HARD_BUFFERED_FACTOR` times the bound does `add` commit synchronously.

A commit the store refuses (a full disk: `DiskFull`) drops that batch, counts it in
`failures` and keeps `last_error`; every session that had blocks in it sees the count
change and fails with that error (nothing it reported fetched is missing), and the
daemon keeps running — the next fetch works once space is freed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog
import trio

from overlay.core.cid import DAG_PB, Cid, sha256_multihash
from overlay.core.ids import PeerId
from store.blockstore import BlockStore, Reader, StoreError
from store.unixfs import link_cids

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = structlog.get_logger("colony.fetch")

#: Commit when this many blocks or bytes are buffered (or the daemon's flush tick).
FLUSH_BLOCKS = 64
FLUSH_BYTES = 16 * 1024 * 1024
#: Buffered (not yet handed to the commit thread) bytes that `wait_room` keeps to.
MAX_BUFFERED_BYTES = 3 * FLUSH_BYTES
#: Buffered bytes, as a multiple of MAX_BUFFERED_BYTES, beyond which `add` commits on
#: the calling thread (the event loop) even while the commit thread runs: the last
#: resort for adders that did not wait (the bulk stream and Bitswap's messages wait).
HARD_BUFFERED_FACTOR = 2
#: Map headroom a background batch needs beyond twice its size; with less, the batch
#: is committed on the event loop, where growing the map is safe (no other txn open).
MAP_SLACK_BYTES = 8 * 1024 * 1024

#: (cid, block, links); a raw leaf from the bulk stream may be a read-only view of
#: the received plaintext (services/dag_sections.py), which LMDB's put copies.
_Entry = tuple[Cid, "bytes | memoryview", "list[bytes] | None"]


class BlockWriter:
    def __init__(self, store: BlockStore) -> None:
        self.store = store
        self._pending: dict[bytes, _Entry] = {}
        #: The batch on the commit thread (readable until it is committed).
        self._committing: dict[bytes, _Entry] = {}
        self._bytes = 0
        self._wake = trio.Event()
        #: Set (and replaced) after every background commit, and when `run` ends.
        self._committed = trio.Event()
        self._running = False
        self.commits = 0
        self.background_commits = 0
        #: Commits the store refused (e.g. a full disk) and the last such error.
        self.failures = 0
        self.last_error: StoreError | None = None

    def _put(self, entries: list[_Entry]) -> bool:
        """Commit `entries`; on a store error drop them, count it and return False."""
        try:
            self.store.put_many(entries)
        except StoreError as e:
            self._failed(e, len(entries))
            return False
        return True

    def _failed(self, e: StoreError, blocks: int) -> None:
        self.failures += 1
        self.last_error = e
        log.error("block_commit_failed", error=str(e), blocks=blocks)

    def add(self, cid: Cid, data: bytes | memoryview, links: list[bytes] | None) -> None:
        self._pending[cid.multihash] = (cid, data, links)
        self._bytes += len(data)
        if len(self._pending) >= FLUSH_BLOCKS or self._bytes >= FLUSH_BYTES:
            if self._running and self._bytes < HARD_BUFFERED_FACTOR * MAX_BUFFERED_BYTES:
                self._wake.set()
            else:
                self.flush()

    def has(self, cid: Cid) -> bool:
        mh = cid.multihash
        return mh in self._pending or mh in self._committing or self.store.has(cid)

    def held(self, cid: Cid, r: Reader) -> bool:
        """`has`, inside the caller's read transaction `r` (a walk over a DAG opened
        one per block: profiled, a few % of the fetcher's interpreter time)."""
        mh = cid.multihash
        return mh in self._pending or mh in self._committing or r.has(cid)

    def held_sha256(self, mh: bytes, r: Reader) -> bool:
        """`held` for a sha2-256 multihash (no `Cid` needed)."""
        return mh in self._pending or mh in self._committing or r.stored(mh) is not None

    def have(self, cids: list[Cid]) -> set[bytes]:
        """The multihashes of `cids` that are buffered, being committed or stored (one
        read transaction for all of them)."""
        out = {c.multihash for c in cids
               if c.multihash in self._pending or c.multihash in self._committing}
        rest = [c for c in cids if c.multihash not in out]
        if rest:
            with self.store.reader() as r:
                out.update(c.multihash for c in rest if r.has(c))
        return out

    def pending_block(self, mh: bytes) -> bytes | memoryview | None:
        entry = self._pending.get(mh) or self._committing.get(mh)
        return entry[1] if entry else None

    def commit_soon(self) -> None:
        """Start committing what is buffered: on the commit thread if it runs, else now."""
        if self._pending:
            if self._running:
                self._wake.set()
            else:
                self.flush()

    async def wait_room(self, nbytes: int) -> None:
        """Wait, without blocking the event loop, until `nbytes` more fit under
        `MAX_BUFFERED_BYTES`: the bulk stream's back-pressure (its provider waits on
        the stream's window meanwhile). `add` beyond the bound commits on the calling
        thread instead, which would stall every other task of the daemon."""
        while self._running and self._pending and self._bytes + nbytes >= MAX_BUFFERED_BYTES:
            ev = self._committed
            self._wake.set()
            await ev.wait()

    async def drain(self) -> bool:
        """Commit everything added so far and wait for it, on the commit thread while it
        runs (the event loop keeps serving), inline otherwise; then `flush()` (a no-op
        if nothing is left). True when all of it is durable, as for `flush`."""
        while self._running and (self._pending or self._committing):
            ev = self._committed
            self._wake.set()
            await ev.wait()
        return self.flush()

    def flush(self) -> bool:
        """Commit everything added so far before returning (on the calling thread);
        False when the store refused it (the blocks are dropped, see `failures`).

        A batch still on the commit thread is written again here: `put_many` never
        overwrites, so whichever transaction commits second finds its blocks present
        and adds nothing, and either way every block is committed when this returns.
        """
        if not (self._pending or self._committing):
            return True
        ok = self._put([*self._committing.values(), *self._pending.values()])
        self._pending.clear()
        self._bytes = 0
        self.commits += ok
        return ok

    async def run(self, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Commit batches on a worker thread, one at a time, until cancelled."""
        self._running = True
        task_status.started()
        try:
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                while self._pending and self._running:
                    await self._commit_one()
        finally:
            self._running = False
            self._committed.set()  # waiters see `_running` False and commit inline

    async def _commit_one(self) -> None:
        batch, nbytes = self._pending, self._bytes
        self._pending, self._bytes = {}, 0
        try:
            await self._commit_batch(batch, nbytes)
        finally:
            self._committed.set()
            self._committed = trio.Event()

    async def _commit_batch(self, batch: dict[bytes, _Entry], nbytes: int) -> None:
        if not self._has_room(nbytes):
            # Near a full map: grow it here, where no transaction of ours is open, then
            # commit on the thread as usual (a resize on the thread could wait for a
            # reader the event loop holds). Profiled: committing such batches here
            # instead stalled the loop for a whole fsync'd batch each time.
            try:
                self.store.reserve(2 * nbytes + MAP_SLACK_BYTES)
            except StoreError as e:
                self._failed(e, len(batch))
                return
        self._committing = batch
        try:
            await trio.to_thread.run_sync(self.store.put_many, list(batch.values()))
        except StoreError as e:  # refused (a full disk): the batch is dropped, see flush
            self._failed(e, len(batch))
            return
        except Exception as e:  # keep the blocks; commit inline from now on
            log.error("background_commit_failed", error=str(e), blocks=len(batch))
            self._running = False
            self._pending = {**batch, **self._pending}
            self._bytes += nbytes
            return
        finally:
            self._committing = {}
        self.commits += 1
        self.background_commits += 1

    def _has_room(self, nbytes: int) -> bool:
        env = self.store.env
        info, st = env.info(), env.stat()
        used = (info["last_pgno"] + 1) * st["psize"]
        return used + 2 * nbytes + MAP_SLACK_BYTES <= info["map_size"]


@dataclass
class FetchProgress:
    root: str
    blocks_fetched: int = 0
    bytes_fetched: int = 0
    blocks_local: int = 0
    outstanding: int = 0
    by_peer: dict[str, int] = field(default_factory=dict)
    #: Providers the fetch started with, and those that joined it later (their DHT
    #: answer came after the lookup's walk ended).
    providers_found: int = 0
    providers_late: int = 0
    started: float = field(default_factory=time.monotonic)
    done: bool = False
    error: str | None = None

    def rate_bps(self) -> float:
        return self.bytes_fetched / max(1e-6, time.monotonic() - self.started)

    def as_dict(self) -> dict[str, object]:
        return {
            "root": self.root,
            "blocks_fetched": self.blocks_fetched,
            "bytes_fetched": self.bytes_fetched,
            "blocks_local": self.blocks_local,
            "outstanding": self.outstanding,
            "providers": dict(sorted(self.by_peer.items())),
            "providers_found": self.providers_found,
            "providers_late": self.providers_late,
            "rate_bps": round(self.rate_bps()),
            "done": self.done,
            "error": self.error,
        }


class FetchSession:
    """One DAG being fetched. `want(cids)` hands missing CIDs to the exchange."""

    def __init__(
        self, root: Cid, writer: BlockWriter, want: Callable[[list[bytes]], None],
        progress: FetchProgress | None = None,
    ) -> None:
        self.root = root
        self.writer = writer
        self.want = want
        self.outstanding: dict[bytes, None] = {}
        #: Given when a bulk stream (services/dag_stream.py) fetched first: it goes on.
        self.progress = progress or FetchProgress(str(root))
        self._streamed = self.progress.blocks_fetched
        self._failures = writer.failures

    def writer_failed(self) -> bool:
        """True (and the session failed) when a commit was refused since it began."""
        if self.writer.failures == self._failures:
            return False
        if not self.progress.done:
            self.progress.error = str(self.writer.last_error)
            self.progress.done = True
        return True

    def start(self) -> None:
        self._expand([self.root.to_bytes()])
        # Blocks a stream fetched are "fetched", not "already local".
        self.progress.blocks_local = max(0, self.progress.blocks_local - self._streamed)

    def _expand(self, cids: list[bytes]) -> None:
        """Walk what we already hold; ask for the rest. Iterative: DAGs can be deep.

        Walked as CID bytes: a sha2-256 v0/v1 raw/dag-pb CID's multihash and codec
        are read off its bytes (`sha256_multihash`), anything else is parsed. After
        a bulk stream this walks the whole DAG before the fetch is acknowledged:
        with a `Cid` per block it took ≈ 50 ms per 1,031 blocks on this machine
        (≈ 0.2 CPU s per GiB fetched, issue #16)."""
        stack = list(cids)
        missing: list[bytes] = []
        w = self.writer
        with w.store.reader() as r:
            while stack:
                raw = stack.pop()
                mh = sha256_multihash(raw)
                if mh is not None:
                    if raw in self.outstanding:
                        continue
                    held = w.held_sha256(mh, r)
                    pb = len(raw) == 34 or raw[1] == DAG_PB
                else:  # identity, another hash or a non-minimal encoding: parse
                    cid = Cid.from_bytes(raw)
                    raw, mh = cid.to_bytes(), cid.multihash
                    if raw in self.outstanding:
                        continue
                    held = w.held(cid, r)
                    pb = cid.codec == DAG_PB
                if not held:
                    self.outstanding[raw] = None
                    missing.append(raw)
                    continue
                self.progress.blocks_local += 1
                if pb:
                    links = r.links(mh)
                    if links is None:  # buffered, not yet committed: parse it
                        block = w.pending_block(mh)
                        links = link_cids(block) if block is not None else []
                    stack.extend(links)
        self.progress.outstanding = len(self.outstanding)
        if missing:
            self.want(missing)
        elif not self.outstanding:
            self._finish()

    def on_block(self, raw_cid: bytes, data: bytes, peer: PeerId) -> None:
        if raw_cid not in self.outstanding or self.writer_failed():
            return
        del self.outstanding[raw_cid]
        cid = Cid.from_bytes(raw_cid)
        links = link_cids(data) if cid.codec == DAG_PB else None
        self.writer.add(cid, data, links)
        if self.writer_failed():
            return
        p = self.progress
        p.blocks_fetched += 1
        p.bytes_fetched += len(data)
        key = str(peer)
        p.by_peer[key] = p.by_peer.get(key, 0) + 1
        if links:
            self._expand(links)
        p.outstanding = len(self.outstanding)
        if not self.outstanding:
            self._finish()

    def on_unavailable(self, raw_cid: bytes, reason: str) -> None:
        if raw_cid in self.outstanding:
            self.progress.error = f"block {Cid.from_bytes(raw_cid)} unavailable: {reason}"
            self.progress.done = True
            self.writer.flush()

    def _finish(self) -> None:
        self.writer.flush()
        if not self.writer_failed():
            self.progress.done = True
