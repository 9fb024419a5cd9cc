"""Node composition: routing, timer namespacing, event wiring, misuse errors, and
`build_node` (the production cores composed for the daemon and the simulator)."""

import random
from dataclasses import dataclass
from typing import Any

import pytest

from dht.api import KadConfig
from dht.wire import DhtRequest, KadMessage, MessageType
from gossip.events import Join
from gossip.profiles import profile
from overlay.capsule.core import CapsuleCore
from overlay.core.crypto import KeyPair
from overlay.core.effects import (
    CancelTimer,
    Effect,
    Emit,
    PeerUnreachable,
    Received,
    Send,
    SetTimer,
    TimerFired,
)
from overlay.core.errors import LocalProtocolError
from overlay.exchange.messages import BitswapMessage
from overlay.node import DhtSetup, GossipSetup, Node, NodeParts, build_node

ME = KeyPair(b"\x07" * 32).peer_id
P = KeyPair(b"\x08" * 32).peer_id


@dataclass(frozen=True)
class Hello:
    text: str


@dataclass(frozen=True)
class Joined:
    peer: Any


@dataclass(frozen=True)
class AddPeer:
    peer: Any


@dataclass(frozen=True)
class Ping:
    pass


class Recorder:
    def __init__(self, reply: list[Effect] | None = None) -> None:
        self.inputs: list[Any] = []
        self.reply = reply or []

    def handle(self, inp: Any, now: float) -> list[Effect]:
        self.inputs.append(inp)
        return list(self.reply)


def test_routes_messages_commands_timers_and_unreachable() -> None:
    gossip = Recorder([SetTimer("probe", 5.0), CancelTimer("old"), Emit(Joined(P))])
    dht = Recorder([Send(P, Ping())])
    node = Node(ME)
    node.add_part("gossip", gossip, messages=[Hello])
    node.add_part("dht", dht, commands=[AddPeer])
    node.wire(Joined, lambda ev: [("dht", AddPeer(ev.peer))])

    out = node.handle(Received(P, Hello("hi")), 1.0)
    assert out == [
        SetTimer(("gossip", "probe"), 5.0),
        CancelTimer(("gossip", "old")),
        Emit(Joined(P)),
        Send(P, Ping()),  # from dht, via the wiring
    ]
    assert dht.inputs == [AddPeer(P)]

    node.handle(TimerFired(("gossip", "probe")), 5.0)
    assert gossip.inputs[-1] == TimerFired("probe")

    node.handle(PeerUnreachable(P), 6.0)
    assert gossip.inputs[-1] == dht.inputs[-1] == PeerUnreachable(P)


def test_unknown_messages_and_timers_are_counted_not_raised() -> None:
    node = Node(ME)
    node.add_part("a", Recorder(), messages=[Hello])
    assert node.handle(Received(P, Ping()), 0.0) == []
    assert node.handle(TimerFired(("zz", 1)), 0.0) == []
    assert node.handle(TimerFired("bare"), 0.0) == []
    assert node.unrouted == 3


def test_misuse_raises_local_protocol_error() -> None:
    node = Node(ME)
    node.add_part("a", Recorder(), messages=[Hello])
    with pytest.raises(LocalProtocolError):
        node.add_part("a", Recorder())
    with pytest.raises(LocalProtocolError):
        node.add_part("b", Recorder(), messages=[Hello])
    with pytest.raises(LocalProtocolError, match="no part takes"):
        node.handle(AddPeer(P), 0.0)


def test_wiring_loops_are_cut() -> None:
    node = Node(ME)
    node.add_part("a", Recorder([Emit(Joined(P))]), commands=[AddPeer])
    node.wire(Joined, lambda ev: [("a", AddPeer(ev.peer))])
    with pytest.raises(LocalProtocolError, match="deeper"):
        node.handle(AddPeer(P), 0.0)


# ---------------------------------------------------------------- build_node


class _NoBlocks:
    def get_block(self, cid: bytes) -> bytes | None:
        return None

    def has_block(self, cid: bytes) -> bool:
        return False


def _full(seed: int) -> NodeParts:
    kp = KeyPair(b"\x07" * 32)
    return build_node(
        kp, random.Random(seed), gossip=GossipSetup(profile("lan")),
        dht=DhtSetup(KadConfig()), blocks=_NoBlocks(),
        capsule=CapsuleCore(kp.peer_id, kp, rng=random.Random(seed)),
    )


def test_build_node_composes_the_production_cores_in_order() -> None:
    built = _full(1)
    node = built.node
    assert list(node.parts) == ["gossip", "dht", "exchange", "capsule"]
    assert node.parts["gossip"] is built.swim and node.parts["dht"] is built.kad
    assert node.parts["exchange"] is built.exchange and node.parts["capsule"] is built.capsule
    assert node.part_for_message(BitswapMessage()) == "exchange"
    assert node.part_for_message(DhtRequest(1, KadMessage(MessageType.PING))) == "dht"


def test_build_node_is_deterministic_for_a_seeded_rng() -> None:
    """Same seed, same node: every core's rng is drawn from the caller's rng."""
    a, b, c = _full(7), _full(7), _full(8)
    first = a.node.handle(Join(), 0.0)
    assert first == b.node.handle(Join(), 0.0) != c.node.handle(Join(), 0.0)
    assert any(isinstance(e, SetTimer) and e.timer == ("gossip", "probe") for e in first)


def test_build_node_only_what_is_named() -> None:
    kp = KeyPair(b"\x07" * 32)
    built = build_node(kp, random.Random(1), dht=DhtSetup(KadConfig()))
    assert list(built.node.parts) == ["dht"] and built.swim is None and built.exchange is None
    with pytest.raises(LocalProtocolError, match="needs gossip"):
        build_node(kp, random.Random(1), capsule=CapsuleCore(kp.peer_id, kp))


def test_build_node_with_cells_keeps_swims_draws_and_takes_cell_commands() -> None:
    """Cells wrap gossip in a `CellNode`; SWIM and the DHT draw as without cells."""
    from gossip.cell_node import CellNode
    from gossip.cells import CellConfig, CellId, StartCells
    from overlay.node import CellSetup

    kp = KeyPair(b"\x07" * 32)

    def make(cells: CellSetup | None) -> NodeParts:
        return build_node(kp, random.Random(5), gossip=GossipSetup(profile("lan")),
                          dht=DhtSetup(KadConfig()), cells=cells)

    plain, celled = make(None), make(CellSetup(CellConfig(cap=4)))
    assert isinstance(celled.node.parts["gossip"], CellNode) and celled.cell_node is not None
    assert celled.cell_node.swim is celled.swim and plain.cell_node is None
    assert plain.node.handle(Join(), 0.0) == celled.node.handle(Join(), 0.0)
    out = celled.node.handle(StartCells(CellId()), 0.0)
    assert any(isinstance(e, SetTimer) and e.timer == ("gossip", ("cells", "check"))
               for e in out)
    with pytest.raises(LocalProtocolError, match="need gossip"):
        build_node(kp, random.Random(1), cells=CellSetup(CellConfig()))


def test_quick_tick_is_routed_to_the_owning_part_and_matches_handle() -> None:
    """`Node.quick_tick` asks the part that owns the timer (gossip's idle tick) and
    answers None for parts without a fast path and for foreign timer ids."""
    parts = _full(3)
    node = parts.node
    at = node.quick_tick(("gossip", "gossip"), 5.0)  # never joined: queues are empty
    assert at == 5.0 + profile("lan").gossip_interval_s
    assert node.handle(TimerFired(("gossip", "gossip")), 5.0) == [
        SetTimer(("gossip", "gossip"), at)
    ]
    assert node.quick_tick(("gossip", "probe"), 5.0) is None
    assert node.quick_tick(("dht", "refresh"), 5.0) is None  # no fast path in the DHT
    assert node.quick_tick("gossip", 5.0) is None  # not a namespaced timer id
    assert node.unrouted == 0
