"""A deposed leader's uncommitted outcome (docs/capsules.md, "Deposed copies").

The partition run of 2026-12-06, on real cores in hand-advanced virtual time: the
epoch-1 leader A leases the capsule to itself, the cut begins (links first: gossip has
not noticed yet), A's run ends and A applies the receipt to its own copy, which never
reaches its configuration. The other side takes over in a later epoch, re-runs the
capsule on B and commits that receipt. Checked:

- A never reports its own run as the outcome (`report`, `StatusQuery`), during the cut
  or after it;
- after the heal A holds the committed outcome, says it superseded its own
  (`OutcomeSuperseded`), and leases or replicates nothing of epoch 1;
- one receipt accepted, every custodian's reported copy is that one.

Two shapes after the heal: A is the leader of the whole view again (it outbids the
later epoch and adopts its copy in phase 1), and A is *left out*: three nodes closer to
the capsule joined the other side during the cut, so the new configuration does not
name A and only A's handoff (answered by read repair) tells it.
"""

from __future__ import annotations

import random

from helpers.core_net import CoreNet

from overlay.capsule import events as ev
from overlay.capsule.core import CapsuleCore, SubmitCapsule
from overlay.capsule.custody import CustodyConfig
from overlay.capsule.executor import CapsuleExited, ExecutorConfig
from overlay.capsule.leases import EPOCH_SHIFT, LeaseTiming, State
from overlay.capsule.members import Member, MembersChanged
from overlay.capsule.messages import (
    Committed,
    LeaseOffer,
    Replicate,
    ReplicateAck,
    StatusQuery,
    StatusReply,
    decode_message,
)
from overlay.capsule.spec import Capsule, CapsuleSpec
from overlay.core.crypto import KeyPair
from overlay.core.effects import Send
from overlay.core.ids import PeerId


class Colony:
    """`n` capsule cores; views and executors are set per node by hand."""

    def __init__(self, n: int) -> None:
        self.net = CoreNet(delay_s=0.01, rng=random.Random(3))
        self.keys = [KeyPair(bytes([i + 1]) * 32) for i in range(n)]
        self.cfg = ExecutorConfig(slots=1)
        timing = LeaseTiming(lease_timeout_s=6, heartbeat_s=2, offer_timeout_s=3)
        self.cores: dict[PeerId, CapsuleCore] = {}
        for k in self.keys:
            core = CapsuleCore(k.peer_id, k, custody=CustodyConfig(timing=timing),
                               executor=self.cfg, rng=random.Random(1))  # fmt: skip
            self.cores[k.peer_id] = core
            self.net.add(k.peer_id, core)

    def by_closeness(self, cap: Capsule) -> list[PeerId]:
        return sorted(self.cores, key=lambda p: p.key ^ cap.key)

    def view(self, nodes: list[PeerId], executors: list[PeerId]) -> None:
        """Every node in `nodes` sees exactly `nodes`; only `executors` may run."""
        members = tuple(Member(p, self.cfg.ad(), ("execute", "member", "submit")
                               if p in executors else ("member", "submit"))
                        for p in nodes)  # fmt: skip
        for p in nodes:
            self.net.inject(p, MembersChanged(members))

    def runs(self, at: PeerId) -> list[ev.RunRequested]:
        return [e for _, p, e in self.net.emitted if isinstance(e, ev.RunRequested) and p == at]


def _reported_outcome(core: CapsuleCore, cid: str) -> tuple[str, PeerId | None] | None:
    rep = core.custody.report(cid)
    if rep is None or rep.record is None or not rep.record.terminal:
        return None
    r = rep.record.receipt
    return rep.record.state.value, r.executor if r else None


def _status_answer(c: Colony, asker: PeerId, holder: PeerId, cid: str) -> StatusReply:
    """What `holder` answers a `StatusQuery` (a child's leader, an origin)."""
    out = c.cores[holder].custody.on_status_query(asker, StatusQuery(cid), c.net.now)
    (send,) = out
    assert isinstance(send, Send) and isinstance(send.msg, StatusReply)
    return send.msg


def run_cut(c: Colony, a: PeerId, b: PeerId, side_a: list[PeerId],
            side_b: list[PeerId], everyone: list[PeerId], cap: Capsule) -> None:  # fmt: skip
    """A runs the capsule and applies its receipt as the cut begins; side B re-runs it."""
    c.view(everyone, executors=[a])
    c.net.inject(a, SubmitCapsule(cap))
    c.net.run_for(1.0)
    (run_a,) = c.runs(a)
    rec = c.cores[a].custody.record(cap.id)
    assert rec is not None and rec.epoch > 0 and rec.config[0] == a
    epoch1 = rec.epoch
    # The cut: links first, gossip notices later.
    c.net.partition(side_a, side_b)
    c.net.inject(a, CapsuleExited(cap.id, run_a.token, 0))
    c.net.run_for(0.5)
    held = c.cores[a].custody.record(cap.id)
    assert held is not None and held.state is State.SUCCEEDED and held.epoch == epoch1
    assert c.net.of(ev.ReceiptAccepted) == []  # held until a majority holds it: never
    # A's own copy is not its outcome: reports show the committed lease, the run pending.
    rep = c.cores[a].custody.report(cap.id)
    assert rep is not None and rep.record is not None and not rep.record.terminal
    assert rep.pending is held
    assert _status_answer(c, side_a[-1], a, cap.id).state in ("leased", "running")
    c.view(side_a, executors=[a])
    c.view(side_b, executors=[b])
    c.net.run_for(20.0)
    (run_b,) = c.runs(b)
    assert run_b.token >> EPOCH_SHIFT > epoch1
    c.net.inject(b, CapsuleExited(cap.id, run_b.token, 0))
    c.net.run_for(3.0)
    (accepted,) = c.net.of(ev.ReceiptAccepted)
    assert accepted.receipt.executor == b
    # Still cut off: A reports no outcome, and answers no one that it finished.
    assert _reported_outcome(c.cores[a], cap.id) is None
    assert _status_answer(c, side_a[-1], a, cap.id).state in ("leased", "running")


def check_healed(c: Colony, a: PeerId, b: PeerId, cap: Capsule, since: int) -> None:
    """After the heal (`since`: sends before it)."""
    (accepted,) = c.net.of(ev.ReceiptAccepted)
    assert accepted.receipt.executor == b
    held = c.cores[a].custody.record(cap.id)
    assert held is not None and held.receipt is not None and held.receipt.executor == b
    for p, core in c.cores.items():
        if core.custody.record(cap.id) is not None:
            assert _reported_outcome(core, cap.id) == ("succeeded", b), p
    (gone,) = c.net.of(ev.OutcomeSuperseded, a)
    assert gone.state == "succeeded" and gone.by_state == "succeeded"
    assert gone.token == c.runs(a)[0].token and gone.by_epoch > gone.epoch
    # After the heal A offers no lease, and replicates its epoch-1 copy at most until
    # the first answer (it then holds the later epoch's copy).
    after = [m for s, _, m in c.net.sends[since:] if s == a]
    assert not [m for m in after if isinstance(m, LeaseOffer) and m.token == c.runs(a)[0].token]
    stale = [m for m in after if isinstance(m, Replicate) and m.record.epoch == gone.epoch
             and m.record.state is State.SUCCEEDED]  # fmt: skip
    assert len(stale) <= 3, stale


def test_a_deposed_leader_that_leads_again_adopts_the_later_epochs_outcome() -> None:
    c = Colony(5)
    cap = Capsule.sign(c.keys[0], CapsuleSpec(command=("x",), maxretries=3), 0.0, 0)
    a, b, c2, d, e = c.by_closeness(cap)
    everyone = [a, b, c2, d, e]
    run_cut(c, a, b, [a, e], [b, c2, d], everyone, cap)
    since = len(c.net.sends)
    c.net.heal()
    c.view(everyone, executors=[a, b])
    c.net.run_for(40.0)
    check_healed(c, a, b, cap, since)
    assert c.cores[a].custody.is_leading(cap.id)  # the whole view's leader again


def test_a_deposed_leader_left_out_of_the_new_configuration_is_repaired() -> None:
    c = Colony(8)
    cap = Capsule.sign(c.keys[0], CapsuleSpec(command=("x",), maxretries=3), 0.0, 0)
    x, y, z, a, b, c2, d, e = c.by_closeness(cap)
    first = [a, b, c2, d, e]  # x, y and z join the other side during the cut
    c.view(first, executors=[a])
    run_cut(c, a, b, [a, e], [b, c2, d, x, y, z], first, cap)
    rec = c.cores[x].custody.record(cap.id)
    assert rec is not None and rec.config == (x, y, z)
    since = len(c.net.sends)
    c.net.heal()
    c.view([x, y, z, a, b, c2, d, e], executors=[a, b])
    c.net.run_for(10.0)
    assert not c.cores[a].custody.is_leading(cap.id)
    assert c.cores[x].custody.stats.get("copies_repaired", 0) >= 1
    check_healed(c, a, b, cap, since)


def test_commit_points_on_the_wire() -> None:
    c = Colony(1)
    cap = Capsule.sign(c.keys[0], CapsuleSpec(command=("x",)), 0.0, 0)
    core = c.cores[c.keys[0].peer_id]
    c.view([c.keys[0].peer_id], executors=[])
    core.handle(SubmitCapsule(cap), 0.0)
    rec = core.custody.record(cap.id)
    assert rec is not None
    for msg in (Replicate(rec), Replicate(rec, 7), ReplicateAck(cap.id, 3, (2, b"x"), (2, b"x")),
                ReplicateAck(cap.id, 3, (2, b"x"), (2, b"x"), 2), Committed(cap.id, (5, b"y"), 9)):
        assert decode_message(msg.to_wire()) == msg
    assert len(Replicate(rec).to_wire()) == 2  # the old form when no commit point is known
    assert len(ReplicateAck(cap.id, 3).to_wire()) == 7


def _one_capsule_running() -> tuple[Colony, Capsule, list[PeerId], ev.RunRequested, PeerId]:
    """Four nodes, every one an executor; one capsule submitted and leased: (colony,
    capsule, nodes, its RunRequested, the node running it)."""
    c = Colony(4)
    cap = Capsule.sign(c.keys[0], CapsuleSpec(command=("x",)), 0.0, 0)
    everyone = list(c.cores)
    c.view(everyone, executors=everyone)
    c.net.inject(everyone[0], SubmitCapsule(cap))
    c.net.run_for(1.0)
    (run,) = [e for _, _, e in c.net.emitted if isinstance(e, ev.RunRequested)]
    runner = next(p for _, p, e in c.net.emitted if e is run)
    return c, cap, everyone, run, runner


def test_every_custodian_reports_the_outcome_once_the_leader_commits_it() -> None:
    """Followers learn commit points from the leader (`Replicate` names the one before,
    `Committed` the finished version), with no view change to trigger a handoff."""
    c, cap, everyone, run, runner = _one_capsule_running()
    holders = [p for p in everyone if c.cores[p].custody.record(cap.id) is not None]
    assert len(holders) == 3
    for p in holders:  # the lease is committed and every holder knows it (or the one before)
        rep = c.cores[p].custody.report(cap.id)
        assert rep is not None and rep.record is not None and rep.record.token == run.token
    c.net.inject(runner, CapsuleExited(cap.id, run.token, 0))
    c.net.run_for(1.0)
    for p in holders:
        assert _reported_outcome(c.cores[p], cap.id) == ("succeeded", runner), p
    notices = [m for _, _, m in c.net.sends if isinstance(m, Committed)]
    assert len(notices) == 2  # one per follower, once


def test_a_restored_copy_is_pending_until_a_commit_point_names_it() -> None:
    """Commit knowledge is not persisted: a restarted custodian reports its finished
    copy as pending until its handoff to the leader is answered with the commit point."""
    from overlay.capsule.durable import DurableRecord

    c, cap, everyone, run, runner = _one_capsule_running()
    c.net.inject(runner, CapsuleExited(cap.id, run.token, 0))
    c.net.run_for(1.0)
    lead = c.cores[everyone[0]].view.leader(cap.key, 3)
    follower = next(p for p in everyone if p != lead and c.cores[p].custody.record(cap.id))
    old = c.cores[follower]
    rec = old.custody.record(cap.id)
    assert rec is not None and rec.terminal
    k = c.keys[everyone.index(follower)]
    fresh = CapsuleCore(follower, k, custody=old.custody.config, executor=c.cfg,
                        rng=random.Random(1))  # fmt: skip
    e = old.custody.table.entries[cap.id]
    assert fresh.restore([DurableRecord(rec, (), e.max_token, e.promise).to_bytes()],
                         c.net.now) == []  # fmt: skip
    c.net.cores[follower] = fresh
    c.cores[follower] = fresh
    rep = fresh.custody.report(cap.id)
    assert rep is not None and rep.record is None and rep.pending == rec
    assert _status_answer(c, lead, follower, cap.id).state == "unknown"
    c.view(everyone, executors=everyone)  # the restart's first view: handoff, ack
    c.net.run_for(1.0)
    assert _reported_outcome(fresh, cap.id) == ("succeeded", runner)
