"""The simulator, driving the real cores, reproduces published figures (small N).

Tolerances (stated in docs/simulation.md, "Fidelity"):
- SWIM first detection, lockstep rounds: e/(e−1) ≈ 1.582 periods ± 0.25 (50 crashes:
  the geometric number of rounds has sd ≈ 0.96, so the mean's sd ≈ 0.14);
  free-running timers: ≈ 2 periods ± 0.3;
- SWIM failure-detector load: 2 messages per member per period ± 0.1;
- push gossip: log2 N + ln N rounds ± 2 (Pittel's O(1) term), and within 1.5 rounds of
  the textbook push model simulated directly;
- Kademlia hops: within 0.6 hop of the idealised-table model, and ≤ ⌈log2 N⌉.
"""

import random

from sim import fidelity

SEED = 1


def test_swim_first_detection_and_load_lockstep() -> None:
    det, load = fidelity.swim_detection(200, seed=SEED, waves=10, per_wave=5)
    print(fidelity.format_row(det))
    print(fidelity.format_row(load))
    assert det.samples == 50, f"seed={SEED}"
    assert det.ok, f"seed={SEED}: {det}"
    assert load.ok, f"seed={SEED}: {load}"


def test_swim_first_detection_free_running() -> None:
    det, _ = fidelity.swim_detection(150, seed=SEED, waves=8, per_wave=5, lockstep=False)
    print(fidelity.format_row(det))
    assert abs(det.simulated - 2.0) <= 0.3, f"seed={SEED}: {det}"


def test_push_gossip_rounds_log2n_plus_lnn() -> None:
    row = fidelity.push_gossip_rounds(300, seed=SEED, events=8)
    ref = fidelity.pittel_reference(300, 100, random.Random(SEED))
    print(fidelity.format_row(row), f"textbook model {ref:.2f}")
    assert row.ok, f"seed={SEED}: {row}"
    assert abs(row.simulated - ref) <= 1.5, f"seed={SEED}: {row.simulated} vs {ref}"


def test_kademlia_hops_against_ideal_tables_and_bound() -> None:
    row, bound = fidelity.kademlia_hops(200, seed=SEED, lookups=150)
    print(fidelity.format_row(row), f"bound {bound}")
    assert row.samples >= 140, f"seed={SEED}: lookups failed"
    assert row.ok, f"seed={SEED}: {row}"
    assert row.simulated <= bound
