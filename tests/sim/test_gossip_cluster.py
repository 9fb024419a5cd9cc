"""Seeded simulations of the gossip core on the in-memory router (virtual time).

Each test prints its seed and figures; re-running with the same seed replays the run.
"""

import random
from collections import Counter
from typing import Any

import pytest
from helpers.core_net import CoreNet

from gossip.claim_verifier import Verifier
from gossip.events import Join, MemberFailed, MemberSuspected
from gossip.members import MemberState
from gossip.profiles import LAN, SwimConfig
from gossip.suspicion import suspicion_timeout_s
from gossip.swim import Swim
from overlay.core.crypto import KeyPair
from overlay.core.ids import PeerId

SEED = 20240601


class Cluster:
    def __init__(
        self, n: int, cfg: SwimConfig, seed: int, *, loss: float = 0.0, delay_s: float = 0.005
    ) -> None:
        rng = random.Random(seed)
        self.router = CoreNet(delay_s=delay_s, loss=loss, rng=random.Random(seed + 1))
        verifier = Verifier(4 * n * n)  # shared, as the simulator shares it
        self.cores: dict[PeerId, Swim] = {}
        for _ in range(n):
            keys = KeyPair(rng.randbytes(32))
            core = Swim(keys, cfg, rng=random.Random(rng.getrandbits(64)), verifier=verifier)
            self.cores[keys.peer_id] = core
            self.router.add(keys.peer_id, core)
        self.ids = list(self.cores)
        seed_peer = self.ids[0]
        for i, p in enumerate(self.ids):
            seeds = (seed_peer,) if p != seed_peer else ()

            def join(p: PeerId, s: tuple[PeerId, ...] = seeds) -> None:
                self.router.inject(p, Join(s))

            self.router.engine.at(i * 0.01, join, p)

    def run(self, until: float) -> None:
        self.router.run_until(until)

    def live_views(self) -> dict[PeerId, frozenset[PeerId]]:
        return {
            p: frozenset(q for q, m in c.members.items() if m.state is MemberState.ALIVE) | {p}
            for p, c in self.cores.items()
            if p in self.router.alive
        }

    def events(self, kind: type, since: float = 0.0) -> list[tuple[float, PeerId, Any]]:
        return [(t, p, e) for t, p, e in self.router.emitted if isinstance(e, kind) and t >= since]


def test_100_members_converge_to_identical_views() -> None:
    c = Cluster(100, LAN, SEED)
    c.run(20.0)
    views = c.live_views()
    everyone = frozenset(c.ids)
    assert all(v == everyone for v in views.values()), f"seed={SEED}"
    incs = {
        frozenset((q, m.incarnation) for q, m in core.members.items()) | {(p, core.incarnation)}
        for p, core in c.cores.items()
    }
    assert len(incs) == 1, f"seed={SEED}: incarnations differ between views"
    assert not c.events(MemberSuspected)


def detection_bound_s(cfg: SwimConfig, n: int) -> float:
    """Worst case: first probe within two rounds of the interval, the full (unconfirmed)
    Lifeguard suspicion timeout, then dissemination (retransmit rounds of gossip)."""
    max_s = suspicion_timeout_s(cfg.suspicion_mult, n, cfg.probe_interval_s)
    max_s *= cfg.suspicion_max_timeout_mult
    return 2 * cfg.probe_interval_s + max_s + 10 * cfg.gossip_interval_s


def test_killed_member_detected_by_all_within_profile_bound() -> None:
    c = Cluster(100, LAN, SEED + 1)
    c.run(20.0)
    victim = c.ids[37]
    c.router.kill(victim)
    bound = detection_bound_s(LAN, 100)
    c.run(20.0 + bound)
    seen = {p: t for t, p, e in c.events(MemberFailed) if e.peer == victim}
    missing = [p for p in c.ids if p != victim and p not in seen]
    assert not missing, f"seed={SEED + 1}: {len(missing)} members never detected the failure"
    worst = max(seen.values()) - 20.0
    print(
        f"detection: first {min(seen.values()) - 20.0:.1f} s, all {worst:.1f} s, "
        f"bound {bound:.1f} s"
    )
    assert worst <= bound
    false = [e for _, _, e in c.events(MemberFailed) if e.peer != victim]
    assert not false


def run_false_positives(
    lifeguard: bool, *, loss: float, slow: int, seed: int, duration_s: float, n: int = 100
) -> tuple[int, int]:
    """(false suspicions, false failures) of live members after the cluster formed."""
    c = Cluster(n, LAN.with_(lifeguard=lifeguard), seed, loss=loss)
    for p in c.ids[1 : 1 + slow]:
        c.router.slowdown[p] = 4 * LAN.probe_timeout_s  # handler delayed by 4 timeouts
    c.run(10.0 + duration_s)
    # Count originated accusations (the accuser's own event), not every node's copy.
    sus = sum(1 for _, p, e in c.events(MemberSuspected, since=10.0) if e.accuser == p)
    failed = sum(1 for _, p, e in c.events(MemberFailed, since=10.0) if e.accuser == p)
    return sus, failed


def test_slow_member_is_not_declared_dead_with_lifeguard() -> None:
    sus, failed = run_false_positives(True, loss=0.0, slow=1, seed=SEED + 2, duration_s=120.0)
    print(f"slow member, lifeguard: suspicions={sus} failures={failed}")
    assert failed == 0, f"seed={SEED + 2}"


@pytest.mark.parametrize(("n", "loss", "slow"), [(100, 0.05, 0), (50, 0.05, 2)])
def test_lifeguard_false_positives_below_swim(n: int, loss: float, slow: int) -> None:
    seed = SEED + 3
    kw: dict[str, Any] = {"loss": loss, "slow": slow, "seed": seed, "duration_s": 120.0, "n": n}
    swim = run_false_positives(False, **kw)
    life = run_false_positives(True, **kw)
    print(
        f"n={n} loss={loss} slow={slow}: SWIM suspicions={swim[0]} failures={swim[1]}; "
        f"Lifeguard suspicions={life[0]} failures={life[1]}"
    )
    assert life[1] <= swim[1], f"seed={seed}"
    assert life[0] + 10 * life[1] < swim[0] + 10 * swim[1], f"seed={seed}"


def test_partition_marks_other_half_dead_then_merges_after_healing() -> None:
    c = Cluster(60, LAN, SEED + 4)
    c.run(15.0)
    side = {p: i % 2 for i, p in enumerate(c.ids)}
    c.router.link_up = lambda s, d: side[s] == side[d]
    c.run(15.0 + 60.0)
    for p, core in c.cores.items():
        other = [q for q in core.members if side[q] != side[p]]
        states = Counter(core.members[q].state for q in other)
        assert states[MemberState.ALIVE] == 0, f"seed={SEED + 4}: {p.short()} {states}"
        assert states[MemberState.DEAD] >= len(other) // 2
    c.router.link_up = None
    healed_at = c.router.now
    merged_at = None
    for step in range(1, 60):
        c.run(healed_at + 5.0 * step)
        if all(v == frozenset(c.ids) for v in c.live_views().values()):
            merged_at = c.router.now - healed_at
            break
    print(f"partition merged {merged_at} s after healing")
    assert merged_at is not None, f"seed={SEED + 4}: views did not merge"
