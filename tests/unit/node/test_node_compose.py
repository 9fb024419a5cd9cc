"""Node composition: routing, timer namespacing, event wiring, misuse errors."""

from dataclasses import dataclass
from typing import Any

import pytest

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
from overlay.node import Node

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
