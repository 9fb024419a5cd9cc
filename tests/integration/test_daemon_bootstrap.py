"""A daemon whose seed is not up yet keeps retrying its bootstrap (real processes).

The joiners start first and come up alone (every bootstrap dial refused); the seed
starts afterwards; all three must converge. Every wait is a bounded poll.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from colony_cluster import Cluster, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def test_joiners_started_before_the_seed_still_join(tmp_path: Path) -> None:
    c = Cluster(tmp_path / "c", 3)
    try:
        c.prepare()
        seed, *joiners = c.nodes
        for n in joiners:
            n.start([seed.addr])
        for n in joiners:
            wait_for(n.up, 60, f"{n.home.name} API")
        assert all(len(n.members()) == 1 for n in joiners)  # alone: the seed is down
        seed.start()
        wait_for(seed.up, 60, "seed API")
        c.wait_converged(timeout=60)
    finally:
        c.close()
