"""Certificate chains for topic neighbours of other cells (docs/gossip.md, tier 2).

In colony mode a topic frame is taken only from a peer holding the topic's subscribe
role, and a node knows the chains of its own cell's members (gossip claims) and of
peers that showed one. A topic's swarm spans every cell, so a neighbour may be a
member nobody here ever heard of. Before the first frame to such a peer, and when one
arrives from it, the two exchange chains on `/colony/topic-chain/1.0.0`: request
`{"chain": mine}`, reply `{"chain": yours}`; each side `Trust.learn`s the other's
(verified against the colony owner and the revocation list, any role: the topic's
role is checked on every frame as before). Frames to a peer wait for the exchange
(at most `MAX_HELD` per peer and `MAX_PEERS` peers; beyond, dropped and counted) so
that the receiver knows the sender when its first frame arrives.

Open mode (no colony) needs none of this: `send` posts at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog
import trio

from overlay.core.certs import chain_from_wire, chain_to_wire
from overlay.core.errors import ColonyError, RemoteProtocolError, WireError
from overlay.runtime.net.transport_types import Codec

if TYPE_CHECKING:
    from overlay.core.ids import PeerId
    from overlay.runtime.context import Network
    from overlay.runtime.services.trust_state import Trust

log = structlog.get_logger("colony.topics")

PROTO_TOPIC_CHAIN = "/colony/topic-chain/1.0.0"
EXCHANGE_TIMEOUT_S = 5.0
#: A failed exchange with a peer is not tried again for this long.
RETRY_S = 10.0
MAX_HELD = 64
MAX_PEERS = 256


@dataclass
class ChainStats:
    exchanged: int = 0
    exchange_failed: int = 0
    served: int = 0
    refused: int = 0
    held_dropped: int = 0


class ChainExchange:
    def __init__(self, trust: Trust, network: Network,
                 post: Callable[[PeerId, object], None]) -> None:
        self._trust = trust
        self._net = network
        self._post = post
        self._held: dict[PeerId, list[object]] = {}
        self._failed: dict[PeerId, float] = {}
        self._nursery: trio.Nursery | None = None
        self.stats = ChainStats()

    def register(self) -> None:
        self._net.set_handler(PROTO_TOPIC_CHAIN, on_request=self._serve, codec=Codec.CBOR)

    async def run(self) -> None:
        """Hosts the exchanges (a nursery living as long as the service)."""
        async with trio.open_nursery() as n:
            self._nursery = n
            await trio.sleep_forever()

    def _unknown(self, peer: PeerId) -> bool:
        return self._trust.colony_owner is not None and self._trust.chain_of(peer) is None

    def send(self, peer: PeerId, frame: object) -> None:
        """Post `frame`, after a chain exchange when `peer`'s chain is unknown here."""
        held = self._held.get(peer)
        if held is None and (not self._unknown(peer) or self._recently_failed(peer)
                             or self._nursery is None):
            self._post(peer, frame)
            return
        if held is None:
            if len(self._held) >= MAX_PEERS:
                self.stats.held_dropped += 1
                return
            held = self._held[peer] = []
            self._nursery.start_soon(self._exchange_then_post, peer)  # type: ignore[union-attr]
        if len(held) >= MAX_HELD:
            self.stats.held_dropped += 1
            return
        held.append(frame)

    def heard_unknown(self, peer: PeerId) -> None:
        """A frame came from a peer whose chain is unknown: learn it (the frame is
        dropped; HyParView and Plumtree repeat what matters)."""
        if self._nursery is not None and peer not in self._held \
                and not self._recently_failed(peer):
            if len(self._held) >= MAX_PEERS:  # exchanges in flight are bounded too
                self.stats.held_dropped += 1
                return
            self._held[peer] = []
            self._nursery.start_soon(self._exchange_then_post, peer)

    def _recently_failed(self, peer: PeerId) -> bool:
        at = self._failed.get(peer)
        return at is not None and trio.current_time() - at < RETRY_S

    async def exchange(self, peer: PeerId) -> bool:
        """Swap chains with `peer`; True when its chain is now known here."""
        req: dict[str, object] = {"chain": chain_to_wire(self._trust.own_chain)}
        try:
            reply = await self._net.request(peer, PROTO_TOPIC_CHAIN, req,
                                            timeout=EXCHANGE_TIMEOUT_S)
            raw = reply.get("chain") if isinstance(reply, dict) else None
            why = self._trust.learn(peer, chain_from_wire(raw), time.time()) \
                if raw else "no chain in the reply"
        except (ColonyError, OSError, trio.TooSlowError, WireError) as e:
            why = str(e) or type(e).__name__
        if why is not None:
            self.stats.exchange_failed += 1
            if len(self._failed) >= MAX_PEERS:
                del self._failed[next(iter(self._failed))]
            self._failed[peer] = trio.current_time()
            log.info("topic_chain_exchange_failed", peer=str(peer), reason=why)
            return False
        self.stats.exchanged += 1
        return True

    async def _exchange_then_post(self, peer: PeerId) -> None:
        try:
            await self.exchange(peer)
        finally:
            # Posted either way: the receiver decides (and counts) what it refuses.
            for frame in self._held.pop(peer, []):
                self._post(peer, frame)

    async def _serve(self, peer: PeerId, obj: object) -> object:
        raw = obj.get("chain") if isinstance(obj, dict) else None
        try:
            why = self._trust.learn(peer, chain_from_wire(raw), time.time()) \
                if raw else "no chain presented"
        except WireError as e:
            why = str(e)
        if why is not None:
            self.stats.refused += 1
            raise RemoteProtocolError(f"topic chain refused: {why}")
        self.stats.served += 1
        return {"chain": chain_to_wire(self._trust.own_chain)}
