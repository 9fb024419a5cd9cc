"""Blocks: the block store and the one way to fetch a DAG from the network
(context.Blocks).

A fetch finds providers (DHT provider records, else the connected peers, as Bitswap
broadcasts wants) with `search`: it starts with those the lookup's walk found and keeps
listening while it runs, so a provider whose answer comes late (a busy node; the
walk's termination rule does not wait for a query past its soft timeout) joins the
bulk stream when it appears (`ProviderSearch.more`; services/dag_stream.py steals it
a share) instead of being missed. Then it starts a `FetchSession` (services/fetch.py:
walks what is stored, asks the exchange for the rest, commits what arrives) and
watches it: a fetch that gets no new block for `STALL_TIMEOUT_S` is cancelled and
fails (what it got stays stored, so running it again resumes). `fetch_dag` is that
whole loop for services; the API's fetch route drives the same `DagFetch` to stream
progress.

Sessions: the exchange reports `BlockReceived` / `BlockUnavailable` per CID; `on_event`
hands each to the sessions waiting for that CID. Cancelling a session withdraws the
wants no other session shares. While a session runs, buffered blocks are committed
every `FLUSH_INTERVAL_S`, otherwise every `IDLE_FLUSH_INTERVAL_S`.

Invariant: when `fetch_dag` returns, or `DagFetch.finish` returns, every block of the
DAG is committed to the store.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import trio

from dht.api import GetProviders, Providers, result_as
from overlay.core.cid import Cid, sha256_multihash
from overlay.core.errors import ColonyError
from overlay.core.ids import PeerId
from overlay.exchange.engine import (
    BlockReceived,
    BlockUnavailable,
    CancelFetch,
    ExchangeConfig,
    Fetch,
)
from overlay.runtime.services.dag_stream import DagStreams
from overlay.runtime.services.fetch import BlockWriter, FetchProgress, FetchSession
from overlay.runtime.services.host_ad import str_addrs

if TYPE_CHECKING:
    from dht.wire import PeerInfo
    from overlay.runtime.context import Cores, DhtCalls, Network
    from overlay.runtime.services.dht_client import ProviderFeed
    from store.blockstore import BlockStore

#: Providers one fetch asks at most.
MAX_PROVIDERS = 8
_EXCHANGE = ExchangeConfig()
#: A fetch with no new block for this long gives up (what it got stays stored). The
#: exchange re-wants a want whose answer was lost every `want_timeout_s` and reports
#: it unavailable after `max_timeouts` of them; the stall limit is one timeout longer,
#: so a fetch is cancelled as stalled only when the exchange is not settling it.
STALL_TIMEOUT_S = _EXCHANGE.want_timeout_s * (_EXCHANGE.max_timeouts + 1)
#: How often `fetch_dag` looks at its session.
POLL_S = 0.02
#: Provider lookup bound of `fetch_dag` (the API's fetch allows the DHT default).
FIND_PROVIDERS_TIMEOUT_S = 30.0
FLUSH_INTERVAL_S = 0.05
#: Flush tick while no fetch runs: 20 wake-ups/s were ~80 % of an idle daemon's CPU.
IDLE_FLUSH_INTERVAL_S = 1.0


class FetchHooks(Protocol):
    """Told of every fetch (colony mode: the private mark travels with the DAG,
    services/trust.py): `before_fetch` runs before the first want goes out,
    `after_fetch` once the fetch ended, however it ended."""

    async def before_fetch(self, root: Cid, providers: Sequence[PeerId]) -> None: ...

    def after_fetch(self, root: Cid) -> None: ...


@dataclass
class ProviderSearch:
    """The providers of one fetch: `providers` (at most MAX_PROVIDERS, the first ones
    those the lookup's walk found) grows while the search runs; each one added later
    is also sent on `more` (None without a streaming lookup) and counted in `late`."""

    providers: list[PeerId]
    more: trio.MemoryReceiveChannel[PeerId] | None = None
    late: int = 0
    found: int = field(init=False)

    def __post_init__(self) -> None:
        self.found = len(self.providers)


class DagFetch:
    """One running fetch of a DAG: its progress, a bounded wait that notices a stall,
    and the finish that commits and reports."""

    def __init__(self, blocks: BlockService, session: FetchSession) -> None:
        self._blocks = blocks
        self.session = session
        self._last = -1
        self._last_change = trio.current_time()
        self._abandoned = False

    @property
    def progress(self) -> FetchProgress:
        return self.session.progress

    async def wait(self, max_s: float) -> None:
        """Wait until done or `max_s`; ColonyError (fetch cancelled) when stalled."""
        p = self.session.progress
        with trio.move_on_after(max_s):
            while not p.done:
                await trio.sleep(POLL_S)
        if p.blocks_fetched != self._last:
            self._last, self._last_change = p.blocks_fetched, trio.current_time()
        elif trio.current_time() - self._last_change > STALL_TIMEOUT_S:
            self.abandon()
            raise ColonyError(
                f"fetch of {self.session.root} stalled: no block for {STALL_TIMEOUT_S:.0f} s "
                f"({p.outstanding} outstanding); run it again to resume"
            )

    def abandon(self) -> None:
        """Withdraw the wants still out when the caller leaves before the fetch is done
        (its API client went away, or it was cancelled), as kubo cancels a fetch with
        its request: no block arrives for nobody afterwards. What arrived is kept
        (verified blocks). Idempotent; nothing to do once done."""
        if not self.session.progress.done and not self._abandoned:
            self._abandoned = True
            self._blocks.cancel_fetch(self.session)

    def finish(self) -> FetchProgress:
        """Commit what arrived; ColonyError when a block was unavailable or the store
        refused a commit (a full disk: the wants still out are withdrawn)."""
        self._blocks.writer.flush()
        self.session.writer_failed()
        if self.session.progress.error:
            if self.session.outstanding:
                self._blocks.cancel_fetch(self.session)
            raise ColonyError(str(self.session.progress.error))
        return self.session.progress


class BlockService:
    def __init__(
        self, store: BlockStore, cores: Cores, network: Network, dht: DhtCalls, me: PeerId
    ) -> None:
        self._store = store
        self._cores = cores
        self._net = network
        self._dht = dht
        self._me = me
        self.writer = BlockWriter(store)
        #: CID (bytes) → the sessions waiting for it.
        self.sessions: dict[bytes, list[FetchSession]] = {}
        #: Set by the daemon in colony mode (services/trust.py).
        self.hooks: FetchHooks | None = None
        #: The bulk stream between colony peers (services/dag_stream.py), set by the daemon.
        self.streams: DagStreams | None = None
        #: The DHT's streaming provider lookup (DhtClient.providers), set by the daemon;
        #: without it `search` is the one-shot `find_providers`.
        self.provider_search: Callable[
            [bytes], AbstractAsyncContextManager[ProviderFeed]] | None = None

    @property
    def store(self) -> BlockStore:
        return self._store

    # ------------------------------------------------------------ one fetch

    async def find_providers(self, root: Cid, timeout_s: float = 60.0) -> list[PeerId]:
        """Up to MAX_PROVIDERS peers to fetch `root` from; their addresses are noted."""
        ev = await self._dht.call(lambda rid: GetProviders(rid, root.multihash), timeout_s)
        providers = self._others(result_as(ev, Providers).providers)
        if not providers:  # ask connected members, as Bitswap broadcasts wants
            providers = [p for p in self._net.connected_peers() if p != self._me]
        return providers[:MAX_PROVIDERS]

    def _others(self, found: Sequence[PeerInfo]) -> list[PeerId]:
        """The providers in `found` other than us; their addresses are noted."""
        for p in found:
            if p.addrs and p.peer != self._me:
                self._net.add_addrs(p.peer, str_addrs(p.addrs), hearsay=True)
        return [p.peer for p in found if p.peer != self._me]

    @asynccontextmanager
    async def search(self, root: Cid, timeout_s: float = 60.0
                     ) -> AsyncIterator[ProviderSearch]:
        """The providers of `root`: those found when the lookup's walk ends (else the
        connected peers), then, while the context lasts, those that answer later."""
        if self.provider_search is None:
            yield ProviderSearch(await self.find_providers(root, timeout_s))
            return
        # The caller's error is kept and raised outside the nursery: raised through it,
        # it came out as an ExceptionGroup that `except ColonyError` misses (the
        # gateway answered a failed fetch with a 500).
        failed: Exception | None = None
        async with self.provider_search(root.multihash) as feed, \
                trio.open_nursery() as n:
            with trio.move_on_after(timeout_s):
                await feed.wait_walked()
            providers = self._others(feed.found)
            if not providers:  # ask connected members, as Bitswap broadcasts wants
                providers = [p for p in self._net.connected_peers() if p != self._me]
            send, more = trio.open_memory_channel[PeerId](MAX_PROVIDERS)
            found = ProviderSearch(providers[:MAX_PROVIDERS], more)
            n.start_soon(self._late_providers, feed, found, send)
            try:
                yield found
            except Exception as e:
                failed = e
            finally:
                n.cancel_scope.cancel()
        if failed is not None:
            raise failed

    async def _late_providers(self, feed: ProviderFeed, found: ProviderSearch,
                              send: trio.MemorySendChannel[PeerId]) -> None:
        """Pass on each provider the feed reports after the search began. At most
        MAX_PROVIDERS in all, so the channel (of that size) never blocks."""
        seen = len(feed.found)
        async with send:
            while await feed.wait_more(seen):
                new = self._others(feed.found[seen:])
                seen = len(feed.found)
                for p in new:
                    if p not in found.providers and len(found.providers) < MAX_PROVIDERS:
                        found.providers.append(p)
                        found.late += 1
                        send.send_nowait(p)

    def begin(self, root: Cid, providers: Sequence[PeerId],
              progress: FetchProgress | None = None) -> DagFetch:
        """Fetch what is still missing by Bitswap (after `stream`, with its progress)."""
        return DagFetch(self, self.start_fetch(root, list(providers), progress))

    async def stream(self, root: Cid, providers: Sequence[PeerId],
                     progress: FetchProgress,
                     more: trio.MemoryReceiveChannel[PeerId] | None = None) -> None:
        """The bulk phase: stream the DAG from colony providers (services/dag_stream.py),
        and from those `more` brings while it runs; `progress` counts what arrives.
        Whatever it misses `begin` fetches."""
        if self.streams is not None:
            await self.streams.fetch(root, providers[:MAX_PROVIDERS], progress, more)
            # Commit what it buffered on the commit thread now, so the acknowledging
            # flush after `begin` finds nothing left to write on the event loop.
            await self.writer.drain()

    async def fetch_dag(
        self,
        root: Cid,
        providers: Sequence[PeerId] = (),
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        """Fetch every missing block of `root`'s DAG (from its providers, found when none
        are given); committed when it returns, ColonyError when it cannot.
        `progress(blocks fetched, blocks outstanding)` is called every `POLL_S`."""
        if providers:
            await self._fetch_from(root, ProviderSearch(list(providers)), progress)
            return
        async with self.search(root, FIND_PROVIDERS_TIMEOUT_S) as found:
            if not found.providers:
                raise ColonyError(f"no providers for {root} and no peers connected")
            await self._fetch_from(root, found, progress)

    async def _fetch_from(self, root: Cid, found: ProviderSearch,
                          progress: Callable[[int, int], None] | None) -> None:
        providers = found.providers
        await self.before_fetch(root, providers[:MAX_PROVIDERS])
        try:
            streamed = FetchProgress(str(root), providers_found=found.found)
            await self.stream(root, list(providers), streamed, found.more)
            fetch = self.begin(root, providers[:MAX_PROVIDERS], streamed)
            try:
                while not fetch.progress.done:
                    await fetch.wait(POLL_S)
                    if progress is not None:
                        progress(fetch.progress.blocks_fetched, fetch.progress.outstanding)
            finally:
                fetch.abandon()  # cancelled or failed before done: withdraw its wants
            fetch.finish().providers_late = found.late
        finally:
            self.after_fetch(root)

    async def before_fetch(self, root: Cid, providers: Sequence[PeerId]) -> None:
        """Call before `begin`; pair with `after_fetch` (try/finally)."""
        if self.hooks is not None:
            await self.hooks.before_fetch(root, providers)

    def after_fetch(self, root: Cid) -> None:
        if self.hooks is not None:
            self.hooks.after_fetch(root)

    def dag_multihashes(self, root: Cid, *, inner_only: bool = False) -> list[bytes]:
        """Every block of a stored DAG (from the reference index), root first. With
        `inner_only`, only the root and the blocks that link to others: the keys a
        fetch of the DAG, or of any sub-DAG of more than one block, looks up (a fetch
        asks the DHT for its root only, then asks those providers for every block).
        A node announces these after it fetched a DAG (api/routes_blocks.py): for a
        256 MiB file 7 keys instead of 1,031 (issue #16)."""
        out: list[bytes] = []
        seen: set[bytes] = set()
        stack = [root.multihash]
        with self._store.reader() as r:
            while stack:
                mh = stack.pop()
                if mh in seen:
                    continue
                seen.add(mh)
                links = r.links(mh)
                if links or not inner_only or mh == root.multihash:
                    out.append(mh)
                stack.extend(sha256_multihash(c) or Cid.from_bytes(c).multihash
                             for c in links or ())
        return out

    # ------------------------------------------------------------ sessions

    def start_fetch(self, root: Cid, providers: list[PeerId],
                    progress: FetchProgress | None = None) -> FetchSession:
        def want(cids: list[bytes]) -> None:
            for c in cids:
                self.sessions.setdefault(c, []).append(session)
            self._cores.handle_now(Fetch(tuple(cids), tuple(providers)))

        session = FetchSession(root, self.writer, want, progress)
        session.start()
        return session

    def cancel_fetch(self, session: FetchSession) -> None:
        orphaned = []
        for c in session.outstanding:
            waiting = self.sessions.get(c, [])
            if session in waiting:
                waiting.remove(session)
            if not waiting:
                self.sessions.pop(c, None)
                orphaned.append(c)  # no other fetch wants it: withdraw the want
        self._cores.handle_now(CancelFetch(tuple(orphaned)))
        self.writer.flush()

    def on_event(self, ev: object) -> None:
        if isinstance(ev, BlockReceived):
            for s in self.sessions.get(ev.cid, ()):
                s.on_block(ev.cid, ev.data, ev.peer)
            self.sessions.pop(ev.cid, None)
        elif isinstance(ev, BlockUnavailable):
            for s in self.sessions.pop(ev.cid, ()):
                s.on_unavailable(ev.cid, ev.reason)

    async def flush_tick(self) -> None:
        while True:
            # Fetched blocks arrive only while a fetch session runs (bench/edge.py).
            await trio.sleep(FLUSH_INTERVAL_S if self.sessions else IDLE_FLUSH_INTERVAL_S)
            self.writer.commit_soon()  # on the writer's thread; acknowledgers flush()
