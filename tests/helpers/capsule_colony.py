"""A few real `CapsuleCore`s on a `CoreNet`, each a member of every view: the setup the
custody unit tests share (short lease timing, two slots per executor)."""

from __future__ import annotations

import random

from helpers.core_net import CoreNet
from overlay.capsule.core import CapsuleCore
from overlay.capsule.custody import CustodyConfig
from overlay.capsule.executor import ExecutorConfig
from overlay.capsule.leases import LeaseTiming
from overlay.capsule.members import Member, MembersChanged
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
