"""Cells: assignment by key prefix (and site), the trie's cover invariant, choosing a
cell with partial knowledge, split/merge decisions, digests, and SWIM kept in a cell."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossip.cell_digest import CellDigest
from gossip.cells import (
    CHECK_TIMER,
    KEY_BITS,
    CellChanged,
    CellConfig,
    CellCore,
    CellId,
    CellMap,
    CellSize,
    SiblingSize,
    StartCells,
    cell_key,
    choose_cell,
)
from gossip.events import KeepCell, MemberLeftCell
from gossip.messages import PushPull
from gossip.profiles import LAN
from gossip.resources import ResourceAd
from gossip.swim import Swim
from overlay.core.crypto import KeyPair
from overlay.core.effects import Emit, Received, TimerFired
from overlay.core.errors import LocalProtocolError, WireError
from overlay.core.ids import PeerId

KEYS = st.integers(0, 2**KEY_BITS - 1)


def _peer(rng: random.Random) -> PeerId:
    return PeerId.from_ed25519(rng.randbytes(32))


@given(KEYS, st.integers(0, 40), st.sampled_from(["", "eu-1"]))
def test_cell_of_a_key_contains_it_and_names_round_trip(key: int, depth: int, site: str) -> None:
    c = CellId.of(key, depth, site)
    assert c.contains(key)
    assert CellId.parse(c.name()) == c
    kids = c.children()
    assert sum(k.contains(key) for k in kids) == 1
    assert all(k.parent() == c and c.is_ancestor_of(k) for k in kids)
    assert kids[0].sibling() == kids[1]


@st.composite
def tries(draw: st.DrawFn) -> CellMap:
    """A random trie: split random leaves a few times."""
    m = CellMap()
    for pick in draw(st.lists(st.integers(0, 10**6), max_size=25)):
        leaves = m.leaves()
        m.split(leaves[pick % len(leaves)])
    return m


@settings(max_examples=150, deadline=None)
@given(tries(), KEYS, st.data())
def test_choose_cell_finds_the_leaf_or_an_ancestor_of_it(m: CellMap, key: int,
                                                         data: st.DataObject) -> None:
    m.check_invariants()
    leaves = m.leaves()
    true = m.find(key)
    assert true.contains(key) and sum(c.contains(key) for c in leaves) == 1
    assert choose_cell(key, "", leaves) == true  # full knowledge: the leaf itself
    known = data.draw(st.lists(st.sampled_from(leaves), unique=True))
    chosen = choose_cell(key, "", known)
    # Partial knowledge: never deeper than the real leaf, and holding the key.
    assert chosen.contains(key) and chosen.is_ancestor_of(true)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 10**6)), max_size=40))
def test_split_and_merge_keep_the_cover(ops: list[tuple[bool, int]]) -> None:
    m = CellMap()
    for split, pick in ops:
        leaves = m.leaves()
        c = leaves[pick % len(leaves)]
        if split:
            m.split(c)
        else:
            sib = c.sibling()
            if sib is None or sib not in leaves:
                with pytest.raises(ValueError):
                    m.merge(c)
                continue
            assert m.merge(c) == c.parent()
        m.check_invariants()


def test_split_halves_are_binomial() -> None:
    rng = random.Random(5)
    keys = [cell_key(_peer(rng)) for _ in range(4000)]
    zero, one = CellId().children()
    n0 = sum(zero.contains(k) for k in keys)
    assert n0 + sum(one.contains(k) for k in keys) == 4000
    assert 1800 < n0 < 2200  # 4000 × 1/2 ± 6 σ


def _core(rng: random.Random, **kw: float) -> CellCore:
    core = CellCore(_peer(rng), CellConfig(cap=100, hold_s=30.0, check_interval_s=10.0, **kw),
                    random.Random(1))
    core.handle(StartCells(CellId.of(core.key, 0)), 0.0)
    return core


def _tick(core: CellCore, t: float) -> list[CellChanged]:
    return [e.event for e in core.handle(TimerFired(CHECK_TIMER), t)
            if isinstance(e, Emit) and isinstance(e.event, CellChanged)]


def test_split_after_the_hold_time_into_the_child_with_our_key() -> None:
    core = _core(random.Random(2))
    core.handle(CellSize(101), 1.0)
    assert _tick(core, 10.0) == [] and _tick(core, 30.0) == []  # held 20 s only
    core.handle(CellSize(99), 31.0)
    assert _tick(core, 35.0) == []  # condition gone: the hold restarts
    core.handle(CellSize(150), 36.0)
    assert _tick(core, 40.0) == [] and _tick(core, 69.0) == []
    [ev] = _tick(core, 71.0)
    assert ev.reason == "split" and ev.new.parent() == ev.old and ev.new.contains(core.key)
    assert core.cell == ev.new


def test_merge_when_cell_and_sibling_are_small_together() -> None:
    core = _core(random.Random(3))
    core.handle(StartCells(CellId.of(core.key, 2)), 0.0)
    sib = core.cell.sibling()
    assert sib is not None
    core.handle(CellSize(20), 0.0)
    core.handle(SiblingSize(sib, 40), 0.0)  # 60 ≥ 0.5 × 100: stay
    assert _tick(core, 10.0) == [] and _tick(core, 50.0) == []
    core.handle(SiblingSize(sib, 25), 51.0)  # 45 < 50
    assert _tick(core, 60.0) == []
    [ev] = _tick(core, 95.0)
    assert ev.reason == "merge" and ev.new == ev.old.parent() and ev.new.contains(core.key)
    # An old sibling digest is no evidence.
    core.handle(CellSize(10), 96.0)
    assert core.wants(96.0 + 1000.0) is None


def test_start_in_a_cell_without_our_key_is_refused() -> None:
    rng = random.Random(4)
    core = CellCore(_peer(rng), CellConfig(), random.Random(1))
    wrong = CellId.of(core.key ^ (1 << 63), 1)
    with pytest.raises(LocalProtocolError):
        core.handle(StartCells(wrong), 0.0)


def test_digest_counts_classes_and_round_trips() -> None:
    ads = [ResourceAd.make(cpu_cores=8, cpu_load=2.0, gpus=1, gpu_kinds=("a100",)),
           ResourceAd.make(cpu_cores=4, executors=("wasm",)), None]
    d = CellDigest.of(CellId("eu", 3, 5), ads, 12.0)
    assert d.members == 3
    cpu, gpu = d.capacity("cpu"), d.capacity("gpu:a100")
    assert cpu is not None and (cpu.members, cpu.free) == (2, 10.0)
    assert gpu is not None and gpu.members == 1
    assert CellDigest.from_wire(d.to_wire()) == d
    for bad in ([41, "eu/101", 1.0, 1, [["cpu", 2, 1.0]]],  # more members than the cell
                [41, "eu/1x", 1.0, 1, []], [41, "/", -1.0, 1, []], [40], "x",
                [41, "/", 1.0, 2, [["cpu", 1, 1.0], ["cpu", 1, 1.0]]],
                [41, "/", 1.0, 1, [], -1], [41, "/", 1.0, 1, [], 2**32],  # backlog
                [41, "/", 1.0, 1, [], 1.5], [41, "/", 1.0, 1, [], 1, 2]):
        with pytest.raises(WireError):
            CellDigest.from_wire(bad)


def test_digest_sums_the_members_queued_capsules_as_its_backlog() -> None:
    ads = [ResourceAd.make(cpu_cores=2, queued=3), ResourceAd.make(cpu_cores=2, queued=1),
           ResourceAd.make(cpu_cores=2)]
    d = CellDigest.of(CellId("", 1, 0), ads, 5.0)
    assert d.backlog == 4 and CellDigest.from_wire(d.to_wire()) == d
    # A cell with no backlog keeps the digest's old wire form (5 elements).
    calm = CellDigest.of(CellId("", 1, 0), ads[2:], 5.0)
    assert calm.backlog == 0 and len(calm.to_wire()) == 5
    assert ResourceAd.from_body(ads[0].to_body()) == ads[0]
    with pytest.raises(WireError):
        ResourceAd.from_body({"q": -1})


def test_swim_keeps_only_its_cell_after_a_split() -> None:
    rng = random.Random(6)
    keys = [KeyPair.from_rng_seed(rng.randbytes(32)) for _ in range(40)]
    cores = [Swim(k, LAN, rng=random.Random(i)) for i, k in enumerate(keys)]
    recs = tuple(c.local.record() for c in cores)
    me = cores[0]
    me.handle(Received(keys[1].peer_id, PushPull(recs)), 1.0)
    assert len(me.members) == 39
    cell = CellId.of(cell_key(keys[0].peer_id), 1)
    out = me.handle(KeepCell(cell), 2.0)
    dropped = {e.event.peer for e in out if isinstance(e, Emit)
               and isinstance(e.event, MemberLeftCell)}
    inside = {k.peer_id for k in keys[1:] if cell.contains(cell_key(k.peer_id))}
    assert set(me.members) == inside and dropped == {k.peer_id for k in keys[1:]} - inside
    me.table.check_invariants()
    # Claims of the other half are refused from now on (counted).
    me.handle(Received(keys[1].peer_id, PushPull(recs)), 3.0)
    assert set(me.members) == inside and me.stats["outside_cell"] == len(dropped)


def test_cell_node_splits_swim_with_its_cell_and_rejoins_on_merge() -> None:
    from gossip.cell_node import CellNode
    from overlay.core.effects import Send

    rng = random.Random(7)
    keys = [KeyPair.from_rng_seed(rng.randbytes(32)) for _ in range(30)]
    cores = [Swim(k, LAN, rng=random.Random(i)) for i, k in enumerate(keys)]
    me = keys[0].peer_id
    node = CellNode(cores[0], CellCore(me, CellConfig(cap=20, hold_s=10.0,
                                                      check_interval_s=5.0), random.Random(1)))
    node.handle(StartCells(CellId()), 0.0)
    node.handle(Received(keys[1].peer_id, PushPull(tuple(c.local.record() for c in cores))), 1.0)
    assert len(node.swim.members) == 29  # 30 live > cap 20
    node.handle(TimerFired(CHECK_TIMER), 5.0)
    out = node.handle(TimerFired(CHECK_TIMER), 16.0)
    [ev] = [e.event for e in out if isinstance(e, Emit) and isinstance(e.event, CellChanged)]
    assert ev.reason == "split" and node.cells.cell == ev.new
    assert all(ev.new.contains(cell_key(p)) for p in node.swim.members)
    # Raise the cap (as if the cell and its sibling had shrunk below half of it):
    # merge back and join through the sibling's members.
    node.cells.config = CellConfig(cap=100, hold_s=10.0, check_interval_s=5.0)
    sib = ev.new.sibling()
    assert sib is not None
    outside = [k.peer_id for k in keys if sib.contains(cell_key(k.peer_id))]
    node.merge_seeds = tuple(outside[:2])
    node.handle(SiblingSize(sib, len(outside)), 17.0)
    node.handle(TimerFired(CHECK_TIMER), 20.0)
    out = node.handle(TimerFired(CHECK_TIMER), 31.0)
    assert any(isinstance(e, Emit) and isinstance(e.event, CellChanged)
               and e.event.reason == "merge" for e in out)
    assert {e.peer for e in out if isinstance(e, Send)} >= set(outside[:2])
    assert node.swim.transitions.cell == CellId()
