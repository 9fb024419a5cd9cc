"""Topics in the daemon: the tier-2 overlay (HyParView + Plumtree) on the real transport.

DESIGN §6 tier 2; docs/gossip.md "Topics in the daemon". The sans-IO core is
`gossip.topic_pubsub.PubSub` (signed, authorised, ordered messages over
`gossip.topics.TopicsCore`). This service runs it in a `Driver` of its own, so topic
traffic has its own bounded inbox and never delays SWIM, the DHT or capsules, and:

- carries its messages on `/colony/topics/1.0.0` (one CBOR frame per message, one
  long-lived stream per peer, as every Colony protocol);
- receives the transport's connectivity inputs (`Disconnected`, `PeerUnreachable`)
  from the router, which is how HyParView detects a failed neighbour;
- finds a topic's swarm by DHT rendezvous: joining provides the key
  `multihash(sha2-256, topic id)` and looks its providers up; they are the bootstrap
  peers (the first gets JOIN, the rest wait in the passive view). The lookup is
  repeated 0.5, 1, 2, 4… s after joining, then every `REFRESH_S` (every 1 s while the node
  has no neighbour); the core joins through a provider that is not a neighbour while
  its active view has room (or that neither view knows), which merges swarms that
  formed apart;
- in colony mode, takes topic frames only from peers holding the topic's subscribe
  role (`trust.check`: peers known from gossip or from a chain they showed), and
  publishes or subscribes locally only with this node's own role; peers of other
  cells swap chains first (services/topic_chains.py), so a swarm spans cells;
- fans delivered messages out to local subscribers (the API's streams), each a
  bounded channel: a slow subscriber loses messages (counted), never stalls the node;
- leaves a topic `LINGER_S` after its last local subscriber left and its last publish.

Roles per topic (`[topics]` config): `publish_role` (default submit) and
`subscribe_role` (default member), overridden per topic by `roles` entries
"NAME=PUBLISH/SUBSCRIBE" (NAME may end with `*`: a prefix). Each node enforces its own
configuration; a colony should use one.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog
import trio

from dht.api import GetProviders, Provide, Providers, StopProviding, result_as
from gossip.hyparview import NeighborDown, NeighborUp
from gossip.topic_messages import decode_topic_message
from gossip.topic_pubsub import (
    REFUSALS,
    ChainAuthorizer,
    Published,
    PubSub,
    PubSubConfig,
    Subscribe,
    TopicMessage,
    Unsubscribe,
)
from gossip.topic_pubsub import Publish as PublishCmd
from gossip.topic_signed import MAX_DATA_BYTES, check_name, topic_id
from overlay.core.certs import ALL_ROLES
from overlay.core.effects import Received
from overlay.core.errors import ColonyError, ConfigError, RemoteProtocolError, WireError
from overlay.runtime.driver import Driver
from overlay.runtime.net.transport_types import Codec
from overlay.runtime.services.host_ad import str_addrs
from overlay.runtime.services.topic_chains import ChainExchange

if TYPE_CHECKING:
    from overlay.core.crypto import KeyPair
    from overlay.core.ids import PeerId
    from overlay.runtime.context import Cores, DhtCalls, Network
    from overlay.runtime.services.trust_state import Trust

log = structlog.get_logger("colony.topics")

PROTO_TOPICS = "/colony/topics/1.0.0"
#: Rendezvous lookups: every REFRESH_S, and every REFRESH_ALONE_S with no neighbour;
#: a fresh join looks again after SECOND_LOOKUP_S (records of concurrent joiners).
REFRESH_S = 30.0
REFRESH_ALONE_S = 1.0
SECOND_LOOKUP_S = 0.5
#: A topic stays joined this long after its last subscriber left and its last publish.
LINGER_S = 120.0
#: A first publish waits at most this long for a neighbour (when others provide).
JOIN_WAIT_S = 5.0
#: Messages buffered per local subscriber stream.
SUBSCRIBER_BUFFER = 1024
DHT_TIMEOUT_S = 10.0
#: Chain exchanges with providers of unknown chain per rendezvous lookup.
MAX_EXCHANGES = 16


class TopicRefused(ColonyError):
    """This node may not publish or subscribe to the topic (colony roles)."""


@dataclass(frozen=True, slots=True)
class TopicRoles:
    publish: str
    subscribe: str


@dataclass(frozen=True, slots=True)
class TopicPolicy:
    """Which role publishing and subscribing need, per topic name (docs/gossip.md)."""

    default: TopicRoles = TopicRoles("submit", "member")
    rules: tuple[tuple[str, TopicRoles], ...] = ()

    @classmethod
    def from_config(cls, conf: dict[str, Any]) -> TopicPolicy:
        default = TopicRoles(_role(conf.get("publish_role", "submit")),
                             _role(conf.get("subscribe_role", "member")))
        rules = []
        for entry in conf.get("roles", []):
            name, sep, roles = str(entry).partition("=")
            pub, sep2, sub = roles.partition("/")
            if not sep or not sep2 or not name:
                raise ConfigError(f"[topics] roles entry {entry!r}: use NAME=PUBLISH/SUBSCRIBE")
            rules.append((name, TopicRoles(_role(pub), _role(sub))))
        return cls(default, tuple(rules))

    def roles(self, name: str) -> TopicRoles:
        for pattern, roles in self.rules:
            if pattern == name or (pattern.endswith("*") and name.startswith(pattern[:-1])):
                return roles
        return self.default


def _rendezvous_key(tid: bytes) -> bytes:
    """The DHT key a topic's members provide: the topic id as a sha2-256 multihash."""
    return b"\x12\x20" + tid


def _role(v: object) -> str:
    if v not in ALL_ROLES:
        raise ConfigError(f"[topics] role {v!r} is not one of {', '.join(ALL_ROLES)}")
    return str(v)


@dataclass
class _Joined:
    name: str
    tid: bytes
    roles: TopicRoles
    subscribers: list[trio.MemorySendChannel[TopicMessage]] = field(default_factory=list)
    last_publish: float = 0.0
    idle_since: float = 0.0
    next_refresh: float = 0.0
    refresh_s: float = REFRESH_ALONE_S
    #: Set once the join settled (second lookup done, a first neighbour or timeout).
    settled: trio.Event = field(default_factory=trio.Event)


@dataclass
class TopicStats:
    frames_malformed: int = 0
    frames_unauthorized: int = 0
    subscriber_slow: int = 0
    rendezvous_failed: int = 0


class TopicService:
    """Owns the topics core and its driver; the API's publish/subscribe/ls go here."""

    def __init__(self, keypair: KeyPair, trust: Trust, network: Network, dht: DhtCalls,
                 main: Cores, conf: dict[str, Any]) -> None:
        self.me = keypair.peer_id
        self._main = main
        self._trust = trust
        self._net = network
        self._dht = dht
        self.policy = TopicPolicy.from_config(conf)
        authorizer = ChainAuthorizer(trust.admission) if trust.admission is not None else None
        # The epoch orders this node's messages across restarts (gossip/topic_signed.py).
        self.core = PubSub(keypair, PubSubConfig(), random.Random(),
                           epoch=int(time.time() * 1000), colony=trust.colony_owner,
                           chain=trust.chain_envelopes, authorizer=authorizer)
        self.driver = Driver(self.core, send=self._send, emit=self._on_event)
        #: Chains of neighbours in other cells (services/topic_chains.py).
        self.chains = ChainExchange(trust, network, self._post)
        self.joined: dict[str, _Joined] = {}
        self._by_tid: dict[bytes, _Joined] = {}
        self._refs = itertools.count(1)
        self._published: dict[int, trio.MemorySendChannel[Published]] = {}
        self._joining: dict[str, trio.Event] = {}
        self.stats = TopicStats()

    def register(self) -> None:
        self._net.set_handler(PROTO_TOPICS, on_message=self._on_frame, codec=Codec.CBOR)
        self.chains.register()  # /colony/topic-chain/1.0.0

    # ------------------------------------------------------------ network

    def _on_frame(self, peer: PeerId, obj: object) -> None:
        try:
            msg = decode_topic_message(obj)
        except WireError as e:
            self.stats.frames_malformed += 1
            raise RemoteProtocolError(f"bad topic message: {e}") from None
        joined = self._by_tid.get(msg.topic)
        if joined is not None and self._trust.check(
                peer, joined.roles.subscribe, self.driver.now()) is not None:
            # Colony mode: only holders of the topic's subscribe role are neighbours.
            self.stats.frames_unauthorized += 1
            if self._trust.chain_of(peer) is None:  # another cell's member, maybe
                self.chains.heard_unknown(peer)
            return
        self.driver.submit(Received(peer, msg))

    def _send(self, peer: PeerId, msg: object) -> None:
        self.chains.send(peer, msg.to_wire())  # type: ignore[attr-defined]

    def _post(self, peer: PeerId, frame: object) -> None:
        self._net.post(peer, PROTO_TOPICS, frame)

    def connectivity(self, inp: object) -> bool:
        """The router's `Disconnected` / `PeerUnreachable` inputs, for HyParView."""
        return self.driver.submit(inp)

    def _on_event(self, ev: object) -> None:
        t = type(ev)
        if t is TopicMessage:
            assert isinstance(ev, TopicMessage)
            joined = self.joined.get(ev.name)
            for ch in joined.subscribers if joined else ():
                try:
                    ch.send_nowait(ev)
                except trio.WouldBlock:
                    self.stats.subscriber_slow += 1
                except trio.BrokenResourceError:
                    pass  # the stream closed; `subscription` removes it
        elif t is Published:
            assert isinstance(ev, Published)
            waiter = self._published.pop(ev.ref, None)
            if waiter is not None:
                waiter.send_nowait(ev)
        elif t is NeighborUp or t is NeighborDown:
            log.debug("topic_neighbor", up=t is NeighborUp, peer=str(ev.peer))  # type: ignore[attr-defined]

    # ------------------------------------------------------------ joining

    def _check_role(self, name: str, role: str, what: str) -> None:
        reason = self._trust.check(self.me, role, self.driver.now())
        if reason is not None:
            raise TopicRefused(f"cannot {what} topic {name!r}: it needs role {role} ({reason})")

    async def _join(self, name: str) -> _Joined:
        """Join `name` (once, concurrent callers wait for the first): rendezvous, then
        Subscribe with the providers found."""
        joined = self.joined.get(name)
        if joined is not None:
            await joined.settled.wait()
            return joined
        busy = self._joining.get(name)
        if busy is not None:
            await busy.wait()
            return await self._join(name)
        if len(self.joined) + len(self._joining) >= self.core.core.cfg.max_topics:
            raise ColonyError(f"this node is in {len(self.joined)} topics already, the most "
                              "it takes; leave one first")
        self._joining[name] = done = trio.Event()
        try:
            tid = topic_id(name, self._trust.colony_owner)
            joined = _Joined(name, tid, self.policy.roles(name), idle_since=self.driver.now())
            # In the core before we announce ourselves: a JOIN that follows our provider
            # record must find the topic (else it is dropped and its sender waits 1 s).
            await self.driver.submit_wait(Subscribe(name, (), joined.roles.publish))
            self.joined[name] = joined
            self._by_tid[tid] = joined
            peers = await self._providers(joined, provide=True)
            if peers:
                await self.driver.submit_wait(Subscribe(name, peers, joined.roles.publish))
            joined.next_refresh = self.driver.now() + REFRESH_ALONE_S
            log.info("topic_joined", topic=name, contacts=len(peers))
        finally:
            del self._joining[name]
            done.set()
        try:
            await self._settle(joined, bool(peers))
        finally:
            joined.settled.set()
        return joined

    async def _settle(self, joined: _Joined, found: bool) -> None:
        """A fresh join looks again once concurrent joiners' records are in (two first
        subscribers that found nobody would otherwise form two swarms until the next
        refresh), then waits (bounded) for a first neighbour."""
        with trio.move_on_after(JOIN_WAIT_S):
            await trio.sleep(SECOND_LOOKUP_S)
            more = await self._providers(joined, provide=False)
            if more:
                await self.driver.submit_wait(Subscribe(joined.name, more, joined.roles.publish))
            if found or more:
                while not self._active(joined):
                    await trio.sleep(0.05)

    async def _providers(self, joined: _Joined, *, provide: bool) -> tuple[PeerId, ...]:
        """Peers that announced the topic in the DHT (members holding its subscribe
        role, in colony mode); announce ourselves too when `provide`."""
        key = _rendezvous_key(joined.tid)
        try:
            if provide:
                await self._dht.call(lambda rid: Provide(rid, (key,)), DHT_TIMEOUT_S)
            ev = await self._dht.call(lambda rid: GetProviders(rid, key), DHT_TIMEOUT_S)
        except ColonyError as e:
            self.stats.rendezvous_failed += 1
            log.info("topic_rendezvous_failed", topic=joined.name, error=str(e))
            return ()
        found = [i for i in result_as(ev, Providers).providers if i.peer != self.me]
        for info in found:
            if info.addrs:
                self._net.add_addrs(info.peer, str_addrs(info.addrs), hearsay=True)
        # Providers of other cells: learn their chains first (both ways).
        unknown = [i.peer for i in found if self._trust.colony_owner is not None
                   and self._trust.chain_of(i.peer) is None][:MAX_EXCHANGES]
        if unknown:
            async with trio.open_nursery() as n:
                for p in unknown:
                    n.start_soon(self.chains.exchange, p)
        now = self.driver.now()
        peers = []
        for info in found:
            if self._trust.check(info.peer, joined.roles.subscribe, now) is not None:
                continue
            peers.append(info.peer)
        random.shuffle(peers)  # not always the same contact for everyone
        return tuple(peers)

    def _active(self, joined: _Joined) -> list[PeerId]:
        topic = self.core.core.topics.get(joined.tid)
        return [] if topic is None else list(topic.membership.active)

    async def _leave(self, joined: _Joined) -> None:
        self.joined.pop(joined.name, None)
        self._by_tid.pop(joined.tid, None)
        await self.driver.submit_wait(Unsubscribe(joined.name))
        # StopProviding has no result event: it goes to the node's DHT core directly.
        await self._main.submit_wait(StopProviding((_rendezvous_key(joined.tid),)))
        log.info("topic_left", topic=joined.name)

    async def run(self) -> None:
        """Rendezvous refresh and idle leave, twice a second; chain exchanges."""
        async with trio.open_nursery() as n:
            n.start_soon(self.chains.run)
            while True:
                await trio.sleep(0.5)
                for joined in list(self.joined.values()):
                    await self._tick(joined, self.driver.now())

    async def _tick(self, joined: _Joined, now: float) -> None:
        if (not joined.subscribers and now - joined.idle_since > LINGER_S
                and now - joined.last_publish > LINGER_S):
            await self._leave(joined)
            return
        if now < joined.next_refresh:
            return
        # Swarms that formed apart (two first subscribers that found nobody) merge
        # here: soon after joining, the lookups come every 2, 4, 8… s up to REFRESH_S.
        alone = not self._active(joined)
        joined.refresh_s = REFRESH_ALONE_S if alone else min(2 * joined.refresh_s, REFRESH_S)
        joined.next_refresh = now + joined.refresh_s
        peers = await self._providers(joined, provide=False)
        if peers:
            await self.driver.submit_wait(Subscribe(joined.name, peers, joined.roles.publish))

    # ------------------------------------------------------------ API

    async def publish(self, name: str, data: bytes) -> Published:
        check_name(name)
        if len(data) > MAX_DATA_BYTES:
            raise ColonyError(f"a topic message is at most {MAX_DATA_BYTES} bytes")
        roles = self.policy.roles(name)
        self._check_role(name, roles.publish, "publish to")
        while True:  # settled: a neighbour, unless nobody else is in
            joined = await self._join(name)
            if self.joined.get(name) is joined:  # not left while we waited
                break
        joined.last_publish = self.driver.now()  # no checkpoint since the test above
        ref = next(self._refs)
        tx, rx = trio.open_memory_channel[Published](1)
        self._published[ref] = tx
        await self.driver.submit_wait(PublishCmd(name, data, ref))
        with trio.fail_after(10.0):
            return await rx.receive()

    def check_subscribe(self, name: str) -> None:
        """Raise TopicRefused unless this node may subscribe to `name`."""
        check_name(name)
        self._check_role(name, self.policy.roles(name).subscribe, "subscribe to")

    @asynccontextmanager
    async def subscription(
        self, name: str
    ) -> AsyncIterator[trio.MemoryReceiveChannel[TopicMessage]]:
        """A channel of the topic's messages while the caller holds it."""
        self.check_subscribe(name)
        joined = await self._join(name)
        tx, rx = trio.open_memory_channel[TopicMessage](SUBSCRIBER_BUFFER)
        joined.subscribers.append(tx)
        try:
            yield rx
        finally:
            if tx in joined.subscribers:
                joined.subscribers.remove(tx)
            if not joined.subscribers:
                joined.idle_since = self.driver.now()
            tx.close()

    def topic_rows(self) -> list[dict[str, object]]:
        """`colony topic ls`: joined topics, their views and counters."""
        rows: list[dict[str, object]] = []
        for joined in self.joined.values():
            topic = self.core.core.topics.get(joined.tid)
            sub = self.core.subs.get(joined.tid)
            if topic is None or sub is None:
                continue
            hpv, tree = topic.membership, topic.tree
            rows.append({
                "topic": joined.name, "id": joined.tid.hex(),
                "subscribers": len(joined.subscribers),
                "publish_role": joined.roles.publish, "subscribe_role": joined.roles.subscribe,
                "active": [str(p) for p in hpv.active], "passive": len(hpv.passive),
                "eager": len(tree.eager), "lazy": len(tree.lazy),
                "delivered": sub.delivered, "published": sub.published,
                "publishers": len(sub.order.pubs),
                "counters": {**hpv.counters, **tree.counters, **sub.order.counters},
            })
        return rows

    def drops(self) -> dict[str, int]:
        """Every topic message or frame dropped on purpose (/v1/stats "drops")."""
        out = {f"topics.refused.{k}": self.core.counters[k] for k in REFUSALS}
        out["topics.frames_malformed"] = self.stats.frames_malformed
        out["topics.frames_unauthorized"] = self.stats.frames_unauthorized
        out["topics.subscriber_slow"] = self.stats.subscriber_slow
        out["topics.inbox_full"] = self.driver.stats.inputs_dropped
        out["topics.unknown_topic"] = self.core.core.counters["unknown_topic"]
        out["topics.chain_exchange_failed"] = self.chains.stats.exchange_failed
        out["topics.chain_refused"] = self.chains.stats.refused
        out["topics.chain_held_dropped"] = self.chains.stats.held_dropped
        totals: dict[str, int] = {}
        for topic in self.core.core.topics.values():
            for k in ("bad_id", "cache_evicted", "seen_evicted", "missing_evicted",
                      "ihave_dropped", "not_neighbor", "graft_miss"):
                totals[k] = totals.get(k, 0) + topic.tree.counters[k]
        for sub in self.core.subs.values():
            for k in ("held_overflow", "publishers_evicted"):
                totals[k] = totals.get(k, 0) + sub.order.counters[k]
            totals["gaps"] = totals.get("gaps", 0) + sub.order.counters["gaps"]
        out.update({f"topics.{k}": v for k, v in sorted(totals.items())})
        return out
