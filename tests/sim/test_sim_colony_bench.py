"""bench/sim_colony.py: cells run in parallel processes give each cell's own outcome.

Real subprocesses running the real simulator (two small gossip-only cells): the digest
of a cell depends only on its seed, not on how many cells ran at once, and different
seeds give different runs (so the check compares something).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench import sim_colony  # noqa: E402

pytestmark = pytest.mark.timeout(120)


def test_cell_sizes_split_evenly_under_the_cap() -> None:
    assert sim_colony.cell_sizes(10_000, 5_000) == [5_000, 5_000]
    assert sim_colony.cell_sizes(10_001, 5_000) == [3_334, 3_334, 3_333]
    assert sim_colony.cell_sizes(40, 100) == [40]
    assert sum(sim_colony.cell_sizes(99_999, 1_000)) == 99_999


def test_parallel_cells_give_the_digests_of_one_at_a_time() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "sim_colony.py"), "--nodes", "80", "--cap",
         "40", "--warm-s", "20", "--sim-s", "10", "--workers", "2", "--check"],
        capture_output=True, text=True, timeout=110)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "one worker at a time gives the same digests" in out.stdout
    digests = [ln.rsplit("digest ", 1)[1] for ln in out.stdout.splitlines()
               if "digest " in ln]
    assert len(digests) == 2 and digests[0] != digests[1]  # seeds 1 and 2 differ
