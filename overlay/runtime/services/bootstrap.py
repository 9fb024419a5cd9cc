"""Bootstrap: join gossip and the DHT through known addresses (DESIGN §9).

At start the node dials, in order, the configured seeds (`[network] bootstrap`, the
colony's), the members saved in peers.json and up to `MAX_TABLE_DIALS` saved
routing-table peers that are not saved members; every saved table entry is handed to
the DHT as `AddPeer`, so it re-enters the table once it answers a PING. When nobody
answers (e.g. the seed starts at the same moment), it keeps trying in the background
with exponential back-off up to `BOOTSTRAP_RETRY_MAX_S`, until the node is no longer
alone. Peers found by mDNS on the LAN (`[discovery] mdns`) are joined the same way.

Bounds: each dial waits at most `DIAL_TIMEOUT_S`; an mDNS peer is dialled at most once
per `MDNS_REDIAL_S`, at most `MDNS_MAX_JOINS` joins run at once (a host flooding the
LAN with made-up peers cannot make us dial without bound) and `MDNS_MAX_TRIED` peers
are remembered.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import structlog
import trio

from dht.api import AddPeer, Bootstrap
from dht.wire import PeerInfo
from gossip.events import Join
from overlay.core.errors import ColonyError
from overlay.runtime.net.transport import TransportError
from overlay.runtime.services.host_ad import bin_addrs, str_addrs

if TYPE_CHECKING:
    from overlay.core.ids import PeerId
    from overlay.runtime.context import Cores, Membership, Spawn
    from overlay.runtime.services.peer_book import PeerBook

log = structlog.get_logger("colony.daemon")

#: Longest wait between bootstrap attempts when no seed answered at start.
BOOTSTRAP_RETRY_MAX_S = 30.0
#: Routing-table peers also dialled to rejoin gossip when no saved member answers.
MAX_TABLE_DIALS = 16
DIAL_TIMEOUT_S = 10.0
#: A peer found by mDNS is dialled at most this often (it answers every query).
MDNS_REDIAL_S = 30.0
#: Joins of mDNS-found peers in flight; more answers wait for a later round.
MDNS_MAX_JOINS = 4
#: mDNS-found peers remembered (for `MDNS_REDIAL_S`); a LAN may be noisy.
MDNS_MAX_TRIED = 256

#: Dial an address (`…/p2p/<id>`) and return the peer reached (transport.connect).
Connect = Callable[[str], Awaitable["PeerId"]]


class Bootstrapper:
    def __init__(
        self, me: PeerId, connect: Connect, cores: Cores, membership: Membership,
        peer_book: PeerBook, spawn: Spawn,
    ) -> None:
        self._me = me
        self._connect = connect
        self._cores = cores
        self._members = membership
        self._book = peer_book
        self._spawn = spawn

    async def bootstrap(self, seeds: list[str]) -> None:
        """Join through `seeds` and what peers.json remembers; retry in the background."""
        table = self._book.saved_table()
        addrs = seeds + self._book.saved_addrs()
        # Routing-table peers that are not saved members are a second way back in.
        addrs += [a for a in _dial_addrs(table) if a.split("/p2p/")[-1] not in
                  {x.split("/p2p/")[-1] for x in addrs}][:MAX_TABLE_DIALS]
        for info in table:  # each is PINGed; it re-enters the table when it answers
            await self._cores.submit_wait(AddPeer(info.peer, info.addrs))
        if not await self.join_through(addrs) and addrs:
            # Nobody answered (e.g. the seed is starting at the same moment): keep
            # trying in the background, with back-off, until some peer is reached.
            self._spawn(self._retry, addrs)

    async def _retry(self, addrs: list[str]) -> None:
        delay = 1.0
        while len(self._members.list_members()) <= 1:  # alone: only ourselves
            await trio.sleep(delay)
            if len(self._members.list_members()) > 1 or await self.join_through(addrs):
                return
            delay = min(delay * 2, BOOTSTRAP_RETRY_MAX_S)

    async def join_through(self, addrs: list[str]) -> bool:
        """Dial `addrs`, join gossip and the DHT through those reached; True if any."""
        seeds: list[PeerId] = []
        infos: list[PeerInfo] = []
        for addr in addrs:
            try:
                with trio.fail_after(DIAL_TIMEOUT_S):
                    peer = await self._connect(addr)
            except (TransportError, trio.TooSlowError, ColonyError) as e:
                log.warning("bootstrap_dial_failed", addr=addr, error=str(e))
                continue
            if peer != self._me and peer not in seeds:
                seeds.append(peer)
                infos.append(PeerInfo(peer, bin_addrs([addr.split("/p2p/")[0]])))
        await self._cores.submit_wait(Join(tuple(seeds)))
        if infos:
            await self._cores.submit_wait(Bootstrap(tuple(infos)))
        return bool(seeds)

    async def run_mdns(self, listen_addrs: Callable[[], list[str]]) -> None:
        """LAN discovery: peers found are joined like bootstrap peers, bounded."""
        from overlay.runtime.net.mdns import MdnsService

        tried: dict[str, float] = {}
        joining = [0]

        async def join(addrs: list[str]) -> None:
            try:
                await self.join_through(addrs)
            finally:
                joining[0] -= 1

        def found(peer: str, addrs: list[str]) -> None:
            now = trio.current_time()
            if joining[0] >= MDNS_MAX_JOINS:
                return
            if now - tried.get(peer, -MDNS_REDIAL_S) < MDNS_REDIAL_S:
                return
            if peer in {str(m.peer) for m in self._members.list_members()}:
                return  # already a member: nothing to join
            tried.pop(peer, None)
            tried[peer] = now
            while len(tried) > MDNS_MAX_TRIED:
                del tried[next(iter(tried))]
            log.info("mdns_peer_found", peer=peer, addrs=addrs)
            joining[0] += 1
            self._spawn(join, addrs[:4])

        mdns = MdnsService(str(self._me), listen_addrs, found)
        try:
            await mdns.run()
        except OSError as e:  # no multicast-capable interface, port 5353 refused
            log.warning("mdns_unavailable", error=str(e))


def _dial_addrs(infos: list[PeerInfo]) -> list[str]:
    """`…/p2p/<id>` dial strings for saved routing-table peers (first address each)."""
    out = []
    for info in infos:
        addrs = str_addrs(info.addrs)
        if addrs:
            out.append(f"{addrs[0]}/p2p/{info.peer}")
    return out
