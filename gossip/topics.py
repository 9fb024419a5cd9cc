"""Topics: the tier-2 overlay core, one HyParView swarm + Plumtree tree per topic.

DESIGN §6, tier 2. `TopicsCore.handle(inp, now)` is the one entry point (DESIGN §2):

    JoinTopic(topic, bootstrap)  join a topic's swarm through known peers
    LeaveTopic(topic)            DISCONNECT every neighbour, forget the topic
    Broadcast(topic, payload)    Plumtree broadcast to every node of the swarm
    Received(peer, msg)          a `gossip.topic_messages` message (carries its topic)
    TimerFired(timer)            ("hpv" | "pt", topic, …)
    Disconnected(peer)           the connection to a neighbour closed: failure signal
    PeerUnreachable(peer)        a dial failed

Finding bootstrap peers is the caller's job: the runtime will look the topic's
rendezvous key up in the DHT and announce itself there, then call
`JoinTopic(topic, peers_found)`. This core only needs peer ids.

Effects: `Send`, `SetTimer` and `Emit` of `NeighborUp` / `NeighborDown` (a driver keeps
connections to active neighbours open and may close the others) and `Delivered`.
HyParView's neighbour changes are fed to the same topic's Plumtree here, so the tree
always lives on the current active view.

Bounds: at most `max_topics` topics; a message for a topic we are not in is a counted
drop; everything per topic is bounded by HyParView's and Plumtree's configs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from gossip.hyparview import HyParView, HyParViewConfig, NeighborDown, NeighborUp
from gossip.plumtree import Plumtree, PlumtreeConfig
from gossip.topic_messages import (
    MAX_PAYLOAD_BYTES,
    TOPIC_ID_BYTES,
    Gossip,
    Graft,
    IHave,
    Prune,
)
from overlay.core.effects import (
    Disconnected,
    Effect,
    Emit,
    PeerUnreachable,
    Received,
    TimerFired,
)
from overlay.core.errors import ConfigError, LocalProtocolError
from overlay.core.ids import PeerId


@dataclass(frozen=True, slots=True)
class TopicsConfig:
    hyparview: HyParViewConfig = field(default_factory=HyParViewConfig)
    plumtree: PlumtreeConfig = field(default_factory=PlumtreeConfig)
    max_topics: int = 64

    def __post_init__(self) -> None:
        if not 1 <= self.max_topics <= 4096:
            raise ConfigError("topics: max_topics in [1, 4096]")


@dataclass(frozen=True, slots=True)
class JoinTopic:
    topic: bytes
    bootstrap: tuple[PeerId, ...] = ()


@dataclass(frozen=True, slots=True)
class LeaveTopic:
    topic: bytes


@dataclass(frozen=True, slots=True)
class Broadcast:
    topic: bytes
    payload: bytes


_BROADCAST_TYPES = (Gossip, IHave, Graft, Prune)


class Topic:
    """One topic's pair of cores, wired: neighbour changes go to the tree."""

    __slots__ = ("membership", "tree")

    def __init__(self, me: PeerId, topic: bytes, cfg: TopicsConfig,
                 rng: random.Random) -> None:
        self.membership = HyParView(me, topic, cfg.hyparview, rng)
        self.tree = Plumtree(me, topic, cfg.plumtree)

    def follow(self, effects: list[Effect]) -> list[Effect]:
        """Feed HyParView's neighbour events into Plumtree; return the effects."""
        for eff in effects:
            if type(eff) is Emit:
                ev = eff.event
                if type(ev) is NeighborUp:
                    self.tree.neighbor_up(ev.peer)
                elif type(ev) is NeighborDown:
                    self.tree.neighbor_down(ev.peer)
        return effects


class TopicsCore:
    """All topics of one node."""

    __slots__ = ("cfg", "counters", "me", "rng", "topics")

    def __init__(self, me: PeerId, cfg: TopicsConfig, rng: random.Random) -> None:
        self.me = me
        self.cfg = cfg
        self.rng = rng
        self.topics: dict[bytes, Topic] = {}
        self.counters: dict[str, int] = {"unknown_topic": 0, "topics_full": 0}

    def handle(self, inp: Any, now: float) -> list[Effect]:
        t = type(inp)
        if t is Received:
            return self._received(inp.peer, inp.msg, now)
        if t is TimerFired:
            timer = inp.timer
            topic = self.topics.get(timer[1])
            if topic is None:
                return []  # a stale timer of a topic we left
            if timer[0] == "hpv":
                return topic.follow(topic.membership.on_timer(timer, now))
            return topic.tree.on_timer(timer, now)
        if t is Disconnected or t is PeerUnreachable:
            out: list[Effect] = []
            for topic in self.topics.values():
                out += topic.follow(topic.membership.peer_failed(
                    inp.peer, now, unreachable=t is PeerUnreachable))
            return out
        return self._command(inp, now)

    def _command(self, cmd: Any, now: float) -> list[Effect]:
        t = type(cmd)
        if t is JoinTopic:
            topic = self._topic(cmd.topic, create=True)
            if topic is None:
                return []
            return topic.follow(topic.membership.join(cmd.bootstrap, now))
        if t is LeaveTopic:
            left = self.topics.pop(cmd.topic, None)
            return [] if left is None else left.membership.leave()
        if t is Broadcast:
            if len(cmd.payload) > MAX_PAYLOAD_BYTES:
                raise LocalProtocolError(f"payload over {MAX_PAYLOAD_BYTES} bytes")
            topic = self.topics.get(cmd.topic)
            if topic is None:
                raise LocalProtocolError("broadcast to a topic this node has not joined")
            return topic.tree.broadcast(cmd.payload, now)
        raise LocalProtocolError(f"topics core cannot handle {type(cmd).__name__}")

    def _received(self, peer: PeerId, msg: Any, now: float) -> list[Effect]:
        topic = self.topics.get(getattr(msg, "topic", b""))
        if topic is None:
            self.counters["unknown_topic"] += 1
            return []
        if isinstance(msg, _BROADCAST_TYPES):
            return topic.tree.on_message(peer, msg, now)
        return topic.follow(topic.membership.on_message(peer, msg, now))

    def _topic(self, topic_id: bytes, *, create: bool) -> Topic | None:
        if len(topic_id) != TOPIC_ID_BYTES:
            raise LocalProtocolError(f"a topic id is {TOPIC_ID_BYTES} bytes")
        topic = self.topics.get(topic_id)
        if topic is None and create:
            if len(self.topics) >= self.cfg.max_topics:
                self.counters["topics_full"] += 1
                return None
            topic = self.topics[topic_id] = Topic(self.me, topic_id, self.cfg, self.rng)
        return topic

    def entries(self) -> int:
        """Entries held across every topic (the per-node bound tests check)."""
        return sum(t.membership.entries() + t.tree.entries() for t in self.topics.values())
