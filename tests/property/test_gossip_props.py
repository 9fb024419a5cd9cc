"""Property tests: codec round trips and fuzz, and a state machine over core inputs."""

import contextlib
import random
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from gossip.events import Join, SendUserEvent, UpdateAd
from gossip.messages import (
    Accuse,
    AccuseKind,
    Ack,
    AdUpdate,
    Alive,
    Gossip,
    Nack,
    Ping,
    PingReq,
    UserEvent,
    decode_message,
)
from gossip.profiles import LAN
from gossip.resources import ResourceAd
from gossip.swim import Swim
from overlay.core.crypto import KeyPair
from overlay.core.effects import Received, TimerFired
from overlay.core.errors import LocalProtocolError, WireError
from overlay.core.wire import cbor_decode, cbor_encode

KEYS = [KeyPair(bytes([i + 1]) * 32) for i in range(5)]
IDS = [k.peer_id for k in KEYS]

seqs = st.integers(0, 2**63 - 1)
incs = st.integers(0, 2**40)


@st.composite
def updates(draw: Any) -> Any:
    k = draw(st.sampled_from(KEYS))
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return Alive.create(k, draw(incs))
    if kind == 1:
        target = draw(st.sampled_from([i for i in IDS if i != k.peer_id]))
        return Accuse.create(k, target, draw(incs), draw(st.sampled_from(list(AccuseKind)[:2])))
    if kind == 2:
        ad = ResourceAd.make(
            cpu_cores=draw(st.integers(0, 512)),
            cpu_load=draw(st.floats(0, 512, allow_nan=False)),
            labels=draw(st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3)),
        )
        return AdUpdate.create(k, draw(incs), ad.to_body())
    return UserEvent.create(
        k, draw(st.text(min_size=1, max_size=20)), draw(st.binary(max_size=200)), 1, 0
    )


messages = st.one_of(
    st.builds(
        Ping, seqs, st.sampled_from([None, *IDS]), st.lists(updates(), max_size=3).map(tuple)
    ),
    st.builds(Ack, seqs, st.lists(updates(), max_size=3).map(tuple)),
    st.builds(Nack, seqs),
    st.builds(PingReq, seqs, st.sampled_from(IDS), st.lists(updates(), max_size=2).map(tuple)),
    st.builds(Gossip, st.lists(updates(), max_size=4).map(tuple)),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages)
def test_round_trip(msg: Any) -> None:
    assert decode_message(cbor_decode(cbor_encode(msg.to_wire()))) == msg


cbor_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64)
    | st.binary(max_size=40)
    | st.text(max_size=10)
    | st.floats(allow_nan=True),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=3), inner, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 8), st.lists(cbor_values, max_size=5))
def test_fuzz_random_values_raise_only_wire_errors(tag: int, rest: list[Any]) -> None:
    with contextlib.suppress(WireError):
        decode_message([tag, *rest])


@settings(max_examples=150, deadline=None)
@given(messages, st.data())
def test_fuzz_mutated_messages_raise_only_wire_errors(msg: Any, data: Any) -> None:
    wire = msg.to_wire()
    i = data.draw(st.integers(0, len(wire) - 1))
    wire[i] = data.draw(cbor_values)
    with contextlib.suppress(WireError):
        decode_message(wire)


class CoreMachine(RuleBasedStateMachine):
    """Random inputs to one core; its queues stay bounded, incarnations never drop."""

    def __init__(self) -> None:
        super().__init__()
        cfg = LAN.with_(max_broadcasts=16, max_relays=4, max_user_events_queued=4)
        self.core = Swim(KEYS[0], cfg, rng=random.Random(0))
        self.now = 0.0
        self.core.handle(Join((IDS[1],)), self.now)
        self.incs: dict[Any, int] = {}
        self.own_inc = 0

    def _feed(self, inp: Any) -> None:
        self.now += 0.05
        self.core.handle(inp, self.now)

    @rule(u=updates(), sender=st.sampled_from(IDS[1:]))
    def receive_update(self, u: Any, sender: Any) -> None:
        self._feed(Received(sender, Gossip((u,))))

    @rule(msg=messages, sender=st.sampled_from(IDS[1:]))
    def receive_message(self, msg: Any, sender: Any) -> None:
        self._feed(Received(sender, msg))

    @rule(timer=st.sampled_from(["probe", "probe-timeout", "gossip", "pushpull", "junk"]))
    def fire(self, timer: str) -> None:
        self._feed(TimerFired(timer))

    @rule(peer=st.sampled_from(IDS), seq=st.integers(0, 20))
    def fire_keyed(self, peer: Any, seq: int) -> None:
        self._feed(TimerFired(("suspect", peer)))
        self._feed(TimerFired(("relay", seq)))

    @rule(payload=st.binary(max_size=300))
    def send_event(self, payload: bytes) -> None:
        with contextlib.suppress(LocalProtocolError):
            self._feed(SendUserEvent("e", payload))

    @rule(cores=st.integers(0, 64))
    def update_ad(self, cores: int) -> None:
        self._feed(UpdateAd(ResourceAd(cpu_cores=cores)))

    @invariant()
    def bounded_and_monotonic(self) -> None:
        core, cfg = self.core, self.core.config
        sizes = core.queue_sizes()
        assert sizes["broadcasts"] <= cfg.max_broadcasts
        assert sizes["user_events"] <= cfg.max_user_events_queued
        assert sizes["relays"] <= cfg.max_relays
        assert sizes["verify_cache"] <= cfg.verify_cache_size
        assert core.incarnation >= self.own_inc
        self.own_inc = core.incarnation
        for p, m in core.members.items():
            assert m.incarnation >= self.incs.get(p, 0)
            self.incs[p] = m.incarnation
        assert core.num_members() == 1 + sum(1 for m in core.members.values() if m.state < 2)


TestCoreMachine = CoreMachine.TestCase
TestCoreMachine.settings = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
