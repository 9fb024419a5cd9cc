"""Guest executors: colony B's nodes running colony A's capsules through a grant that
gives `execute` (docs/federation.md, "`execute`: B's executors run A's capsules").

At A (`GuestExecutors`, driven by services/federation.py):

- A node of B offers itself (`{"op": "offer-executor", "proof", "ad"}` on the
  federation protocol, every `OFFER_EVERY_S`); A's node verifies the proof with role
  `execute` (B's revocations included) and keeps it as a guest for `GUEST_TTL_S`,
  with its resource ad labelled `colony=<B id>` — only with `[federation]
  guest_executors = true`: a capsule placed at B shows its inputs to B, so A's admins
  decide.
- The guests go to the capsule core as `GuestsChanged` (overlay/capsule/members.py):
  placement candidates, never custodians. A guest leaves the set when its offer is not
  renewed, when its proof no longer holds (expired, revoked by A or by B: the
  re-check of services/federation.py), or when its grant's quota is used up; the core
  then loses its leases (the capsule is placed again).
- Capsule messages from a guest pass the member gate only while it is a guest, and
  only those an executor sends (`LeaseReply`, `Heartbeat`, `ReceiptMsg`).
- Quota: the node that leads the capsule charges the grant when a guest's lease starts
  (capsules +1, CPU-seconds reserved as `max(cpu, 1) × maxexectime_s`) and settles
  from the receipt; a guest whose grant has no capsule left today is withdrawn. Bound:
  per leading node, plus the leases that started while the last one was charged.

- Inputs (`lease_inputs`, `lease_live`): a guest's proof that names a capsule opens
  that capsule's inputs and parent outputs to it while custody says it holds the
  capsule's live lease (the federation filter checks at every want).

At B (services/federation_grantee.py `offer_loop`): the node offers itself to every
address of each held grant giving `execute`, and takes capsule messages an offered-to
node of A sends to an executor (`LeaseOffer`, `LeaseRevoked`, `ReceiptReply`); the node
of A that submitted a capsule run there reads its outputs (`split_wants`, from the
federation filter).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Any

import structlog

from overlay.capsule import events as ev
from overlay.capsule.leases import LIVE, CustodyRecord
from overlay.capsule.members import MAX_GUESTS, GuestsChanged, Member
from overlay.capsule.messages import Heartbeat, LeaseReply, ReceiptMsg
from overlay.capsule.placement import NodeAd
from overlay.capsule.spec import check_capsule_id
from overlay.core.certs import Certificate, RevocationList, Role, verify_chain
from overlay.core.cid import Cid
from overlay.core.errors import ColonyError, RemoteProtocolError
from overlay.core.grants import EXECUTE, Grant, Proof
from overlay.core.ids import PeerId
from overlay.core.quota import QuotaLedger, cpu_cost
from overlay.exchange.messages import BitswapMessage, WantEntry
from overlay.runtime.services.trust_state import colony_id

log = structlog.get_logger("colony.federation")

#: A node of B renews its offer this often; A keeps a guest this long without one.
OFFER_EVERY_S = 10.0
GUEST_TTL_S = 3 * OFFER_EVERY_S
#: What a guest may send on the capsule protocol (an executor's messages).
GUEST_MESSAGES = (LeaseReply, Heartbeat, ReceiptMsg)
EXECUTE_ROLE = Role.EXECUTE.value


@dataclass(slots=True)
class Guest:
    grant: Grant
    chain: tuple[Certificate, ...]
    ad: NodeAd
    until: float


def guest_refused(peer: PeerId, guest: Guest, *, in_force: Callable[[Grant, float], bool],
                  revocations: Callable[[bytes], RevocationList | None], now: float
                  ) -> str | None:  # fmt: skip
    """Why a guest's proof no longer holds — its grant expired or was revoked in A, its
    chain expired or was revoked in its colony as this node knows — or None."""
    if not in_force(guest.grant, now):
        return f"grant {guest.grant.serial[:12]} is no longer in force"
    owner = guest.chain[0].colony
    try:
        verify_chain(guest.chain, owner, peer, EXECUTE_ROLE, now, revocations(owner))
    except RemoteProtocolError as e:
        return str(e)
    return None


def split_wants(msg: BitswapMessage, allowed: Collection[bytes],
                rest: Callable[[BitswapMessage], BitswapMessage | None]) -> BitswapMessage | None:
    """`msg` with its wants for blocks in `allowed` (multihashes) kept and every other
    want judged by `rest` (the trust service's filter)."""
    mine: list[WantEntry] = []
    others: list[WantEntry] = []
    for w in msg.wants:
        try:
            own = not w.cancel and Cid.from_bytes(w.cid).multihash in allowed
        except ColonyError:
            own = False
        (mine if own else others).append(w)
    filtered = rest(dataclasses.replace(msg, wants=tuple(others)))
    if filtered is None:
        return dataclasses.replace(msg, wants=tuple(mine), blocks=(), presences=())
    return dataclasses.replace(filtered, wants=(*filtered.wants, *mine))


class GuestExecutors:
    """A's guest executors and the core's view of them."""

    def __init__(self, enabled: bool, submit: Callable[[object], object],
                 ledger: Callable[[], QuotaLedger],
                 record: Callable[[str], CustodyRecord | None],
                 find_record: Callable[[str], Awaitable[CustodyRecord | None]] | None = None,
                 ) -> None:  # fmt: skip
        self.enabled = enabled
        self.submit = submit
        self.find_record = find_record
        self.ledger = ledger
        self.record = record
        self.guests: dict[PeerId, Guest] = {}
        self._given: tuple[Member, ...] = ()
        #: Capsule id → the grant charged here for its guest lease (until it ends).
        self._charged: dict[str, Grant] = {}
        self.messages_refused = 0
        self.charged = 0

    def offer(self, peer: PeerId, grant: Grant, chain: tuple[Certificate, ...], ad: NodeAd,
              now: float) -> str | None:  # fmt: skip
        """Keep `peer` (its proof verified with role execute) as a guest; the reason
        if not."""
        if not self.enabled:
            return "this colony takes no guest executors ([federation] guest_executors)"
        why = self.ledger().check_submit(grant, 0.0, now)
        if why is not None:
            return why
        if peer not in self.guests and len(self.guests) >= MAX_GUESTS:
            return f"this node keeps at most {MAX_GUESTS} guest executors"
        label = ("colony", str(colony_id(grant.grantee)))
        ad = dataclasses.replace(ad, labels=tuple(sorted({*ad.labels, label})))
        new = peer not in self.guests
        self.guests[peer] = Guest(grant, chain, ad, now + GUEST_TTL_S)
        if new:
            log.info("federation_guest", peer=str(peer), grant=grant.serial[:12],
                     colony=label[1], slots=ad.free_slots)  # fmt: skip
        self.push(now)
        return None

    async def on_offer(self, peer: PeerId, obj: dict[Any, Any],
                       verify: Callable[[Proof, PeerId, str], Awaitable[Grant]]) -> object:
        """The `offer-executor` op: a node of another colony offers to run this
        colony's capsules; `verify` is the federation service's proof check."""
        try:
            proof = Proof.from_wire(obj.get("proof"))
            ad = NodeAd.from_wire(obj.get("ad"))
        except (RemoteProtocolError, ColonyError) as e:
            raise RemoteProtocolError(f"bad executor offer: {e}") from None
        try:
            g = await verify(proof, peer, EXECUTE)
        except RemoteProtocolError as e:
            log.warning("federation_refused", peer=str(peer), reason=str(e))
            self.drop(peer, str(e))
            self.push(time.time())
            return {"accepted": False, "reason": str(e)}
        why = self.offer(peer, g, proof.chain, ad, time.time())
        return {"accepted": why is None, "reason": why or ""}

    async def lease_inputs(self, peer: PeerId, raw: object) -> tuple[str, list[str]] | None:
        """A guest fetching a capsule's inputs named the capsule: if custody says it
        holds that capsule's live lease, (capsule id, its input and parent-output
        roots), which it may then read, private or not, until the lease ends."""
        if self.find_record is None:
            return None
        try:
            rec = await self.find_record(check_capsule_id(raw))
        except (ColonyError, RemoteProtocolError) as e:
            log.info("federation_lease_inputs_refused", peer=str(peer), error=str(e))
            return None
        if rec is None or rec.executor != peer or rec.state not in LIVE:
            log.info("federation_lease_inputs_refused", peer=str(peer), capsule=str(raw),
                     reason="no live lease of that capsule on this peer")  # fmt: skip
            return None
        return rec.capsule_id, [*rec.capsule.spec.inputs,
                                *(p.cid for p in rec.parent_outputs or ())]  # fmt: skip

    def lease_live(self, peer: PeerId, capsule_id: str) -> bool:
        """Whether `peer` still holds the lease it proved for `capsule_id`: by this
        node's copy of the custody record when it keeps one, else while it is a guest."""
        rec = self.record(capsule_id)
        if rec is None:
            return peer in self.guests
        return rec.executor == peer and rec.state in LIVE

    def drop(self, peer: PeerId, why: str) -> None:
        if self.guests.pop(peer, None) is not None:
            log.warning("federation_guest_ended", peer=str(peer), reason=why)

    def prune(self, now: float, refused: Callable[[PeerId, Guest], str | None]) -> None:
        """Forget guests whose offer lapsed or whose proof `refused` names a reason."""
        for peer, g in list(self.guests.items()):
            why = "its offer was not renewed" if g.until <= now else refused(peer, g)
            if why is not None:
                self.drop(peer, why)
        self.push(now)

    def push(self, now: float) -> None:
        """Give the capsule core the guests with quota left (when the set changed)."""
        ledger = self.ledger()
        members = tuple(Member(p, g.ad, ("execute",)) for p, g in self.guests.items()
                        if ledger.check_submit(g.grant, 0.0, now) is None)  # fmt: skip
        if members != self._given:
            self._given = members
            self.submit(GuestsChanged(members))

    def message_ok(self, peer: PeerId, msg: object,
                   refused: Callable[[PeerId, Guest], str | None] | None = None) -> bool:
        """May this capsule message from `peer`, no member here, reach the core? A
        receipt is taken only if the guest's proof holds now (`refused`: the grant in
        force, the chain with `execute` and not revoked — `verify_proof` with role
        execute); else the guest is dropped (its lease is lost, the capsule placed
        again)."""
        g = self.guests.get(peer)
        if g is None:
            return False
        why = None if not isinstance(msg, GUEST_MESSAGES) else (
            refused(peer, g) if refused is not None and isinstance(msg, ReceiptMsg) else None)
        if isinstance(msg, GUEST_MESSAGES) and why is None:
            return True
        self.messages_refused += 1
        if why is not None:
            self.drop(peer, why)
            self.push(time.time())
        return False

    def on_event(self, e: object, now: float) -> bool:
        """Charge a guest lease when it starts, settle it when it ends; True if the
        ledger changed (to be saved)."""
        if isinstance(e, ev.CapsuleStarted):
            g = self.guests.get(e.executor)
            rec = self.record(e.capsule_id)
            if g is None or rec is None or e.capsule_id in self._charged:
                return False
            spec = rec.capsule.spec
            cost = cpu_cost(spec.conditions.cpu, spec.maxexectime_s)
            self.ledger().charge_submit(g.grant, e.capsule_id, cost, now)
            if len(self._charged) >= 10_000:
                del self._charged[next(iter(self._charged))]
            self._charged[e.capsule_id] = g.grant
            self.charged += 1
            log.info("federation_guest_lease", capsule=e.capsule_id, executor=str(e.executor),
                     grant=g.grant.serial[:12], reserved_cpu_s=cost)  # fmt: skip
            self.push(now)
            return True
        if isinstance(e, ev.CapsuleFinished) and e.capsule_id in self._charged:
            del self._charged[e.capsule_id]
            rec = self.record(e.capsule_id)
            r = e.receipt
            cpu = rec.capsule.spec.conditions.cpu if rec is not None else 1.0
            used = 0.0 if r is None else cpu_cost(cpu, r.finished - r.started)
            self.ledger().settle(e.capsule_id, used)
            return True
        return False

    def stats(self) -> dict[str, int]:
        return {"guests": len(self.guests), "leases_charged": self.charged,
                "messages_refused": self.messages_refused}  # fmt: skip


__all__ = ["GUEST_TTL_S", "OFFER_EVERY_S", "Guest", "GuestExecutors", "guest_refused",
           "split_wants"]
