"""Fidelity figures for the tier-2 overlay (HyParView + Plumtree), for `colony sim fidelity`.

Each figure is the fields of a `sim.fidelity.Row` (name, formula, source, n, expected,
simulated, tolerance, unit, samples); `sim.fidelity` builds the rows, so this module
does not import it (no import cycle inside `sim`). Sources and how each bound becomes
expected ± tolerance:
- Plumtree (Leitão et al., SRDS 2007, §5): every broadcast reaches every node of a
  stable network: delivery 1 ± 0 (worst round); once the tree has formed the ideal RMR
  is 0;
- iroh-gossip `tests/sim.rs` (100 peers by default): single sender RMR < 0.2 and
  LDH < 15, multiple senders RMR < 1 and LDH < 18. RMR rows are 0 ± bound. iroh's LDH is
  the round of the received message, one hop less than ours (hops to the last
  delivery, the paper's definition), so the LDH rows accept [0, bound + 1]:
  (bound + 1)/2 ± (bound + 1)/2;
- HyParView (Leitão et al., DSN 2007, §5) keeps reliability near 100 % with up to
  ~80 % of nodes failed once the views healed: delivery after repair 1 ± 0.01 for
  crashes of 20 % and 50 % of the nodes;
- push-sum (sim/aggregation.py) with uniform random targets, the model of the papers:
  push-pull averaging shrinks the variance of the estimates by 1/(2√e) ≈ 0.303 per round
  (Jelasity, Montresor, Babaoglu, TOCS 2005), push only by about 1/2 (Kempe, Dobra,
  Gehrke, FOCS 2003: the potential at least halves in expectation per round);
  rows 0.303 ± 0.05 and 0.5 ± 0.05, geometric mean of rounds 2-11.
"""

from __future__ import annotations

import math

from sim.aggregation import AggregationRun, run_aggregation
from sim.tier2_run import OverlayReport, OverlayRun, run_overlay

IROH = "iroh-gossip tests/sim.rs"

Figure = tuple[str, str, str, int, float, float, float, str, int]


def _row(name: str, formula: str, source: str, n: int, expected: float, sim: float,
         tol: float, unit: str, samples: int) -> Figure:
    return (name, formula, source, n, expected, sim, tol, unit, samples)


def overlay_figures(n: int, *, seed: int = 1, broadcasts: int = 20) -> list[Figure]:
    """Stable-network figures (single and multiple senders) and crash figures at `n`."""
    rows: list[Figure] = []
    single = run_overlay(OverlayRun(nodes=n, seed=seed, broadcasts=broadcasts,
                                    single_sender=True))
    multi = run_overlay(OverlayRun(nodes=n, seed=seed, broadcasts=broadcasts))
    k = broadcasts
    rows.append(_row("Plumtree delivery, stable (worst round)", "every node, every time",
                     "SRDS 2007 §5", n, 1.0, multi.worst("stable", "delivery"), 0.0,
                     "ratio", k))
    for rep, who, rmr_b, ldh_b in ((single, "single sender", 0.2, 15),
                                   (multi, "multiple senders", 1.0, 18)):
        rows.append(_row(f"Plumtree RMR, {who}", f"RMR < {rmr_b:g}", IROH, n, 0.0,
                         rep.mean("stable", "rmr"), rmr_b, "", k))
        half = (ldh_b + 1) / 2
        rows.append(_row(f"Plumtree LDH, {who}", f"LDH < {ldh_b} (+1 hop)", IROH, n, half,
                         rep.mean("stable", "ldh"), half, "hops", k))
    for frac in (0.2, 0.5):
        crashed: OverlayReport = run_overlay(OverlayRun(
            nodes=n, seed=seed, broadcasts=max(3, broadcasts // 4), crash_fraction=frac))
        rows.append(_row(f"delivery after {frac:.0%} crash, repaired", "≥ 99 %",
                         "DSN 2007 §5", n, 1.0, crashed.worst("repaired", "delivery"), 0.01,
                         "ratio", max(3, broadcasts // 4)))
    return rows


def aggregation_figures(n: int, *, seed: int = 1) -> list[Figure]:
    """Push-sum variance shrink per round, push-pull and push only, uniform targets."""
    rows: list[Figure] = []
    for pull, expected, formula, source in (
        (True, 1 / (2 * math.sqrt(math.e)), "1/(2√e) per round", "Jelasity et al. TOCS 2005"),
        (False, 0.5, "≈ 1/2 per round (bound)", "Kempe et al. FOCS 2003"),
    ):
        rep = run_aggregation(AggregationRun(nodes=n, seed=seed, rounds=12, pull=pull,
                                             graph="complete", warmup_s=5.0))
        kind = "push-pull" if pull else "push only"
        rows.append(_row(f"push-sum variance shrink, {kind}", formula, source, n, expected,
                         rep.shrink(1, 11), 0.05, "ratio", 10))
    return rows
