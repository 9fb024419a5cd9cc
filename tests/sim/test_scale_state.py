"""sim/scale_state.py: a colony built at its converged state runs correctly (issue #17).

The 10^5-node memory figure (bench/sim_scale.py) is only worth something if the state
it builds is the state the real joins end in and keeps working when run: here, at
suite size, every cell is under the cap and split no further than needed, every
node's SWIM view is exactly its cell, tier 2 is one component and delivers every
broadcast to every node, the DHT lookups find the true k closest, each cell's
publisher provided the rendezvous key, and one seed gives one report.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sim.scale_state import ScaleRun, ScaleSim, summary_lines, to_json

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(240)

RUN = ScaleRun(nodes=600, cap=80, t2_settle_s=30.0, window_s=6.0, lookups=30)


@pytest.fixture(scope="module")
def ran() -> tuple[ScaleSim, dict[str, object]]:
    sim = ScaleSim(RUN)
    rep = sim.run_all()
    return sim, to_json(rep)


def test_cells_are_the_split_at_the_cap(ran: tuple[ScaleSim, dict[str, object]]) -> None:
    sim, _ = ran
    out = sim.out
    assert sum(out.cells) == RUN.nodes
    assert max(out.cells) <= RUN.cap
    leaves = sim.leaves()
    assert len(leaves) == len(out.cells) > 1
    # Split no further than needed: each leaf's parent held more than the cap.
    for leaf in leaves:
        parent = leaf.parent()
        assert parent is not None
        inside = sum(n for c, n in zip(leaves, out.cells, strict=True)
                     if parent.is_ancestor_of(c) or c == parent)
        assert inside > RUN.cap


def test_every_view_is_its_cell_and_tier2_delivers(
        ran: tuple[ScaleSim, dict[str, object]]) -> None:
    sim, _ = ran
    out = sim.out
    v, t = out.cell_views, out.tier2_views
    assert v is not None and t is not None
    assert v.live == RUN.nodes
    assert (v.accuracy_min, v.inexact, v.foreign_max) == (1.0, 0, 0)
    assert out.member_entries == sum(n * (n - 1) for n in out.cells)
    assert (t.live, t.components, t.isolated) == (RUN.nodes, 1, 0)
    assert [r.phase for r in out.rounds] == ["first"] + ["stable"] * RUN.broadcasts
    assert all(r.delivery == 1.0 for r in out.rounds)
    # The window ran all three: tier-1 probes and gossip, tier-2 shuffles, DHT lookups.
    assert out.window_events > 0
    assert min(out.messages_tier1, out.messages_tier2, out.messages_dht) > 0


def test_dht_lookups_and_rendezvous(ran: tuple[ScaleSim, dict[str, object]]) -> None:
    sim, _ = ran
    out = sim.out
    assert (out.lookups_done, out.lookups_failed) == (RUN.lookups, 0)
    assert out.lookup_recall >= 0.95
    assert out.provides == out.provides_done == len(out.cells)
    assert out.key_records_max == len(out.cells)  # < 64: every cell's record is held
    assert any("recall" in line for line in summary_lines(out))


def test_one_seed_gives_one_report(ran: tuple[ScaleSim, dict[str, object]]) -> None:
    _, first = ran
    assert to_json(ScaleSim(RUN, huge_pages=False).run_all()) == first  # fixture: on


def test_a_window_run_in_pieces_gives_the_same_report(
        ran: tuple[ScaleSim, dict[str, object]], monkeypatch: pytest.MonkeyPatch) -> None:
    """The bench runs long windows in pieces to print progress: same outcome, also
    with huge pages asked for after every phase and piece (Linux; elsewhere a no-op)."""
    import sim.hugepages as hp

    monkeypatch.setattr(hp, "MIN_GROWTH_BYTES", 0)
    monkeypatch.setattr(hp, "GROWTH", 0.0)
    _, first = ran
    sim = ScaleSim(RUN)
    sim.phase_tier2()
    sim.phase_cells()
    sim.phase_dht()
    seen: list[tuple[float, int]] = []
    sim.phase_window(chunk_s=1.0, on_chunk=lambda s, e: seen.append((s, e)))
    assert len(seen) == 6 and seen[-1][0] == pytest.approx(RUN.window_s)
    assert to_json(sim.phase_checks()) == first


def test_cli_prints_the_checks_and_writes_json(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from overlay.cli.main import main

    out = tmp_path / "scale.json"
    assert main(["sim", "scale", "--nodes", "120", "--cap", "40", "--window", "2",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert "accuracy mean 1.0000 min 1.0000" in printed.out
    assert "checks …" in printed.err  # progress per phase
    assert json.loads(out.read_text())["run"] == [120, 1, 40, 2.0]


def test_the_bench_runs_its_child() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "sim_scale.py"), "--nodes", "300", "--cap",
         "60", "--window-s", "3"], capture_output=True, text=True, timeout=200)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "limit 20 GiB: ratio" in out.stdout
    assert "of the bare heapq loop" in out.stdout
    assert "delivery 1.0000" in out.stdout
