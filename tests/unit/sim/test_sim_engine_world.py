"""Engine ordering, and the world's timer semantics (replace, cancel, crash, lockstep)."""

import random
from typing import Any

from overlay.core.crypto import KeyPair
from overlay.core.effects import CancelTimer, Effect, Emit, Received, Send, SetTimer, TimerFired
from sim.engine import Engine
from sim.network import Network, NetworkConfig
from sim.world import World


def test_engine_runs_in_time_then_scheduling_order() -> None:
    e = Engine()
    seen: list[str] = []
    e.at(2.0, seen.append, "c")
    e.at(1.0, seen.append, "a")
    e.at(1.0, seen.append, "b")
    e.at(5.0, seen.append, "late")
    assert e.run_until(3.0) == 3
    assert seen == ["a", "b", "c"]
    assert e.now == 3.0
    e.at(0.5, seen.append, "past")  # never earlier than now
    e.run_until(3.0)
    assert seen[-1] == "past"
    assert e.run(max_events=1) == 1
    assert seen[-1] == "late"


class Recorder:
    """A core that records inputs and returns scripted effects."""

    def __init__(self) -> None:
        self.inputs: list[tuple[float, Any]] = []
        self.script: list[Effect] = []

    def handle(self, inp: Any, now: float) -> list[Effect]:
        self.inputs.append((now, inp))
        out, self.script = self.script, []
        return out


def _world(grid: dict[Any, float] | None = None) -> tuple[World, list[Recorder], list[Any]]:
    net = Network(NetworkConfig(jitter_frac=0.0), random.Random(1))
    w = World(Engine(), net, timer_grid=grid)
    cores = [Recorder(), Recorder()]
    for i, c in enumerate(cores):
        w.add(KeyPair.from_rng_seed(bytes([i + 1]) * 32).peer_id, c, region="europe")
    emitted: list[Any] = []
    w.on_emit = lambda idx, ev: emitted.append((idx, ev))
    return w, cores, emitted


def test_latest_deadline_wins_and_cancel_and_crash_void_timers() -> None:
    w, (a, _), _ = _world()
    w.apply(w.nodes[0], [SetTimer("t", 5.0), SetTimer("t", 2.0), SetTimer("u", 3.0),
                         CancelTimer("u"), SetTimer("v", 4.0)])
    w.engine.run_until(3.5)
    assert [(t, i.timer) for t, i in a.inputs] == [(2.0, "t")]
    w.crash(0)
    w.engine.run_until(10.0)
    assert len(a.inputs) == 1  # "v" died with the node
    w.restart(0, a)
    w.apply(w.nodes[0], [SetTimer("v", 11.0)])
    w.engine.run_until(12.0)
    assert a.inputs[-1] == (11.0, TimerFired("v"))


def test_send_delivers_after_network_delay_and_not_to_the_dead() -> None:
    w, (a, b), emitted = _world()
    a.script = [Send(w.nodes[1].peer, "hello"), Emit("ev")]
    w.inject(0, "go")
    assert emitted == [(0, "ev")]
    w.engine.run_until(1.0)
    (t, inp), = b.inputs
    assert inp == Received(w.nodes[0].peer, "hello")
    assert 0.0 < t == w.net.base_delay_s(0, 1) < 0.05
    w.crash(1)
    a.script = [Send(w.nodes[1].peer, "again")]
    w.inject(0, "go")
    w.engine.run_until(2.0)
    assert len(b.inputs) == 1 and w.stats["unreachable"] == 1
    assert w.sent == [2, 0] and w.received == [0, 1]


def test_lockstep_grid_rounds_deadlines_up() -> None:
    w, (a, _), _ = _world({"probe": 1.0})
    w.apply(w.nodes[0], [SetTimer("probe", 2.3), SetTimer("other", 2.3)])
    w.engine.run_until(5.0)
    assert [(t, i.timer) for t, i in a.inputs] == [(2.3, "other"), (3.0, "probe")]


class _Ping:
    """A message routed to the "echo" part."""

    def __init__(self, hops: int) -> None:
        self.hops = hops

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Ping) and other.hops == self.hops

    def __hash__(self) -> int:
        return self.hops


class _Echo:
    """A part answering a ping with sends, timers (set, re-set, cancelled) and, every
    third hop, an event: every kind of effect a real part gives."""

    def __init__(self, peers: list[Any], log: list[Any], me: int) -> None:
        self.peers, self.log, self.me = peers, log, me

    def handle(self, inp: Any, now: float) -> list[Effect]:
        self.log.append((self.me, now, inp))
        if isinstance(inp, TimerFired):
            return [SetTimer("late", now + 0.7)] if inp.timer == "tick" else []
        hops = inp.msg.hops
        if hops >= 12:
            return []
        out: list[Effect] = [Send(self.peers[(self.me + 1) % len(self.peers)], _Ping(hops + 1)),
                             SetTimer("tick", now + 0.25), SetTimer("gone", now + 0.1),
                             CancelTimer("gone")]
        if hops % 3 == 0:
            out.append(Emit(("hop", hops)))
        return out


class _ViaNodeHandle(World):
    """The world as before the direct dispatch: every input through `Node.handle`."""

    def _handle_part(self, n: Any, core: Any, name: str, inp: Any, now: float) -> None:
        if isinstance(inp, TimerFired):
            inp = TimerFired((name, inp.timer))
        self.apply(n, core.handle(inp, now))


def _echo_run(world_cls: type[World]) -> list[Any]:
    from overlay.node import Node

    w = world_cls(Engine(), Network(NetworkConfig(), random.Random(3)))
    log: list[Any] = []
    w.on_emit = lambda idx, ev: log.append(("emit", idx, w.engine.now, ev))
    keys = [KeyPair.from_rng_seed(bytes([i + 1]) * 32).peer_id for i in range(3)]
    for i, peer in enumerate(keys):
        node = Node(peer)
        node.add_part("echo", _Echo(keys, log, i), messages=[_Ping])
        w.add(peer, node, region="europe")
    w.inject(0, Received(keys[2], _Ping(0)))
    w.engine.run_until(30.0)
    return log


def test_direct_part_dispatch_matches_node_handle() -> None:
    """sim/world.py hands a `Node`'s inputs straight to the routed part and keys its
    timers itself (docs/simulation.md, Performance "Seventh"): the same inputs at the
    same times, the same events, as through `Node.handle`."""
    direct = _echo_run(World)
    assert direct == _echo_run(_ViaNodeHandle)
    kinds = {type(e[2]).__name__ for e in direct if e[0] != "emit"}
    assert {"Received", "TimerFired"} <= kinds and any(e[0] == "emit" for e in direct)
