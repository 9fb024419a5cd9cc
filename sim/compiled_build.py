"""An opt-in mypyc-compiled copy of the simulator's hot path (issue #17, simulator speed).

`python -m sim.compiled_build` (or `make sim-compiled`) copies the source packages to a
build directory outside the package tree (`.build/mypyc/` by default, git-ignored) and
compiles the modules in `MODULES` there with mypyc, in place in that copy: each gets a
C extension (`<module>.cpython-311-…so`) beside its `.py`, which the import system
prefers. Running with `PYTHONPATH=$PWD/.build/mypyc` then uses the compiled modules; the
normal tree stays pure Python, and neither CI nor the suite compiles anything.

Why these modules: they hold the time of a gossip cell's joins and steady state
(profiled: the member table, broadcast queue, transitions, prober, Vivaldi, SWIM, the
peer id's hash and equality, and the world, engine and network of the simulator;
docs/simulation.md, Performance, "Eighth"). Left out on purpose: the frozen dataclasses
of inputs, effects and messages (`overlay/core/effects.py`, `gossip/messages.py`), whose
`_quick_init` builds an `__init__` over slot descriptors (an interpreted-class trick).
An interpreted class cannot subclass a compiled one, so a subclass of a listed class
must be listed too (tests/unit/sim/test_compiled_build.py checks the packages for that).
The copy is a snapshot: rebuild it after any source change.

The output must stay byte-identical: `--check` runs the golden, determinism and
campaign tests in the copy with `tests/helpers/compiled_probe.py`, which fails unless
every module of `MODULES` was imported from its compiled extension. mypyc stores a
value declared `float` as a C double, so an `int` put there becomes a `float`: mypyc
refused two such spots (sim/world.py, sim/engine.py), now written so that the pure
types stay as they were; the golden digests show that no written value changed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DEST = ROOT / ".build" / "mypyc"
#: The source packages copied (tests and bench too: `--check` and bench/sim.py's
#: `--compiled` run from the copy).
PACKAGES = ("overlay", "dht", "gossip", "store", "sim", "tests", "bench")
#: Compiled, as paths relative to the repository root. Each must exist (a unit test
#: checks it) and pass mypyc; the rest of the copy stays interpreted.
MODULES = (
    "gossip/awareness.py",
    "gossip/broadcast_queue.py",
    "gossip/claim_verifier.py",
    "gossip/colony_gate.py",
    "gossip/coordinates.py",
    "gossip/dissemination.py",
    "gossip/member_table.py",
    "gossip/members.py",
    "gossip/prober.py",
    "gossip/push_pull.py",
    "gossip/suspicion.py",
    "gossip/swim.py",
    "gossip/transitions.py",
    "overlay/core/ids.py",
    "overlay/node.py",
    # `FaultyWorld` subclasses `World`: an interpreted class cannot subclass a compiled
    # one, so the campaign is compiled too.
    "sim/campaign.py",
    "sim/engine.py",
    "sim/network.py",
    "sim/world.py",
)
#: The tests `--check` runs in the copy: every bundled scenario's digests, same seed
#: same files, parked and quick ticks changing nothing.
CHECK_TESTS = ("tests/sim/test_sim_golden.py", "tests/sim/test_sim_determinism.py",
               "tests/sim/test_campaign.py")


def module_names() -> list[str]:
    """`MODULES` as dotted module names (`gossip/swim.py` → `gossip.swim`)."""
    return [m.removesuffix(".py").replace("/", ".") for m in MODULES]


def copy_tree(dest: Path) -> None:
    """A fresh copy of the packages (no bytecode, no earlier build's extensions)."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    skip = shutil.ignore_patterns("__pycache__", "*.so", "*.pyc", "artifacts", ".hypothesis")
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, dest / pkg, ignore=skip)


def compile_modules(dest: Path) -> None:
    """mypyc on `MODULES`, in place in `dest`. No pyproject.toml is there while it
    runs (setuptools would read the project's metadata); it is copied afterwards, so
    pytest run from the copy has the project's settings."""
    env = {**os.environ, "PYTHONPATH": str(dest)}
    subprocess.run([sys.executable, "-m", "mypyc", *MODULES], cwd=dest, env=env, check=True)
    shutil.copy2(ROOT / "pyproject.toml", dest / "pyproject.toml")


def check(dest: Path) -> int:
    """The golden and determinism tests in the copy, the compiled modules first on the
    path; the probe plugin fails the run unless `MODULES` came from extensions."""
    env = {**os.environ, "PYTHONPATH": f"{dest}{os.pathsep}{dest / 'tests'}",
           "COLONY_COMPILED_MODULES": ",".join(module_names())}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
           "-p", "helpers.compiled_probe", *CHECK_TESTS]
    return subprocess.run(cmd, cwd=dest, env=env, check=False).returncode


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m sim.compiled_build",
        description="Copy the packages to DEST and compile the simulator's hot modules "
                    "there with mypyc (opt-in; run with PYTHONPATH=DEST).")
    ap.add_argument("--dest", type=Path, default=DEFAULT_DEST,
                    help=f"build directory (default {DEFAULT_DEST.relative_to(ROOT)})")
    ap.add_argument("--check", action="store_true",
                    help="after building, run the golden and determinism tests in the copy "
                         "and check the compiled modules were the ones imported")
    ap.add_argument("--check-only", action="store_true",
                    help="run the check on an existing build, without rebuilding")
    ap.add_argument("--list", action="store_true", help="print the compiled modules and exit")
    a = ap.parse_args(argv)
    if a.list:
        print("\n".join(module_names()))
        return 0
    dest = a.dest.resolve()
    if not a.check_only:
        copy_tree(dest)
        compile_modules(dest)
        print(f"compiled {len(MODULES)} modules in {dest}; run with PYTHONPATH={dest}")
    if a.check or a.check_only:
        return check(dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
