"""`GuestExecutors` (services/federation_guests.py): who becomes a guest executor and
for how long, what reaches the capsule core, which messages pass the gate, and the
grant's quota charged and settled from lease events."""

from __future__ import annotations

from overlay.capsule import events as ev
from overlay.capsule.executor import ExecutorConfig
from overlay.capsule.leases import CustodyRecord, LeaseTiming
from overlay.capsule.members import GuestsChanged
from overlay.capsule.messages import Heartbeat, LeaseOffer, ReceiptMsg, StatusQuery
from overlay.capsule.receipts import Receipt
from overlay.capsule.spec import Capsule, CapsuleSpec, Conditions
from overlay.core.certs import Certificate, Revocation, RevocationList
from overlay.core.crypto import KeyPair
from overlay.core.grants import Grant
from overlay.core.quota import QuotaLedger
from overlay.runtime.services.federation_guests import (
    GUEST_TTL_S,
    GuestExecutors,
    guest_refused,
)
from overlay.runtime.services.trust_state import colony_id

NOW = 1_800_000_000.0
A_OWNER, B_OWNER = KeyPair(b"\xa1" * 32), KeyPair(b"\xb1" * 32)
B_NODE = KeyPair(b"\xb2" * 32)
CHAIN = (Certificate.issue(B_OWNER, B_OWNER.public, B_NODE.peer_id, ("execute", "member"),
                           NOW - 10, NOW + 3600),)  # fmt: skip
GRANT = Grant.issue(A_OWNER, A_OWNER.public.raw, B_OWNER.public.raw, ["execute"], NOW - 5,
                    NOW + 3600, quota={"capsules": 1})  # fmt: skip
AD = ExecutorConfig(slots=2).ad()


class World:
    def __init__(self, enabled: bool = True) -> None:
        self.sent: list[object] = []
        self.ledger = QuotaLedger()
        self.records: dict[str, CustodyRecord] = {}
        self.g = GuestExecutors(enabled, self.sent.append, lambda: self.ledger,
                                self.records.get)  # fmt: skip


def test_offers_need_the_opt_in_and_reach_the_core_labelled_with_the_colony() -> None:
    off = World(enabled=False)
    assert "guest_executors" in (off.g.offer(B_NODE.peer_id, GRANT, CHAIN, AD, NOW) or "")
    assert off.sent == [] and off.g.guests == {}
    w = World()
    assert w.g.offer(B_NODE.peer_id, GRANT, CHAIN, AD, NOW) is None
    (changed,) = w.sent
    assert isinstance(changed, GuestsChanged)
    (m,) = changed.guests
    assert m.peer == B_NODE.peer_id and m.roles == ("execute",)
    assert m.ad is not None and ("colony", str(colony_id(B_OWNER.public.raw))) in m.ad.labels
    assert w.g.offer(B_NODE.peer_id, GRANT, CHAIN, AD, NOW + 1) is None
    assert len(w.sent) == 1  # a renewal changes nothing the core sees
    # Only an executor's messages pass the gate, and only from a guest.
    assert w.g.message_ok(B_NODE.peer_id, Heartbeat("bafyx", 1))
    assert not w.g.message_ok(B_NODE.peer_id, StatusQuery("bafyx"))
    assert not w.g.message_ok(A_OWNER.peer_id, Heartbeat("bafyx", 1))
    assert w.g.stats()["messages_refused"] == 1
    # An offer not renewed lapses.
    w.g.prune(NOW + GUEST_TTL_S + 2, lambda peer, g: None)
    assert w.g.guests == {} and w.sent[-1] == GuestsChanged(())


def test_a_guest_lease_charges_the_quota_and_a_full_quota_withdraws_the_guest() -> None:
    w = World()
    w.g.offer(B_NODE.peer_id, GRANT, CHAIN, AD, NOW)
    cap = Capsule.sign(A_OWNER, CapsuleSpec(command=("run",), conditions=Conditions(cpu=2),
                                            maxexectime_s=60), NOW)  # fmt: skip
    w.records[cap.id] = CustodyRecord(cap, A_OWNER.peer_id)
    assert w.g.on_event(ev.CapsuleStarted(cap.id, 7, B_NODE.peer_id), NOW)
    u = w.ledger.usage(GRANT.serial, NOW)
    assert (u.capsules, u.cpu_s) == (1, 120.0)
    assert w.sent[-1] == GuestsChanged(())  # no capsule left today: withdrawn
    assert "used 1 of 1 capsules" in (w.g.offer(B_NODE.peer_id, GRANT, CHAIN, AD, NOW) or "")
    # Settled from the receipt: 2 CPUs for 10 s.
    r = Receipt.sign(B_NODE, cap.id, 7, 0, (), "", NOW, NOW + 10)
    assert w.g.on_event(ev.CapsuleFinished(cap.id, "succeeded", "", r), NOW + 10)
    assert w.ledger.usage(GRANT.serial, NOW).cpu_s == 20.0
    assert not w.g.on_event(ev.CapsuleStarted(cap.id, 8, A_OWNER.peer_id), NOW)  # a member


def test_a_guest_is_refused_once_its_grant_or_chain_no_longer_holds() -> None:
    w = World()
    w.g.offer(B_NODE.peer_id, GRANT, CHAIN, AD, NOW)
    guest = w.g.guests[B_NODE.peer_id]
    revs = RevocationList(B_OWNER.public)

    def refused(in_force: bool) -> str | None:
        return guest_refused(B_NODE.peer_id, guest, in_force=lambda g, now: in_force,
                             revocations={B_OWNER.public.raw: revs}.get, now=NOW)  # fmt: skip

    assert refused(True) is None
    assert "no longer in force" in (refused(False) or "")
    revs.add(Revocation.issue(B_OWNER, CHAIN[0], NOW), NOW)
    assert "(link 0) was revoked" in (refused(True) or "")
    w.g.prune(NOW, lambda peer, g: "revoked")
    assert w.g.guests == {}


def test_offer_wire_for_a_guest_names_custodians() -> None:
    cap = Capsule.sign(A_OWNER, CapsuleSpec(command=("run",)), NOW)
    offer = LeaseOffer(cap, 3, LeaseTiming(), (), (A_OWNER.peer_id,))
    assert LeaseOffer.from_wire(offer.to_wire()).custodians == (A_OWNER.peer_id,)


def test_a_receipt_is_taken_only_while_the_guests_proof_holds() -> None:
    w = World()
    w.g.offer(B_NODE.peer_id, GRANT, CHAIN, AD, NOW)
    cap = Capsule.sign(A_OWNER, CapsuleSpec(command=("run",)), NOW)
    msg = ReceiptMsg(Receipt.sign(B_NODE, cap.id, 7, 0, (), "", NOW, NOW + 1))
    assert w.g.message_ok(B_NODE.peer_id, msg, lambda peer, g: None)
    assert not w.g.message_ok(B_NODE.peer_id, msg, lambda peer, g: "revoked in B")
    assert w.g.guests == {} and w.sent[-1] == GuestsChanged(())  # the lease will be lost
