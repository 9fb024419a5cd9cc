"""Replication and takeover of custody records among a capsule's custodians (DESIGN §7).

The `k_c` live members closest to a capsule's key are its custodians; the closest is
the leader. `Replicator` is the leader's write path: `change` adopts a new version,
sends it (`Replicate`) to every follower that has not acked it, and holds the change's
Send/Emit effects in `Entry.actions` until a majority of the custodians
(`n // 2 + 1` of `n = min(k_c, live members)`, counting the leader) hold that version;
`commit` then releases them in version order.

`Takeover` is everything that happens when leadership moves:

- a node whose view makes it the leader of a record it holds asks every other
  custodian for its copy (`SyncRequest`), adopts the highest version once all replied
  or `sync_timeout_s` passed, bumps the version and resumes (the `resume` it is given:
  re-place a waiting capsule with a token above any seen, or give a leased/running one a
  fresh lease period in which the executor's heartbeats keep it);
- a node that stops leading drops its held effects and cancels its timers;
- any holder whose computed leader changes pushes its copy to that leader (`Replicate`
  as a handoff), so a brand-new leader learns about capsules it never held;
- the follower side: keep the highest version sent, ack it, and note every token seen.

Receipts survive leader loss: a follower keeps the receipt the executor sent it for the
current lease (`Entry.pending_receipt`), returns it in its `SyncReply`, and forwards it
(`ReceiptMsg`) with its handoff to a new leader and to any leader that replicates a
version still leasing it (a lost `SyncReply` does not lose the receipt), so a new
leader settles a finished capsule from a held receipt instead of leasing it again.

Invariant: a follower acks only the version it holds, and acks only ever grow, so of
two leaders with the same custodian set at most one commits a given version.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from overlay.capsule import events as ev
from overlay.capsule.custody_table import (
    CustodyTable,
    Entry,
    cancel_timers,
    count,
    status_reply,
)
from overlay.capsule.leases import LIVE, CustodyRecord, State
from overlay.capsule.members import MemberView
from overlay.capsule.messages import (
    ReceiptMsg,
    Replicate,
    ReplicateAck,
    SyncReply,
    SyncRequest,
)
from overlay.core.effects import Effect, Emit, Send, SetTimer
from overlay.core.ids import PeerId

#: Re-arm a record's timers and act on its state (custody.Custody._resume).
Resume = Callable[[Entry, float], list[Effect]]


class Replicator:
    """The leader's path from a new record version to its committed effects."""

    def __init__(
        self,
        me: PeerId,
        view: MemberView,
        table: CustodyTable,
        *,
        k_c: int,
        replicate_retry_s: float,
    ) -> None:
        self.me = me
        self.view = view
        self.table = table
        self.k_c = k_c
        self.replicate_retry_s = replicate_retry_s

    def custodians(self, key: int) -> list[PeerId]:
        return self.view.closest(key, self.k_c)

    def followers(self, e: Entry) -> list[PeerId]:
        return [p for p in self.custodians(e.record.capsule.key) if p != self.me]

    def majority(self, key: int) -> int:
        return len(self.custodians(key)) // 2 + 1

    def change(
        self, e: Entry, rec: CustodyRecord, now: float, actions: list[Effect]
    ) -> list[Effect]:
        """Adopt `rec` as leader, replicate it, and hold `actions` until it commits."""
        if rec.state in (State.SUBMITTED, State.LEASED):
            rec = replace(rec, wait_elapsed_s=max(0.0, now - e.wait_start))
        self.table.set_record(e, rec)
        if actions:
            e.actions.append((rec.version, actions))
        out = self.replicate(e, now)
        out.extend(self.commit(e))
        return out

    def replicate(self, e: Entry, now: float) -> list[Effect]:
        out: list[Effect] = []
        msg = Replicate(e.record)
        lagging = False
        for p in self.followers(e):
            if e.acks.get(p, 0) < e.record.version:
                out.append(Send(p, msg))
                lagging = True
        if lagging:
            out.append(SetTimer(("c.repl", e.record.capsule_id), now + self.replicate_retry_s))
        return out

    def commit(self, e: Entry) -> list[Effect]:
        """Release the actions of every version a majority of custodians holds."""
        if not e.actions:
            return []
        followers = self.followers(e)
        need = self.majority(e.record.capsule.key)
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


class Takeover:
    """Leadership changes, the takeover sync, and the follower side of replication."""

    def __init__(
        self,
        me: PeerId,
        view: MemberView,
        table: CustodyTable,
        replicator: Replicator,
        *,
        k_c: int,
        sync_timeout_s: float,
        index_deps: Callable[[Entry], None],
        resume: Resume,
    ) -> None:
        self.me = me
        self.view = view
        self.table = table
        self.replicator = replicator
        self.k_c = k_c
        self.sync_timeout_s = sync_timeout_s
        self.index_deps = index_deps
        self.resume = resume

    def ensure_leading(self, e: Entry, now: float) -> list[Effect]:
        key = e.record.capsule.key
        leader = self.view.leader(key, self.k_c)
        out: list[Effect] = []
        if leader == self.me and not e.leading:
            e.leading = True
            e.acks = {}
            out.extend(self.start_sync(e, now))
        elif leader != self.me and e.leading:
            e.leading = False
            e.syncing = False
            e.actions = []
            count(self.table.stats, "stepped_down")
            out.extend(cancel_timers(e))
        if leader != self.me and not e.leading:
            # Handoff: make sure the (possibly new) leader holds our copy, and the
            # executor's receipt we hold (it may never have reached that leader).
            if e.acks.get(leader, 0) < e.record.version:
                e.acks[leader] = e.record.version
                out.append(Send(leader, Replicate(e.record)))
                if e.pending_receipt is not None:
                    out.append(Send(leader, ReceiptMsg(e.pending_receipt)))
        return out

    def start_sync(self, e: Entry, now: float) -> list[Effect]:
        e.syncing = True
        e.sync_wait = {p: None for p in self.replicator.followers(e)}
        cid = e.record.capsule_id
        if not e.sync_wait:
            return self.finish_sync(e, now)
        out: list[Effect] = [Send(p, SyncRequest(cid)) for p in e.sync_wait]
        out.append(SetTimer(("c.sync", cid), now + self.sync_timeout_s))
        return out

    def finish_sync(self, e: Entry, now: float) -> list[Effect]:
        e.syncing = False
        e.sync_wait = {}
        count(self.table.stats, "takeovers")
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
            actions.append(Send(rec.origin, status_reply(rec)))
        out = self.replicator.change(e, rec, now, actions)
        out.extend(self.resume(e, now))
        return out

    # ------------------------------------------------------------ messages

    def on_replicate(self, peer: PeerId, msg: Replicate, now: float) -> list[Effect]:
        rec = msg.record
        if not self.view.is_live(peer):
            count(self.table.stats, "replicate_from_stranger")
            return []
        e = self.table.entries.get(rec.capsule_id)
        out: list[Effect] = []
        if e is None:
            if not self.table.admit(rec.capsule_id):
                return []
            e = Entry(rec, now)
            self.table.entries[rec.capsule_id] = e
            self.table.set_record(e, rec)
            self.index_deps(e)
            e.acks[peer] = rec.version  # the sender holds it: no handoff back to it
            out.extend(self.ensure_leading(e, now))
        elif rec.version > e.record.version:
            self.table.set_record(e, rec)
            e.wait_start = now - rec.wait_elapsed_s
            if rec.state in LIVE:
                e.last_hb = max(e.last_hb, now)
            if e.leading and not e.syncing:
                # Someone else led a newer version: adopt it and carry on from there.
                count(self.table.stats, "adopted_newer")
                out.extend(self.resume(e, now))
        else:
            self.table.saw_token(e, rec.token)
        out.append(Send(peer, ReplicateAck(rec.capsule_id, e.record.version)))
        r = e.pending_receipt
        if (r is not None and not e.leading and rec.state in LIVE and r.token == rec.token
                and r.executor == rec.executor):  # fmt: skip
            # The sender still leases what we hold a receipt for (its takeover sync
            # missed ours, or the executor cannot reach it): tell it.
            count(self.table.stats, "receipts_forwarded")
            out.append(Send(peer, ReceiptMsg(r)))
        return out

    def on_replicate_ack(self, peer: PeerId, msg: ReplicateAck, now: float) -> list[Effect]:
        e = self.table.entries.get(msg.capsule_id)
        if e is None or not e.leading:
            return []
        if msg.version > e.acks.get(peer, 0):
            e.acks[peer] = msg.version
        if msg.version > e.record.version and not e.syncing:
            return self.start_sync(e, now)  # a follower knows a newer version
        return self.replicator.commit(e)

    def on_sync_request(self, peer: PeerId, msg: SyncRequest, now: float) -> list[Effect]:
        e = self.table.entries.get(msg.capsule_id)
        if e is None:
            return [Send(peer, SyncReply(msg.capsule_id, None))]
        return [Send(peer, SyncReply(msg.capsule_id, e.record, e.pending_receipt))]

    def on_sync_reply(self, peer: PeerId, msg: SyncReply, now: float) -> list[Effect]:
        e = self.table.entries.get(msg.capsule_id)
        if e is None or not e.syncing or peer not in e.sync_wait:
            return []
        del e.sync_wait[peer]
        if msg.record is not None:
            e.acks[peer] = msg.record.version
            self.table.saw_token(e, msg.record.token)
            if msg.record.version > e.record.version:
                self.table.set_record(e, msg.record)
                e.wait_start = now - msg.record.wait_elapsed_s
        held = e.pending_receipt
        if msg.receipt is not None and (held is None or msg.receipt.token > held.token):
            # Handed over: `resume` settles the capsule with it if it matches the lease.
            count(self.table.stats, "receipts_handed_over")
            e.pending_receipt = msg.receipt
        if not e.sync_wait:
            return self.finish_sync(e, now)
        return []
