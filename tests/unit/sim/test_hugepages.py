"""sim/hugepages.py: which mappings it asks for, and that collapsing the memory into
huge pages changes nothing a simulation writes."""

import json
import sys

import pytest

import sim.hugepages as hp
from sim.runner import Simulation
from sim.scenario import Scenario

MAPS = """\
55d0c0000000-55d0c0a00000 rw-p 00000000 00:00 0                          [heap]
7f0000000000-7f0000600000 rw-p 00000000 00:00 0
7f0000700000-7f0000800000 rw-p 00000000 00:00 0
7f0001000000-7f0001400000 r--p 00000000 08:01 123                        /usr/lib/libc.so.6
7f0002000000-7f0002400000 rw-p 00000000 08:01 124                        /usr/lib/libc.so.6
7f0003100000-7f0003700000 rw-p 00000000 00:00 0
7ffc00000000-7ffc00200000 rw-p 00000000 00:00 0                          [stack]
"""


def test_regions_are_the_aligned_parts_of_anonymous_writable_mappings() -> None:
    mb = 1 << 20
    assert hp._regions(MAPS) == [
        (0x55D0C0000000, 10 * mb),        # the malloc heap
        (0x7F0000000000, 6 * mb),         # an anonymous mapping (arenas)
        # 1 MiB only: no whole huge page; file mappings and the stack are left alone
        (0x7F0003200000, 4 * mb),         # rounded in to 2 MiB boundaries
    ]


def _run(collapse: bool, monkeypatch: pytest.MonkeyPatch) -> str:
    # Thresholds at zero: every sample collapses (where the kernel supports it).
    monkeypatch.setattr(hp, "MIN_GROWTH_BYTES", 0)
    monkeypatch.setattr(hp, "GROWTH", 0.0)
    sc = Scenario(name="hp", description="", duration_s=40.0, seed=3, nodes=40,
                  protocols=("gossip",), join_spread_s=2.0, seeds=3, view_sample=8,
                  sample_interval_s=5.0)
    sim = Simulation(sc)
    sim.huge_pages.enabled = collapse and sim.huge_pages.enabled
    m = sim.run()
    assert collapse or sim.huge_pages.collapsed == 0
    # Where the kernel supports it, the run did collapse (the comparison means something).
    assert not collapse or not sim.huge_pages.enabled or sim.huge_pages.collapsed > 0
    rows = {k: v for k, v in vars(m).items() if not k.startswith("_")}
    return json.dumps(rows, sort_keys=True, default=repr) + json.dumps(sim.world.stats)


def test_collapsing_changes_no_output(monkeypatch: pytest.MonkeyPatch) -> None:
    with_pages = _run(True, monkeypatch)
    assert with_pages == _run(False, monkeypatch)


@pytest.mark.skipif(sys.platform != "linux", reason="Linux only")
def test_collapse_on_linux_is_tried_once_per_growth() -> None:
    pages = hp.HugePages()
    pages.collapse()  # supported or not, it returns and says so through `enabled`
    assert pages.maybe_collapse() >= 0
    assert pages.maybe_collapse() == 0  # no growth since: not tried
