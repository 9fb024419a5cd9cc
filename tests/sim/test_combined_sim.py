"""Cells + tier 2 on every node at once, with churn (sim/combined_run.py, issue #17).

Seed 1, 160 nodes, cap 40 (seeds 2 and 3 pass too): the figures docs/simulation.md
publishes ("Cells and tier 2 together"). Real `CellNode` (SWIM + cells) and `TopicsCore`
(HyParView + Plumtree) per node on one engine and network model; the cell directory is
an oracle. About 13 CPU s.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from gossip.cells import CellId
from overlay.cli.main import main
from overlay.core.errors import ConfigError
from sim.combined_run import CombinedRun, CombinedSim, run_combined, suite_run, to_json


def test_both_tiers_with_a_crash_and_churn() -> None:
    rep = run_combined(suite_run(1))
    run = rep.run
    # Stable: every broadcast reaches every live node, in every cell.
    assert rep.worst("first") == 1.0 and rep.worst("stable") == 1.0
    assert all(got == total for got, total in rep.cells_reached)
    assert rep.mean("stable", "rmr") < 0.5
    # 20 % crash at once: the broadcast right after it, and after churn and repair.
    assert rep.crashed == 32
    assert rep.worst("during-failure") >= 0.95
    assert rep.worst("repaired") == 1.0
    assert rep.joined_churn == rep.left_churn == 15
    for label in ("stable", "repaired"):
        t2 = rep.tier2_views[label]
        assert t2.components == 1 and t2.isolated == 0 and t2.asymmetric_links == 0
        cv = rep.cell_views[label]
        # Every live node's SWIM view is exactly its cell's live members.
        assert cv.accuracy_min == 1.0 and cv.inexact == 0 and cv.foreign_max == 0
        assert max(cv.cells.values()) <= run.cap and len(cv.cells) >= 4
        cells = [CellId.parse(n) for n in cv.cells]
        assert not any(a != b and a.is_ancestor_of(b) for a in cells for b in cells)
    # Member tables are bounded by the cap, not by N (after the crash, dead entries wait
    # for reaping next to the live ones).
    assert rep.cell_views["stable"].max_members <= run.cap
    assert rep.cell_views["repaired"].max_members <= 1.25 * run.cap
    assert rep.cell_views["repaired"].live == 160 - 32 + 15 - 15
    assert rep.splits > 0
    assert rep.max_tier2_entries <= 60  # the tier-2 state does not grow with N


@pytest.mark.parametrize(("seed", "cap"), [(5, 50), (7, 40)])
def test_a_70_percent_crash_leaves_no_cell_inside_another(seed: int, cap: int) -> None:
    """200 nodes, 70 % crashed at once. Before the daemon's directory rules ran here
    (`cell_to_adopt`, sim/cells_run.py `_strays`), seed 5 left 2 nodes in /10 after the
    rest of /1 had merged (a node listed up to 13 foreign members), and seed 7 left 2 nodes in
    /1 above /10, /110 and /111 (a split they missed; 6 foreign)."""
    rep = run_combined(CombinedRun(nodes=200, cap=cap, crash_fraction=0.7, warmup_s=150.0,
                                   repair_s=240.0, seed=seed))
    cv = rep.cell_views["repaired"]
    assert cv.live == 60 and cv.accuracy_min == 1.0 and cv.inexact == 0
    assert cv.foreign_max == 0, cv
    cells = [CellId.parse(n) for n in cv.cells]
    assert not any(a != b and a.is_ancestor_of(b) for a in cells for b in cells), cv.cells
    assert rep.worst("repaired") == 1.0


def test_same_seed_same_report() -> None:
    small = replace(CombinedRun(), nodes=60, cap=20, join_spacing_s=0.25, hold_s=10.0,
                    warmup_s=40.0, broadcasts=2, churn_s=10.0, repair_s=20.0, seed=7)
    a, b = to_json(run_combined(small)), to_json(run_combined(small))
    assert a == b
    assert to_json(run_combined(replace(small, seed=8))) != a


@pytest.mark.parametrize("rendezvous", ["oracle", "dht"])
def test_parked_idle_ticks_change_no_output(rendezvous: str) -> None:
    """Tier 1's idle gossip ticks parked off the heap (`CellsRun.park_idle`, the
    default) give the very report of firing each one, event counts included."""
    small = replace(CombinedRun(), nodes=60, cap=20, join_spacing_s=0.25, hold_s=10.0,
                    warmup_s=40.0, broadcasts=2, churn_s=10.0, repair_s=20.0, seed=5,
                    rendezvous=rendezvous)
    sim = CombinedSim(small)
    parked = sim.run()
    assert sim.cells.world.parks > 0  # it did park (else this compares nothing)
    assert to_json(parked) == to_json(run_combined(replace(small, park_idle=False)))


def test_cli_prints_and_writes_the_report(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "combined.json"
    assert main(["sim", "combined", "--suite", "--nodes", "40", "--cap", "20", "--seed", "3",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "combined: N=40, cap 20, seed 3" in text and "cells repaired:" in text
    data = json.loads(out.read_text())
    assert data["run"]["nodes"] == 40 and data["cell_views"]["repaired"][0] == 40 - 8


def test_bad_sizes_are_clear_errors() -> None:
    for bad in ({"nodes": 1}, {"cap": 1}, {"crash_fraction": 1.0}, {"churn_every_s": 0.0}):
        with pytest.raises(ConfigError):
            replace(CombinedRun(), **bad)
