"""Custody of capsules: leader election by XOR closeness, replication, leases (DESIGN §7).

The `k_c` live members closest to a capsule's key are its custodians; the closest is
the leader. The leader is the only node that *acts* (answers submitters, offers leases,
accepts receipts, revokes), and it acts on a state change only after a majority of the
custodians (`n // 2 + 1` of `n = min(k_c, live members)`, counting itself) hold that
version of the `CustodyRecord`. Until then the Send/Emit effects of the change wait in
`_Entry.actions`. A follower keeps the highest version it has been sent.

Takeover: when a node's view makes it the leader of a record it holds (the old leader
died or a closer node left), it asks every other custodian for its copy (`SyncRequest`),
adopts the highest version once all replied or `sync_timeout_s` passed, bumps the
version and resumes: re-places a waiting capsule (with token + 1, higher than any
token seen), or gives a leased/running one a fresh lease period in which the executor's
heartbeats (sent to every custodian) keep it. Any holder whose computed leader changes
pushes its copy to the new leader (`Replicate` as a handoff), so a brand-new leader
learns about capsules it never held. Terminal records are re-replicated to new
custodians too, so status queries (workflow dependencies) keep working.

Invariants (checked by tests/property/test_capsule_custody_props.py):
- a record's token never decreases, and each lease offer uses a token never used before;
- at most one receipt is accepted per capsule (acceptance is a replicated transition out
  of leased/running, and terminal states have no successors in `TRANSITIONS`);
- every map is bounded: `max_records` records (oldest finished evicted first, else the
  submission is refused and counted), `max_refused` refusals per placement round,
  `leases.MAX_EXCLUDED` excluded executors per record.

Limits, stated plainly: custodian sets come from each node's own view; while views
disagree two nodes may both lead. Fencing tokens keep executors safe, and the version
rule (followers ack only higher versions) lets at most one of two leaders with the same
custodian set commit a given version, but a partition that gives each side a majority
of *different* custodian sets could accept two receipts.

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
from overlay.capsule.dataflow import (
    MAX_PARENT_OUTPUTS,
    ParentOutput,
    named_outputs,
    parent_label,
)
from overlay.capsule.durable import DurableRecord, record_key
from overlay.capsule.leases import TERMINAL, CustodyRecord, LeaseTiming, State
from overlay.capsule.members import MemberView
from overlay.capsule.messages import (
    UNKNOWN,
    CancelRequest,
    Heartbeat,
    LeaseOffer,
    LeaseReply,
    LeaseRevoked,
    ReceiptMsg,
    ReceiptReply,
    Replicate,
    ReplicateAck,
    StatusQuery,
    StatusReply,
    Submit,
    SubmitAck,
    SyncReply,
    SyncRequest,
)
from overlay.capsule.placement import place
from overlay.capsule.receipts import Receipt, ReceiptRejected, check_receipt
from overlay.capsule.spec import capsule_key
from overlay.core.certs import Certificate, RevocationList, verify_chain
from overlay.core.effects import CancelTimer, Effect, Emit, Send, SetTimer
from overlay.core.errors import ColonyError, ExpiredError, RemoteProtocolError
from overlay.core.ids import PeerId

LIVE = (State.LEASED, State.RUNNING)


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


@dataclass(frozen=True, slots=True)
class LocalityHint:
    """Command: these peers hold `cid` (from the DHT's provider records)."""

    cid: str
    peers: tuple[PeerId, ...]


MAX_LOCALITY = 4096


class _Entry:
    __slots__ = (
        "acks", "actions", "chain", "committed", "dep_outputs", "deps", "last_hb",
        "last_reason", "leading", "max_token", "pending_receipt", "record", "refused",
        "sync_wait", "syncing", "wait_start",
    )  # fmt: skip

    def __init__(self, record: CustodyRecord, now: float) -> None:
        self.record = record
        self.wait_start = now - record.wait_elapsed_s
        self.last_hb = now
        self.leading = False
        self.syncing = False
        self.sync_wait: dict[PeerId, None] = {}
        self.acks: dict[PeerId, int] = {}
        self.committed = 0
        self.actions: list[tuple[int, list[Effect]]] = []
        self.refused: dict[PeerId, None] = {}
        self.deps: dict[str, None] = {}
        self.dep_outputs: dict[str, tuple[ParentOutput, ...]] = {}
        self.pending_receipt: Receipt | None = None
        self.last_reason = ""
        self.max_token = record.token
        self.chain: tuple[Certificate, ...] = ()


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
        self.config = config or CustodyConfig()
        self.rng = rng or random.Random(0)
        self.revocations = revocations
        self._entries: dict[str, _Entry] = {}
        self._reserved: dict[PeerId, int] = {}
        self._dep_waiters: dict[str, dict[str, None]] = {}
        self._holders: dict[str, tuple[PeerId, ...]] = {}
        self._dirty: dict[str, None] = {}
        self.stats: dict[str, int] = {}

    # ------------------------------------------------------------ helpers

    def _count(self, name: str, n: int = 1) -> None:
        self.stats[name] = self.stats.get(name, 0) + n

    def record(self, capsule_id: str) -> CustodyRecord | None:
        e = self._entries.get(capsule_id)
        return e.record if e else None

    def records(self) -> list[CustodyRecord]:
        return [e.record for e in self._entries.values()]

    def is_leading(self, capsule_id: str) -> bool:
        e = self._entries.get(capsule_id)
        return bool(e and e.leading and not e.syncing)

    def _custodians(self, key: int) -> list[PeerId]:
        return self.view.closest(key, self.config.k_c)

    def _followers(self, e: _Entry) -> list[PeerId]:
        return [p for p in self._custodians(e.record.capsule.key) if p != self.me]

    def _majority(self, key: int) -> int:
        return len(self._custodians(key)) // 2 + 1

    def _set_record(self, e: _Entry, rec: CustodyRecord) -> None:
        old = e.record
        if old.state in LIVE and old.executor is not None:
            n = self._reserved.get(old.executor, 0) - 1
            if n > 0:
                self._reserved[old.executor] = n
            else:
                self._reserved.pop(old.executor, None)
        if rec.state in LIVE and rec.executor is not None:
            self._reserved[rec.executor] = self._reserved.get(rec.executor, 0) + 1
        e.record = rec
        if rec.token > e.max_token:
            e.max_token = rec.token
        if self.config.durable:
            self._dirty[rec.capsule_id] = None

    def _saw_token(self, e: _Entry, token: int) -> None:
        """Another custodian's copy holds `token`: never offer it (or below) again."""
        if token > e.max_token:
            e.max_token = token
            if self.config.durable:
                self._dirty[e.record.capsule_id] = None

    # ------------------------------------------------------------ durability

    def take_durable(self) -> list[Effect]:
        """`CustodyRecordChanged` for every record changed since the last call."""
        if not self._dirty:
            return []
        out: list[Effect] = []
        for cid in self._dirty:
            e = self._entries.get(cid)
            blob = DurableRecord(e.record, e.chain, e.max_token).to_bytes() if e else None
            out.append(Emit(ev.CustodyRecordChanged(record_key(cid), blob)))
        self._dirty = {}
        return out

    def restore(self, blobs: Iterable[bytes], now: float) -> list[Effect]:
        """Load stored records (see durable.py); act on none of them until the next view.

        A record that does not decode or verify is skipped with a
        `CustodyRecordSkipped` saying why; of two copies of one capsule the higher
        version wins. Nothing is re-persisted (the records are on disk already).
        """
        out: list[Effect] = []
        best: dict[str, DurableRecord] = {}
        for i, blob in enumerate(blobs):
            try:
                d = DurableRecord.from_bytes(blob)
            except (ColonyError, ValueError, TypeError, OverflowError, RecursionError) as err:
                self._count("restore_skipped")
                why = f"stored custody record #{i} skipped: {err}"
                out.append(Emit(ev.CustodyRecordSkipped("", why)))
                continue
            old = best.get(d.capsule_id)
            if old is None or d.record.version > old.record.version:
                best[d.capsule_id] = d
        for cid, d in best.items():
            e = self._entries.get(cid)
            if e is not None:
                if d.record.version > e.record.version:
                    self._set_record(e, d.record)
                self._saw_token(e, d.max_token)
                continue
            if not self._admit(cid):
                out.append(Emit(ev.CustodyRecordSkipped(cid, "custody full: record not restored")))
                continue
            e = _Entry(d.record, now)
            e.max_token = d.max_token
            e.chain = d.chain
            self._entries[cid] = e
            self._set_record(e, d.record)
            self._index_deps(e)
            self._dirty.pop(cid, None)
            self._count("restored")
        return out

    def _admit(self, capsule_id: str) -> bool:
        """Make room for one more record; False (counted) if every record is live."""
        if len(self._entries) < self.config.max_records:
            return True
        for cid, e in self._entries.items():
            if e.record.terminal and not e.actions:
                self._drop(cid)
                self._count("evicted_finished")
                return True
        self._count("custody_full")
        return False

    def _drop(self, cid: str) -> None:
        e = self._entries.pop(cid)
        self._set_record(e, CustodyRecord(e.record.capsule, e.record.origin, State.FAILED))
        # Marked dirty by _set_record; take_durable finds no entry and emits a delete.
        for dep in e.deps:
            waiters = self._dep_waiters.get(dep)
            if waiters is not None:
                waiters.pop(cid, None)
                if not waiters:
                    del self._dep_waiters[dep]

    # ------------------------------------------------------------ leader: changes

    def _change(
        self, e: _Entry, rec: CustodyRecord, now: float, actions: list[Effect]
    ) -> list[Effect]:
        """Adopt `rec` as leader, replicate it, and hold `actions` until it commits."""
        if rec.state in (State.SUBMITTED, State.LEASED):
            rec = replace(rec, wait_elapsed_s=max(0.0, now - e.wait_start))
        self._set_record(e, rec)
        if actions:
            e.actions.append((rec.version, actions))
        out = self._replicate(e, now)
        out.extend(self._commit(e))
        return out

    def _replicate(self, e: _Entry, now: float) -> list[Effect]:
        out: list[Effect] = []
        msg = Replicate(e.record)
        lagging = False
        for p in self._followers(e):
            if e.acks.get(p, 0) < e.record.version:
                out.append(Send(p, msg))
                lagging = True
        if lagging:
            out.append(
                SetTimer(("c.repl", e.record.capsule_id), now + self.config.replicate_retry_s)
            )
        return out

    def _commit(self, e: _Entry) -> list[Effect]:
        """Release the actions of every version a majority of custodians holds."""
        if not e.actions:
            return []
        followers = self._followers(e)
        need = self._majority(e.record.capsule.key)
        out: list[Effect] = []
        while e.actions:
            version, acts = e.actions[0]
            have = 1 + sum(1 for p in followers if e.acks.get(p, 0) >= version)
            if have < need:
                break
            e.actions.pop(0)
            e.committed = max(e.committed, version)
            out.extend(acts)
        return out

    # ------------------------------------------------------------ entry points

    def on_submit(self, peer: PeerId, msg: Submit, now: float) -> list[Effect]:
        cap = msg.capsule
        origin = msg.origin or peer
        e = self._entries.get(cap.id)
        leader = self.view.leader(cap.key, self.config.k_c)
        if leader != self.me:
            if msg.hops >= self.config.forward_hops:
                self._count("submit_unroutable")
                return []
            self._count("submit_forwarded")
            return [Send(leader, Submit(cap, msg.chain, origin, msg.hops + 1))]
        if e is not None:
            self._count("duplicate_submits")
            out = self._ensure_leading(e, now)
            ack: list[Effect] = [Send(origin, SubmitAck(cap.id, True, "duplicate"))]
            if e.leading and not e.syncing and e.committed >= 1:
                return out + ack
            e.actions.append((e.record.version, ack))
            return out
        if self.config.colony_owner is not None:
            try:
                verify_chain(msg.chain, self.config.colony_owner, cap.submitter, "submit", now,
                             self.revocations)  # fmt: skip
            except (RemoteProtocolError, ExpiredError) as err:
                self._count("submit_unauthorized")
                return [Send(origin, SubmitAck(cap.id, False, str(err)))]
        if not self._admit(cap.id):
            return [Send(origin, SubmitAck(cap.id, False, "custody full"))]
        e = _Entry(CustodyRecord(cap, origin), now)
        e.chain = msg.chain
        self._entries[cap.id] = e
        self._set_record(e, e.record)
        e.leading = True
        self._count("accepted")
        actions: list[Effect] = [
            Send(origin, SubmitAck(cap.id, True)),
            Emit(ev.CapsuleAccepted(cap.id, origin)),
        ]
        if cap.spec.inputs:
            actions.append(Emit(ev.ProvidersWanted(cap.id, cap.spec.inputs)))
        out = self._replicate(e, now)
        e.actions.append((1, actions))
        out.extend(self._commit(e))
        out.extend(self._resume(e, now))
        return out

    def on_replicate(self, peer: PeerId, msg: Replicate, now: float) -> list[Effect]:
        rec = msg.record
        if not self.view.is_live(peer):
            self._count("replicate_from_stranger")
            return []
        e = self._entries.get(rec.capsule_id)
        out: list[Effect] = []
        if e is None:
            if not self._admit(rec.capsule_id):
                return []
            e = _Entry(rec, now)
            self._entries[rec.capsule_id] = e
            self._set_record(e, rec)
            self._index_deps(e)
            e.acks[peer] = rec.version  # the sender holds it: no handoff back to it
            out.extend(self._ensure_leading(e, now))
        elif rec.version > e.record.version:
            self._set_record(e, rec)
            e.wait_start = now - rec.wait_elapsed_s
            if rec.state in LIVE:
                e.last_hb = max(e.last_hb, now)
            if e.leading and not e.syncing:
                # Someone else led a newer version: adopt it and carry on from there.
                self._count("adopted_newer")
                out.extend(self._resume(e, now))
        else:
            self._saw_token(e, rec.token)
        out.append(Send(peer, ReplicateAck(rec.capsule_id, e.record.version)))
        return out

    def on_replicate_ack(self, peer: PeerId, msg: ReplicateAck, now: float) -> list[Effect]:
        e = self._entries.get(msg.capsule_id)
        if e is None or not e.leading:
            return []
        if msg.version > e.acks.get(peer, 0):
            e.acks[peer] = msg.version
        if msg.version > e.record.version and not e.syncing:
            return self._start_sync(e, now)  # a follower knows a newer version
        return self._commit(e)

    def on_sync_request(self, peer: PeerId, msg: SyncRequest, now: float) -> list[Effect]:
        e = self._entries.get(msg.capsule_id)
        return [Send(peer, SyncReply(msg.capsule_id, e.record if e else None))]

    def on_sync_reply(self, peer: PeerId, msg: SyncReply, now: float) -> list[Effect]:
        e = self._entries.get(msg.capsule_id)
        if e is None or not e.syncing or peer not in e.sync_wait:
            return []
        del e.sync_wait[peer]
        if msg.record is not None:
            e.acks[peer] = msg.record.version
            self._saw_token(e, msg.record.token)
            if msg.record.version > e.record.version:
                self._set_record(e, msg.record)
                e.wait_start = now - msg.record.wait_elapsed_s
        if not e.sync_wait:
            return self._finish_sync(e, now)
        return []

    def on_lease_reply(self, peer: PeerId, msg: LeaseReply, now: float) -> list[Effect]:
        e = self._entries.get(msg.capsule_id)
        if e is None or not e.leading or e.syncing:
            return []
        rec = e.record
        if msg.accepted:
            return self._executor_alive(e, peer, msg.token, now)
        if rec.state is State.LEASED and msg.token == rec.token and peer == rec.executor:
            self._count("offers_refused")
            return self._refused(e, peer, f"{peer.short()} refused: {msg.reason}", now)
        return []

    def on_heartbeat(self, peer: PeerId, msg: Heartbeat, now: float) -> list[Effect]:
        e = self._entries.get(msg.capsule_id)
        if e is None:
            return []
        rec = e.record
        if rec.state in LIVE and msg.token == rec.token and peer == rec.executor:
            e.last_hb = now
        if not e.leading or e.syncing:
            return []
        return self._executor_alive(e, peer, msg.token, now)

    def on_receipt(self, peer: PeerId, msg: ReceiptMsg, now: float) -> list[Effect]:
        r = msg.receipt
        e = self._entries.get(r.capsule_id)
        if e is None:
            return []
        rec = e.record
        if not e.leading or e.syncing:
            # Keep it: if we take over, it settles the capsule without a re-run.
            if r.token == rec.token and r.executor == rec.executor:
                e.pending_receipt = r
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
        return self._accept_receipt(e, r, now)

    def on_status_query(self, peer: PeerId, msg: StatusQuery, now: float) -> list[Effect]:
        e = self._entries.get(msg.capsule_id)
        return [Send(peer, self._status(e.record) if e else StatusReply(msg.capsule_id, UNKNOWN))]

    def on_status_reply(self, peer: PeerId, msg: StatusReply, now: float) -> list[Effect]:
        """A dependency's state, answering our poll."""
        waiters = self._dep_waiters.get(msg.capsule_id)
        if not waiters or msg.state not in (s.value for s in TERMINAL):
            return []
        out: list[Effect] = []
        for cid in list(waiters):
            e = self._entries.get(cid)
            if e is not None:
                out.extend(self._dep_done(e, msg, now))
        return out

    def on_cancel(self, peer: PeerId, msg: CancelRequest, now: float) -> list[Effect]:
        e = self._entries.get(msg.capsule_id)
        if e is None or not e.leading or e.syncing or e.record.terminal:
            return []
        rec = e.record
        if peer not in (rec.origin, rec.capsule.submitter):
            self._count("cancel_unauthorized")
            return []
        reason = f"cancelled by {peer.short()}" + (f": {msg.reason}" if msg.reason else "")
        return self._finish(e, State.CANCELLED, reason, None, now)

    def on_locality(self, hint: LocalityHint) -> None:
        if hint.cid not in self._holders and len(self._holders) >= MAX_LOCALITY:
            del self._holders[next(iter(self._holders))]
            self._count("locality_dropped")
        self._holders[hint.cid] = hint.peers

    def on_members_changed(self, now: float) -> list[Effect]:
        """Re-evaluate leadership of every record after the view changed."""
        out: list[Effect] = []
        for e in list(self._entries.values()):
            out.extend(self._ensure_leading(e, now))
            if e.leading and not e.syncing:
                rec = e.record
                if rec.state in LIVE and rec.executor and not self.view.is_live(rec.executor):
                    out.extend(self._lease_lost(e, "executor left the colony", now))
                else:
                    out.extend(self._replicate(e, now))
                    out.extend(self._commit(e))
        return out

    # ------------------------------------------------------------ timers

    def on_timer(self, timer: tuple[Any, ...], now: float) -> list[Effect]:
        kind, cid = timer[0], timer[1]
        e = self._entries.get(cid)
        if e is None:
            return []
        if kind == "c.sync":
            return self._finish_sync(e, now) if e.syncing else []
        if not e.leading or e.syncing:
            return []
        rec = e.record
        if kind == "c.repl":
            return self._replicate(e, now)
        if kind == "c.place":
            return self._place(e, now) if rec.state is State.SUBMITTED else []
        if kind == "c.deps":
            return self._poll_deps(e, now)
        if kind == "c.wait":
            return self._wait_expired(e, now)
        token = timer[2]
        if token != rec.token:
            return []
        if kind == "c.offer" and rec.state is State.LEASED:
            assert rec.executor is not None
            self._count("offers_unanswered")
            return self._refused(e, rec.executor, f"{rec.executor.short()} did not answer", now)
        if kind == "c.lease" and rec.state in LIVE:
            deadline = self.config.timing.lease_deadline(e.last_hb)
            if now < deadline:
                return [SetTimer(("c.lease", cid, token), deadline)]
            return self._lease_lost(
                e, f"no heartbeat for {self.config.timing.lease_timeout_s:g} s", now
            )
        if kind == "c.exec" and rec.state in LIVE:
            limit = rec.capsule.spec.maxexectime_s
            return self._lease_lost(e, f"maxexectime {limit:g} s exceeded", now)
        return []

    # ------------------------------------------------------------ leadership

    def _ensure_leading(self, e: _Entry, now: float) -> list[Effect]:
        key = e.record.capsule.key
        leader = self.view.leader(key, self.config.k_c)
        out: list[Effect] = []
        if leader == self.me and not e.leading:
            e.leading = True
            e.acks = {}
            out.extend(self._start_sync(e, now))
        elif leader != self.me and e.leading:
            e.leading = False
            e.syncing = False
            e.actions = []
            self._count("stepped_down")
            out.extend(self._cancel_timers(e))
        if leader != self.me and not e.leading:
            # Handoff: make sure the (possibly new) leader holds our copy.
            if e.acks.get(leader, 0) < e.record.version:
                e.acks[leader] = e.record.version
                out.append(Send(leader, Replicate(e.record)))
        return out

    def _cancel_timers(self, e: _Entry) -> list[Effect]:
        cid, tok = e.record.capsule_id, e.record.token
        return [CancelTimer(t) for t in (("c.place", cid), ("c.wait", cid), ("c.deps", cid),
                ("c.repl", cid), ("c.offer", cid, tok), ("c.lease", cid, tok),
                ("c.exec", cid, tok))]  # fmt: skip

    def _start_sync(self, e: _Entry, now: float) -> list[Effect]:
        e.syncing = True
        e.sync_wait = {p: None for p in self._followers(e)}
        cid = e.record.capsule_id
        if not e.sync_wait:
            return self._finish_sync(e, now)
        out: list[Effect] = [Send(p, SyncRequest(cid)) for p in e.sync_wait]
        out.append(SetTimer(("c.sync", cid), now + self.config.sync_timeout_s))
        return out

    def _finish_sync(self, e: _Entry, now: float) -> list[Effect]:
        e.syncing = False
        e.sync_wait = {}
        self._count("takeovers")
        rec = e.record.bumped(max(e.acks.values(), default=0))
        if rec.state in LIVE:
            e.last_hb = max(e.last_hb, now)  # a fresh lease period from the takeover
        actions: list[Effect] = [
            Emit(ev.CustodyTakenOver(rec.capsule_id, rec.state.value, rec.token))
        ]
        if rec.terminal:
            # The old leader may have died between committing the end and announcing
            # it: say it again (the API may see CapsuleFinished twice, never a second
            # ReceiptAccepted).
            actions.append(Emit(ev.CapsuleFinished(rec.capsule_id, rec.state.value, rec.reason,
                                                   rec.receipt)))  # fmt: skip
            actions.append(Send(rec.origin, self._status(rec)))
        out = self._change(e, rec, now, actions)
        out.extend(self._resume(e, now))
        return out

    def _resume(self, e: _Entry, now: float) -> list[Effect]:
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
                self._index_deps(e)
                if e.deps:
                    return out + self._poll_deps(e, now)
            out.extend(self._place(e, now))
        elif rec.state is State.LEASED:
            r = e.pending_receipt
            if r is not None and r.token == rec.token:
                return out + self._accept_receipt(e, r, now)
            out.append(
                SetTimer(("c.offer", cid, rec.token), now + self.config.timing.offer_timeout_s)
            )
        else:
            r = e.pending_receipt
            if r is not None and r.token == rec.token and r.executor == rec.executor:
                return out + self._accept_receipt(e, r, now)
            out.append(
                SetTimer(("c.lease", cid, rec.token), self.config.timing.lease_deadline(e.last_hb))
            )
        return out

    # ------------------------------------------------------------ placement and leases

    def _place(self, e: _Entry, now: float) -> list[Effect]:
        rec = e.record
        spec = rec.capsule.spec
        cands = []
        rtt: dict[PeerId, float] = {}
        for m in self.view.candidates(self.rng, self.config.max_candidates):
            if "execute" in m.roles:
                cands.append((m.peer, m.ad))
                if m.rtt_s is not None:
                    rtt[m.peer] = m.rtt_s
        inputs = (*spec.inputs, *(p.cid for p in rec.parent_outputs or ()))
        holders = {c: self._holders.get(c, ()) for c in inputs}
        kw: dict[str, Any] = {"inputs": inputs, "holders": holders, "rtt_s": rtt,
                              "reserved": self._reserved,
                              "spread_key": rec.capsule.key}  # fmt: skip
        result = place(
            spec.conditions, cands, exclude={**e.refused, **dict.fromkeys(rec.excluded)}, **kw
        )
        if not result.ok and rec.excluded:
            result = place(spec.conditions, cands, exclude=e.refused, **kw)
        cid = rec.capsule_id
        if not result.ok:
            e.refused = {}
            out: list[Effect] = [SetTimer(("c.place", cid), now + self.config.place_retry_s)]
            if result.reason != e.last_reason:
                e.last_reason = result.reason
                out.append(Emit(ev.CapsuleWaiting(cid, result.reason)))
            return out
        executor = result.ranked[0].peer
        token = max(rec.token, e.max_token) + 1
        self._count("offers")
        new = rec.advance(State.LEASED, token=token, executor=executor)
        offer = LeaseOffer(rec.capsule, token, self.config.timing, rec.parent_outputs or ())
        out = self._change(e, new, now, [Send(executor, offer),
                                         Emit(ev.CapsuleLeased(cid, token, executor))])  # fmt: skip
        # The offer clock runs from now; commit takes a round trip, so allow for it.
        at = now + self.config.timing.offer_timeout_s + self.config.replicate_retry_s
        out.append(SetTimer(("c.offer", cid, token), at))
        return out

    def _refused(self, e: _Entry, peer: PeerId, reason: str, now: float) -> list[Effect]:
        if len(e.refused) < self.config.max_refused:
            e.refused[peer] = None
        e.last_reason = reason
        rec = e.record.advance(State.SUBMITTED, executor=None, reason=reason)
        out = self._change(e, rec, now, [])
        out.append(CancelTimer(("c.offer", rec.capsule_id, rec.token)))
        out.extend(self._place(e, now))
        return out

    def _executor_alive(self, e: _Entry, peer: PeerId, token: int, now: float) -> list[Effect]:
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
        out = self._change(e, new, now, [Emit(ev.CapsuleStarted(cid, token, peer))])
        out.append(CancelTimer(("c.offer", cid, token)))
        out.append(SetTimer(("c.lease", cid, token), self.config.timing.lease_deadline(now)))
        limit = rec.capsule.spec.maxexectime_s
        if limit > 0:
            out.append(SetTimer(("c.exec", cid, token), now + limit))
        out.append(CancelTimer(("c.wait", cid)))
        return out

    def _lease_lost(self, e: _Entry, why: str, now: float) -> list[Effect]:
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
            out = self._finish(e, State.FAILED, final, None, now, attempts=attempts)
            return [revoke, *cancel, *out]
        excluded = (*rec.excluded, rec.executor)[-16:]
        e.wait_start = now
        new = rec.advance(State.SUBMITTED, executor=None, attempts=attempts,
                          excluded=excluded, reason=reason)  # fmt: skip
        out = self._change(
            e, new, now, [Emit(ev.CapsuleRequeued(cid, rec.token, attempts, reason))]
        )
        out = [revoke, *cancel, *out]
        out.extend(self._resume(e, now))
        return out

    def _wait_expired(self, e: _Entry, now: float) -> list[Effect]:
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
        out += self._finish(e, State.FAILED, f"maxwaittime {limit:g} s exceeded: {why}", None, now)
        return out

    # ------------------------------------------------------------ receipts and endings

    def _accept_receipt(self, e: _Entry, r: Receipt, now: float) -> list[Effect]:
        self._count("receipts_accepted")
        e.pending_receipt = None
        state = State.SUCCEEDED if r.succeeded else State.FAILED
        reason = "" if r.succeeded else f"exit status {r.exit_status}" + (
            f": {r.reason}" if r.reason else "")  # fmt: skip
        extra: list[Effect] = [
            Send(r.executor, ReceiptReply(r.capsule_id, r.token, True)),
            Emit(ev.ReceiptAccepted(r.capsule_id, r.token, r)),
        ]
        return self._finish(e, state, reason, r, now, extra=extra)

    def _finish(
        self,
        e: _Entry,
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
        actions.append(Send(rec.origin, self._status(new)))
        out = self._cancel_timers(e)
        out.extend(self._change(e, new, now, actions))
        return out

    @staticmethod
    def _status(rec: CustodyRecord) -> StatusReply:
        r = rec.receipt
        spec = rec.capsule.spec
        named = named_outputs(spec, r.outputs) if r else ()
        return StatusReply(rec.capsule_id, rec.state.value, rec.token, rec.reason,
                           tuple(c for _, c in named), r.exit_status if r else None,
                           tuple(n for n, _ in named),
                           parent_label(spec, rec.capsule_id))  # fmt: skip

    # ------------------------------------------------------------ dependencies

    def _index_deps(self, e: _Entry) -> None:
        rec = e.record
        if rec.state is not State.SUBMITTED or rec.token != 0 or e.deps:
            return
        if rec.parent_outputs is not None:
            return  # resolved before a takeover: nothing to wait for
        for dep in rec.capsule.spec.dependencies:
            e.deps[dep] = None
            self._dep_waiters.setdefault(dep, {})[rec.capsule_id] = None

    def _poll_deps(self, e: _Entry, now: float) -> list[Effect]:
        out: list[Effect] = []
        cid = e.record.capsule_id
        for dep in list(e.deps):
            local = self._entries.get(dep)
            if (
                local is not None
                and local.record.terminal
                and local.committed >= local.record.version
            ):
                out.extend(self._dep_done(e, self._status(local.record), now))
                if e.record.terminal or not e.deps:
                    return out
                continue
            out.append(Send(self.view.leader(capsule_key(dep), self.config.k_c), StatusQuery(dep)))
        if e.deps:
            out.append(SetTimer(("c.deps", cid), now + self.config.dep_poll_s))
        return out

    def _dep_done(self, e: _Entry, status: StatusReply, now: float) -> list[Effect]:
        """Parent `status.capsule_id` finished; once all have succeeded, record their
        outputs as this capsule's parent outputs (replicated, persisted) and place it."""
        dep, state, reason = status.capsule_id, status.state, status.reason
        if dep not in e.deps or not e.leading or e.syncing or e.record.terminal:
            return []
        del e.deps[dep]
        waiters = self._dep_waiters.get(dep)
        if waiters is not None:
            waiters.pop(e.record.capsule_id, None)
            if not waiters:
                del self._dep_waiters[dep]
        if state != State.SUCCEEDED.value:
            name = f" ({status.label})" if status.label and status.label != dep else ""
            why = f"dependency {dep}{name} {state}" + (f": {reason}" if reason else "")
            return self._finish(e, State.FAILED, why, None, now)
        names = status.output_names or status.outputs  # an old peer sends no names
        label = status.label or dep
        e.dep_outputs[dep] = tuple(
            ParentOutput(dep, label, n, c) for n, c in zip(names, status.outputs, strict=True)
        )
        if e.deps:
            return []
        rec = e.record
        outs = tuple(o for d in rec.capsule.spec.dependencies for o in e.dep_outputs.get(d, ()))
        e.dep_outputs = {}
        if len(outs) > MAX_PARENT_OUTPUTS:  # must stay decodable by peers and on restore
            why = (f"dependencies produced {len(outs)} outputs; at most "
                   f"{MAX_PARENT_OUTPUTS} can feed one capsule")  # fmt: skip
            return self._finish(e, State.FAILED, why, None, now)
        cid = rec.capsule_id
        actions: list[Effect] = []
        if outs:
            actions.append(Emit(ev.ProvidersWanted(cid, tuple(dict.fromkeys(o.cid for o in outs)))))
        out: list[Effect] = [CancelTimer(("c.deps", cid))]
        out += self._change(e, rec.advance(State.SUBMITTED, parent_outputs=outs), now, actions)
        out += self._place(e, now)
        return out
