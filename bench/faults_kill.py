"""Real-daemon fault run: `kill -9` of random daemons in a loop (`make faults-real`, with
bench/faults_real.py's partition run).

A colony of `--nodes` daemons on 127.0.0.1; one publishes a `--mib` MiB file, capsules
are submitted from live nodes, every node fetches the file, and for `--seconds` a
killer SIGKILLs a random daemon, waits 0.5–2 s and restarts it. Then it checks what
tests/integration/kill_loop.py states (store intact, nothing acknowledged lost, every
acknowledged capsule succeeds, one receipt per capsule) and prints the counts, the
violations, and seeds/minute. Exit status 1 on a violation; the seed replays the same
kill schedule (the daemons' timing is real, so a replay is not exact).

Usage: .venv/bin/python bench/faults_kill.py [--nodes 5] [--seconds 300] [--capsules 60]
                                             [--mib 32] [--seeds 1] [--start 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, bench/ comes first on sys.path and bench/store.py would shadow the
# store package: put the repository root there instead.
if sys.path and Path(sys.path[0] or ".").resolve() == ROOT / "bench":
    sys.path[0] = str(ROOT)
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from colony_cluster import Cluster  # noqa: E402
from kill_loop import KillLoop  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=300.0)
    ap.add_argument("--capsules", type=int, default=60)
    ap.add_argument("--mib", type=int, default=32)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--start", type=int, default=1)
    args = ap.parse_args()
    bad = 0
    t0 = time.monotonic()
    for seed in range(args.start, args.start + args.seeds):
        with tempfile.TemporaryDirectory(prefix="colony-faults-") as tmp, \
                Cluster(Path(tmp) / "c", args.nodes) as c:
            c.wait_converged(60)
            res = KillLoop(c, Path(tmp), seed=seed, duration_s=args.seconds,
                           capsules=args.capsules, file_mib=args.mib).run()
        print(f"seed {seed}: {res.summary()}", flush=True)
        for v in res.violations:
            print(f"  VIOLATION {v}")
        if res.violations:
            bad += 1
            print(f"  replay: .venv/bin/python bench/faults_kill.py --seeds 1 --start {seed} "
                  f"--nodes {args.nodes} --seconds {args.seconds:.0f} "
                  f"--capsules {args.capsules} --mib {args.mib}")
    minutes = (time.monotonic() - t0) / 60
    print(f"kill -9 loop: {args.seeds} seeds in {minutes:.1f} min "
          f"({args.seeds / minutes:.2f} seeds/minute); seeds with a violation: {bad}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
