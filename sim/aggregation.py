"""Push-sum aggregation over the tier-2 overlay: aggregation error per round.

The run, from one seed:

1. the tier-2 overlay of `sim/tier2_run.py` (real HyParView + Plumtree cores, joins,
   warm-up: `OverlaySim.build` and its warm-up, nothing else);
2. every live node gets two real `gossip.pushsum.PushSum` cores on the same engine:
   an *average* instance (weight 1 everywhere) over its free CPUs, whose estimates'
   variance around the true mean is the convergence metric, and a *sum* instance
   (weight 1 at node 0, the epoch's initiator) over (1, free CPUs), whose estimates are
   the colony-wide member count and free-CPU total;
3. each round timer (`interval_s`, free-running with a random phase per node) sends to
   a random member of the node's *current* HyParView active view (`graph="overlay"`),
   or of all nodes (`graph="complete"`, Kempe's model; the node may draw itself);
   shares travel with the network model's one-way delay (tier-2 links are reliable
   streams: no loss), so exchanges are almost atomic at a 1 s period;
4. at every round boundary: the variance of the average estimates, its ratio to the
   previous round, and the relative errors of the sum estimates.

Optional `crash_fraction`: that share of the nodes crash (overlay and push-sum) at
round `crash_round`. Push-sum cannot see them leave within an epoch: the estimates keep
counting their values, whose mass is spread over the survivors (and shares sent to
them are lost), so the error is measured against the nodes live now; the next epoch
(not run here) would start from the survivors' values.
"""

from __future__ import annotations

import itertools
import math
import random
import statistics
from dataclasses import dataclass, field
from typing import Any

from gossip.pushsum import PushSum, Restart, SetNeighbors
from gossip.topics import TopicsCore
from overlay.core.effects import Effect, Received, Send, SetTimer, TimerFired
from overlay.core.ids import PeerId
from sim.tier2_run import TOPIC, OverlayRun, OverlaySim

CORES_PER_NODE = (2, 4, 8, 16, 32, 64)


@dataclass(frozen=True, slots=True)
class AggregationRun:
    nodes: int = 500
    seed: int = 1
    rounds: int = 20
    interval_s: float = 1.0
    #: Push-pull exchanges (the receiver answers with half of its mass); else push only.
    pull: bool = True
    graph: str = "overlay"  # "overlay" (HyParView active views) | "complete"
    warmup_s: float = 60.0
    crash_fraction: float = 0.0
    crash_round: int = 10

    def __post_init__(self) -> None:
        if self.graph not in ("overlay", "complete"):
            raise ValueError("graph must be 'overlay' or 'complete'")


@dataclass(slots=True)
class AggregationReport:
    run: AggregationRun
    #: Over the nodes live at the last measurement.
    truth_mean: float = 0.0
    truth_count: int = 0
    truth_cpu: float = 0.0
    #: Per round boundary (round 0 = the start): variance of the average estimates.
    variance: list[float] = field(default_factory=list)
    #: Per round: mean and max relative error of the count estimates, the share of
    #: live nodes with a sum estimate, and the mean relative error of free CPUs.
    count_err: list[float] = field(default_factory=list)
    count_err_max: list[float] = field(default_factory=list)
    reached: list[float] = field(default_factory=list)
    cpu_err: list[float] = field(default_factory=list)
    events: int = 0

    def ratios(self) -> list[float]:
        v = self.variance
        return [b / a for a, b in itertools.pairwise(v) if a > 1e-24]

    def shrink(self, first: int = 1, last: int | None = None) -> float:
        """Geometric mean of the variance ratio over rounds [first, last)."""
        rs = self.ratios()[first:last]
        return statistics.geometric_mean(rs) if rs else math.nan


class _Node:
    __slots__ = ("avg", "idx", "sum")

    def __init__(self, idx: int, avg: PushSum, summ: PushSum) -> None:
        self.idx, self.avg, self.sum = idx, avg, summ


class AggregationSim:
    def __init__(self, run: AggregationRun) -> None:
        self.cfg = run
        self.osim = OverlaySim(OverlayRun(nodes=run.nodes, seed=run.seed, broadcasts=0,
                                          warmup_s=run.warmup_s))  # fmt: skip
        self.world = self.osim.world
        self.engine = self.osim.engine
        self.rng = random.Random(run.seed * 7919 + 1)
        self.nodes: dict[int, _Node] = {}
        self.values: dict[int, float] = {}
        self.report = AggregationReport(run)
        self._all: tuple[PeerId, ...] = ()

    def _neighbors(self, idx: int) -> tuple[PeerId, ...]:
        if self.cfg.graph == "complete":
            return self._all
        core = self.world.cores[idx]
        assert isinstance(core, TopicsCore)
        return tuple(core.topics[TOPIC].membership.active)

    def _apply(self, idx: int, which: str, effects: list[Effect]) -> None:
        for eff in effects:
            if type(eff) is Send:
                dst = self.world.index.get(eff.peer)
                if dst is None or not self.world.alive[dst]:
                    continue  # a share to a crashed node: its mass is lost
                at = self.engine.now + self.world.net.base_delay_s(idx, dst)
                self.engine.at(at, self._deliver, (idx, dst, which, eff.msg))
            elif type(eff) is SetTimer:
                self.engine.at(eff.at, self._fire, (idx, which))

    def _core(self, idx: int, which: str) -> PushSum:
        n = self.nodes[idx]
        return n.avg if which == "avg" else n.sum

    def _deliver(self, arg: tuple[int, int, str, Any]) -> None:
        src, dst, which, msg = arg
        if dst in self.nodes and self.world.alive[dst]:
            peer = self.world.peers[src]
            self._apply(dst, which, self._core(dst, which).handle(Received(peer, msg),
                                                                  self.engine.now))

    def _fire(self, arg: tuple[int, str]) -> None:
        idx, which = arg
        if idx not in self.nodes or not self.world.alive[idx]:
            return
        core = self._core(idx, which)
        now = self.engine.now
        core.handle(SetNeighbors(self._neighbors(idx)), now)
        self._apply(idx, which, core.handle(TimerFired(("pushsum", "round")), now))

    def start(self) -> None:
        cfg = self.cfg
        live = self.world.live()
        self._all = tuple(self.world.peers[i] for i in live)
        now = self.engine.now
        for i in live:
            cpu = self.rng.choice(CORES_PER_NODE) * (1.0 - self.rng.random())
            self.values[i] = cpu
            avg = PushSum(random.Random(self.rng.getrandbits(64)), average=True,
                          pull=cfg.pull, interval_s=cfg.interval_s)
            summ = PushSum(random.Random(self.rng.getrandbits(64)), pull=cfg.pull,
                           interval_s=cfg.interval_s)
            self.nodes[i] = _Node(i, avg, summ)
            self._apply(i, "avg", avg.handle(Restart(1, (cpu,), 1.0), now))
            self._apply(i, "sum", summ.handle(Restart(1, (1.0, cpu), 1.0 if i == live[0]
                                                      else 0.0), now))

    def measure(self) -> None:
        rep = self.report
        live = [i for i in self.nodes if self.world.alive[i]]
        vals = [self.values[i] for i in live]
        # The truth is over the nodes live now: after a crash the epoch's estimates
        # still count the crashed nodes' values (their mass is spread over the rest).
        rep.truth_mean = statistics.fmean(vals)
        rep.truth_count, rep.truth_cpu = len(vals), math.fsum(vals)
        mean, count, cpu = rep.truth_mean, rep.truth_count, rep.truth_cpu
        sq = []
        errs, cpu_errs = [], []
        for i in live:
            n = self.nodes[i]
            a = n.avg.estimate()
            sq.append(0.0 if a is None else (a[0] - mean) ** 2)
            s = n.sum.estimate()
            if s is not None:
                errs.append(abs(s[0] / count - 1.0))
                cpu_errs.append(abs(s[1] / cpu - 1.0))
        rep.variance.append(statistics.fmean(sq))
        rep.count_err.append(statistics.fmean(errs) if errs else 1.0)
        rep.count_err_max.append(max(errs) if errs else 1.0)
        rep.cpu_err.append(statistics.fmean(cpu_errs) if cpu_errs else 1.0)
        rep.reached.append(len(errs) / len(live))

    def run(self) -> AggregationReport:
        cfg = self.cfg
        o = self.osim
        o.build()
        self.engine.run_until(o.cfg.nodes * o.cfg.join_spacing_s + cfg.warmup_s)
        self.start()
        t0 = self.engine.now
        self.measure()
        for r in range(1, cfg.rounds + 1):
            if cfg.crash_fraction > 0 and r == cfg.crash_round:
                o.crash(cfg.crash_fraction)
            self.engine.run_until(t0 + r * cfg.interval_s)
            self.measure()
        self.report.events = self.engine.events_run
        return self.report


def run_aggregation(run: AggregationRun) -> AggregationReport:
    return AggregationSim(run).run()


def summary_lines(rep: AggregationReport) -> list[str]:
    r = rep.run
    out = [f"push-sum over {r.graph} ({'push-pull' if r.pull else 'push'}), N={r.nodes}, "
           f"seed {r.seed}: true mean free CPUs {rep.truth_mean:.3f}, count "
           f"{rep.truth_count}, total free CPUs {rep.truth_cpu:.1f}",
           "round  variance      ratio   count err mean/max   cpu err   reached"]
    ratios = [math.nan, *rep.ratios()]
    for k, v in enumerate(rep.variance):
        ratio = ratios[k] if k < len(ratios) else math.nan
        out.append(f"{k:5d}  {v:11.3e}  {ratio:6.3f}   {rep.count_err[k]:8.2e} / "
                   f"{rep.count_err_max[k]:8.2e}  {rep.cpu_err[k]:8.2e}  {rep.reached[k]:6.3f}")
    out.append(f"variance shrink per round (geometric mean, rounds 2..{min(r.rounds, 12)}): "
               f"{rep.shrink(1, 11):.3f}")
    return out
