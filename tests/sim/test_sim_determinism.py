"""One seed → byte-identical metric files; another seed → different ones. Also the CLI
end to end (`colony sim run` writes metrics, CSVs and plots)."""

from pathlib import Path

import pytest

from overlay.cli.main import main
from sim import scenario
from sim.simulations import simulation_for

SEED = 424242


def _small(seed: int) -> scenario.Scenario:
    # 25 nodes (40 until stop 33): the whole smoke timeline still runs in 45 s (joins,
    # providing, lookups, fetches, user events, two kills at 40 s, NAT'd nodes).
    sc = scenario.load(scenario.resolve("smoke"))
    return sc.with_(nodes=25, duration_s=45.0, seed=seed, join_spread_s=3.0)


def _files(out: Path, seed: int) -> dict[str, bytes]:
    simulation_for(_small(seed)).run().write(out)
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def test_same_seed_identical_files_different_seed_differs(tmp_path: Path) -> None:
    one = _files(tmp_path / "one", SEED)
    two = _files(tmp_path / "two", SEED)
    other = _files(tmp_path / "other", SEED + 1)
    assert {"metrics.json", "timeseries.csv", "lookups.csv", "load.csv"} <= set(one)
    assert one == two, f"seed={SEED}: runs differ"
    assert one["metrics.json"] != other["metrics.json"]
    assert one["lookups.csv"] != other["lookups.csv"]


def test_idle_tick_fast_path_changes_no_output(tmp_path: Path) -> None:
    """The world's `quick_tick` fast path (idle gossip ticks re-armed without building
    inputs and effects) gives the same files as handing every tick to the core."""
    runs = {}
    for quick in (True, False):
        sim = simulation_for(_small(SEED).with_(nodes=20, duration_s=30.0))
        sim.world.quick_ticks = quick
        out = tmp_path / str(quick)
        sim.run().write(out)
        runs[quick] = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
    assert runs[True] == runs[False], f"seed={SEED}: the fast path changed the output"


def test_parked_idle_ticks_change_no_output(tmp_path: Path) -> None:
    """Idle ticks parked off the heap (`World.park_idle`, on in the runner) give the same
    files, the same `events` and `net_timers_fired` as ticks run from the heap."""
    runs = {}
    parks = {}
    for park in (True, False):
        sim = simulation_for(_small(SEED).with_(nodes=20, duration_s=30.0))
        sim.world.park_idle = park
        out = tmp_path / str(park)
        m = sim.run()
        m.write(out)
        runs[park] = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
        parks[park] = (sim.world.parks, sim.world.park_ties, m.info["events"])
    assert parks[True][0] >= 20, parks  # it did park (each node at least once)
    assert parks[False][0] == 0
    assert parks[True][1] == 0  # no tie it could not order
    assert parks[True][2] == parks[False][2]
    assert runs[True] == runs[False], f"seed={SEED}: parking changed the output"


def test_cli_run_writes_metrics_and_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           ) -> None:
    text = scenario.resolve("smoke").read_text()
    text = text.replace("count = 100", "count = 30").replace("duration_s = 90",
                                                             "duration_s = 50")
    path = tmp_path / "tiny.toml"
    path.write_text(text)
    out = tmp_path / "out"
    assert main(["sim", "run", str(path), "--seed", "3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "smoke: 30 nodes, 50 s simulated, seed 3" in printed
    assert "lookup hops" in printed
    names = {p.name for p in out.iterdir()}
    assert {"metrics.json", "timeseries.csv", "lookup_hops_latency.png", "convergence.png",
            "message_load.png", "detection_time.png", "user_events.png"} <= names
    assert (out / "convergence.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_reports_scenario_errors_with_line(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[scenario]\nduration_s = 10\n\n[nodes]\ncount = "many"\n')
    assert main(["sim", "run", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:5: [nodes] count: must be an integer" in err
    assert main(["sim", "check", "smoke"]) == 0
    assert main(["sim", "list"]) == 0
    assert "partition-heal" in capsys.readouterr().out
