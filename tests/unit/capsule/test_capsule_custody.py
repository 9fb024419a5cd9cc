"""Custody, leases and receipts on a 4-node cluster in hand-advanced virtual time.

Processes never run: tests decide when an executor's attempt exits (`finish`).
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from helpers.core_net import CoreNet

from overlay.capsule import events as ev
from overlay.capsule.core import CancelCapsule, CapsuleCore, QueryCapsule, SubmitCapsule
from overlay.capsule.custody import CustodyConfig
from overlay.capsule.executor import CapsuleExited, ExecutorConfig
from overlay.capsule.leases import EPOCH_SHIFT, CustodyRecord, LeaseTiming, State
from overlay.capsule.members import Member, MembersChanged
from overlay.capsule.messages import Heartbeat, LeaseOffer, LeaseReply, LeaseRevoked, ReceiptMsg
from overlay.capsule.spec import Capsule, CapsuleSpec, Conditions
from overlay.core.certs import Certificate
from overlay.core.crypto import KeyPair
from overlay.core.effects import Effect, Emit, Send, SetTimer
from overlay.core.errors import LocalProtocolError, MalformedFrame
from overlay.core.ids import PeerId

#: The first fencing token of custody epoch 1 (`epoch << EPOCH_SHIFT | n`).
T1 = 1 << EPOCH_SHIFT | 1

OWNER = KeyPair(b"\xee" * 32)


class Mute:
    """Wraps a core and drops the heartbeats it sends (a hung executor)."""

    def __init__(self, core: CapsuleCore) -> None:
        self.core = core

    def handle(self, inp: Any, now: float) -> list[Effect]:
        return [e for e in self.core.handle(inp, now)
                if not (isinstance(e, Send) and isinstance(e.msg, Heartbeat))]  # fmt: skip


class Mini:
    def __init__(self, n: int = 4, slots: int = 1, roles: tuple[str, ...] = ("execute",
                 "member", "submit")) -> None:  # fmt: skip
        self.router = CoreNet(delay_s=0.01)
        self.keys = [KeyPair(bytes([i + 1]) * 32) for i in range(n)]
        self.peers = [k.peer_id for k in self.keys]
        self.cfg = ExecutorConfig(slots=slots)
        self.cores: dict[PeerId, CapsuleCore] = {}
        self.chains = {k.peer_id: (Certificate.issue(OWNER, OWNER.public, k.peer_id, roles,
                                                     0, 1e9),) for k in self.keys}  # fmt: skip
        timing = LeaseTiming(lease_timeout_s=6, heartbeat_s=2, offer_timeout_s=3)
        for k in self.keys:
            core = CapsuleCore(k.peer_id, k, custody=CustodyConfig(
                colony_owner=OWNER.public.raw, timing=timing), executor=self.cfg,
                rng=random.Random(1))  # fmt: skip
            self.cores[k.peer_id] = core
            self.router.add(k.peer_id, core)
        self.executors = list(self.peers)
        self.announce()

    def announce(self, executors: list[PeerId] | None = None) -> None:
        if executors is not None:
            self.executors = executors
        members = tuple(Member(p, self.cfg.ad(), ("execute", "member", "submit")
                               if p in self.executors else ("member",))
                        for p in self.peers if p in self.router.alive)  # fmt: skip
        for p in self.peers:
            if p in self.router.alive:
                self.router.inject(p, MembersChanged(members))

    def events(self, kind: type, peer: PeerId | None = None) -> list[Any]:
        return self.router.of(kind, peer)

    def capsule(self, via: int = 0, **kw: Any) -> Capsule:
        spec = CapsuleSpec(command=("run",), **kw)
        return Capsule.sign(self.keys[via], spec, 0.0)

    def leader(self, cap: Capsule) -> PeerId:
        live = next(p for p in self.peers if p in self.router.alive)
        return self.cores[live].view.leader(cap.key, 3)

    def submit(self, cap: Capsule, via: int = 0) -> None:
        p = self.peers[via]
        self.router.inject(p, SubmitCapsule(cap, self.chains[p]))

    def finish(self, run: ev.RunRequested, status: int = 0, *, peer: PeerId | None = None) -> None:
        who = peer or self.runner(run)
        self.router.inject(who, CapsuleExited(run.capsule.id, run.token, status))

    def runner(self, run: ev.RunRequested) -> PeerId:
        for _, p, e in self.router.emitted:
            if e is run:
                return p
        raise AssertionError("unknown run")

    def record(self, cap: Capsule) -> CustodyRecord:
        rec = self.cores[self.leader(cap)].custody.record(cap.id)
        assert rec is not None
        return rec

    def non_leader_executors(self, cap: Capsule) -> None:
        lead = self.leader(cap)
        self.announce([p for p in self.peers if p != lead])

    def run(self, dt: float) -> None:
        self.router.run_for(dt)


def test_submit_run_receipt_happy_path() -> None:
    m = Mini()
    cap = m.capsule(outputs=("out.txt",))
    m.submit(cap)
    m.run(1)
    assert [e.capsule_id for e in m.events(ev.SubmissionAccepted)] == [cap.id]
    (run,) = m.events(ev.RunRequested)
    assert run.token == T1 and m.record(cap).state is State.RUNNING
    m.finish(run)
    m.run(1)
    rec = m.record(cap)
    assert rec.state is State.SUCCEEDED and rec.receipt is not None and rec.receipt.token == T1
    assert len(m.events(ev.ReceiptAccepted)) == 1
    (settled,) = m.events(ev.ReceiptSettled)
    assert settled.accepted
    status = m.events(ev.CapsuleStatusKnown, m.peers[0])
    assert status and status[-1].state == "succeeded"
    # Every custodian holds the finished record.
    holders = [c for c in m.cores.values() if (r := c.custody.record(cap.id)) and r.terminal]
    assert len(holders) == 3


def test_expired_lease_is_reoffered_with_higher_token_and_stale_receipt_rejected() -> None:
    m = Mini()
    cap = m.capsule(maxretries=3)
    m.non_leader_executors(cap)
    m.submit(cap)
    m.run(1)
    (first,) = m.events(ev.RunRequested)
    hung = m.runner(first)
    m.router.link_up = lambda s, d: hung not in (s, d)  # partition the executor
    m.run(9)
    requeued = m.events(ev.CapsuleRequeued)
    assert requeued and "no heartbeat for 6 s" in requeued[0].reason
    runs = m.events(ev.RunRequested)
    assert [r.token for r in runs] == [T1, T1 + 1] and m.runner(runs[1]) != hung
    m.router.link_up = None  # heal: the hung executor finishes its stale attempt
    m.finish(first, peer=hung)
    m.run(1)
    (stale,) = m.events(ev.ReceiptSettled, hung)
    assert not stale.accepted and f"stale token {T1} " in stale.reason
    assert m.record(cap).state is State.RUNNING
    m.finish(runs[1])
    m.run(1)
    assert m.record(cap).state is State.SUCCEEDED and m.record(cap).receipt.token == T1 + 1  # type: ignore[union-attr]
    assert len(m.events(ev.ReceiptAccepted)) == 1


def test_heartbeats_with_stale_token_get_the_lease_revoked() -> None:
    m = Mini()
    cap = m.capsule()
    m.non_leader_executors(cap)
    m.submit(cap)
    m.run(1)
    (first,) = m.events(ev.RunRequested)
    hung = m.runner(first)
    m.router.link_up = lambda s, d: hung not in (s, d)
    m.run(9)
    m.router.link_up = None
    m.run(3)  # the next heartbeat carries token 1: custody revokes it
    kills = m.events(ev.KillRequested, hung)
    assert kills and kills[0].token == T1
    assert not m.cores[hung].executor.running


def test_replayed_capsule_is_deduplicated() -> None:
    m = Mini()
    cap = m.capsule()
    m.submit(cap, via=0)
    m.submit(cap, via=1)  # the same signed bytes through another node
    m.run(1)
    assert len(m.events(ev.CapsuleAccepted)) == 1
    assert len(m.events(ev.SubmissionAccepted)) == 2
    (run,) = m.events(ev.RunRequested)
    m.finish(run)
    m.run(1)
    m.submit(cap, via=2)  # replay after it finished: acknowledged, not re-run
    m.run(1)
    assert len(m.events(ev.RunRequested)) == 1 and len(m.events(ev.ReceiptAccepted)) == 1
    assert m.cores[m.leader(cap)].custody.stats["duplicate_submits"] == 2


def test_maxwaittime_fails_with_the_cannot_place_reason() -> None:
    m = Mini()
    cap = m.capsule(conditions=Conditions(gpu=1), maxwaittime_s=10)
    m.submit(cap)
    m.run(5)
    waiting = m.events(ev.CapsuleWaiting)
    assert waiting[0].reason == "no node with gpu≥1 (4 members checked: 4 lack gpu)"
    assert m.record(cap).state is State.SUBMITTED
    m.run(6)
    rec = m.record(cap)
    assert rec.state is State.FAILED
    assert rec.reason == ("maxwaittime 10 s exceeded: no node with gpu≥1 "
                          "(4 members checked: 4 lack gpu)")  # fmt: skip
    assert m.events(ev.CapsuleStatusKnown, m.peers[0])[-1].state == "failed"


def test_only_the_leader_counts_a_waiting_capsule_for_its_ad() -> None:
    """`waiting_led` is the ad's `queued` (cell digests sum it): each waiting capsule
    once, at its leader, until it leases or ends."""
    m = Mini()
    stuck = m.capsule(conditions=Conditions(gpu=1), maxwaittime_s=10)
    m.submit(stuck)
    m.run(2)
    lead = m.leader(stuck)
    assert {p: c.custody.waiting_led() for p, c in m.cores.items()} == \
        {p: int(p == lead) for p in m.peers}
    m.run(10)  # maxwaittime: failed, no longer waiting
    assert m.record(stuck).state is State.FAILED
    assert sum(c.custody.waiting_led() for c in m.cores.values()) == 0


def test_maxretries_exhausted_fails_the_capsule() -> None:
    m = Mini()
    cap = m.capsule(maxretries=1)
    m.non_leader_executors(cap)
    for p in m.executors:
        m.router.nodes[p] = Mute(m.cores[p])  # accepts leases, never heartbeats
    m.submit(cap)
    m.run(30)
    rec = m.record(cap)
    assert rec.state is State.FAILED and rec.attempts == 2
    assert rec.reason.endswith("no heartbeat for 6 s; maxretries=1 exhausted")
    tokens = [e.token for e in m.events(ev.CapsuleLeased)]
    assert tokens == [T1, T1 + 1]
    runners = [m.runner(r) for r in m.events(ev.RunRequested)]
    assert runners[0] != runners[1]  # the executor whose lease expired is avoided


def test_maxexectime_revokes_and_requeues() -> None:
    m = Mini()
    cap = m.capsule(maxexectime_s=5, maxretries=0)
    m.submit(cap)
    m.run(7)
    assert any("maxexectime exceeded" in k.reason for k in m.events(ev.KillRequested))
    rec = m.record(cap)
    assert rec.state is State.FAILED and "maxexectime 5 s exceeded" in rec.reason


def test_nonzero_exit_is_one_accepted_receipt_and_failure() -> None:
    m = Mini()
    cap = m.capsule()
    m.submit(cap)
    m.run(1)
    (run,) = m.events(ev.RunRequested)
    m.finish(run, status=3)
    m.run(1)
    rec = m.record(cap)
    assert rec.state is State.FAILED and rec.reason == "exit status 3"
    assert len(m.events(ev.ReceiptAccepted)) == 1


def test_cancel_by_origin_kills_the_run_and_others_cannot_cancel() -> None:
    m = Mini()
    cap = m.capsule(via=0)
    m.submit(cap, via=0)
    m.run(1)
    m.router.inject(m.peers[3], CancelCapsule(cap.id))
    m.run(1)
    assert m.record(cap).state is State.RUNNING
    m.router.inject(m.peers[0], CancelCapsule(cap.id, "changed my mind"))
    m.run(1)
    rec = m.record(cap)
    assert rec.state is State.CANCELLED and rec.reason.endswith("changed my mind")
    assert m.events(ev.KillRequested)[0].reason == "cancelled"


def test_submit_without_submit_role_is_rejected_with_reason() -> None:
    m = Mini(roles=("execute", "member"))
    cap = m.capsule()
    m.submit(cap)
    m.run(1)
    (rej,) = m.events(ev.SubmissionRejected)
    assert "role submit not granted" in rej.reason
    assert not m.events(ev.CapsuleAccepted)


def test_query_reports_unknown_and_known_states() -> None:
    m = Mini()
    cap = m.capsule()
    m.router.inject(m.peers[1], QueryCapsule(cap.id))
    m.run(1)
    assert m.events(ev.CapsuleStatusKnown, m.peers[1])[-1].state == "unknown"
    m.submit(cap)
    m.run(1)
    m.router.inject(m.peers[1], QueryCapsule(cap.id))
    m.run(1)
    assert m.events(ev.CapsuleStatusKnown, m.peers[1])[-1].state == "running"


def test_leader_death_hands_over_running_capsule_without_rerun() -> None:
    m = Mini(n=5)
    cap = m.capsule()
    m.non_leader_executors(cap)
    m.submit(cap)
    m.run(1)
    (run,) = m.events(ev.RunRequested)
    old = m.leader(cap)
    m.router.kill(old)
    m.announce()  # everyone learns the leader died
    m.run(3)
    new = m.leader(cap)
    assert new != old and m.events(ev.CustodyTakenOver, new)
    m.run(10)  # heartbeats reach the new leader: no re-lease
    assert len(m.events(ev.RunRequested)) == 1
    m.finish(run)
    m.run(2)
    assert m.record(cap).state is State.SUCCEEDED and len(m.events(ev.ReceiptAccepted)) == 1


def _reply(out: list[Effect]) -> LeaseReply:
    """The executor's answer to an offer: its first effect, a `Send` of a `LeaseReply`."""
    send = out[0]
    assert isinstance(send, Send) and isinstance(send.msg, LeaseReply), send
    return send.msg


def test_executor_refuses_what_does_not_fit_and_stale_tokens() -> None:
    m = Mini(slots=1)
    ex = m.cores[m.peers[0]].executor
    timing = LeaseTiming()
    big = m.capsule(conditions=Conditions(gpu=1))
    out = ex.on_offer(m.peers[1], LeaseOffer(big, 1, timing), 0.0)
    assert _reply(out).accepted is False and _reply(out).reason == "only 0 of 1 gpu free"
    a, b = m.capsule(), m.capsule(via=1)
    assert _reply(ex.on_offer(m.peers[1], LeaseOffer(a, 2, timing), 0.0)).accepted
    busy = _reply(ex.on_offer(m.peers[1], LeaseOffer(b, 1, timing), 0.0))
    assert busy.reason == "all 1 slots busy"
    # the leader repeating the offer of the lease we run hears "accepted" again
    again = ex.on_offer(m.peers[1], LeaseOffer(a, 2, timing), 0.0)
    assert len(again) == 1 and _reply(again).accepted
    stale = _reply(ex.on_offer(m.peers[1], LeaseOffer(a, 1, timing), 0.0))
    assert stale.reason == "stale token"
    # a higher token for the same capsule supersedes our own attempt
    out = ex.on_offer(m.peers[1], LeaseOffer(a, 3, timing), 0.0)
    assert any(isinstance(e, Send) and isinstance(e.msg, LeaseReply) and e.msg.accepted
               for e in out)
    assert ex.running[a.id].token == 3
    # revocation from a non-custodian is ignored
    assert ex.on_revoked(KeyPair(b"\x99" * 32).peer_id, LeaseRevoked(a.id, 3), 0.0) == []


def test_transition_table_refuses_illegal_moves() -> None:
    rec = CustodyRecord(Mini(n=1).capsule(), KeyPair(b"\x01" * 32).peer_id)
    done = rec.advance(State.CANCELLED)
    with pytest.raises(LocalProtocolError):
        done.advance(State.SUCCEEDED)
    with pytest.raises(LocalProtocolError):
        rec.advance(State.RUNNING)
    leased = rec.advance(State.LEASED, token=4)
    with pytest.raises(LocalProtocolError):
        leased.advance(State.SUBMITTED, token=3)


def test_new_leader_settles_from_a_receipt_handed_over_in_the_takeover_sync() -> None:
    m = Mini(n=5)
    cap = m.capsule()
    by_distance = sorted(m.peers, key=lambda p: p.key ^ cap.key)
    old, heir, follower, _spare, executor = by_distance
    m.announce([executor])
    m.submit(cap)
    m.run(1)
    (run,) = m.events(ev.RunRequested)
    assert m.runner(run) == executor
    # The heir never hears from the executor; the leader dies as the attempt ends.
    m.router.link_up = lambda s, d: not (s == executor and d == heir)
    m.router.kill(old)
    m.finish(run)
    m.run(0.5)
    assert m.cores[follower].custody._entries[cap.id].pending_receipt is not None
    assert m.cores[heir].custody._entries[cap.id].pending_receipt is None
    # Only the heir learns of the death: it takes over and syncs with the follower,
    # whose view still has the old leader (so it does not hand off by itself).
    live = tuple(Member(p, m.cfg.ad(), ("execute", "member", "submit") if p == executor
                        else ("member",)) for p in m.peers if p != old)  # fmt: skip
    m.router.inject(heir, MembersChanged(live))
    m.run(0.5)
    assert m.cores[heir].custody.stats["receipts_handed_over"] == 1
    rec = m.cores[heir].custody.record(cap.id)
    assert rec is not None and rec.state is State.SUCCEEDED and rec.receipt is not None
    assert rec.receipt.token == T1 and rec.token == T1
    (accepted,) = m.events(ev.ReceiptAccepted)
    assert accepted.token == T1 and m.events(ev.ReceiptAccepted, heir)
    (settled,) = m.events(ev.ReceiptSettled, executor)
    assert settled.accepted
    m.run(30)  # nothing is leased again
    assert len(m.events(ev.RunRequested)) == 1 and len(m.events(ev.CapsuleLeased)) == 1


def test_executor_resends_its_receipt_with_backoff_until_settled_or_revoked() -> None:
    m = Mini(n=4)
    ex = m.cores[m.peers[0]].executor
    cap = m.capsule(via=1)
    timing = LeaseTiming(lease_timeout_s=6, heartbeat_s=2, offer_timeout_s=3)
    ex.on_offer(m.peers[1], LeaseOffer(cap, 1, timing), 0.0)
    out = ex.on_exited(CapsuleExited(cap.id, 1, 0), 1.0)
    times = [e.at for e in out if isinstance(e, SetTimer)]
    now, gaps = 1.0, []
    for _ in range(6):
        (at,) = times
        gaps.append(at - now)
        now = at
        out = ex.on_timer(("x.receipt", cap.id), now)
        assert any(isinstance(e, Send) and isinstance(e.msg, ReceiptMsg) for e in out)
        times = [e.at for e in out if isinstance(e, SetTimer)]
    # Doubling, capped at lease_timeout - heartbeat: a new leader's fresh lease window
    # always sees a re-send.
    assert gaps == [2.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    # Well past the old 60 s give-up it still re-sends; a revocation settles it.
    assert ex.on_timer(("x.receipt", cap.id), 200.0)
    custodian = m.cores[m.peers[0]].view.closest(cap.key, 3)[0]
    out = ex.on_revoked(custodian, LeaseRevoked(cap.id, 1, "lease 1 lost"), 201.0)
    settled = [e.event for e in out if isinstance(e, Emit)]
    assert settled == [ev.ReceiptSettled(cap.id, 1, False, "lease revoked: lease 1 lost")]
    assert ex.on_timer(("x.receipt", cap.id), 205.0) == []
    # Bounded: abandoned after receipt_give_up_s.
    ex.on_offer(m.peers[1], LeaseOffer(cap, 2, timing), 300.0)
    ex.on_exited(CapsuleExited(cap.id, 2, 0), 301.0)
    out = ex.on_timer(("x.receipt", cap.id), 301.0 + ex.config.receipt_give_up_s)
    assert [e.event.reason for e in out if isinstance(e, Emit)] == [
        "no custodian answered in 900 s"
    ]


def test_a_lost_cancel_is_sent_again_until_the_capsule_ends() -> None:
    """Every copy of the first CancelRequest is dropped (a full send queue): the
    origin sends it again after `submit_retry_s` and the capsule is cancelled; once
    its end is reported the origin stops sending it."""
    from overlay.capsule.messages import CancelRequest

    m = Mini()
    cap = next(c for c in (m.capsule(via=0, name=f"c{i}") for i in range(50))
               if m.leader(c) != m.peers[0])  # the leader's copy goes on the wire
    m.submit(cap, via=0)
    m.run(1)
    first = {"open": True}
    m.router.hold = lambda src, dst, msg: isinstance(msg, CancelRequest) and first["open"]
    m.router.inject(m.peers[0], CancelCapsule(cap.id, "changed my mind"))
    first["open"] = False
    assert m.router.drop_held() >= 1  # the custodians' copies (ours is local)
    m.run(1)
    assert m.record(cap).state is State.RUNNING  # lost: nothing happened yet
    m.run(2)
    assert m.record(cap).state is State.CANCELLED
    assert m.cores[m.peers[0]].origin.stats.get("cancel_retries") == 1
    sent = len([s for s in m.router.sends if isinstance(s[2], CancelRequest)])
    m.run(10)
    assert len([s for s in m.router.sends if isinstance(s[2], CancelRequest)]) == sent


def test_another_colonys_capsule_needs_a_grant_giving_submit() -> None:
    """Custody takes a capsule of colony B's member when the Submit carries the
    member's chain to B's owner and this colony's grant to B (overlay/core/grants.py)."""
    from overlay.core.certs import RevocationList
    from overlay.core.grants import Grant, revoke_grant

    m = Mini()
    b_owner, b_node = KeyPair(b"\xb0" * 32), KeyPair(b"\xb1" * 32)
    b_chain = (Certificate.issue(b_owner, b_owner.public, b_node.peer_id,
                                 ("member", "submit"), 0, 1e9),)  # fmt: skip

    def submit(roles: tuple[str, ...], *, chain: tuple[Certificate, ...] = b_chain,
               revoke: bool = False) -> tuple[Capsule, list[Any]]:  # fmt: skip
        g = Grant.issue(OWNER, OWNER.public.raw, b_owner.public.raw, roles, 0, 1e9,
                        prefix="shared/")
        revs = RevocationList(OWNER.public)
        if revoke:
            revs.add(revoke_grant(OWNER, g, 0), 0)
        for core in m.cores.values():
            core.custody.revocations = revs
        cap = Capsule.sign(b_node, CapsuleSpec(command=("run",)), 0.0, len(m.router.emitted))
        m.router.inject(m.peers[0], SubmitCapsule(cap, chain, g.to_bytes()))
        m.run(1)
        return cap, [e for e in m.events(ev.SubmissionRejected) if e.capsule_id == cap.id]

    cap, rejected = submit(("submit",))
    assert not rejected and cap.id in [e.capsule_id for e in m.events(ev.SubmissionAccepted)]
    _, rejected = submit(("read",))
    assert "does not give submit" in rejected[0].reason
    _, rejected = submit(("submit",), chain=m.chains[m.peers[1]])  # a chain of this colony
    assert "is not a member of colony" in rejected[0].reason
    _, rejected = submit(("submit",), revoke=True)
    assert "was revoked" in rejected[0].reason


def test_submit_wire_carries_a_grant_and_stays_six_elements_without() -> None:
    from overlay.capsule.messages import Submit
    from overlay.core.errors import MalformedFrame
    from overlay.core.grants import Grant

    m = Mini()
    cap = m.capsule()
    plain = Submit(cap, m.chains[m.peers[0]], m.peers[0], 1, (m.peers[1],))
    assert len(plain.to_wire()) == 6 and Submit.from_wire(plain.to_wire()) == plain
    g = Grant.issue(OWNER, OWNER.public.raw, KeyPair(b"\xb0" * 32).public.raw, ["submit"], 0, 9)
    fed = Submit(cap, (), m.peers[0], 0, (), g.to_bytes())
    assert len(fed.to_wire()) == 7 and Submit.from_wire(fed.to_wire()) == fed
    with pytest.raises(MalformedFrame, match="grant must be at most"):
        Submit.from_wire([*fed.to_wire()[:6], "not bytes"])


def test_an_executors_higher_token_becomes_the_leaders_floor() -> None:
    """Every custodian lost its disk and its clock reads earlier than the lineage that
    leased before: the executors still remember a higher token for the capsule. Their
    stale-token refusals name it, the leader adopts it as its floor, and the next
    offer is above it (tokens only rise). Without the floor every offer is stale."""
    m = Mini()
    cap = m.capsule()
    earlier = (5000 << EPOCH_SHIFT) | 7  # a lineage started at t = 5000 s
    for core in m.cores.values():
        core.executor._remember(cap.id, earlier)
    m.submit(cap)
    m.run(20)
    (run,) = m.events(ev.RunRequested)
    assert run.token > earlier
    lead = m.cores[m.leader(cap)]
    assert lead.custody.stats.get("token_floor_adopted", 0) >= 1
    m.finish(run)
    m.run(2)
    assert m.record(cap).state is State.SUCCEEDED


def test_a_floor_from_far_ahead_is_refused_and_counted() -> None:
    """A hostile executor names a token near 2^63: the leader keeps its counter."""
    m = Mini()
    cap = m.capsule()
    hostile = (1 << 62) | 1
    for core in m.cores.values():
        core.executor._remember(cap.id, hostile)
    m.submit(cap)
    m.run(5)
    assert m.events(ev.RunRequested) == []  # nobody accepts a lower token: it waits
    lead = m.cores[m.leader(cap)]
    assert lead.custody.stats.get("token_floor_refused", 0) >= 1
    assert lead.custody.table.entries[cap.id].max_token < 1 << 40


def test_lease_reply_wire_with_and_without_highest() -> None:
    from overlay.capsule.messages import LeaseReply

    plain = LeaseReply(cid := Mini().capsule().id, T1, False, "busy")
    assert len(plain.to_wire()) == 5 and LeaseReply.from_wire(plain.to_wire()) == plain
    floor = LeaseReply(cid, T1, False, "stale token", T1 + 5)
    assert LeaseReply.from_wire(floor.to_wire()) == floor
    with pytest.raises(MalformedFrame):
        LeaseReply.from_wire([*floor.to_wire()[:5], -1])
    with pytest.raises(MalformedFrame):
        LeaseReply.from_wire([*floor.to_wire(), 1])
