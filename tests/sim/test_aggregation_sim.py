"""Push-sum in the simulator (seed 1): the published variance shrink per round with
uniform targets, and colony-wide totals over the HyParView overlay (docs/simulation.md,
"Aggregation"). About 6 s."""

from __future__ import annotations

import math

from sim.aggregation import AggregationRun, run_aggregation
from sim.fidelity_overlay import aggregation_figures


def test_variance_shrink_matches_the_papers_with_uniform_targets() -> None:
    rows = {r[0]: r for r in aggregation_figures(300, seed=1)}
    pp = rows["push-sum variance shrink, push-pull"]
    push = rows["push-sum variance shrink, push only"]
    assert abs(pp[5] - 1 / (2 * math.sqrt(math.e))) <= 0.05, pp
    assert abs(push[5] - 0.5) <= 0.05, push


def test_totals_over_the_overlay_converge_and_crashes_lose_mass() -> None:
    rep = run_aggregation(AggregationRun(nodes=300, seed=1, rounds=30, warmup_s=40.0))
    assert rep.truth_count == 300
    assert rep.reached[-1] == 1.0  # every node has a sum estimate
    assert rep.count_err[-1] < 0.01 and rep.cpu_err[-1] < 0.01
    # Variance falls every round on average and by orders of magnitude overall.
    assert rep.variance[-1] < 1e-4 * rep.variance[0]
    assert 0.3 < rep.shrink(1, 21) < 0.8
    crashed = run_aggregation(AggregationRun(nodes=300, seed=1, rounds=30, warmup_s=40.0,
                                             crash_fraction=0.2, crash_round=5))
    # The epoch still counts the crashed nodes: off by about the crashed share
    # (300 counted, 240 live) until the next epoch.
    assert crashed.truth_count == 240
    assert 0.1 < crashed.count_err[-1] < 0.4
