"""A leader back with an empty store, whose capsule's executor then died, still gets the
copy from its followers, and the capsule runs again elsewhere.

The receipt handoff (test_capsule_receipt_handoff.py) needs a receipt to carry the copy:
with the executor dead too, none comes. The followers still counted the old leader's
ack of their version, so no view change made them hand their copies over, the leader
never learnt of the capsule, and it stayed running for as long as that leader stayed
up (docs/reliability.md listed it open on 2026-12-07). A follower now hands its
copy to the leader on every view change while the copy's executor is gone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from helpers.capsule_colony import capsule_colony, led_by_last_running_elsewhere, restart_empty
from helpers.core_net import CoreNet

from overlay.capsule import events as ev
from overlay.capsule.core import CapsuleCore
from overlay.capsule.executor import CapsuleExited
from overlay.capsule.leases import State
from overlay.capsule.members import Member, MembersChanged
from overlay.capsule.messages import Replicate
from overlay.capsule.spec import Capsule
from overlay.core.crypto import KeyPair
from overlay.core.ids import PeerId


@dataclass
class Running:
    keys: list[KeyPair]
    cores: dict[PeerId, CapsuleCore]
    members: tuple[Member, ...]
    cap: Capsule
    leader: PeerId
    executor: PeerId
    other: PeerId


def _running_capsule(net: CoreNet) -> Running:
    """Three cores (0 and 1 execute, the last only leads), one capsule running on 0 or
    1 and led by the last; a view change has already made the followers hand their
    copies over once, so each counts the leader's ack of the current version."""
    keys, cores, members = capsule_colony(net, key_base=41, executors=2)
    cap, _, who = led_by_last_running_elsewhere(net, keys, cores)
    last = keys[-1].peer_id
    other = next(k.peer_id for k in keys[:2] if k.peer_id != who)
    for p in (who, other):  # a view change (a flap): the handoff the leader acks
        net.inject(p, MembersChanged(members))
    net.run_for(0.5)
    rec = cores[last].custody.record(cap.id)
    assert rec is not None
    version = rec.version
    for p in (who, other):
        assert cores[p].custody._entries[cap.id].acks[last] == version
    return Running(keys, cores, members, cap, last, who, other)


def _replicates_to(net: CoreNet, since: int, dst: PeerId) -> list[Any]:
    return [m for src, d, m in net.sends[since:] if d == dst and isinstance(m, Replicate)]


def test_followers_hand_an_orphaned_copy_to_a_leader_that_forgot_it() -> None:
    net = CoreNet(delay_s=0.01, max_events=20_000)
    r = _running_capsule(net)
    keys, cores, members, cap = r.keys, r.cores, r.members, r.cap
    last, who, other = r.leader, r.executor, r.other

    # The leader restarts with an empty store before anyone notices ...
    fresh = restart_empty(net, keys[-1], members)
    assert fresh.custody.record(cap.id) is None
    # ... and the executor dies: no receipt will ever come.
    net.kill(who)
    alive = tuple(m for m in members if m.peer != who)
    for p in (last, other):
        net.inject(p, MembersChanged(alive))
    net.run_for(20)

    rec = fresh.custody.record(cap.id)  # (None before the fix: it never heard of it)
    assert (
        rec is not None and rec.executor == other and rec.state in (State.LEASED, State.RUNNING)
    ), rec
    assert cores[other].custody.stats.get("orphan_handoffs", 0) >= 1
    (rerun,) = net.of(ev.RunRequested, at=other)
    net.inject(other, CapsuleExited(rerun.capsule.id, rerun.token, 0))
    net.run_for(10)
    for core in (fresh, cores[other]):
        got = core.custody.record(cap.id)
        assert got is not None and got.state is State.SUCCEEDED, got and got.state


def test_no_handoff_to_a_leader_that_acked_while_the_executor_lives() -> None:
    """What keeps it cheap: with the leader's ack of the current version counted, a
    view change that leaves the executor in place hands the leader nothing."""
    net = CoreNet(delay_s=0.01, max_events=20_000)
    r = _running_capsule(net)
    since = len(net.sends)
    for p in (r.executor, r.other):
        net.inject(p, MembersChanged(r.members))
    net.run_for(0.5)
    assert _replicates_to(net, since, r.leader) == []
    assert all(c.custody.stats.get("orphan_handoffs", 0) == 0 for c in r.cores.values())
