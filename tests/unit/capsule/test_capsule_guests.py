"""Guest executors (docs/federation.md, `execute`): a node of another colony that holds
a grant giving `execute` takes leases of this colony's capsules. Four custodian cores
of colony A, none an executor, and one core of colony B in hand-advanced virtual time.

The guest is a placement candidate only (never a custodian); its offer names A's
custodians, so its heartbeats and receipt reach them and only they may revoke; when
the guest leaves the set the runtime gives, its lease is lost and the capsule goes back
to waiting; the offer's wire form is unchanged for members.
"""

from __future__ import annotations

import random

from helpers.core_net import CoreNet

from overlay.capsule import events as ev
from overlay.capsule.core import CapsuleCore, SubmitCapsule
from overlay.capsule.custody import CustodyConfig
from overlay.capsule.executor import CapsuleExited, ExecutorConfig
from overlay.capsule.leases import LeaseTiming, State
from overlay.capsule.members import GuestsChanged, Member, MembersChanged
from overlay.capsule.messages import LeaseOffer, LeaseRevoked
from overlay.capsule.spec import Capsule, CapsuleSpec
from overlay.core.certs import Certificate
from overlay.core.crypto import KeyPair
from overlay.core.effects import Send
from overlay.core.ids import PeerId

A_OWNER = KeyPair(b"\xa0" * 32)
B_OWNER = KeyPair(b"\xb0" * 32)
TIMING = LeaseTiming(lease_timeout_s=6, heartbeat_s=2, offer_timeout_s=3)
CFG = ExecutorConfig(slots=1)


class World:
    def __init__(self) -> None:
        self.net = CoreNet(delay_s=0.01)
        self.a_keys = [KeyPair(bytes([i + 1]) * 32) for i in range(4)]
        self.a = [k.peer_id for k in self.a_keys]
        self.cores: dict[PeerId, CapsuleCore] = {}
        for k in self.a_keys:
            self._add(k, A_OWNER)
        self.g_key = KeyPair(b"\x61" * 32)
        self.g = self.g_key.peer_id
        self._add(self.g_key, B_OWNER)
        # A's members: none may execute. B's view holds only the guest itself.
        members = tuple(Member(p, CFG.ad(), ("member", "submit")) for p in self.a)
        for p in self.a:
            self.net.inject(p, MembersChanged(members))
        self.net.inject(self.g, MembersChanged((Member(self.g, CFG.ad()),)))

    def _add(self, k: KeyPair, owner: KeyPair) -> None:
        core = CapsuleCore(k.peer_id, k, custody=CustodyConfig(
            colony_owner=owner.public.raw, timing=TIMING), executor=CFG,
            rng=random.Random(1))  # fmt: skip
        self.cores[k.peer_id] = core
        self.net.add(k.peer_id, core)

    def guests(self, *peers: PeerId) -> None:
        for p in self.a:
            self.net.inject(p, GuestsChanged(tuple(Member(g, CFG.ad(), ("execute",))
                                                   for g in peers)))  # fmt: skip

    def submit(self) -> Capsule:
        cap = Capsule.sign(self.a_keys[0], CapsuleSpec(command=("run",)), 0.0)
        chain = (Certificate.issue(A_OWNER, A_OWNER.public, self.a[0],
                                   ("member", "submit"), 0, 1e9),)  # fmt: skip
        self.net.inject(self.a[0], SubmitCapsule(cap, chain))
        return cap

    def record(self, cap: Capsule) -> State:
        lead = self.cores[self.a[0]].view.leader(cap.key, 3)
        rec = self.cores[lead].custody.record(cap.id)
        assert rec is not None
        return rec.state


def test_a_guest_runs_the_capsule_and_its_receipt_is_accepted() -> None:
    w = World()
    cap = w.submit()
    w.net.run_for(1)
    assert w.record(cap) is State.SUBMITTED  # no executor in A
    assert any("no node" in e.reason for e in w.net.of(ev.CapsuleWaiting))
    w.guests(w.g)
    w.net.run_for(6)  # the next placement round (place_retry_s) offers it to the guest
    (run,) = w.net.of(ev.RunRequested, w.g)
    offers = [m for _, dst, m in w.net.sends if dst == w.g and isinstance(m, LeaseOffer)]
    custodians = w.cores[w.a[0]].view.closest(cap.key, 3)
    assert offers and set(offers[-1].custodians) == set(custodians)
    assert w.g not in custodians  # a guest never holds custody
    # Heartbeats reach A's custodians: the lease outlives several lease timeouts.
    w.net.run_for(3 * TIMING.lease_timeout_s)
    assert w.record(cap) is State.RUNNING
    w.net.inject(w.g, CapsuleExited(cap.id, run.token, 0))
    w.net.run_for(1)
    assert w.record(cap) is State.SUCCEEDED
    (settled,) = w.net.of(ev.ReceiptSettled, w.g)
    assert settled.accepted


def test_a_guest_that_leaves_loses_its_lease_and_only_custodians_revoke() -> None:
    w = World()
    cap = w.submit()
    w.guests(w.g)
    w.net.run_for(6)
    (run,) = w.net.of(ev.RunRequested, w.g)
    # A peer that is not one of the named custodians cannot revoke the guest's lease.
    stranger = KeyPair(b"\x77" * 32).peer_id
    out = w.cores[w.g].executor.on_revoked(stranger, LeaseRevoked(cap.id, run.token, "no"),
                                           w.net.now)  # fmt: skip
    assert out == [] and w.cores[w.g].executor.stats.get("revoke_from_non_custodian") == 1
    # The grant's session ended (revoked, expired, over quota): the guest is gone.
    w.guests()
    w.net.run_for(1)
    assert w.record(cap) is State.SUBMITTED
    (requeued,) = w.net.of(ev.CapsuleRequeued)
    assert "executor left the colony" in requeued.reason
    revoked = [m for _, dst, m in w.net.sends if dst == w.g and isinstance(m, LeaseRevoked)]
    assert revoked and revoked[-1].token == run.token
    assert cap.id not in w.cores[w.g].executor.running  # the guest stopped the attempt


def test_members_are_never_guests_and_offer_wire_is_unchanged_for_members() -> None:
    w = World()
    view = w.cores[w.a[0]].view
    assert not view.set_guests([Member(w.a[1], CFG.ad(), ("execute",))])  # a member
    assert not view.set_guests([Member(w.a[0], CFG.ad(), ("execute",))])  # this node
    assert view.guests == {}
    cap = Capsule.sign(w.a_keys[0], CapsuleSpec(command=("run",)), 0.0)
    plain = LeaseOffer(cap, 5, TIMING)
    assert len(plain.to_wire()) == 5 and LeaseOffer.from_wire(plain.to_wire()) == plain
    named = LeaseOffer(cap, 5, TIMING, (), tuple(w.a[:3]))
    assert len(named.to_wire()) == 6 and LeaseOffer.from_wire(named.to_wire()) == named
    sent = [e for e in w.cores[w.a[0]].handle(GuestsChanged(()), 0.0) if isinstance(e, Send)]
    assert sent == []
