"""Network model (latency by region, loss, NAT, partitions, bandwidth) and churn maths."""

import math
import random
import statistics

import pytest

from overlay.core.errors import ConfigError
from sim.churn import PRESETS, ChurnConfig, Dist, availability
from sim.network import Network, NetworkConfig, Partition


def test_latency_follows_regions() -> None:
    net = Network(NetworkConfig(jitter_frac=0.0), random.Random(3))
    ea = net.place("na-east")
    ea2 = net.place("na-east")
    eu = net.place("europe")
    asia = net.place("asia")
    local, atlantic, far = (net.base_delay_s(ea, ea2), net.base_delay_s(ea, eu),
                            net.base_delay_s(eu, asia))
    assert local < 0.04 < atlantic < 0.07 < 0.12 < far < 0.19
    assert net.delay(ea, eu) == atlantic  # no jitter configured


def test_jitter_is_seeded_and_loss_rate_matches() -> None:
    def draws(seed: int) -> list[float | None]:
        net = Network(NetworkConfig(loss=0.1), random.Random(seed))
        a, b = net.place("europe"), net.place("asia")
        return [net.delay(a, b) for _ in range(20_000)]

    one, two = draws(5), draws(5)
    assert one == two and one != draws(6)
    lost = sum(d is None for d in one) / len(one)
    assert abs(lost - 0.1) < 0.01
    assert min(d for d in one if d is not None) > 0.0


def test_nat_node_reachable_only_after_dialling_out_until_timeout() -> None:
    net = Network(NetworkConfig(nat_timeout_s=100.0), random.Random(1))
    pub = net.place("europe", nat=False)
    natd = net.place("europe", nat=True)
    other_nat = net.place("europe", nat=True)
    assert not net.reachable(pub, natd, 0.0)
    assert net.reachable(natd, pub, 1.0)  # dials out: mapping created
    assert net.reachable(pub, natd, 50.0)  # reply path open, refreshed
    assert not net.reachable(pub, natd, 200.0)  # idled out
    assert not net.reachable(natd, other_nat, 201.0)  # no hole punching
    assert net.stats["nat_blocked"] == 3


def test_partitions_by_region_and_fraction_start_and_heal() -> None:
    net = Network(NetworkConfig(), random.Random(2))
    eu, us, asia = net.place("europe"), net.place("na-east"), net.place("asia")
    p = Partition(10.0, 20.0, groups=(("europe",),))
    net.start_partition(p)
    assert not net.reachable(eu, us, 11.0) and net.reachable(us, asia, 11.0)
    late_eu = net.place("europe")  # nodes placed during a partition are cut too
    assert net.reachable(eu, late_eu, 12.0) and not net.reachable(late_eu, asia, 12.0)
    net.heal_partition(p)
    assert net.reachable(eu, us, 21.0)
    nodes = [net.place() for _ in range(2000)]
    q = Partition(0.0, 1.0, fraction=0.25)
    net.start_partition(q)
    cut = sum(1 for i in nodes if not net.reachable(nodes[0], i, 0.0))
    share = cut / len(nodes)
    assert 0.2 < share < 0.3 or 0.7 < share < 0.8


def test_bulk_transfers_share_bandwidth() -> None:
    cfg = NetworkConfig(up_min_bps=1e6, up_max_bps=1e6, down_min_bps=1e7, down_max_bps=1e7)
    net = Network(cfg, random.Random(1))
    src, a, b = net.place("europe"), net.place("europe"), net.place("europe")
    alone = net.transfer_time_s(src, a, 10_000_000)
    net.start_flow(src, a)
    shared = net.transfer_time_s(src, b, 10_000_000)
    assert 10.0 < alone < 10.1 and 20.0 < shared < 20.1
    net.end_flow(src, a)
    assert net.transfer_time_s(src, b, 10_000_000) == pytest.approx(alone, rel=0.01)


@pytest.mark.parametrize("dist", [Dist("exponential", 600.0), Dist("weibull", 600.0, 0.5),
                                  Dist("pareto", 600.0, 1.5)])
def test_distributions_have_the_stated_median_and_mean(dist: Dist) -> None:
    rng = random.Random(11)
    xs = [dist.sample(rng) for _ in range(40_000)]
    assert statistics.median(xs) == pytest.approx(600.0, rel=0.05)
    if dist.kind != "pareto":  # the Pareto mean converges too slowly to test
        assert statistics.fmean(xs) == pytest.approx(dist.mean_s(), rel=0.05)


def test_weibull_shape_below_one_is_heavy_tailed() -> None:
    w, e = Dist("weibull", 600.0, 0.5), Dist("exponential", 600.0)
    rng = random.Random(1)
    tail_w = sum(w.sample(rng) > 6000 for _ in range(20_000))
    tail_e = sum(e.sample(rng) > 6000 for _ in range(20_000))
    assert tail_w > 10 * max(1, tail_e)


def test_availability_and_bad_parameters() -> None:
    cfg = ChurnConfig(Dist("exponential", 100 * math.log(2)), Dist("exponential",
                                                                   300 * math.log(2)))
    assert availability(cfg) == pytest.approx(0.25)
    assert set(PRESETS) >= {"kad", "ipfs", "gnutella"}
    with pytest.raises(ConfigError, match="unknown distribution"):
        Dist("lognormal", 1.0)
    with pytest.raises(ConfigError, match="pareto"):
        Dist("pareto", 1.0, 0.9)
    with pytest.raises(ConfigError, match="graceful_fraction"):
        ChurnConfig(Dist("exponential", 1.0), Dist("exponential", 1.0), 1.5)
