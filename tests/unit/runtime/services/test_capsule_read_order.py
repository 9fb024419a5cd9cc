"""A read picks the custody copy of highest (epoch, leader, version)
(services/capsule_info.newest_copy), not the highest version: after a partition, the
minority leader's own copy can carry a higher version than the epoch that replaced it
(seen in the real-daemon partition run of 2026-12-06, where the versions happened to
order the copies right)."""

from __future__ import annotations

from dataclasses import replace

from overlay.capsule.leases import CustodyRecord, State
from overlay.capsule.spec import Capsule, CapsuleSpec
from overlay.core.crypto import KeyPair
from overlay.runtime.services.capsule_info import newest_copy

KEYS = [KeyPair.from_rng_seed(bytes([i]) * 32) for i in range(1, 5)]
P = [k.peer_id for k in KEYS]
CAP = Capsule.sign(KEYS[0], CapsuleSpec(name="x", command=("true",)), 1000.0, 1)
BASE = CustodyRecord(CAP, P[0])


def test_the_later_epoch_wins_over_a_higher_version_of_the_earlier() -> None:
    stale = replace(BASE, state=State.FAILED, version=12, epoch=5, config=(P[0], P[1], P[2]))
    current = replace(BASE, state=State.SUCCEEDED, version=6, epoch=6,
                      config=(P[1], P[2], P[3]))
    assert newest_copy(stale, [current]) is current
    assert newest_copy(current, [stale]) is current
    assert newest_copy(None, [stale, current]) is current


def test_within_one_ballot_the_higher_version_wins_and_nothing_found_keeps_ours() -> None:
    v3 = replace(BASE, version=3, epoch=5, config=(P[0], P[1], P[2]))
    v4 = replace(v3, version=4)
    assert newest_copy(v3, [v4]) is v4
    assert newest_copy(v4, []) is v4
    assert newest_copy(None, []) is None
