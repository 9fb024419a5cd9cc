"""kill -9 of random daemons in a loop during fetches and capsule runs (short run).

The long run is `make faults-real` (bench/faults_kill.py); tests/integration/kill_loop.py
says what is injected and what is checked: every daemon starts again on its home,
the published file is intact everywhere, every acknowledged capsule succeeds, and the
nodes holding a capsule's terminal record agree on its one receipt.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from colony_cluster import Cluster
from kill_loop import KillLoop

# Long (~40 s): not in the default suite (`make test-long`); test_faults_kill9.py is the
# suite's short kill -9 run, bench/faults_kill.py the long campaign with the same harness.
pytestmark = [pytest.mark.slow, pytest.mark.long]

SEED = 5


def test_kill_9_loop_loses_nothing_and_accepts_one_receipt(tmp_path: Path) -> None:
    with Cluster(tmp_path / "c", 4) as c:
        c.wait_converged(60)
        loop = KillLoop(c, tmp_path, seed=SEED, duration_s=30, capsules=10, file_mib=4)
        res = loop.run()
    print(res.summary())
    assert res.kills >= 5, res.summary()
    assert res.submitted, res.summary()
    assert not res.violations, f"seed {SEED}: {res.violations[:5]}; {res.summary()}"
