"""DHT mode "auto" in the simulator: NAT'd nodes learn it from dial-backs (the real
reachability core, sim/reachability.py), switch to client mode and refuse kad streams,
so they drop out of routing tables as they are asked; lookups keep finding the
closest server.

Published figure (docs/dht.md, "Lookups"): in the bundled `smoke` scenario (100
nodes, 10 % behind NAT, 0.5 % loss) lookup latency p99 ≤ 3 × p50.
"""

from pathlib import Path

from sim import scenario
from sim.runner import Simulation
from sim.simulations import simulation_for

SMOKE = Path(__file__).resolve().parents[2] / "sim" / "scenarios" / "smoke.toml"


def test_nat_nodes_switch_to_client_and_leave_every_table() -> None:
    sc = scenario.parse("""
[scenario]
duration_s = 120
seed = 7
sample_interval_s = 20
[nodes]
count = 60
protocols = ["gossip", "dht"]
join_spread_s = 5
[dht]
mode = "auto"
[network]
nat_fraction = 0.25
[[workload]]
kind = "lookup"
rate_per_s = 2
start_s = 60
""", "auto.toml")
    sim = simulation_for(sc)
    assert isinstance(sim, Simulation)
    m = sim.run()
    w = sim.world
    nat = [i for i in w.live() if sim.net.nat[i]]
    public = [i for i in w.live() if not sim.net.nat[i]]
    assert len(nat) >= 5, "seed 7: too few NAT'd nodes to test anything"
    assert all(not sim.part(i, "dht").serving for i in nat)
    assert all(sim.part(i, "dht").serving for i in public)
    assert m.counters["reachability_nat"] == len(nat)
    # Entries made while they still served go lazily: a query to a client is refused
    # at once (no kad handler) and counts as a failure; the table drops it after
    # max_fails. Nothing re-adds it: role checks of clients fail the same way.
    assert w.stats.get("refused", 0) > 0
    clients = {w.nodes[i].peer for i in nat}
    in_tables = sum(p in clients for i in public for p in sim.part(i, "dht").table.peers())
    assert in_tables < 0.5 * len(public) * len(nat), f"seed 7: {in_tables} client entries"
    # Lookups find the closest *server* (clients are not a right answer).
    found = m.samples["lookup_found_closest"]
    assert found and sum(found) / len(found) >= 0.95


def test_smoke_lookup_tail_is_within_three_times_the_median() -> None:
    sc = scenario.load(SMOKE)
    m = simulation_for(sc).run()
    lat = sorted(m.samples["lookup_latency_s"])
    p50 = lat[len(lat) // 2]
    p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
    assert p99 <= 3 * p50, f"smoke seed {sc.seed}: p50 {p50:.2f} s, p99 {p99:.2f} s"
    assert m.counters["reachability_nat"] > 0
