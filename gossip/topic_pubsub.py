"""Topics for users: signed, authorised, ordered publish/subscribe over tier 2 (sans-IO).

`PubSub` wraps `TopicsCore` (HyParView + Plumtree per topic, gossip/topics.py) and adds
what users are promised (docs/gossip.md "Topics in the daemon"):

- every payload is a message signed by its publisher's node key, with the publisher's
  certificate chain in colony mode (gossip/topic_signed.py);
- a `Gossip` carrying a payload not seen before is checked *before* Plumtree forwards
  it: signature and fields (`forged`, `malformed`), freshness and replay
  (`stale`, `future`, `replayed`; gossip/topic_order.py), and, in colony mode,
  that the publisher's chain grants the topic's publish role (`unauthorized`). A
  refused message is counted and goes nowhere: not to the user, not to the neighbours.
  A *late* message (genuine, but its publisher's order already skipped it after the
  hold) is not refused: it is forwarded and delivered once, flagged `late` and counted
  (`late`), so consumers that need every message (triggers, handlers) get it and those
  promised order (the API's streams) drop it;
  Duplicates of a payload already seen go straight to Plumtree (it prunes the link)
  without another signature check;
- deliveries are de-duplicated by message id (Plumtree's seen set) and by (epoch,
  seq), and released per publisher in order (`TopicMessage.gap` counts skipped ones).

Entry point `handle(inp, now)` (DESIGN §2). Commands: `Subscribe(name, bootstrap,
publish_role)` (joins; on a joined topic, JOINs through the first contact that is not
a neighbour while the active view has room, which merges swarms that formed apart),
`Unsubscribe`,
`Publish(name, data, ref)`. Inputs: `Received(peer, topic message)`, `TimerFired`,
`Disconnected(peer)`, `PeerUnreachable(peer)`. Effects: those of `TopicsCore`, with its
`Delivered` replaced by `Emit(TopicMessage)`, plus `Emit(Published)` and the hold
timers `("order", topic, publisher)`.

The role check is an injected `Authorizer` (None: open mode, signatures still
required); `ChainAuthorizer` implements it with `verify_chain` and the node's gossip
`Admission` (the same revocations), caching verdicts by leaf signature.

Bounds: `TopicsCore`'s (topics, views, caches), plus per topic a `PublisherOrder`
(publishers × held) and the authorizer's cache; nothing grows with the swarm's size.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Protocol

from gossip.admission import Admission
from gossip.plumtree import Delivered, message_id
from gossip.topic_messages import Gossip
from gossip.topic_order import OrderConfig, PublisherOrder
from gossip.topic_signed import SignedMessage, open_payload, seal_message, topic_id
from gossip.topics import Broadcast, JoinTopic, LeaveTopic, TopicsConfig, TopicsCore
from overlay.core.certs import CLOCK_SKEW_S, Certificate, verify_chain
from overlay.core.crypto import Envelope, KeyPair
from overlay.core.effects import (
    Disconnected,
    Effect,
    Emit,
    PeerUnreachable,
    Received,
    SetTimer,
    TimerFired,
)
from overlay.core.errors import BadSignature, LocalProtocolError, RemoteProtocolError, WireError
from overlay.core.ids import PeerId

#: Counters of refused messages (each is a drop in /v1/stats).
REFUSALS = ("forged", "malformed", "stale", "future", "replayed", "late", "unauthorized",
            "own_echo")


@dataclass(frozen=True, slots=True)
class PubSubConfig:
    topics: TopicsConfig = field(default_factory=TopicsConfig)
    order: OrderConfig = field(default_factory=OrderConfig)


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Join topic `name` through `bootstrap` (or add them as contacts if joined)."""

    name: str
    bootstrap: tuple[PeerId, ...] = ()
    publish_role: str = "submit"


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    name: str


@dataclass(frozen=True, slots=True)
class Publish:
    """Sign and broadcast `data` on joined topic `name`; `ref` comes back in Published."""

    name: str
    data: bytes
    ref: int = 0


@dataclass(frozen=True, slots=True)
class TopicMessage:
    """A user message, delivered once, in its publisher's order."""

    name: str
    msg_id: bytes
    publisher: PeerId
    epoch: int
    seq: int
    at: float
    data: bytes
    hop: int
    gap: int  # messages of this publisher skipped just before this one
    local: bool  # published by this node
    #: The verified message with its signed envelope (triggers carry it as proof).
    signed: SignedMessage | None = None
    #: Arrived after its publisher's order skipped it (`gap` of a later message
    #: counted it): delivered once, out of order.
    late: bool = False


@dataclass(frozen=True, slots=True)
class Published:
    name: str
    msg_id: bytes
    seq: int
    ref: int


class Authorizer(Protocol):
    def authorize(self, publisher: PeerId, chain: tuple[Envelope, ...], role: str,
                  now: float) -> str | None:
        """None if `chain` lets `publisher` hold `role` at `now`; else the reason."""
        ...


class ChainAuthorizer:
    """Colony-mode publish check: `verify_chain` against the gossip `Admission`'s
    owner and revocations; positive verdicts cached (bounded) per leaf signature and
    role while the revocation generation and the chain's validity window hold."""

    __slots__ = ("_cache", "admission", "max_cache")

    def __init__(self, admission: Admission, max_cache: int = 1024) -> None:
        self.admission = admission
        self.max_cache = max(1, max_cache)
        self._cache: dict[tuple[bytes, str], tuple[PeerId, int, float, float]] = {}

    def authorize(self, publisher: PeerId, chain: tuple[Envelope, ...], role: str,
                  now: float) -> str | None:
        if not chain:
            return "no certificate chain with the message"
        key = (chain[-1].signature, role)
        hit = self._cache.get(key)
        gen = self.admission.generation
        if hit is not None and hit[0] == publisher and hit[1] == gen and hit[2] <= now < hit[3]:
            return None
        try:
            certs = tuple(Certificate.from_envelope(e) for e in chain)
            verify_chain(certs, self.admission.colony_owner, publisher, role, now,
                         self.admission.revocations)
        except RemoteProtocolError as e:
            return str(e)
        if len(self._cache) >= self.max_cache:
            del self._cache[next(iter(self._cache))]
        self._cache[key] = (publisher, gen, max(c.issued for c in certs) - CLOCK_SKEW_S,
                            min(c.expires for c in certs))
        return None


@dataclass(slots=True)
class _Sub:
    name: str
    publish_role: str
    order: PublisherOrder[tuple[SignedMessage, Delivered]]
    seq: int = 0
    delivered: int = 0
    published: int = 0


class PubSub:
    """All user topics of one node."""

    __slots__ = ("_incoming", "_late", "_order_cfg", "authorizer", "chain", "colony", "core",
                 "counters", "epoch", "keypair", "me", "subs")

    def __init__(self, keypair: KeyPair, cfg: PubSubConfig, rng: random.Random, *,
                 epoch: int, colony: bytes | None = None, chain: tuple[Envelope, ...] = (),
                 authorizer: Authorizer | None = None) -> None:
        self.keypair = keypair
        self.me = keypair.peer_id
        self.epoch = epoch
        self.colony = colony
        self.chain = chain
        self.authorizer = authorizer
        self.core = TopicsCore(self.me, cfg.topics, rng)
        self._order_cfg = cfg.order
        self.subs: dict[bytes, _Sub] = {}
        self._incoming: dict[bytes, SignedMessage] = {}
        #: Ids of the payloads in `_incoming` that arrive late (see the module docstring).
        self._late: set[bytes] = set()
        self.counters: dict[str, int] = dict.fromkeys(REFUSALS, 0)

    # ------------------------------------------------------------ entry point

    def handle(self, inp: Any, now: float) -> list[Effect]:
        t = type(inp)
        if t is Received:
            if type(inp.msg) is Gossip:
                return self._gossip(inp.peer, inp.msg, now)
            return self._follow(self.core.handle(inp, now), now)
        if t is TimerFired:
            timer = inp.timer
            if timer[0] == "order":
                return self._expire(timer[1], timer[2], now)
            return self._follow(self.core.handle(inp, now), now)
        if t is Disconnected or t is PeerUnreachable:
            return self._follow(self.core.handle(inp, now), now)
        if t is Publish:
            return self._publish(inp, now)
        if t is Subscribe:
            return self._subscribe(inp, now)
        if t is Unsubscribe:
            tid = topic_id(inp.name, self.colony)
            if self.subs.pop(tid, None) is None:
                return []
            return self.core.handle(LeaveTopic(tid), now)
        raise LocalProtocolError(f"pubsub core cannot handle {t.__name__}")

    # ------------------------------------------------------------ commands

    def _subscribe(self, cmd: Subscribe, now: float) -> list[Effect]:
        tid = topic_id(cmd.name, self.colony)
        sub = self.subs.get(tid)
        if sub is not None:
            sub.publish_role = cmd.publish_role
            contacts = self._new_contacts(tid, cmd.bootstrap)
            if not contacts:
                return []
        else:
            if len(self.subs) >= self.core.cfg.max_topics:
                raise LocalProtocolError(f"at most {self.core.cfg.max_topics} topics")
            self.subs[tid] = _Sub(cmd.name, cmd.publish_role, PublisherOrder(self._order_cfg))
            contacts = cmd.bootstrap
        return self._follow(self.core.handle(JoinTopic(tid, contacts), now), now)

    def _new_contacts(self, tid: bytes, peers: tuple[PeerId, ...]) -> tuple[PeerId, ...]:
        """Rendezvous peers worth a JOIN on a joined topic: not neighbours (nor asked
        already) while the active view has room, else unknown to both views. A JOIN
        through a peer of another swarm merges the two."""
        topic = self.core.topics.get(tid)
        if topic is None:
            return peers
        hpv = topic.membership
        known: dict[PeerId, object] = {**hpv.active, **hpv.pending}
        if len(hpv.active) >= hpv.cfg.active_size:
            known.update(hpv.passive)
        return tuple(p for p in peers if p not in known and p != self.me)

    def _publish(self, cmd: Publish, now: float) -> list[Effect]:
        tid = topic_id(cmd.name, self.colony)
        sub = self.subs.get(tid)
        if sub is None:
            raise LocalProtocolError(f"publish to topic {cmd.name!r} before joining it")
        sub.seq += 1
        payload, own = seal_message(self.keypair, self.chain, cmd.name, self.epoch, sub.seq,
                                    now, cmd.data)
        out = self._follow(self.core.handle(Broadcast(tid, payload), now), now)
        sub.published += 1
        sub.delivered += 1
        msg_id = message_id(payload)
        out.append(Emit(TopicMessage(cmd.name, msg_id, self.me, self.epoch, sub.seq, now,
                                     cmd.data, 0, 0, True, own)))
        out.append(Emit(Published(cmd.name, msg_id, sub.seq, cmd.ref)))
        return out

    # ------------------------------------------------------------ inputs

    def _gossip(self, peer: PeerId, g: Gossip, now: float) -> list[Effect]:
        sub = self.subs.get(g.topic)
        topic = self.core.topics.get(g.topic)
        if sub is None or topic is None or g.msg_id in topic.tree.seen:
            return self._follow(self.core.handle(Received(peer, g), now), now)
        reason = self._refusal(sub, g, now)
        if reason is not None:
            self.counters[reason] += 1
            return []
        try:
            return self._follow(self.core.handle(Received(peer, g), now), now)
        finally:
            self._incoming.pop(g.msg_id, None)
            self._late.discard(g.msg_id)

    def _refusal(self, sub: _Sub, g: Gossip, now: float) -> str | None:
        """Why a new payload must not be delivered nor forwarded (None: it may)."""
        try:
            m = open_payload(g.payload, g.topic, self.colony)
        except BadSignature:
            return "forged"
        except WireError:
            return "malformed"
        if m.publisher == self.me:
            return "own_echo"  # ours, after our seen window: never deliver twice
        reason = sub.order.check(m.publisher, m.epoch, m.seq, m.at, now)
        if reason == "late":
            self._late.add(g.msg_id)
        elif reason is not None:
            return reason
        if self.authorizer is not None and self.authorizer.authorize(
                m.publisher, m.chain, sub.publish_role, now) is not None:
            return "unauthorized"
        self._incoming[g.msg_id] = m
        return None

    def _expire(self, tid: bytes, publisher: PeerId, now: float) -> list[Effect]:
        sub = self.subs.get(tid)
        if sub is None:
            return []
        out: list[Effect] = []
        for (m, d), gap in sub.order.expire(publisher, now):
            out.append(self._deliver(sub, m, d, gap))
        return out

    @staticmethod
    def _deliver(sub: _Sub, m: SignedMessage, d: Delivered, gap: int,
                 late: bool = False) -> Emit:
        sub.delivered += 1
        return Emit(TopicMessage(sub.name, d.msg_id, m.publisher, m.epoch, m.seq, m.at, m.data,
                                 d.hop, gap, False, m, late))

    def _follow(self, effects: list[Effect], now: float) -> list[Effect]:
        """Replace Plumtree's `Delivered` with ordered `TopicMessage`s."""
        out: list[Effect] = []
        for eff in effects:
            if type(eff) is not Emit or type(eff.event) is not Delivered:
                out.append(eff)
                continue
            d: Delivered = eff.event
            sub = self.subs.get(d.topic)
            if sub is None:
                continue
            if d.sender is None:
                continue  # our own broadcast: `_publish` delivers it, with its data
            m = self._incoming.get(d.msg_id)
            if m is None:
                continue  # cannot happen: every new payload went through _refusal
            if d.msg_id in self._late and sub.order.take_late(m.publisher, m.seq):
                self.counters["late"] += 1
                out.append(self._deliver(sub, m, d, 0, late=True))
                continue
            ready, deadline = sub.order.accept(m.publisher, m.epoch, m.seq, (m, d), now)
            for (msg, dd), gap in ready:
                out.append(self._deliver(sub, msg, dd, gap))
            if deadline is not None:
                out.append(SetTimer(("order", d.topic, m.publisher), deadline))
        return out
