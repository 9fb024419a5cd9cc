"""The leader's side of leases and receipts: placement, offers, heartbeats, endings (DESIGN §7).

A waiting capsule is placed (placement.py scores at most `max_candidates` executors,
preferring holders of its inputs) and offered with a fresh *fencing token*:
`max(record.token, Entry.max_token, epoch << EPOCH_SHIFT) + 1`, above every token this
node issued or saw in any copy and every token of an earlier custody epoch, so a token
is never reused across leaders, restarts or lineages. The offer waits
`offer_timeout_s` (plus one replication round trip) for an accept; a refusal or
silence re-places it, skipping refusers (at most `max_refused` per round). An accept or
heartbeat for the current token keeps the lease for `lease_timeout_s`; silence,
`maxexectime` or the executor leaving the colony expires it, and the capsule is
re-placed with the executor excluded (at most `leases.MAX_EXCLUDED`), or fails once
`maxretries` leases have expired. `maxwaittime` bounds the wait for an executor.

Receipts (receipts.py): the leader accepts one only for the current token, from the
lease's executor, while the lease is live (`check_receipt`); acceptance is a
replicated transition to a terminal state, so at most one receipt is accepted per
capsule, and the executor hears "accepted" only once a majority holds it. A follower
keeps a matching receipt (`Entry.pending_receipt`) and hands it over in the takeover
sync (replication.py): whichever custodian takes over settles the capsule with it
instead of re-running it.

Every change goes through `Replicator.change` (replication.py), so its effects leave
only once committed. Locality hints (DHT providers of input CIDs) are kept for at most
`MAX_LOCALITY` CIDs, oldest dropped first (counted).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from overlay.capsule import events as ev
from overlay.capsule.custody_table import (
    CustodyTable,
    Entry,
    cancel_timers,
    count,
    status_reply,
)
from overlay.capsule.dataflow import ParentOutput
from overlay.capsule.leases import EPOCH_SHIFT, LIVE, LeaseTiming, State
from overlay.capsule.members import MemberView
from overlay.capsule.messages import (
    CancelRequest,
    Heartbeat,
    LeaseOffer,
    LeaseReply,
    LeaseRevoked,
    ReceiptMsg,
    ReceiptReply,
)
from overlay.capsule.placement import place
from overlay.capsule.receipts import Receipt, ReceiptRejected, check_receipt
from overlay.capsule.replication import Replicator
from overlay.capsule.spec import Capsule
from overlay.core.effects import CancelTimer, Effect, Emit, Send, SetTimer
from overlay.core.ids import PeerId

MAX_LOCALITY = 4096
#: How far (in epochs, i.e. seconds of wall clock or reconfigurations) an executor's
#: token floor may be ahead of ours; beyond it is a peer pushing the counter.
MAX_FLOOR_EPOCH_AHEAD = 1 << 24


class Leasing:
    """Offers, leases and receipts of the records this node leads."""

    def __init__(
        self,
        view: MemberView,
        table: CustodyTable,
        replicator: Replicator,
        rng: random.Random,
        *,
        timing: LeaseTiming,
        place_retry_s: float,
        max_candidates: int,
        max_refused: int,
        resume: Callable[[Entry, float], list[Effect]],
    ) -> None:
        self.view = view
        self.table = table
        self.replicator = replicator
        self.rng = rng
        self.timing = timing
        self.place_retry_s = place_retry_s
        self.max_candidates = max_candidates
        self.max_refused = max_refused
        self.resume = resume
        self.holders: dict[str, tuple[PeerId, ...]] = {}

    def _count(self, name: str) -> None:
        count(self.table.stats, name)

    def on_locality(self, cid: str, peers: tuple[PeerId, ...]) -> None:
        if cid not in self.holders and len(self.holders) >= MAX_LOCALITY:
            del self.holders[next(iter(self.holders))]
            self._count("locality_dropped")
        self.holders[cid] = peers

    # ------------------------------------------------------------ placement and leases

    def place(self, e: Entry, now: float) -> list[Effect]:
        rec = e.record
        spec = rec.capsule.spec
        cands = []
        rtt: dict[PeerId, float] = {}
        # Guests (executors of other colonies with a grant giving `execute`) compete
        # with members on the same score; the runtime gives them only when A opts in.
        for m in [*self.view.candidates(self.rng, self.max_candidates),
                  *self.view.guests.values()]:  # fmt: skip
            if "execute" in m.roles:
                cands.append((m.peer, m.ad))
                if m.rtt_s is not None:
                    rtt[m.peer] = m.rtt_s
        inputs = (*spec.inputs, *(p.cid for p in rec.parent_outputs or ()))
        holders = {c: self.holders.get(c, ()) for c in inputs}
        kw: dict[str, Any] = {"inputs": inputs, "holders": holders, "rtt_s": rtt,
                              "reserved": self.table.reserved,
                              "spread_key": rec.capsule.key}  # fmt: skip
        result = place(
            spec.conditions, cands, exclude={**e.refused, **dict.fromkeys(rec.excluded)}, **kw
        )
        if not result.ok and rec.excluded:
            result = place(spec.conditions, cands, exclude=e.refused, **kw)
        cid = rec.capsule_id
        if not result.ok:
            e.refused = {}
            out: list[Effect] = [SetTimer(("c.place", cid), now + self.place_retry_s)]
            if result.reason != e.last_reason:
                e.last_reason = result.reason
                out.append(Emit(ev.CapsuleWaiting(cid, result.reason)))
            return out
        executor = result.ranked[0].peer
        # Above every token issued or seen, and every token of an earlier epoch.
        token = max(rec.token, e.max_token, rec.epoch << EPOCH_SHIFT) + 1
        self._count("offers")
        new = rec.advance(State.LEASED, token=token, executor=executor)
        offer = self._offer(rec.capsule, token, executor, rec.parent_outputs or ())
        out = self.replicator.change(e, new, now, [Send(executor, offer),
                                     Emit(ev.CapsuleLeased(cid, token, executor))])  # fmt: skip
        # The offer clock runs from now; commit takes a round trip, so allow for it.
        at = now + self.timing.offer_timeout_s + self.replicator.replicate_retry_s
        out.append(SetTimer(("c.offer", cid, token), at))
        return out

    def reoffer(self, e: Entry, now: float) -> list[Effect]:
        """The same offer again (same token), with one more offer timeout (and one
        heartbeat period: an accept and two heartbeats may arrive) to answer."""
        rec = e.record
        assert rec.executor is not None
        offer = self._offer(rec.capsule, rec.token, rec.executor, rec.parent_outputs or ())
        at = now + self.timing.offer_timeout_s + self.timing.heartbeat_s
        return [Send(rec.executor, offer), SetTimer(("c.offer", rec.capsule_id, rec.token, 1), at)]

    def _offer(self, capsule: Capsule, token: int, executor: PeerId,
               parents: tuple[ParentOutput, ...]) -> LeaseOffer:  # fmt: skip
        """A guest executor cannot compute this colony's custodians from its own view:
        its offer names them (heartbeats and the receipt go there; only they revoke)."""
        custodians = self.replicator.config(capsule.key) if self.view.is_guest(executor) else ()
        return LeaseOffer(capsule, token, self.timing, parents, custodians)

    def refused(self, e: Entry, peer: PeerId, reason: str, now: float) -> list[Effect]:
        if len(e.refused) < self.max_refused:
            e.refused[peer] = None
        e.last_reason = reason
        rec = e.record.advance(State.SUBMITTED, executor=None, reason=reason)
        out = self.replicator.change(e, rec, now, [])
        out.append(CancelTimer(("c.offer", rec.capsule_id, rec.token)))
        out.append(CancelTimer(("c.offer", rec.capsule_id, rec.token, 1)))
        out.extend(self.place(e, now))
        return out

    def executor_alive(self, e: Entry, peer: PeerId, token: int, now: float) -> list[Effect]:
        """An accept or heartbeat from `peer` for lease `token`."""
        rec = e.record
        cid = rec.capsule_id
        if token != rec.token or peer != rec.executor or rec.state not in LIVE:
            self._count("stale_lease_messages")
            return [Send(peer, LeaseRevoked(cid, token, f"lease {token} is not current"))]
        e.last_hb = now
        if rec.state is State.RUNNING:
            return []
        new = rec.advance(State.RUNNING, reason="")
        out = self.replicator.change(e, new, now, [Emit(ev.CapsuleStarted(cid, token, peer))])
        out.append(CancelTimer(("c.offer", cid, token)))
        out.append(CancelTimer(("c.offer", cid, token, 1)))
        out.append(SetTimer(("c.lease", cid, token), self.timing.lease_deadline(now)))
        limit = rec.capsule.spec.maxexectime_s
        if limit > 0:
            out.append(SetTimer(("c.exec", cid, token), now + limit))
        out.append(CancelTimer(("c.wait", cid)))
        return out

    def lease_lost(self, e: Entry, why: str, now: float) -> list[Effect]:
        rec = e.record
        assert rec.executor is not None
        attempts = rec.attempts + 1
        cid = rec.capsule_id
        reason = f"lease {rec.token} on {rec.executor.short()} lost: {why}"
        self._count("leases_expired")
        revoke: Effect = Send(rec.executor, LeaseRevoked(cid, rec.token, why))
        cancel = [CancelTimer(("c.lease", cid, rec.token)), CancelTimer(("c.exec", cid, rec.token))]
        if attempts > rec.capsule.spec.maxretries:
            final = f"{reason}; maxretries={rec.capsule.spec.maxretries} exhausted"
            out = self.finish(e, State.FAILED, final, None, now, attempts=attempts)
            return [revoke, *cancel, *out]
        excluded = (*rec.excluded, rec.executor)[-16:]
        e.wait_start = now
        new = rec.advance(State.SUBMITTED, executor=None, attempts=attempts,
                          excluded=excluded, reason=reason)  # fmt: skip
        out = self.replicator.change(
            e, new, now, [Emit(ev.CapsuleRequeued(cid, rec.token, attempts, reason))]
        )
        out = [revoke, *cancel, *out]
        out.extend(self.resume(e, now))
        return out

    def wait_expired(self, e: Entry, now: float) -> list[Effect]:
        rec = e.record
        limit = rec.capsule.spec.maxwaittime_s
        if rec.state not in (State.SUBMITTED, State.LEASED) or limit <= 0:
            return []
        if now < e.wait_start + limit:
            return [SetTimer(("c.wait", rec.capsule_id), e.wait_start + limit)]
        why = e.last_reason or rec.reason or "no executor accepted it"
        out: list[Effect] = []
        if rec.state is State.LEASED and rec.executor is not None:
            out.append(Send(rec.executor, LeaseRevoked(rec.capsule_id, rec.token, "maxwaittime")))
        out += self.finish(e, State.FAILED, f"maxwaittime {limit:g} s exceeded: {why}", None, now)
        return out

    # ------------------------------------------------------------ receipts and endings

    def accept_receipt(self, e: Entry, r: Receipt, now: float) -> list[Effect]:
        self._count("receipts_accepted")
        e.pending_receipt = None
        state = State.SUCCEEDED if r.succeeded else State.FAILED
        extra: list[Effect] = [
            Send(r.executor, ReceiptReply(r.capsule_id, r.token, True)),
            Emit(ev.ReceiptAccepted(r.capsule_id, r.token, r)),
        ]
        return self.finish(e, state, r.failure, r, now, extra=extra)

    def finish(
        self,
        e: Entry,
        state: State,
        reason: str,
        receipt: Receipt | None,
        now: float,
        *,
        attempts: int | None = None,
        extra: list[Effect] | None = None,
    ) -> list[Effect]:
        rec = e.record
        cid = rec.capsule_id
        changes: dict[str, Any] = {"reason": reason, "receipt": receipt}
        if attempts is not None:
            changes["attempts"] = attempts
        new = rec.advance(state, **changes)
        actions = list(extra or [])
        if state is State.CANCELLED and rec.state in LIVE and rec.executor is not None:
            actions.append(Send(rec.executor, LeaseRevoked(cid, rec.token, "cancelled")))
        actions.append(Emit(ev.CapsuleFinished(cid, state.value, new.reason, receipt)))
        actions.append(Send(rec.origin, status_reply(new)))
        out = cancel_timers(e)
        out.extend(self.replicator.change(e, new, now, actions))
        return out

    # ------------------------------------------------------------ messages

    def on_lease_reply(self, peer: PeerId, msg: LeaseReply, now: float) -> list[Effect]:
        e = self.table.entries.get(msg.capsule_id)
        if e is None or not e.leading or e.syncing:
            return []
        rec = e.record
        if msg.accepted:
            return self.executor_alive(e, peer, msg.token, now)
        if rec.state is State.LEASED and msg.token == rec.token and peer == rec.executor:
            self._count("offers_refused")
            if msg.highest > msg.token:
                self._adopt_floor(e, msg.highest, now)
            return self.refused(e, peer, f"{peer.short()} refused: {msg.reason}", now)
        return []

    def _adopt_floor(self, e: Entry, highest: int, now: float) -> None:
        """The executor held a higher lease than we know of (our custody lost its
        copies): offer above it from now on. A peer can push this counter, so it is
        bounded: a token's epoch is at most the wall clock in seconds plus
        reconfigurations (`MAX_FLOOR_EPOCH_AHEAD`); a floor beyond is refused,
        counted, and tokens stay far below the wire's 2^63."""
        limit = (max(int(now), e.record.epoch) + MAX_FLOOR_EPOCH_AHEAD) << EPOCH_SHIFT
        if highest >= limit:
            self._count("token_floor_refused")
            return
        self._count("token_floor_adopted")
        self.table.saw_token(e, highest)

    def on_heartbeat(self, peer: PeerId, msg: Heartbeat, now: float) -> list[Effect]:
        e = self.table.entries.get(msg.capsule_id)
        if e is None:
            return []
        rec = e.record
        if rec.state in LIVE and msg.token == rec.token and peer == rec.executor:
            e.last_hb = now
        if not e.leading or e.syncing:
            return []
        return self.executor_alive(e, peer, msg.token, now)

    def on_receipt(self, peer: PeerId, msg: ReceiptMsg, now: float) -> list[Effect]:
        r = msg.receipt
        e = self.table.entries.get(r.capsule_id)
        if e is None:
            return []
        rec = e.record
        if not e.leading or e.syncing:
            # Keep it (and hand it over in a takeover sync): if we or another custodian
            # takes over, it settles the capsule without a re-run. It also proves the
            # executor alive, like a heartbeat.
            if r.token == rec.token and r.executor == rec.executor:
                again = e.pending_receipt is not None and e.pending_receipt.envelope == r.envelope
                e.pending_receipt = r
                e.last_hb = now
                # At most once per heartbeat interval (the executor retries every 2-4
                # s). Unbounded, a follower whose computed leader was not leading (views
                # differ) got the receipt back from it (`receipts_forwarded`), handed it
                # over again, got it back ... at message speed: campaign seeds 414 and
                # 874 at stop 40 (10^6 messages in 0.3 simulated s). Whoever sent it:
                # requiring the executor as sender left seed 989's capsule running (its
                # receipt reached the followers only through other custodians).
                if again and not e.leading and now >= e.handoff_at:
                    e.handoff_at = now + self.timing.heartbeat_s
                    return self._hand_over(e)
            return []
        if rec.receipt is not None and rec.receipt.envelope == r.envelope:
            if e.committed >= rec.version:
                return [Send(peer, ReceiptReply(r.capsule_id, r.token, True, "duplicate"))]
            return []  # the ack goes out when the acceptance commits
        try:
            check_receipt(r, rec.capsule_id, rec.token, rec.executor, rec.terminal,
                          rec.state in LIVE)  # fmt: skip
        except ReceiptRejected as err:
            self._count("receipts_rejected")
            return [Send(peer, ReceiptReply(r.capsule_id, r.token, False, str(err)))]
        return self.accept_receipt(e, r, now)

    def _hand_over(self, e: Entry) -> list[Effect]:
        """The executor sent this receipt again: the leader has not settled it. Hand it
        our copy with the receipt whatever we believe it holds — it may have come back
        with an empty store faster than anyone noticed (campaign seed 311 without
        amnesia: its followers still counted its old ack, so nobody handed the copy
        over and the capsule stayed running). Costs nothing while receipts settle at
        the first try."""
        leader = self.view.leader(e.record.capsule.key, self.replicator.k_c)
        if leader == self.view.me:
            return []
        self._count("receipt_handoffs")
        return self.replicator.hand_over(e, leader)

    def on_cancel(self, peer: PeerId, msg: CancelRequest, now: float) -> list[Effect]:
        e = self.table.entries.get(msg.capsule_id)
        if e is None or not e.leading or e.syncing:
            return []
        rec = e.record
        if rec.terminal:  # already over (its end may have been lost): stop the retries
            return [Send(peer, status_reply(rec))]
        if peer not in (rec.origin, rec.capsule.submitter):
            self._count("cancel_unauthorized")
            return []
        reason = f"cancelled by {peer.short()}" + (f": {msg.reason}" if msg.reason else "")
        return self.finish(e, State.CANCELLED, reason, None, now)
