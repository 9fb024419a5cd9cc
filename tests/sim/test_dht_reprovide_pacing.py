"""Reprovide pacing: a reprovide spreads its key regions over the interval (virtual time).

A converged static network of 400 cores (sim/dht_static.py); the provider's own estimate
of N sets p = ⌊log2(N̂/k)⌋ and 2^p key regions (N̂ ≈ 700 here: p = 5, 32 regions). The
first announcement (`Provide`) goes out at once; each reprovide starts region r at cycle
start + interval·r/2^p (kubo's sweeping reprovider), so its lookups and ADD_PROVIDERs
arrive as an even trickle, still ≤ 2 lookups per region and each key announced once
per cycle to its true k closest.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from dht import KadConfig, Kademlia, Provide, ProvideDone, StopProviding
from dht import providers as prov
from dht.wire import DhtRequest, MessageType
from overlay.core.effects import Effect, Send
from overlay.core.ids import PeerId, key_of_bytes
from overlay.core.multiformats import multihash_sha256
from sim.dht_static import build_static_network
from sim.router import Router

SEED = 4242
N = 400
INTERVAL = 3200.0  # 32 regions → one every 100 s


class Recorder:
    """Wraps the provider's core: (time, effect) of every Send it makes."""

    def __init__(self, core: Kademlia, router: Router) -> None:
        self.core = core
        self.router = router
        self.sends: list[tuple[float, Send]] = []

    def handle(self, inp: Any, now: float) -> list[Effect]:
        effects = self.core.handle(inp, now)
        self.sends += [(now, e) for e in effects if isinstance(e, Send)]
        return effects

    def between(self, t0: float, t1: float, kind: MessageType) -> list[tuple[float, Send]]:
        return [(t, e) for t, e in self.sends if t0 <= t < t1
                and isinstance(e.msg, DhtRequest) and e.msg.msg.type == kind]


def network(pace: bool) -> tuple[list[PeerId], dict[PeerId, Kademlia], Router, Recorder]:
    cfg = KadConfig(reprovide_interval_s=INTERVAL, provider_ttl_s=10 * INTERVAL,
                    refresh_check_s=1e9, expire_interval_s=1e9, pace_reprovide=pace)
    ids, cores, router = build_static_network(N, SEED, cfg, delay_s=0.02)
    rec = Recorder(cores[ids[0]], router)
    router.add(ids[0], rec)
    return ids, cores, router, rec


def keys(n: int, tag: str = "k") -> tuple[bytes, ...]:
    return tuple(multihash_sha256(f"{tag}{i}".encode()) for i in range(n))


def region_bits(core: Kademlia) -> int:
    return prov.region_bits(core.table.estimate_network_size(), core.config.k)


def done_events(router: Router) -> list[ProvideDone]:
    return [ev for _, _, ev in router.emitted if isinstance(ev, ProvideDone)]


def test_reprovide_spreads_regions_over_the_interval() -> None:
    ids, cores, router, rec = network(pace=True)
    mhs = keys(320)
    router.inject(ids[0], Provide(1, mhs))
    router.run_for(60.0)
    bits = region_bits(cores[ids[0]])
    regions = 1 << bits
    print(f"\nN={N}: estimate {cores[ids[0]].table.estimate_network_size():.0f}, "
          f"p={bits}, {regions} regions")
    first = done_events(router)
    assert len(first) == 1 and first[0].regions == regions  # 320 keys fill every region
    # The first announcement is immediate: all 320 × 20 ADD_PROVIDERs within a minute.
    assert len(rec.between(0.0, 60.0, MessageType.ADD_PROVIDER)) == 320 * 20

    router.run_until(2 * INTERVAL + 1.0)  # the reprovide cycle [INTERVAL, 2·INTERVAL)
    cycle = [(t, e) for t, e in rec.between(INTERVAL, 2 * INTERVAL,
                                             MessageType.ADD_PROVIDER)]
    assert len(cycle) == 320 * 20
    # Even trickle: each 1/16 of the interval sees about 1/16 of the messages, never a
    # burst; with 320 uniform keys a slot holds 20 ± a few keys.
    slot_s = INTERVAL / regions
    per_slot = Counter(int((t - INTERVAL) // slot_s) for t, _ in cycle)
    assert sorted(per_slot) == list(range(regions)), f"seed {SEED}: slots {per_slot}"
    mean = 320 * 20 / regions
    assert max(per_slot.values()) <= 3 * mean, f"seed {SEED}: burst {per_slot}"
    # Each region's messages go out within seconds of its start (lookup time only).
    for t, _ in cycle:
        slot = (t - INTERVAL) / slot_s
        assert slot - int(slot) < 0.05, f"seed {SEED}: message {t - INTERVAL:.1f} s late"
    lookups = rec.between(INTERVAL, 2 * INTERVAL, MessageType.FIND_NODE)
    assert lookups, "region lookups were sent"
    again = done_events(router)[1]
    assert again.keys == 320 and again.regions == regions
    # ≤ 2 lookups per region: ≤ 2·2^p ≤ 2N̂/k per sweep, whatever the number of keys.
    assert again.lookups <= 2 * regions <= 2 * cores[ids[0]].table.estimate_network_size() / 20
    # Each key announced once this cycle, to its true 20 closest.
    per_key = Counter(e.msg.msg.key for _, e in cycle)
    assert set(per_key.values()) == {20}
    for mh in mhs[:40]:
        t = key_of_bytes(mh)
        truth = set(sorted(ids[1:], key=lambda p: p.key ^ t)[:20])
        sent_to = {e.peer for _, e in cycle if e.msg.msg.key == mh}
        assert len(truth & sent_to) >= 19, f"seed {SEED}: {mh.hex()}"


def test_keys_added_or_stopped_mid_cycle() -> None:
    ids, cores, router, rec = network(pace=True)
    early = keys(160, "early")
    router.inject(ids[0], Provide(1, early))
    router.run_until(INTERVAL + INTERVAL / 2)  # half-way through the first reprovide
    late = keys(160, "late")
    stopped = early[:40]
    router.inject(ids[0], Provide(2, late))
    router.inject(ids[0], StopProviding(stopped))
    mid = router.now
    router.run_until(2 * INTERVAL + 1.0)
    reprov = done_events(router)[-1]
    assert reprov.request_id == 0
    bits = region_bits(cores[ids[0]])
    half = (1 << bits) // 2
    cycle_keys = Counter(e.msg.msg.key
                         for _, e in rec.between(mid + 60.0, 2 * INTERVAL,
                                                 MessageType.ADD_PROVIDER))
    # Late keys whose region was still ahead joined this cycle; the others wait a cycle.
    ahead = [m for m in late if key_of_bytes(m) >> (256 - bits) >= half + 1]
    assert ahead and all(cycle_keys[m] == 20 for m in ahead)
    # Stopped keys whose region had not started are not reprovided.
    later_stopped = [m for m in stopped if key_of_bytes(m) >> (256 - bits) >= half + 1]
    assert later_stopped and not any(cycle_keys[m] for m in later_stopped)


def test_pacing_off_reprovides_in_one_burst() -> None:
    ids, _cores, router, rec = network(pace=False)
    router.inject(ids[0], Provide(1, keys(320)))
    router.run_until(INTERVAL + 120.0)
    burst = rec.between(INTERVAL, INTERVAL + 120.0, MessageType.ADD_PROVIDER)
    assert len(burst) == 320 * 20
