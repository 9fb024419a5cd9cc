"""A real colony partitioned 2/3 (short form of `make faults-real`'s 3/7): at most one
accepted receipt per capsule, tokens only rise, every acknowledged capsule completes
after heal within the stated bound. See docs/reliability.md."""

from __future__ import annotations

from pathlib import Path

import pytest
from fault_colony import BridgeColony, run_partition
from netns_topology import skip_reason

pytestmark = pytest.mark.slow

_SKIP = skip_reason()


def test_partition_then_heal_keeps_one_receipt_per_capsule(tmp_path: Path) -> None:
    if _SKIP:
        pytest.skip(_SKIP)
    with BridgeColony(tmp_path, 5) as c:
        r = run_partition(c, capsules=20, hold_s=10.0, small=2, complete_bound_s=40.0)
    assert r.violations == [], r.summary()
    assert r.unfinished == [], r.summary()
    assert r.acked >= 10, r.summary()
