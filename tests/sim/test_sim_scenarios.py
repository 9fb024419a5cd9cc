"""Faults and churn end to end: a partition causes false failures that heal; churn
takes nodes down and back (crash and graceful) and the DHT keeps answering."""

from sim import scenario
from sim.simulations import simulation_for

SEED = 99


def test_partition_then_heal_reconverges() -> None:
    sc = scenario.parse("""
[scenario]
duration_s = 150
seed = 99
sample_interval_s = 5
view_sample = 40
[nodes]
count = 60
protocols = ["gossip"]
join_spread_s = 3
[network]
regions = ["na-east", "europe"]
[[network.partition]]
start_s = 20
end_s = 60
groups = [["europe"]]
""", "partition.toml")
    sim = simulation_for(sc)
    m = sim.run()
    ts = m.tables["timeseries"]
    before = [r for r in ts if r["t"] <= 20]
    during = [r for r in ts if 20 < r["t"] <= 60]
    after = [r for r in ts if r["t"] >= 140]
    assert before[-1]["view_accuracy"] == 1.0, f"seed={SEED}"
    assert sum(r["false_failures"] for r in during) > 0, f"seed={SEED}: partition unnoticed"
    assert min(r["view_accuracy"] for r in during) < 0.8
    assert all(r["view_accuracy"] == 1.0 for r in after), f"seed={SEED}: no re-merge"
    assert m.counters["net_partitioned"] > 0


def test_churn_crashes_leaves_rejoins_and_lookups_still_succeed() -> None:
    sc = scenario.parse("""
[scenario]
duration_s = 180
seed = 99
sample_interval_s = 20
[nodes]
count = 80
protocols = ["gossip", "dht"]
join_spread_s = 5
[churn]
graceful_fraction = 0.5
start_s = 30
[churn.session]
kind = "weibull"
median_s = 120
shape = 0.5
[churn.downtime]
kind = "exponential"
median_s = 40
[[workload]]
kind = "lookup"
rate_per_s = 1
start_s = 40
""", "churn.toml")
    m = simulation_for(sc).run()
    c = m.counters
    assert c["churn_crashes"] > 5 and c["churn_leaves_graceful"] > 5, f"seed={SEED}: {c}"
    assert c["joins"] > 80 + 5  # rejoins after downtime
    live = [r["live"] for r in m.tables["timeseries"]]
    assert min(live) < 80 and max(live[3:]) > 40
    ok, failed = c.get("find_node_ok", 0), c.get("find_node_failed", 0)
    assert ok > 70 and failed <= ok * 0.1, f"seed={SEED}: {ok} ok, {failed} failed"
    found = m.samples["lookup_found_closest"]
    assert sum(found) / len(found) > 0.8, f"seed={SEED}"
    assert m.samples.get("detect_first_s"), "crashes were detected"
