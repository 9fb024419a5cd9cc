"""Push-sum (Kempe et al. 2003): mass conservation on any graph, convergence to the true
average and sum on connected graphs, epochs, and a decoder that raises only WireError."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossip.pushsum import ROUND_TIMER, PushSum, PushSumShare, Restart, SetNeighbors
from overlay.core.effects import Received, Send, TimerFired
from overlay.core.errors import LocalProtocolError, WireError
from overlay.core.ids import PeerId

PEERS = [PeerId.from_ed25519(bytes([i]) * 32) for i in range(64)]


def _network(n: int, values: list[float], edges: dict[int, list[int]], *, average: bool,
             seed: int) -> list[PushSum]:
    nodes = []
    for i in range(n):
        ps = PushSum(random.Random(seed * 1000 + i), average=average)
        ps.handle(Restart(1, (values[i], 1.0), 1.0 if average or i == 0 else 0.0), 0.0)
        ps.handle(SetNeighbors(tuple(PEERS[j] for j in edges[i])), 0.0)
        nodes.append(ps)
    return nodes


def _round(nodes: list[PushSum], t: float) -> None:
    """Synchronous round: every node sends, then every share is delivered."""
    mail: list[tuple[int, Any]] = []
    for ps in nodes:
        for eff in ps.handle(TimerFired(ROUND_TIMER), t):
            if isinstance(eff, Send):
                mail.append((PEERS.index(eff.peer), eff.msg))
    for j, msg in mail:
        nodes[j].handle(Received(PEERS[0], msg), t)


@st.composite
def graphs(draw: st.DrawFn) -> tuple[int, dict[int, list[int]]]:
    """A connected undirected graph: a random spanning tree plus random extra edges."""
    n = draw(st.integers(2, 24))
    edges: dict[int, set[int]] = {i: set() for i in range(n)}
    for i in range(1, n):
        j = draw(st.integers(0, i - 1))
        edges[i].add(j)
        edges[j].add(i)
    for a, b in draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)),
                              max_size=2 * n)):
        if a != b:
            edges[a].add(b)
            edges[b].add(a)
    return n, {i: sorted(e) for i, e in edges.items()}


@settings(max_examples=40, deadline=None)
@given(graphs(), st.data(), st.booleans())
def test_mass_is_conserved_and_estimates_converge(g: tuple[int, dict[int, list[int]]],
                                                  data: st.DataObject, average: bool) -> None:
    n, edges = g
    values = data.draw(st.lists(st.floats(0, 1000), min_size=n, max_size=n))
    nodes = _network(n, values, edges, average=average, seed=n)
    s0 = sum(ps.sums[0] for ps in nodes)
    w0 = sum(ps.weight for ps in nodes)
    truth = (sum(values) / n if average else sum(values), 1.0 if average else float(n))

    def converged() -> bool:
        ests = [ps.estimate() for ps in nodes]
        return all(e is not None and math.isclose(e[0], truth[0], rel_tol=1e-4, abs_tol=1e-4)
                   and math.isclose(e[1], truth[1], rel_tol=1e-4) for e in ests)

    # Mixing time depends on the graph (a star or a path is slow): run until every
    # estimate is within 1e-4, with a generous cap.
    for r in range(5000):
        _round(nodes, float(r + 1))
        assert math.isclose(sum(ps.sums[0] for ps in nodes), s0, rel_tol=1e-9, abs_tol=1e-9)
        assert math.isclose(sum(ps.weight for ps in nodes), w0, rel_tol=1e-9)
        assert all(ps.weight >= 0 for ps in nodes)
        if r % 50 == 49 and converged():
            break
    assert converged()


def test_stale_epochs_are_dropped_and_newer_ones_joined() -> None:
    ps = PushSum(random.Random(1), average=True)
    ps.handle(Restart(5, (3.0,), 1.0), 0.0)
    ps.handle(Received(PEERS[1], PushSumShare(4, (100.0,), 1.0)), 1.0)
    assert ps.stats["stale_epoch"] == 1 and ps.estimate() == (3.0,)
    ps.handle(Received(PEERS[1], PushSumShare(6, (1.0,), 1.0)), 2.0)
    assert ps.epoch == 6 and ps.estimate() == (2.0,)  # (3 + 1) / (1 + 1)
    ps.handle(Restart(6, (1.0,), 1.0), 3.0)  # own start of the epoch joined: rebase
    assert ps.estimate() == (1.0,) and ps.stats["rebased"] == 1  # (4 + 1 − 3) / 2
    with pytest.raises(LocalProtocolError):
        ps.handle(Restart(6, (1.0,), 1.0), 3.0)
    # A daemon's clock-driven Restart of an older epoch, after a peer's share moved the
    # node on (a clock ahead, or a share queued first), is ignored, not a crash.
    before = (list(ps.sums), ps.weight, ps.epoch)
    assert ps.handle(Restart(5, (9.0,), 1.0), 4.0) == []
    assert (list(ps.sums), ps.weight, ps.epoch) == before and ps.stats["restart_behind"] == 1


def test_a_lone_node_keeps_its_mass() -> None:
    ps = PushSum(random.Random(1))
    ps.handle(Restart(1, (7.0,), 1.0), 0.0)
    assert ps.handle(TimerFired(ROUND_TIMER), 1.0) and ps.estimate() == (7.0,)
    assert ps.stats["round_alone"] == 1


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                    lambda c: st.lists(c, max_size=5), max_leaves=12))
def test_decoding_anything_raises_only_wire_errors(obj: Any) -> None:
    try:
        share = PushSumShare.from_wire(obj)
    except WireError:
        return
    assert PushSumShare.from_wire(share.to_wire()) == share
    assert share.weight >= 0 and all(math.isfinite(v) for v in share.sums)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0, 100), min_size=3, max_size=12),
       st.lists(st.floats(0, 100), min_size=12, max_size=12), st.integers(0, 2**16),
       st.booleans())
def test_a_late_own_restart_rebases_and_conserves_mass(
        old: list[float], new: list[float], seed: int, average: bool) -> None:
    """Clock-started epochs: every node but the first hears of epoch 2 before its own
    Restart of it. After every node has restarted, Σs is the sum of the *new* values
    and Σw the weights the Restarts gave, as if all had started together."""
    n = len(old)
    ring = {i: [(i - 1) % n, (i + 1) % n] for i in range(n)}
    nodes = _network(n, old, ring, average=average, seed=seed)
    w2 = [1.0 if average or i == n - 1 else 0.0 for i in range(n)]  # sum: the last initiates
    nodes[0].handle(Restart(2, (new[0], 1.0), w2[0]), 1.0)
    for r in range(3):  # epoch 2 spreads to some nodes by hearing
        _round(nodes, 2.0 + r)
    for i in range(1, n):
        nodes[i].handle(Restart(2, (new[i], 1.0), w2[i]), 5.0)
    assert all(ps.epoch == 2 and ps.own_epoch == 2 for ps in nodes)
    assert math.isclose(sum(ps.sums[0] for ps in nodes), sum(new[:n]), rel_tol=1e-9,
                        abs_tol=1e-6)
    assert math.isclose(sum(ps.weight for ps in nodes), sum(w2), rel_tol=1e-9)
    with pytest.raises(LocalProtocolError):  # a second own Restart of one epoch
        nodes[1].handle(Restart(2, (new[1], 1.0), w2[1]), 6.0)
