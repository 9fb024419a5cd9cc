"""Custody of capsules: the custodian and leader logic of one node (DESIGN §7, §9).

The `k_c` live members closest to a capsule's key are its custodians; the closest is
the leader. The leader is the only node that *acts* (answers submitters, offers leases,
accepts receipts, revokes), and it acts on a state change only after a majority of the
custodians hold that version of the `CustodyRecord`. `Custody` is the entry point the
capsule core calls (one `on_*` method per message, `on_timer`, `on_members_changed`);
it composes one collaborator per concern, each given only what it uses:

- custody_table.py  the entries and their indexes (reserved executors, dependency
                    waiters, dirty records), bounded by `max_records`;
- replication.py    `Replicator` (change → replicate → commit on a majority) and
                    `Takeover` (leadership changes, sync, handoff, follower side);
- leasing.py        placement, fencing-token offers, heartbeats, lease expiry,
                    receipt acceptance, cancellation and every ending;
- workflow.py       dependencies: poll the parents, then place with their outputs;
- durable.py        the bytes on disk, `CustodyRecordChanged` and restart decoding.

What this module keeps is the glue: accepting a `Submit` (forwarding it to the leader,
checking the submitter's chain), `_resume` (re-arm a record's timers and act on its
state, after a takeover or an expired lease), the timer dispatch, and `restore`.

Invariants (checked by tests/property/test_capsule_custody_props.py):
- a record's token never decreases, and each lease offer uses a token never used before;
- at most one receipt is accepted per capsule (acceptance is a replicated transition out
  of leased/running, and terminal states have no successors in `TRANSITIONS`);
- every map is bounded: `max_records` records (oldest finished evicted first, else the
  submission is refused and counted), `max_refused` refusals per placement round,
  `leases.MAX_EXCLUDED` excluded executors per record.

Custody epochs (docs/capsules.md, "Custody epochs"; replication.py): custodian sets
come from each node's own view, so two nodes may both try to lead; each record carries
its epoch and configuration, every takeover, reconfiguration and creation is a phase 1
on a majority of the newest configuration, and a version commits only on a majority
of its configuration at the leader's ballot, so two sides of a partition never both
act. A new record's first phase 1 is on the origin's initial configuration (carried by
every retry of its Submit), so a retry into a side holding no copy waits instead of
starting a second lineage. Limits: a side without such a majority waits; a capsule
submitted again by a user, through a view naming another configuration, after every
copy was lost, still starts one; a custodian that lost only its custody store answers
as its old self (configurations do not name incarnations).

Durability (DESIGN §9; overlay/capsule/durable.py): every change to a held record marks
it dirty; `take_durable()` turns the dirty set into `CustodyRecordChanged` events that
`CapsuleCore.handle` puts *before* every other effect of the same input, so a record is
on disk before the ack, offer or reply that depends on it leaves. `restore()` loads
stored records without acting on them: leadership is decided at the next
`MembersChanged`, when a restored leader syncs with the other custodians and a restored
follower hands its copy to the leader. Each entry also keeps `max_token`, the highest
token it ever issued or saw in any copy; offers use `max_token + 1`, so a custody set
that restarts from disk never reissues a token.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from overlay.capsule import events as ev
from overlay.capsule.amnesia import Amnesia
from overlay.capsule.custody_table import CustodyTable, Entry, Report, count, report, status_reply
from overlay.capsule.durable import load_stored
from overlay.capsule.leases import LIVE, CustodyRecord, LeaseTiming, State
from overlay.capsule.leasing import Leasing
from overlay.capsule.members import MemberView
from overlay.capsule.messages import (
    UNKNOWN,
    CancelRequest,
    Committed,
    Heartbeat,
    LeaseReply,
    ReceiptMsg,
    Replicate,
    ReplicateAck,
    StatusQuery,
    StatusReply,
    Submit,
    SubmitAck,
    SyncReply,
    SyncRequest,
)
from overlay.capsule.replication import Replicator, Takeover
from overlay.capsule.workflow import Dependencies
from overlay.core.certs import RevocationList, verify_chain
from overlay.core.effects import Effect, Emit, Send, SetTimer
from overlay.core.errors import ExpiredError, RemoteProtocolError
from overlay.core.grants import SUBMIT, Proof, parse_grant, verify_proof
from overlay.core.ids import PeerId


@dataclass(frozen=True, slots=True)
class CustodyConfig:
    k_c: int = 3
    timing: LeaseTiming = field(default_factory=LeaseTiming)
    place_retry_s: float = 1.0
    replicate_retry_s: float = 1.0
    sync_timeout_s: float = 2.0
    dep_poll_s: float = 2.0
    max_records: int = 100_000
    max_refused: int = 64
    forward_hops: int = 3
    #: Placement scores at most this many executors: every member of a colony this
    #: small, else a uniform sample (power of d choices, as Sparrow), so a placement
    #: costs O(d), not O(colony size).
    max_candidates: int = 512
    #: When set, a Submit must carry a chain granting `submit` to the capsule's signer.
    colony_owner: bytes | None = None
    #: Emit `CustodyRecordChanged` for every change (off only in simulations that do
    #: not model disks: encoding every version costs CPU).
    durable: bool = True
    #: Set when this node lost its custody store but kept its identity (amnesia.py).
    amnesia: Amnesia = field(default_factory=Amnesia)


@dataclass(frozen=True, slots=True)
class LocalityHint:
    """Command: these peers hold `cid` (from the DHT's provider records)."""

    cid: str
    peers: tuple[PeerId, ...]


class Custody:
    """Custodian and leader logic for every capsule this node holds."""

    def __init__(
        self,
        me: PeerId,
        view: MemberView,
        config: CustodyConfig | None = None,
        rng: random.Random | None = None,
        revocations: RevocationList | None = None,
    ) -> None:
        self.me = me
        self.view = view
        self.config = cfg = config or CustodyConfig()
        self.rng = rng or random.Random(0)
        #: Consulted on every Submit; the runtime may replace it (trust service).
        self.revocations = revocations
        self.stats: dict[str, int] = {}
        self.table = CustodyTable(max_records=cfg.max_records, durable=cfg.durable,
                                  stats=self.stats)  # fmt: skip
        self._entries = self.table.entries  # the same dict (tests read it)
        self.replicator = Replicator(me, view, self.table, k_c=cfg.k_c,
                                     replicate_retry_s=cfg.replicate_retry_s,
                                     amnesia=cfg.amnesia)  # fmt: skip
        self.leasing = Leasing(
            view, self.table, self.replicator, self.rng, timing=cfg.timing,
            place_retry_s=cfg.place_retry_s, max_candidates=cfg.max_candidates,
            max_refused=cfg.max_refused, resume=self._resume,
        )  # fmt: skip
        self.deps = Dependencies(view, self.table, self.replicator, self.leasing,
                                 k_c=cfg.k_c, dep_poll_s=cfg.dep_poll_s)  # fmt: skip
        self.takeover = Takeover(
            me, view, self.table, self.replicator, k_c=cfg.k_c,
            sync_timeout_s=cfg.sync_timeout_s, index_deps=self.deps.index, resume=self._resume,
            amnesia=cfg.amnesia,
        )  # fmt: skip

    # ------------------------------------------------------------ reads

    def record(self, capsule_id: str) -> CustodyRecord | None:
        e = self._entries.get(capsule_id)
        return e.record if e else None

    def records(self) -> list[CustodyRecord]:
        """The copies held, committed or not (internal state: reads use `report`)."""
        return [e.record for e in self._entries.values()]

    def report(self, capsule_id: str) -> Report | None:
        """What this node may report of a capsule: the newest copy it knows committed,
        and a newer held copy only as pending (docs/capsules.md, "Deposed copies")."""
        e = self._entries.get(capsule_id)
        return report(e) if e else None

    def reports(self) -> list[Report]:
        return [report(e) for e in self._entries.values()]

    def is_leading(self, capsule_id: str) -> bool:
        e = self._entries.get(capsule_id)
        return bool(e and e.leading and not e.syncing)

    def waiting_led(self) -> int:
        """Capsules this node leads that wait for an executor (the ad's `queued`)."""
        return sum(1 for e in self._entries.values()
                   if e.leading and not e.syncing and e.record.state is State.SUBMITTED)

    # ------------------------------------------------------------ durability

    def take_durable(self) -> list[Effect]:
        """`CustodyRecordChanged` for every record changed since the last call."""
        return self.table.take_durable()

    def restore(self, blobs: Iterable[bytes], now: float) -> list[Effect]:
        """Load stored records (see durable.py); act on none of them until the next view.

        A record that does not decode or verify is skipped with a
        `CustodyRecordSkipped` saying why; of two copies of one capsule the higher
        version wins. Nothing is re-persisted (the records are on disk already).
        """
        best, out = load_stored(blobs)
        if out:
            count(self.stats, "restore_skipped", len(out))
        table = self.table
        for cid, d in best.items():
            e = self._entries.get(cid)
            if e is not None:
                if d.record.order > e.record.order:
                    table.set_record(e, d.record)
                table.saw_token(e, d.max_token)
                table.promise(e, d.promise)
                continue
            if not table.admit(cid):
                out.append(Emit(ev.CustodyRecordSkipped(cid, "custody full: record not restored")))
                continue
            e = Entry(d.record, now)
            e.max_token = d.max_token
            e.promise = d.promise
            e.chain = d.chain
            self._entries[cid] = e
            table.set_record(e, d.record)
            self.deps.index(e)
            table.dirty.pop(cid, None)
            count(self.stats, "restored")
        return out

    # ------------------------------------------------------------ entry points

    def on_submit(self, peer: PeerId, msg: Submit, now: float) -> list[Effect]:
        cap = msg.capsule
        origin = msg.origin or peer
        e = self._entries.get(cap.id)
        leader = self.view.leader(cap.key, self.config.k_c)
        if leader != self.me:
            if msg.hops >= self.config.forward_hops:
                count(self.stats, "submit_unroutable")
                return []
            count(self.stats, "submit_forwarded")
            return [Send(leader, replace(msg, origin=origin, hops=msg.hops + 1))]
        if e is not None:
            count(self.stats, "duplicate_submits")
            out = self.takeover.ensure_leading(e, now)
            ack: list[Effect] = [Send(origin, SubmitAck(cap.id, True, "duplicate"))]
            if e.leading and not e.syncing and e.committed >= 1:
                return out + ack
            e.actions.append((e.record.version, ack))
            return out
        if self.config.colony_owner is not None:
            why = self._unauthorized(msg, now)
            if why is not None:
                count(self.stats, "submit_unauthorized")
                return [Send(origin, SubmitAck(cap.id, False, why))]
        if not self.table.admit(cap.id):
            return [Send(origin, SubmitAck(cap.id, False, "custody full"))]
        # Epoch 0 is a placeholder naming the custodians asked for promises: the
        # origin's configuration, the same in every retry. Opening epoch 1 is a phase 1
        # like any takeover (docs/capsules.md, "Custody epochs"): every node that opened
        # an epoch of this capsule had a majority of it, so phase 1 meets its copy; a
        # side holding no copy and no such majority waits.
        config = msg.config or self.replicator.config(cap.key)
        e = Entry(CustodyRecord(cap, origin, config=config), now)
        e.chain = msg.chain
        self._entries[cap.id] = e
        self.table.set_record(e, e.record)
        e.leading = True
        count(self.stats, "accepted")
        actions: list[Effect] = [
            Send(origin, SubmitAck(cap.id, True)),
            Emit(ev.CapsuleAccepted(cap.id, origin)),
        ]
        if cap.spec.inputs:
            actions.append(Emit(ev.ProvidersWanted(cap.id, cap.spec.inputs)))
        e.actions.append((1, actions))
        return self.takeover.start_sync(e, now)

    def _unauthorized(self, msg: Submit, now: float) -> str | None:
        """None if the submitter may submit here, else why not: a member's chain must
        grant `submit`; another colony's member shows its chain to its own owner plus
        this colony's grant giving `submit` (overlay/core/grants.py; the quota is
        checked before, by the grant's quota holder, services/federation.py)."""
        assert self.config.colony_owner is not None
        cap = msg.capsule
        try:
            if msg.grant:
                proof = Proof(msg.chain, parse_grant(msg.grant))
                verify_proof(proof, self.config.colony_owner, cap.submitter, SUBMIT, now,
                             self.revocations)  # fmt: skip
            else:
                verify_chain(msg.chain, self.config.colony_owner, cap.submitter, "submit", now,
                             self.revocations)  # fmt: skip
        except (RemoteProtocolError, ExpiredError) as err:
            return str(err)
        return None

    def on_replicate(self, peer: PeerId, msg: Replicate, now: float) -> list[Effect]:
        return self.takeover.on_replicate(peer, msg, now)

    def on_replicate_ack(self, peer: PeerId, msg: ReplicateAck, now: float) -> list[Effect]:
        return self.takeover.on_replicate_ack(peer, msg, now)

    def on_sync_request(self, peer: PeerId, msg: SyncRequest, now: float) -> list[Effect]:
        return self.takeover.on_sync_request(peer, msg, now)

    def on_sync_reply(self, peer: PeerId, msg: SyncReply, now: float) -> list[Effect]:
        return self.takeover.on_sync_reply(peer, msg, now)

    def on_lease_reply(self, peer: PeerId, msg: LeaseReply, now: float) -> list[Effect]:
        return self.leasing.on_lease_reply(peer, msg, now)

    def on_heartbeat(self, peer: PeerId, msg: Heartbeat, now: float) -> list[Effect]:
        return self.leasing.on_heartbeat(peer, msg, now)

    def on_receipt(self, peer: PeerId, msg: ReceiptMsg, now: float) -> list[Effect]:
        return self.leasing.on_receipt(peer, msg, now)

    def on_cancel(self, peer: PeerId, msg: CancelRequest, now: float) -> list[Effect]:
        return self.leasing.on_cancel(peer, msg, now)

    def on_status_query(self, peer: PeerId, msg: StatusQuery, now: float) -> list[Effect]:
        # Only a committed copy's outcome: an uncommitted finished copy (a deposed
        # leader's run) must not feed a child its outputs or tell an origin it ended.
        e = self._entries.get(msg.capsule_id)
        rec = None if e is None else e.settled if e.record.terminal else e.record
        return [Send(peer, status_reply(rec) if rec else StatusReply(msg.capsule_id, UNKNOWN))]

    def on_committed(self, peer: PeerId, msg: Committed, now: float) -> list[Effect]:
        return self.takeover.on_committed(peer, msg, now)

    def on_status_reply(self, peer: PeerId, msg: StatusReply, now: float) -> list[Effect]:
        """A dependency's state, answering our poll."""
        return self.deps.on_status_reply(peer, msg, now)

    def on_locality(self, hint: LocalityHint) -> None:
        self.leasing.on_locality(hint.cid, hint.peers)

    def on_members_changed(self, now: float) -> list[Effect]:
        """Re-evaluate leadership of every record after the view changed."""
        out: list[Effect] = []
        for e in list(self._entries.values()):
            out.extend(self.takeover.ensure_leading(e, now, view_changed=True))
            if e.leading and not e.syncing:
                rec = e.record
                if rec.config != self.replicator.config(rec.capsule.key, rec.config):
                    # The custodian set changed: that is a new epoch, never a silent
                    # switch of the set a majority is counted in.
                    count(self.stats, "reconfigurations")
                    out.extend(self.takeover.start_sync(e, now))
                elif self.takeover.orphaned(rec):
                    out.extend(self.leasing.lease_lost(e, "executor left the colony", now))
                else:
                    out.extend(self.replicator.replicate(e, now))
                    out.extend(self.replicator.commit(e))
        return out

    # ------------------------------------------------------------ timers

    def on_timer(self, timer: tuple[Any, ...], now: float) -> list[Effect]:
        kind, cid = timer[0], timer[1]
        e = self._entries.get(cid)
        if e is None:
            return []
        if kind == "c.sync":
            return self.takeover.retry_sync(e, now) if e.leading and e.syncing else []
        if kind == "c.settle":
            return self.takeover.retry_settle(e, now)
        if not e.leading or e.syncing:
            return []
        rec = e.record
        if kind == "c.repl":
            return self.replicator.replicate(e, now)
        if kind == "c.place":
            return self.leasing.place(e, now) if rec.state is State.SUBMITTED else []
        if kind == "c.deps":
            return self.deps.poll(e, now)
        if kind == "c.wait":
            return self.leasing.wait_expired(e, now)
        token = timer[2]
        if token != rec.token:
            return []
        timing = self.config.timing
        if kind == "c.offer" and rec.state is State.LEASED:
            assert rec.executor is not None
            if len(timer) == 3:
                # Not one accept or heartbeat yet (each may have been lost): offer
                # once more; the executor answers again if it runs this lease.
                count(self.stats, "offers_repeated")
                return self.leasing.reoffer(e, now)
            count(self.stats, "offers_unanswered")
            why = f"{rec.executor.short()} did not answer"
            return self.leasing.refused(e, rec.executor, why, now)
        if kind == "c.lease" and rec.state in LIVE:
            deadline = timing.lease_deadline(e.last_hb)
            if now < deadline:
                return [SetTimer(("c.lease", cid, token), deadline)]
            why = f"no heartbeat for {timing.lease_timeout_s:g} s"
            return self.leasing.lease_lost(e, why, now)
        if kind == "c.exec" and rec.state in LIVE:
            limit = rec.capsule.spec.maxexectime_s
            return self.leasing.lease_lost(e, f"maxexectime {limit:g} s exceeded", now)
        return []

    def _resume(self, e: Entry, now: float) -> list[Effect]:
        """(Re)arm the leader's timers for the record's state and act on it."""
        rec = e.record
        cid = rec.capsule_id
        out: list[Effect] = []
        if rec.terminal:
            return out
        if rec.capsule.spec.maxwaittime_s > 0 and rec.state in (State.SUBMITTED, State.LEASED):
            out.append(SetTimer(("c.wait", cid), e.wait_start + rec.capsule.spec.maxwaittime_s))
        if rec.state is State.SUBMITTED:
            if rec.parent_outputs is None and rec.token == 0 and rec.capsule.spec.dependencies:
                self.deps.index(e)
                if e.deps:
                    return out + self.deps.poll(e, now)
            out.extend(self.leasing.place(e, now))
        elif rec.state is State.LEASED:
            r = e.pending_receipt
            if r is not None and r.token == rec.token and r.executor == rec.executor:
                return out + self.leasing.accept_receipt(e, r, now)
            out.append(
                SetTimer(("c.offer", cid, rec.token), now + self.config.timing.offer_timeout_s)
            )
        else:
            r = e.pending_receipt
            if r is not None and r.token == rec.token and r.executor == rec.executor:
                return out + self.leasing.accept_receipt(e, r, now)
            out.append(
                SetTimer(("c.lease", cid, rec.token), self.config.timing.lease_deadline(e.last_hb))
            )
        return out
