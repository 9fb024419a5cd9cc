"""Stand-ins for three interfaces of overlay/runtime/context.py the daemon lacks today.

`Membership`, `DhtCalls` and `Blocks` get their own services (services/membership.py,
services/dht_client.py, services/blocks.py) when the daemon is decomposed; until then
the daemon builds these thin adapters over what it holds (gossip's `Swim`, its DHT
waiter, its block store and fetch sessions), so that the capsule, trust and edge
services can already take the narrow interfaces. They add no logic: each method is
what the services did through the daemon before, moved here unchanged (`fetch_dag`
is the former `capsules.fetch_dag`, `dag_multihashes` the former
`capsules.dag_multihashes`). Delete this module when those services exist.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import trio

from dht.api import GetProviders
from gossip.members import MemberInfo, MemberState
from gossip.resources import ResourceAd
from overlay.core.errors import ColonyError
from overlay.core.ids import PeerId
from store.blockstore import BlockStore
from store.cid import Cid

if TYPE_CHECKING:
    from gossip.swim import Swim
    from overlay.runtime.context import DhtCalls, Network
    from overlay.runtime.services.fetch import BlockWriter, FetchSession

#: A fetch asks at most this many providers.
MAX_PROVIDERS = 8
#: A fetch with no new block for this long is cancelled.
FETCH_STALL_S = 60.0


class SwimMembership:
    """`context.Membership` over gossip's `Swim` (read-only)."""

    def __init__(self, swim: Swim) -> None:
        self._swim = swim

    def list_members(self, *, include_gone: bool = False) -> list[MemberInfo]:
        return self._swim.list_members(include_gone=include_gone)

    def member(self, peer: PeerId) -> MemberInfo | None:
        return self._swim.member(peer)

    def own_ad(self) -> ResourceAd | None:
        return self._swim.ad

    def is_member(self, peer: PeerId) -> bool:
        m = self._swim.member(peer)
        return m is not None and m.state in (MemberState.ALIVE, MemberState.SUSPECT)


class DhtFunction:
    """`context.DhtCalls` over the daemon's `dht(make, timeout_s)` waiter."""

    def __init__(self, fn: Callable[..., Awaitable[Any]]) -> None:
        self._fn = fn

    async def call(self, make: Callable[[int], Any], timeout_s: float = 60.0) -> Any:
        return await self._fn(make, timeout_s=timeout_s)


def dag_multihashes(store: BlockStore, root: Cid) -> list[bytes]:
    """Every block of a stored DAG (from the reference index), root first."""
    out: list[bytes] = []
    seen: set[bytes] = set()
    stack = [root.multihash]
    with store.reader() as r:
        while stack:
            mh = stack.pop()
            if mh in seen:
                continue
            seen.add(mh)
            out.append(mh)
            stack.extend(Cid.from_bytes(c).multihash for c in r.links(mh) or [])
    return out


class SessionBlocks:
    """`context.Blocks` over the store, the block writer and the daemon's fetch
    sessions (`start_fetch` / `cancel_fetch`)."""

    def __init__(
        self,
        store: BlockStore,
        writer: BlockWriter,
        *,
        me: PeerId,
        dht: DhtCalls,
        network: Network,
        start_fetch: Callable[[Cid, list[PeerId]], FetchSession],
        cancel_fetch: Callable[[FetchSession], None],
    ) -> None:
        self._store = store
        self._writer = writer
        self._me = me
        self._dht = dht
        self._network = network
        self._start_fetch = start_fetch
        self._cancel_fetch = cancel_fetch

    @property
    def store(self) -> BlockStore:
        return self._store

    def dag_multihashes(self, root: Cid) -> list[bytes]:
        return dag_multihashes(self._store, root)

    async def fetch_dag(
        self,
        root: Cid,
        providers: Sequence[PeerId] = (),
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        """Fetch `root` (and everything below it) from `providers`, else from its DHT
        providers, else from connected peers (as Bitswap broadcasts wants);
        ColonyError when it cannot."""
        peers = list(providers) or await self._providers(root)
        if not peers:
            peers = [p for p in self._network.connected_peers() if p != self._me]
        if not peers:
            raise ColonyError(f"no providers for {root} and no peers connected")
        session = self._start_fetch(root, peers[:MAX_PROVIDERS])
        last, last_change = -1, trio.current_time()
        while not session.progress.done:
            await trio.sleep(0.02)
            got = session.progress.blocks_fetched
            if got != last:
                last, last_change = got, trio.current_time()
                if progress is not None:
                    progress(got, session.progress.outstanding)
            elif trio.current_time() - last_change > FETCH_STALL_S:
                self._cancel_fetch(session)
                raise ColonyError(f"fetch of {root} stalled: no block for {FETCH_STALL_S:.0f} s")
        self._writer.flush()
        if session.progress.error:
            raise ColonyError(str(session.progress.error))

    async def _providers(self, root: Cid) -> list[PeerId]:
        """`root`'s DHT providers (not us); their addresses go to the transport."""
        from overlay.runtime.services.node_builder import str_addrs  # imports capsules

        ev = await self._dht.call(lambda rid: GetProviders(rid, root.multihash), timeout_s=30)
        found = [p.peer for p in ev.result.providers if p.peer != self._me]
        for p in ev.result.providers:
            if p.addrs and p.peer != self._me:
                self._network.add_addrs(p.peer, str_addrs(p.addrs))
        return found
