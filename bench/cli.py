"""Start-up time of the `colony` command (docs/architecture.md, "`colony` start-up").

Every `colony` invocation builds the whole argparse tree (each `overlay/cli/cmd_*.py`
registers its parser), so what those modules import at their top is paid by every
command, also by scripts calling `colony` in loops. In the same run, interleaved round
by round (so load spikes hit every case alike), the median of `--runs` wall times of:

1. limit: `python -c pass` with the same interpreter and environment;
2. `colony --version`, 3. `colony --help` (builds every parser and prints);
4. `colony id` against a fresh home (reads the identity key);
5. `colony add` of a 3-byte file into a fresh home (opens LMDB, imports, pins).

Each is printed with its ratio to the limit; the goal for `--version` and `id` is under
2.5x. `--against DIR` times another checkout too (e.g. /work/main: before/after in
one run). Bytecode is cached (in a private prefix), as for an installed colony.
Prints the load average.

Run: PYTHONPATH=. .venv/bin/python bench/cli.py [--runs 10] [--against DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL = 2.5  # x `python -c pass`, for --version and id
#: What the `colony` console script runs.
SHIM = "import sys; from overlay.cli.main import main; sys.exit(main())"


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


class Cases:
    """The timed commands for one checkout (`code` on PYTHONPATH), on fresh homes."""

    def __init__(self, code: Path, work: Path, runs: int) -> None:
        # Bytecode cached as in an installed colony (this environment may set
        # PYTHONDONTWRITEBYTECODE), but in a private prefix, not in the checkout.
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        self.env = {**env, "PYTHONPATH": str(code), "PYTHONPYCACHEPREFIX": str(work / "pyc")}
        work.mkdir(parents=True)
        self.work = work
        self.data = work / "three.txt"
        self.data.write_bytes(b"hi\n")
        self.id_home = self._init(work / "id-home")
        # `add` writes: one fresh home per run, made ahead (not timed).
        self.add_homes = [self._init(work / f"add-home-{i}") for i in range(runs)]

    def colony(self, *argv: str) -> list[str]:
        return [sys.executable, "-c", SHIM, *argv]

    def _init(self, home: Path) -> Path:
        subprocess.run(self.colony("--home", str(home), "init"), env=self.env, cwd=self.work,
                       check=True, stdout=subprocess.DEVNULL, timeout=120)
        return home

    def commands(self, run: int) -> dict[str, list[str]]:
        return {
            "--version": self.colony("--version"),
            "--help": self.colony("--help"),
            "id": self.colony("--home", str(self.id_home), "id"),
            "add 3 B": self.colony("--home", str(self.add_homes[run]), "add", "-q",
                                   str(self.data)),
        }


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    """Wall seconds of one run. `cwd` outside any checkout: `python -c` puts the
    working directory first on sys.path, ahead of PYTHONPATH."""
    t0 = time.perf_counter()
    subprocess.run(argv, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                   timeout=120)
    return time.perf_counter() - t0


def measure(cases: dict[str, Cases], runs: int, cwd: Path) -> dict[str, list[float]]:
    """Interleaved: each round times the limit, then every command of every checkout."""
    times: dict[str, list[float]] = {}
    env = next(iter(cases.values())).env
    bare = [sys.executable, "-c", "pass"]
    for _ in range(2):  # warm the page cache and the .pyc files
        timed(bare, env, cwd)
        for c in cases.values():
            timed(c.commands(0)["--help"], c.env, cwd)
    for run in range(runs):
        times.setdefault("limit", []).append(timed(bare, env, cwd))
        for label, c in cases.items():
            for name, argv in c.commands(run).items():
                times.setdefault(f"{label}|{name}", []).append(timed(argv, c.env, cwd))
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--against", type=Path, default=None,
                    help="another checkout to time in the same run (e.g. /work/main)")
    a = ap.parse_args()
    print(f"load average before: {load()}")
    with tempfile.TemporaryDirectory(prefix="colony-bench-cli-") as tmp:
        work = Path(tmp)
        cases = {"this": Cases(ROOT, work / "this", a.runs)}
        if a.against is not None:
            cases["against"] = Cases(a.against.resolve(), work / "against", a.runs)
        times = measure(cases, a.runs, work)
    limit = statistics.median(times["limit"])
    print(f"limit: python -c pass  median {limit * 1e3:7.1f} ms  (n={a.runs})")
    worst = 0.0
    for label in cases:
        where = ROOT if label == "this" else a.against
        print(f"{label}: {where}")
        for name in ("--version", "--help", "id", "add 3 B"):
            med = statistics.median(times[f"{label}|{name}"])
            ratio = med / limit
            goal = f"  (goal < {GOAL}x)" if name in ("--version", "id") else ""
            if label == "this" and goal:
                worst = max(worst, ratio)
            print(f"  colony {name:<10} median {med * 1e3:7.1f} ms  {ratio:5.2f}x limit{goal}")
    print(f"load average after: {load()}")
    print(f"goal {'met' if worst < GOAL else 'NOT met'}: worst --version/id ratio {worst:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
