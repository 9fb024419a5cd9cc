"""Placement across cells (overlay/capsule/cell_placement.py): which cells meet a
capsule's conditions from their digests, two-choice probing with fake time and a
seeded rng, and every fallback to the submitting node's own cell."""

from __future__ import annotations

import random
from collections import Counter

from gossip.cell_digest import MAX_CLASSES, CellDigest, ClassCapacity
from gossip.cell_directory import CellReport, Seed
from gossip.cells import CellId, cell_key
from gossip.resources import ResourceAd
from overlay.capsule.cell_placement import (
    MAX_PENDING,
    CellPlacer,
    Forward,
    Local,
    Probe,
    meets,
    needs,
    score,
)
from overlay.capsule.spec import Conditions
from overlay.core.ids import PeerId

ROOT = CellId()
A, B = ROOT.children()
B0, B1 = B.children()


def _peer_in(cell: CellId, rng: random.Random) -> PeerId:
    while True:
        p = PeerId.from_ed25519(rng.randbytes(32))
        if cell.contains(cell_key(p)):
            return p


def _report(cell: CellId, *classes: tuple[str, int, float], seeds: int = 2) -> CellReport:
    rng = random.Random(cell.name())
    caps = tuple(ClassCapacity(n, m, f) for n, m, f in sorted(classes))
    ss = tuple(Seed(_peer_in(cell, rng), ()) for _ in range(seeds))
    return CellReport(CellDigest(cell, 0.0, max((m for _, m, _ in classes), default=1),
                                 caps), ss)


def test_needs_names_the_classes_a_digest_carries() -> None:
    ads = [ResourceAd.make(cpu_cores=4, gpus=2, executors=("subprocess",),
                           labels={"zone": "b"}, location="lab")]
    d = CellDigest.of(B, ads, 0.0)
    cond = Conditions(cpu=2, gpu=2, executor="subprocess", labels=(("zone", "b"),),
                      location="lab")
    assert [n for n, _ in needs(cond)] == ["exec:subprocess", "gpu", "cpu", "label:zone=b",
                                           "loc:lab"]
    assert meets(d, cond)
    assert not meets(d, Conditions(labels=(("zone", "a"),)))
    assert not meets(d, Conditions(gpu=3))  # the cell's total is 2
    assert not meets(d, Conditions(executor="slurm"))
    assert score(d, Conditions(gpu=1)) == 2.0 and score(d, Conditions()) == 4.0


def test_score_subtracts_the_backlog_and_ranks_saturated_cells_by_queue_per_member() -> None:
    def digest(members: int, free: float, backlog: int) -> CellDigest:
        return CellDigest(A, 0.0, members, (ClassCapacity("cpu", members, free),), backlog)

    assert score(digest(4, 3.0, 1), Conditions()) == 2.0  # room after its queue
    # Two saturated cells (0 free each): free capacity alone tied them.
    small, big = digest(4, 0.0, 4), digest(32, 0.0, 8)
    assert score(small, Conditions()) == -1.0 and score(big, Conditions()) == -0.25
    assert score(big, Conditions()) > score(small, Conditions())
    assert score(digest(4, 1.0, 0), Conditions()) > score(digest(4, 0.0, 0), Conditions()) \
        > score(digest(4, 0.0, 1), Conditions())


def test_a_full_digest_may_have_dropped_a_rare_label() -> None:
    classes = tuple(ClassCapacity(f"label:k{i}=v", 1, 1.0) for i in range(MAX_CLASSES))
    full = CellDigest(A, 0.0, 1, classes)
    assert meets(full, Conditions(labels=(("rare", "x"),)))
    assert not meets(full, Conditions(executor="slurm"))  # executors are never dropped
    assert not meets(CellDigest(A, 0.0, 1, classes[:3]), Conditions(labels=(("rare", "x"),)))


def test_one_cell_or_no_fit_stays_local() -> None:
    p = CellPlacer(random.Random(1))
    a = _report(A, ("cpu", 3, 6.0))
    assert p.plan("c1", Conditions(), A, [a], 0.0) == Local("one cell")
    b = _report(B, ("cpu", 3, 6.0))
    got = p.plan("c2", Conditions(gpu=1), A, [a, b], 0.0)
    assert isinstance(got, Local) and "no cell of 2 meets" in got.reason
    assert p.stats == {"no_cell_meets": 1}


def test_the_only_cell_that_meets_gets_the_capsule_without_a_probe() -> None:
    p = CellPlacer(random.Random(1))
    a = _report(A, ("cpu", 3, 6.0))
    b = _report(B, ("cpu", 2, 1.0), ("label:zone=b", 1, 0.5), seeds=3)
    got = p.plan("c1", Conditions(labels=(("zone", "b"),)), A, [a, b], 0.0)
    assert isinstance(got, Forward) and got.cell == B
    assert sorted(s.peer.raw for s in got.seeds) == sorted(s.peer.raw for s in b.seeds)
    assert p.pending == {} and p.stats == {"forwards": 1}
    # ... and from inside B it stays there.
    assert isinstance(p.plan("c2", Conditions(labels=(("zone", "b"),)), B, [a, b], 0.0), Local)


def test_two_choices_keep_the_freer_cell_now_and_ties_stay_home() -> None:
    p = CellPlacer(random.Random(1))
    a, b = _report(A, ("cpu", 3, 6.0)), _report(B, ("cpu", 3, 6.0))
    plan = p.plan("c1", Conditions(cpu=1), A, [a, b], 0.0)
    assert isinstance(plan, Probe) and {r.cell for r in plan.cells} == {A, B}
    # Late binding: B's digest said 6 free, now it has 0.5; A has 2.
    now = {A: CellDigest(A, 1.0, 3, (ClassCapacity("cpu", 3, 2.0),)),
           B: CellDigest(B, 1.0, 3, (ClassCapacity("cpu", 3, 0.5),))}
    assert isinstance(p.probed("c1", A, now, 1.0), Local)
    p.plan("c2", Conditions(cpu=1), B, [a, b], 2.0)
    got = p.probed("c2", B, now, 2.5)
    assert isinstance(got, Forward) and got.cell == A
    p.plan("c3", Conditions(), B, [a, b], 3.0)
    tie = {A: now[A], B: CellDigest(B, 1.0, 3, (ClassCapacity("cpu", 3, 2.0),))}
    assert isinstance(p.probed("c3", B, tie, 3.5), Local)


def test_unanswered_late_and_changed_probes_fall_back() -> None:
    p = CellPlacer(random.Random(2))
    a, b = _report(A, ("cpu", 3, 6.0)), _report(B0, ("cpu", 3, 6.0))
    c = _report(B1, ("cpu", 3, 9.0))
    p.plan("c1", Conditions(), A, [a, b, c], 0.0)
    assert p.probed("c1", A, {}, 1.0) == Local(
        "neither probed cell answered or still meets the conditions")
    assert p.stats["probes_unanswered"] == 2
    plan = p.plan("c2", Conditions(), A, [a, b, c], 0.0)
    assert isinstance(plan, Probe)
    one = {plan.cells[0].cell: plan.cells[0].digest}  # the other never answers
    got = p.probed("c2", A, one, 1.0)
    want = plan.cells[0].cell
    assert (isinstance(got, Local) if want == A else got.cell == want)  # type: ignore[union-attr]
    p.plan("c3", Conditions(), A, [a, b, c], 0.0)
    assert p.probed("c3", A, {}, 6.0) == Local("probe answered too late")
    # A probe no one answers is forgotten at its deadline: the map stays bounded.
    p.plan("c4", Conditions(), A, [a, b, c], 10.0)
    p.expire(16.0)
    assert p.pending == {} and p.stats["probes_expired"] == 1
    for i in range(MAX_PENDING + 5):
        p.plan(f"x{i}", Conditions(), A, [a, b, c], 20.0)
    assert len(p.pending) == MAX_PENDING and p.stats["probes_dropped"] == 5
    # A cell that no longer meets the conditions when probed is not chosen.
    p2 = CellPlacer(random.Random(3))
    e, f = _report(A, ("exec:slurm", 1, 1.0)), _report(B, ("exec:slurm", 1, 1.0))
    p2.plan("s", Conditions(executor="slurm"), A, [e, f], 0.0)
    gone = {A: CellDigest(A, 1.0, 1), B: f.digest}
    got = p2.probed("s", A, gone, 1.0)
    assert isinstance(got, Forward) and got.cell == B
    assert p2.stats["probes_no_longer_meet"] == 1


def test_two_choices_spread_load_better_than_one() -> None:
    """Balls into bins with the core's own choices: 8 equal cells, 800 capsules, each
    probe sees the current load, each capsule submitted in a random cell (members
    submit alike; the probe is that cell and one other); two choices keep the most
    loaded cell within 2 of the mean (one random choice would be ~ +25 here, a few
    standard deviations). sim/placement_quality.py runs the same core on a trace with
    departures against an omniscient placer."""
    cells = [CellId.parse(f"/{i:03b}") for i in range(8)]
    free = dict.fromkeys(cells, 1000.0)
    p = CellPlacer(random.Random(5))
    origin = random.Random(6)
    for i in range(800):
        own = cells[origin.randrange(8)]
        reps = [CellReport(CellDigest(c, 0.0, 1, (ClassCapacity("cpu", 1, free[c]),)),
                           (Seed(PeerId.from_ed25519(bytes(32)), ()),)) for c in cells]
        plan = p.plan(f"c{i}", Conditions(), own, reps, float(i))
        assert isinstance(plan, Probe)
        got = p.probed(f"c{i}", own, {r.cell: r.digest for r in plan.cells}, float(i))
        chosen = own if isinstance(got, Local) else got.cell  # type: ignore[union-attr]
        free[chosen] -= 1.0
    loads = Counter({c: 1000.0 - f for c, f in free.items()})
    assert max(loads.values()) - 800 / 8 <= 2, loads
