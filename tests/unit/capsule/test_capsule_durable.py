"""Durable custody: write-ahead `CustodyRecordChanged`, `restore`, and the regression
for the all-custodians-crash token reuse (docs/capsules.md).

Real cores on the in-memory router, virtual time; each node's "disk" is a dict fed by
its `CustodyRecordChanged` events in effect order, as the runtime's store is.
"""

from __future__ import annotations

from typing import Any

import pytest
from helpers.core_net import CoreNet

from overlay.capsule import events as ev
from overlay.capsule.core import CapsuleCore, SubmitCapsule
from overlay.capsule.custody import CustodyConfig
from overlay.capsule.durable import DurableRecord, record_key
from overlay.capsule.executor import CapsuleExited, ExecutorConfig
from overlay.capsule.leases import EPOCH_SHIFT, CustodyRecord, LeaseTiming, State
from overlay.capsule.members import Member, MembersChanged
from overlay.capsule.messages import Heartbeat, Replicate, ReplicateAck
from overlay.capsule.spec import Capsule, CapsuleSpec
from overlay.core.crypto import KeyPair
from overlay.core.effects import Effect, Emit, Received, Send
from overlay.core.errors import WireError
from overlay.core.ids import PeerId
from overlay.core.wire import cbor_decode, cbor_encode

#: The first fencing token of custody epoch 1 (`epoch << EPOCH_SHIFT | n`).
T1 = 1 << EPOCH_SHIFT | 1

TIMING = LeaseTiming(lease_timeout_s=6, heartbeat_s=2, offer_timeout_s=3)


class Colony:
    def __init__(self, n: int = 6, **custody: Any) -> None:
        self.router = CoreNet(delay_s=0.01)
        self.keys = {k.peer_id: k for k in (KeyPair(bytes([i + 1]) * 32) for i in range(n))}
        self.peers = list(self.keys)
        self.exec_cfg = ExecutorConfig(slots=2)
        self.custody_cfg = CustodyConfig(timing=TIMING, **custody)
        self.disks: dict[PeerId, dict[bytes, bytes]] = {p: {} for p in self.peers}
        self.cores: dict[PeerId, CapsuleCore] = {}
        for p in self.peers:
            self.cores[p] = self.new_core(p)
            self.router.add(p, self.cores[p])
        self.router.on_emit = self._on_emit
        self.executors = list(self.peers)
        self.announce()

    def new_core(self, p: PeerId) -> CapsuleCore:
        return CapsuleCore(p, self.keys[p], custody=self.custody_cfg, executor=self.exec_cfg)

    def _on_emit(self, t: float, peer: PeerId, event: Any) -> None:
        if isinstance(event, ev.CustodyRecordChanged):
            if event.record is None:
                self.disks[peer].pop(event.capsule_id, None)
            else:
                self.disks[peer][event.capsule_id] = event.record

    def announce(self) -> None:
        live = [p for p in self.peers if p in self.router.alive]
        members = tuple(
            Member(p, self.exec_cfg.ad(), ("execute", "member", "submit")
                   if p in self.executors else ("member", "submit"))
            for p in live
        )  # fmt: skip
        for p in live:
            self.router.inject(p, MembersChanged(members))

    def custodians(self, cap: Capsule) -> list[PeerId]:
        live = next(p for p in self.peers if p in self.router.alive)
        return self.cores[live].view.closest(cap.key, 3)

    def restart(self, p: PeerId) -> list[Effect]:
        self.cores[p] = self.new_core(p)
        out = self.cores[p].restore(list(self.disks[p].values()), self.router.now)
        self.router.revive(p, self.cores[p])
        return out

    def events(self, kind: type) -> list[Any]:
        return self.router.of(kind)

    def capsule(self, **kw: Any) -> Capsule:
        return Capsule.sign(self.keys[self.peers[0]], CapsuleSpec(command=("x",), **kw), 0.0)


def test_record_round_trips_and_bad_bytes_are_refused() -> None:
    c = Colony(1)
    cap = c.capsule()
    rec = CustodyRecord(cap, c.peers[0], State.SUBMITTED, version=3, token=2)
    d = DurableRecord(rec, (), 5)
    again = DurableRecord.from_bytes(d.to_bytes())
    assert again == d and again.max_token == 5
    good = d.to_bytes()
    wire = cbor_decode(good)
    bad = {
        "garbage": b"\xff\x00garbage",
        "truncated": good[:-7],
        "wrong tag": cbor_encode(["colony/custody/0", *wire[1:]]),
        "max_token below token": cbor_encode([wire[0], wire[1], wire[2], 1]),
        "negative token": cbor_encode([wire[0], wire[1], wire[2], -1]),
        "forged capsule": good.replace(b"x", b"y", 1),
    }
    for name, blob in bad.items():
        with pytest.raises(WireError):
            DurableRecord.from_bytes(blob)
        assert name


def test_changes_are_persisted_before_anything_acts_on_them() -> None:
    c = Colony()
    cap = c.capsule()
    leader, follower = c.custodians(cap)[:2]
    out = c.router.inject(leader, SubmitCapsule(cap))
    kinds = [type(e.event) if isinstance(e, Emit) else type(e) for e in out]
    first_send = kinds.index(Send)
    assert ev.CustodyRecordChanged in kinds[:first_send], kinds
    assert record_key(cap.id) in c.disks[leader]
    # A follower persists a replicated record before it acknowledges it.
    rec = c.cores[leader].custody.record(cap.id)
    assert rec is not None
    out = c.cores[follower].handle(Received(leader, Replicate(rec.bumped())), c.router.now)
    persisted = [i for i, e in enumerate(out) if isinstance(e, Emit)
                 and isinstance(e.event, ev.CustodyRecordChanged)]  # fmt: skip
    acks = [i for i, e in enumerate(out) if isinstance(e, Send)
            and isinstance(e.msg, ReplicateAck)]  # fmt: skip
    assert persisted and acks and persisted[0] < acks[0]


def test_restore_skips_corrupt_records_with_a_reason_and_keeps_the_rest() -> None:
    c = Colony()
    cap = c.capsule()
    c.router.inject(c.peers[0], SubmitCapsule(cap))
    c.router.run_for(1)
    leader = c.custodians(cap)[0]
    good = list(c.disks[leader].values())
    assert len(good) == 1
    core = c.new_core(leader)
    out = core.restore([b"\x00", good[0][:10], good[0]], 5.0)
    skipped = [e.event for e in out if isinstance(e, Emit)]
    assert len(skipped) == 2 and all(isinstance(s, ev.CustodyRecordSkipped) for s in skipped)
    assert "stored custody record #0 skipped" in skipped[0].reason
    assert [r.capsule_id for r in core.custody.records()] == [cap.id]
    assert core.custody.stats["restore_skipped"] == 2


def _lease_running(c: Colony, cap: Capsule) -> tuple[ev.RunRequested, PeerId]:
    """Make a non-custodian the only executor, submit, run until it is running."""
    custodians = c.custodians(cap)
    c.executors = [p for p in c.peers if p not in custodians][:1]
    c.announce()
    c.router.inject(c.peers[0], SubmitCapsule(cap))
    c.router.run_for(1)
    (run,) = c.events(ev.RunRequested)
    return run, c.executors[0]


def test_all_custodians_crash_and_restart_from_disk_keeps_the_lease() -> None:
    c = Colony()
    cap = c.capsule(maxretries=3)
    run, executor = _lease_running(c, cap)
    assert run.token == T1
    victims = c.custodians(cap)
    for p in victims:
        c.router.kill(p)
    c.router.run_for(3)  # down for less than the lease: the executor keeps running
    for p in victims:
        assert c.restart(p) == []
    c.announce()
    # The origin replays the submission to the restored leader: deduplicated.
    c.router.inject(c.peers[0], SubmitCapsule(cap))
    c.router.run_for(2)
    c.router.inject(executor, CapsuleExited(cap.id, T1, 0))
    c.router.run_for(2)
    accepted = c.events(ev.ReceiptAccepted)
    assert [(a.capsule_id, a.token) for a in accepted] == [(cap.id, T1)]
    assert [e.token for e in c.events(ev.CapsuleLeased)] == [T1]
    rec = c.cores[c.custodians(cap)[0]].custody.record(cap.id)
    assert rec is not None and rec.state is State.SUCCEEDED


def test_restored_custody_reoffers_an_expired_lease_with_a_higher_token() -> None:
    c = Colony()
    cap = c.capsule(maxretries=3)
    _, hung = _lease_running(c, cap)
    victims = c.custodians(cap)
    for p in victims:
        c.router.kill(p)
    c.router.run_for(1)
    for p in victims:
        c.restart(p)
    # The old executor hangs (nothing it sends arrives); another one appears.
    c.router.link_up = lambda src, dst: src != hung
    c.executors = [p for p in c.peers if p not in victims]
    c.announce()
    c.router.run_for(20)
    tokens = [e.token for e in c.events(ev.CapsuleLeased)]
    assert tokens[0] == T1 and len(tokens) >= 2 and tokens == sorted(set(tokens)), tokens
    # The hung executor's receipt for token 1 is stale now and is rejected.
    c.router.link_up = None
    c.router.inject(hung, CapsuleExited(cap.id, 1, 0))
    c.router.run_for(1)
    assert not c.events(ev.ReceiptAccepted)
    latest = [r for r in c.events(ev.RunRequested) if r.token == tokens[-1]]
    runner = next(p for _, p, e in c.router.emitted if e is latest[0])
    c.router.inject(runner, CapsuleExited(cap.id, tokens[-1], 0))
    c.router.run_for(2)
    assert [a.token for a in c.events(ev.ReceiptAccepted)] == [tokens[-1]]


def test_without_the_disk_the_restarted_custodians_would_reuse_token_1() -> None:
    """The bug durable custody fixes, shown with the same scenario minus restore."""
    c = Colony()
    cap = c.capsule()
    _lease_running(c, cap)
    victims = c.custodians(cap)
    for p in victims:
        c.router.kill(p)
        c.disks[p] = {}  # a node that lost its disk
        c.restart(p)
    c.announce()
    c.router.inject(c.peers[0], SubmitCapsule(cap))
    c.router.run_for(1)
    # Both lineages start in epoch 1 here (the simulated clock is below 2 s); on a real
    # clock the second one's epoch, and so its tokens, would be higher.
    assert [e.token for e in c.events(ev.CapsuleLeased)] == [T1, T1]


def test_evicted_finished_records_are_deleted_from_disk() -> None:
    c = Colony(1, max_records=1)
    (p,) = c.peers
    a, b = c.capsule(), c.capsule(maxretries=2)
    c.router.inject(p, SubmitCapsule(a))
    c.router.run_for(1)
    (run,) = c.events(ev.RunRequested)
    c.router.inject(p, CapsuleExited(a.id, run.token, 0))
    c.router.run_for(1)
    assert set(c.disks[p]) == {record_key(a.id)}
    c.router.inject(p, SubmitCapsule(b))
    assert set(c.disks[p]) == {record_key(b.id)}


def test_heartbeat_alone_changes_nothing_on_disk() -> None:
    c = Colony()
    cap = c.capsule()
    run, executor = _lease_running(c, cap)
    leader = c.custodians(cap)[0]
    out = c.cores[leader].handle(Received(executor, Heartbeat(cap.id, run.token)), 3.0)
    assert not [e for e in out if isinstance(e, Emit)]
