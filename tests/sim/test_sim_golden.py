"""Every bundled scenario gives byte-identical output to pinned digests (shortened runs).

A refactor must change no behaviour: the simulator drives the production cores, so
byte-identical metric files for every bundled scenario are a strong check that gossip,
the DHT, the block exchange and capsules still decide exactly as before (same rng
draws in the same order, same iteration orders). The test compares against
`golden_sums.json`; a change that is *meant* to alter behaviour regenerates the file
with `make sim-golden` (`python tests/sim/test_sim_golden.py --update`) and says why in
its commit.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import pytest

from sim import scenario
from sim.simulations import simulation_for

SUMS = Path(__file__).with_name("golden_sums.json")
#: scenario → (nodes, duration_s): small enough for the suite (the 200-node ones: long).
RUNS: dict[str, tuple[int, float]] = {
    "smoke": (60, 60.0),
    "gossip-failures": (60, 60.0),
    "partition-heal": (60, 60.0),
    "dht-churn": (60, 60.0),
    "colony-churn": (60, 60.0),
    "capsule-small": (60, 60.0),
    "capsule-scale": (200, 60.0),
    "trigger-small": (60, 60.0),
    "trigger-scale": (200, 60.0),
}


def digests(name: str) -> dict[str, str]:
    """sha256 of each file the shortened run of scenario `name` writes."""
    nodes, duration_s = RUNS[name]
    sc = scenario.load(scenario.resolve(name)).with_(nodes=nodes, duration_s=duration_s)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        simulation_for(sc).run().write(out)
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(out.iterdir())}


def pinned() -> dict[str, dict[str, str]]:
    data: dict[str, dict[str, str]] = json.loads(SUMS.read_text())
    return data


#: The 200-node runs are the scale cousins of capsule-small and trigger-small (same
#: cores, same code paths): `make test-long` checks them; the suite keeps its time.
SCALE = ("capsule-scale", "trigger-scale")


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.long) if n in SCALE else n
                                  for n in sorted(RUNS)])
def test_scenario_output_is_byte_identical_to_pinned(name: str) -> None:
    nodes, duration_s = RUNS[name]
    assert digests(name) == pinned()[name], (
        f"{name} ({nodes} nodes, {duration_s:g} s): output changed; replay with "
        f"`colony sim run {name} --nodes {nodes} --duration {duration_s:g} --no-plots`")


def main(argv: list[str]) -> int:
    if argv != ["--update"]:
        print("usage: python tests/sim/test_sim_golden.py --update", file=sys.stderr)
        return 2
    SUMS.write_text(json.dumps({n: digests(n) for n in RUNS}, indent=1, sort_keys=True) + "\n")
    print(f"wrote {SUMS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
