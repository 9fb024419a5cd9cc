"""Property tests of the tier-2 cores under random input sequences.

HyParView view invariants (DSN 2007 §4) after every input: sizes bounded, no self,
active ∩ passive = ∅, pending bounded; NeighborUp/NeighborDown events track the
active view exactly. Plumtree: eager ∪ lazy ⊆ neighbours, every map within its bound.
Decoding arbitrary CBOR values raises nothing but WireError.
"""

from __future__ import annotations

import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from gossip.hyparview import HyParViewConfig, NeighborDown, NeighborUp
from gossip.plumtree import PlumtreeConfig, message_id
from gossip.topic_messages import (
    Disconnect,
    ForwardJoin,
    Gossip,
    Graft,
    IHave,
    Join,
    Neighbor,
    NeighborReply,
    Prune,
    Shuffle,
    ShuffleReply,
    decode_topic_message,
)
from gossip.topics import Broadcast, JoinTopic, TopicsConfig, TopicsCore
from overlay.core.effects import (
    Disconnected,
    Effect,
    Emit,
    PeerUnreachable,
    Received,
    SetTimer,
    TimerFired,
)
from overlay.core.errors import WireError
from overlay.core.ids import PeerId

TOPIC = bytes(32)
PEERS = [PeerId.from_ed25519(bytes([i]) * 32) for i in range(1, 25)]
ME = PEERS[0]
peer = st.sampled_from(PEERS)  # includes ME: messages naming self must be harmless
peers = st.lists(peer, max_size=10).map(tuple)
PAYLOADS = [b"p%d" % i for i in range(12)]
payload = st.sampled_from(PAYLOADS)
mid = st.sampled_from([message_id(p) for p in PAYLOADS])


class TopicsMachine(RuleBasedStateMachine):
    """One node's TopicsCore fed random messages, timers and connection failures."""

    def __init__(self) -> None:
        super().__init__()
        hpv = HyParViewConfig(active_size=4, passive_size=8)
        pt = PlumtreeConfig(cache_max=5, seen_max=7, missing_max=4, announcers_max=2)
        self.cfg = TopicsConfig(hyparview=hpv, plumtree=pt)
        self.core = TopicsCore(ME, self.cfg, random.Random(1))
        self.now = 0.0
        self.up: set[PeerId] = set()
        self.timers: dict[Any, float] = {}
        self.feed(JoinTopic(TOPIC, (PEERS[1], PEERS[2])))

    def feed(self, inp: Any) -> None:
        self.now += 0.01
        out: list[Effect] = self.core.handle(inp, self.now)
        for e in out:
            if isinstance(e, Emit) and isinstance(e.event, NeighborUp):
                assert e.event.peer not in self.up, "NeighborUp twice"
                self.up.add(e.event.peer)
            elif isinstance(e, Emit) and isinstance(e.event, NeighborDown):
                assert e.event.peer in self.up, "NeighborDown of a non-neighbour"
                self.up.discard(e.event.peer)
            elif isinstance(e, SetTimer):
                assert e.at >= self.now
                self.timers[e.timer] = e.at

    @rule(src=peer, kind=st.integers(0, 6), p=peer, ps=peers, ttl=st.integers(0, 8),
          flag=st.booleans())
    def membership(self, src: PeerId, kind: int, p: PeerId, ps: tuple[PeerId, ...],
                   ttl: int, flag: bool) -> None:
        msg = [Join(TOPIC), ForwardJoin(TOPIC, p, ttl), Neighbor(TOPIC, flag),
               NeighborReply(TOPIC, flag), Disconnect(TOPIC, flag),
               Shuffle(TOPIC, p, ps, ttl), ShuffleReply(TOPIC, ps)][kind]
        self.feed(Received(src, msg))

    @rule(src=peer, kind=st.integers(0, 3), pl=payload, m=mid, rnd=st.integers(0, 20),
          flag=st.booleans())
    def broadcast_msg(self, src: PeerId, kind: int, pl: bytes, m: bytes, rnd: int,
                      flag: bool) -> None:
        msg = [Gossip(TOPIC, message_id(pl), rnd, pl), IHave(TOPIC, ((m, rnd),)),
               Graft(TOPIC, m if flag else None, rnd), Prune(TOPIC)][kind]
        self.feed(Received(src, msg))

    @rule(pl=payload)
    def broadcast(self, pl: bytes) -> None:
        self.feed(Broadcast(TOPIC, pl))

    @rule(p=peer, unreachable=st.booleans())
    def failure(self, p: PeerId, unreachable: bool) -> None:
        self.feed(PeerUnreachable(p) if unreachable else Disconnected(p))

    @precondition(lambda self: bool(self.timers))
    @rule(data=st.data())
    def timer(self, data: Any) -> None:
        timer = data.draw(st.sampled_from(sorted(self.timers, key=repr)))
        at = self.timers.pop(timer)
        self.now = max(self.now, at)
        self.feed(TimerFired(timer))

    @invariant()
    def views(self) -> None:
        h = self.core.topics[TOPIC].membership
        cfg = self.cfg.hyparview
        assert ME not in h.active and ME not in h.passive and ME not in h.pending
        assert not set(h.active) & set(h.passive)
        assert len(h.active) <= cfg.active_size
        assert len(h.passive) <= cfg.passive_size
        assert len(h.pending) <= 2 * cfg.active_size
        assert set(h.active) == self.up

    @invariant()
    def tree(self) -> None:
        t = self.core.topics[TOPIC].tree
        cfg = self.cfg.plumtree
        assert not set(t.eager) & set(t.lazy)
        assert set(t.eager) | set(t.lazy) <= self.up
        assert len(t.cache) <= cfg.cache_max and len(t.seen) <= cfg.seen_max
        assert len(t.missing) <= cfg.missing_max
        assert all(len(a) <= cfg.announcers_max for a in t.missing.values())


TestTopicsMachine = TopicsMachine.TestCase
TestTopicsMachine.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)


cbor_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64) | st.binary(max_size=40)
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=6),
    max_leaves=30,
)


@given(tag=st.integers(19, 34), rest=st.lists(cbor_values, max_size=6))
@settings(max_examples=400, deadline=None)
def test_decode_raises_only_wire_errors(tag: int, rest: list[Any]) -> None:
    for obj in ([tag, TOPIC, *rest], [tag, *rest]):
        try:
            msg = decode_topic_message(obj)
        except WireError:
            continue
        assert decode_topic_message(msg.to_wire()) == msg
