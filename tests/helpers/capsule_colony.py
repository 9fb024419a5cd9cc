"""A few real `CapsuleCore`s on a `CoreNet`, each a member of every view: the setup the
custody unit tests share (short lease timing, two slots per executor)."""

from __future__ import annotations

import random

from helpers.core_net import CoreNet
from overlay.capsule.core import CapsuleCore, SubmitCapsule
from overlay.capsule.custody import CustodyConfig
from overlay.capsule.events import RunRequested
from overlay.capsule.executor import ExecutorConfig
from overlay.capsule.leases import LeaseTiming
from overlay.capsule.members import Member, MembersChanged
from overlay.capsule.spec import Capsule, CapsuleSpec
from overlay.core.crypto import KeyPair
from overlay.core.ids import PeerId

EXECUTE = ("execute", "member", "submit")


def capsule_colony(
    net: CoreNet, n: int = 3, *, key_base: int = 1, executors: int | None = None
) -> tuple[list[KeyPair], dict[PeerId, CapsuleCore], tuple[Member, ...]]:
    """`n` cores on `net` (keys `bytes([key_base + i]) * 32`); the first `executors`
    (default all) execute, the rest are members only. Returns keys, cores, members."""
    keys = [KeyPair(bytes([i + key_base]) * 32) for i in range(n)]
    cfg = ExecutorConfig(slots=2)
    timing = LeaseTiming(lease_timeout_s=6, heartbeat_s=2, offer_timeout_s=3)
    cores = {}
    for k in keys:
        core = CapsuleCore(k.peer_id, k, custody=CustodyConfig(timing=timing), executor=cfg,
                           rng=random.Random(1))  # fmt: skip
        cores[k.peer_id] = core
        net.add(k.peer_id, core)
    ex = n if executors is None else executors
    members = tuple(Member(k.peer_id, cfg.ad(), EXECUTE if i < ex else ("member",))
                    for i, k in enumerate(keys))  # fmt: skip
    for k in keys:
        net.inject(k.peer_id, MembersChanged(members))
    return keys, cores, members


def led_by_last_running_elsewhere(
    net: CoreNet, keys: list[KeyPair], cores: dict[PeerId, CapsuleCore]
) -> tuple[Capsule, RunRequested, PeerId]:
    """Submit (from the first node) a capsule the last node leads, and run 1 s: it runs
    on another node when the last executes nothing (`executors=n - 1`). Returns the
    capsule, its run and the executor."""
    last = keys[-1].peer_id
    cap = next(c for c in (Capsule.sign(keys[0], CapsuleSpec(command=("run",)), 0.0, nonce=n)
                           for n in range(64))
               if cores[last].view.leader(c.key, len(cores)) == last)  # fmt: skip
    net.inject(keys[0].peer_id, SubmitCapsule(cap))
    net.run_for(1)
    (run,) = net.of(RunRequested)
    who = next(p for _, p, e in net.emitted if e is run)
    assert cores[last].custody.is_leading(cap.id) and who != last
    return cap, run, who


def restart_empty(net: CoreNet, key: KeyPair, members: tuple[Member, ...]) -> CapsuleCore:
    """`key`'s node back at once with an empty store (no view changed elsewhere): the
    core that replaces it on `net`, with capsule_colony's timing."""
    timing = LeaseTiming(lease_timeout_s=6, heartbeat_s=2, offer_timeout_s=3)
    fresh = CapsuleCore(key.peer_id, key, custody=CustodyConfig(timing=timing),
                        executor=ExecutorConfig(slots=2), rng=random.Random(2))  # fmt: skip
    net.cores[key.peer_id] = fresh
    net.inject(key.peer_id, MembersChanged(members))
    return fresh
