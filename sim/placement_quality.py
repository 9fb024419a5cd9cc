"""Placement across cells against an omniscient placer, on the same trace (issue #17).

The real core decides: `overlay.capsule.cell_placement.CellPlacer` (plan from digests
read up to one digest interval old, probe two cells at random, keep the one whose fresh
digest shows more free capacity). What it is compared with sees everything at once:

- `omniscient`: at each arrival, the cell with the least backlog per slot (busy plus
  queued over slots), exact and current: the best a placer without foresight can do
  with one queue per cell.
- `random`: one cell at random (what placement without any knowledge gives).
- `local`: the cell the capsule was submitted in (no placement across cells).

Model (a discrete-event run, no network; the probe's round trip is instant): `cells`
cells of heterogeneous size (slots drawn from `sizes`), capsules arriving in a Poisson
stream at `load` × total slots / mean service, each submitted in a cell drawn in
proportion to its slots (members submit alike, so every cell alone runs at `load`) and
needing one slot for an exponential service time; a cell runs at most `slots` at once
and queues the rest FIFO. A digest carries what the daemon's digest carries: the
cell's free CPU slots (`slots − busy`, never negative), as `ClassCapacity("cpu")`,
and its backlog (the queue's length: the ads' `queued` summed). The same arrivals
(time, origin, service) go to every policy.

Figures per policy: mean and p99 wait for a slot, capsules that waited, the longest
queue. The quality figure is the mean wait against the omniscient placer's, both on
the trace. `balls_into_bins` is the classic check of the two choices (Mitzenmacher,
"The Power of Two Choices in Randomized Load Balancing", 2001; Azar et al. 1994):
n capsules into n one-slot cells with no departures, each probe seeing the current
load: max load ln ln n / ln 2 + O(1) (≤ 4 for any practical n) against ln n / ln ln n
for one random choice.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from dataclasses import dataclass, field

from gossip.cell_digest import CellDigest, ClassCapacity
from gossip.cell_directory import CellReport, Seed
from gossip.cells import CellId
from overlay.capsule.cell_placement import CellPlacer, Forward, Local, Probe
from overlay.capsule.spec import Conditions
from overlay.core.ids import PeerId

POLICIES = ("two-choice", "omniscient", "random", "local")
_SEED = (Seed(PeerId.from_ed25519(bytes(32)), ()),)
_ANY = Conditions()


@dataclass(frozen=True, slots=True)
class PlacementRun:
    cells: int = 16
    #: Slots per cell are drawn from these (a mix of small and large cells).
    sizes: tuple[int, ...] = (4, 8, 16, 32)
    capsules: int = 20_000
    #: Offered load: arrivals × mean service over the total slots.
    load: float = 0.9
    mean_service_s: float = 60.0
    #: Digests read by `plan` are refreshed this often (the daemon's digest interval).
    digest_interval_s: float = 5.0
    seed: int = 1


@dataclass(slots=True)
class PolicyFigures:
    policy: str
    mean_wait_s: float
    p99_wait_s: float
    waited: float  # fraction of capsules that waited for a slot
    max_queue: int
    forwarded: float  # fraction placed outside their origin cell


@dataclass(slots=True)
class _Cell:
    slots: int
    busy: int = 0
    queue: deque[tuple[float, int]] = field(default_factory=deque)  # (arrived, index)


def cell_ids(n: int) -> list[CellId]:
    """`n` distinct leaf cells (prefixes of one depth), as a split colony has them."""
    depth = max(1, math.ceil(math.log2(n)))
    return [CellId.parse("/" + format(i, f"0{depth}b")) for i in range(n)]


def _digest(cell: CellId, c: _Cell, now: float) -> CellDigest:
    free = float(max(0, c.slots - c.busy))
    return CellDigest(cell, now, c.slots, (ClassCapacity("cpu", c.slots, free),),
                      backlog=len(c.queue))


def _trace(run: PlacementRun) -> tuple[list[int], list[tuple[float, int, float]]]:
    rng = random.Random(run.seed)
    slots = [rng.choice(run.sizes) for _ in range(run.cells)]
    rate = run.load * sum(slots) / run.mean_service_s
    t, out = 0.0, []
    for _ in range(run.capsules):
        t += rng.expovariate(rate)
        origin = rng.choices(range(run.cells), weights=slots)[0]
        out.append((t, origin, rng.expovariate(1 / run.mean_service_s)))
    return slots, out


class _Placer:
    """One policy's choice of cell for an arrival; the two-choice one is the core."""

    def __init__(self, policy: str, ids: list[CellId], cells: list[_Cell], seed: int,
                 interval: float) -> None:
        self.policy, self.ids, self.cells = policy, ids, cells
        self.rng = random.Random(seed)
        self.core = CellPlacer(random.Random(seed))
        self.index = {cell: i for i, cell in enumerate(ids)}
        self.interval = interval
        self._reports: list[CellReport] = []
        self._read_at = -math.inf

    def choose(self, k: int, origin: int, now: float) -> int:
        if self.policy == "local":
            return origin
        if self.policy == "random":
            return self.rng.randrange(len(self.cells))
        if self.policy == "omniscient":
            return min(range(len(self.cells)), key=lambda i: (
                (self.cells[i].busy + len(self.cells[i].queue)) / self.cells[i].slots,
                i != origin, i))  # a tie stays home
        if now - self._read_at >= self.interval:  # the digests the node has read
            self._read_at = now
            self._reports = [CellReport(_digest(c, self.cells[i], now), _SEED)
                             for i, c in enumerate(self.ids)]
        own = self.ids[origin]
        plan = self.core.plan(str(k), _ANY, own, self._reports, now)
        if isinstance(plan, Probe):  # late binding: the two cells' state now
            fresh = {r.cell: _digest(r.cell, self.cells[self.index[r.cell]], now)
                     for r in plan.cells}
            plan = self.core.probed(str(k), own, fresh, now)
        if isinstance(plan, Forward):
            return self.index[plan.cell]
        assert isinstance(plan, Local)
        return origin


def run_policy(run: PlacementRun, policy: str) -> PolicyFigures:
    slots, trace = _trace(run)
    ids = cell_ids(run.cells)
    cells = [_Cell(s) for s in slots]
    placer = _Placer(policy, ids, cells, run.seed, run.digest_interval_s)
    waits = [0.0] * len(trace)
    ends: list[tuple[float, int]] = []  # (finish time, cell)
    max_queue = forwarded = 0

    def start(i: int, c: int, now: float) -> None:
        cells[c].busy += 1
        heapq.heappush(ends, (now + trace[i][2], c))

    def finish_until(t: float) -> None:
        """End the services due by `t`; each frees a slot for its cell's next queued."""
        while ends and ends[0][0] <= t:
            done, c = heapq.heappop(ends)
            cells[c].busy -= 1
            if cells[c].queue:
                arrived, i = cells[c].queue.popleft()
                waits[i] = done - arrived
                start(i, c, done)

    for k, (t, origin, _) in enumerate(trace):
        finish_until(t)
        c = placer.choose(k, origin, t)
        forwarded += c != origin
        if cells[c].busy < cells[c].slots:
            start(k, c, t)
        else:
            cells[c].queue.append((t, k))
            max_queue = max(max_queue, len(cells[c].queue))
    finish_until(math.inf)  # drain: the queued capsules' waits
    ordered = sorted(waits)
    n = len(ordered)
    return PolicyFigures(policy, sum(ordered) / n, ordered[min(n - 1, int(0.99 * n))],
                         sum(1 for w in ordered if w > 0) / n, max_queue, forwarded / n)


def compare(run: PlacementRun) -> dict[str, PolicyFigures]:
    return {p: run_policy(run, p) for p in POLICIES}


def balls_into_bins(n: int, seed: int = 1) -> tuple[int, int]:
    """(max load with the core's two choices, max load with one random choice): `n`
    capsules into `n` one-slot cells that never free, each probe seeing the load now."""
    ids = cell_ids(n)
    load = [0] * n
    index = {c: i for i, c in enumerate(ids)}
    core = CellPlacer(random.Random(seed))
    # Every cell meets the conditions whatever its load: plan reads static reports.
    reports = [CellReport(CellDigest(c, 0.0, 1, (ClassCapacity("cpu", 1, 1.0),)), _SEED)
               for c in ids]
    rng = random.Random(seed + 1)
    for k in range(n):
        own = ids[rng.randrange(n)]
        plan = core.plan(str(k), _ANY, own, reports, float(k))
        assert isinstance(plan, Probe)
        fresh = {r.cell: CellDigest(r.cell, float(k), 1, (
            ClassCapacity("cpu", 1, float(n - load[index[r.cell]])),)) for r in plan.cells}
        got = core.probed(str(k), own, fresh, float(k))
        load[index[got.cell] if isinstance(got, Forward) else index[own]] += 1
    one = [0] * n
    for _ in range(n):
        one[rng.randrange(n)] += 1
    return max(load), max(one)


def format_table(run: PlacementRun, figs: dict[str, PolicyFigures]) -> list[str]:
    base = figs["omniscient"].mean_wait_s
    out = [f"placement: {run.cells} cells, {run.capsules:,} capsules, load {run.load}, "
           f"mean service {run.mean_service_s:g} s, digests every {run.digest_interval_s:g} s"]
    for p in POLICIES:
        f = figs[p]
        ratio = f.mean_wait_s / base if base > 0 else math.inf
        out.append(f"  {p:<11} mean wait {f.mean_wait_s:8.2f} s  p99 {f.p99_wait_s:8.1f} s  "
                   f"waited {f.waited:6.1%}  longest queue {f.max_queue:5d}  "
                   f"forwarded {f.forwarded:6.1%}  ratio {ratio:6.2f} of omniscient")
    return out
