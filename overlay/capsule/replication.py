"""Replication, custody epochs and takeover among a capsule's custodians (DESIGN §7).

Reconfigurable Paxos over one register per capsule (docs/capsules.md, "Custody
epochs"): the record is the value, the custodians are acceptors, and each record
carries its `epoch` and `config` (the k_c custodians its leader chose, leader first);
a ballot is `(epoch, leader)`.

`Replicator` is the leader's write path: `change` adopts a new version, sends it
(`Replicate`) to every custodian of the configuration (and, until the epoch's
activation commits, of the previous one) that has not acked it, and holds the change's
Send/Emit effects in `Entry.actions` until a majority of each of those configurations
holds it at the leader's ballot; `commit` then releases them in version order. An ack
counts only when its ballot and the custodian's promise both equal the leader's ballot.

`Takeover` opens epochs and is the acceptor side:

- phase 1 (`start_sync`), on a takeover, a change of the view's custodian set, and a
  new record: `SyncRequest(ballot, copy)` to the newest configuration held; custodians
  promise (persisted) a ballot not below their promise and reply with their copy and
  held receipt, or refuse naming their promise. It needs a majority of that
  configuration, of every configuration the copy is still joint with (`record.joint`:
  its activation may not have committed, so an earlier epoch may still act) and of
  every newer one a reply reveals (chase); a timeout only asks again, with a higher
  ballot once refused. A new record's configuration is the origin's (`Submit.config`).
  Then `finish_sync` activates: the newest copy, in the new epoch and configuration,
  at a version above all seen, joint with the old configuration and every one the old
  copy was joint with (cleared by the first change after it commits);
- a leader that sees a higher ballot steps aside (`step_aside`); a node that stops
  leading drops its held effects and cancels its timers;
- any holder whose computed leader changes pushes its copy to that leader (`Replicate`
  as a handoff, re-sent on view changes until acked), so a brand-new leader learns
  about capsules it never held;
- the acceptor side: keep the copy of highest `(epoch, leader, version)` ever seen, ack
  with its ballot and the promise, note every token seen.

Receipts survive leader loss: a follower keeps the receipt the executor sent it for the
current lease (`Entry.pending_receipt`), returns it in its `SyncReply`, and forwards it
(`ReceiptMsg`) with its handoff to a new leader and to any leader that replicates a
version still leasing it (a lost `SyncReply` does not lose the receipt), so a new
leader settles a finished capsule from a held receipt instead of leasing it again.

Invariant: a version committed in epoch e is in every record a later epoch starts from
(phase-1 majorities intersect the commit majorities, activation is joint), so at most
one receipt is accepted and committed tokens strictly increase.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from overlay.capsule import events as ev
from overlay.capsule.amnesia import Amnesia
from overlay.capsule.custody_table import (
    CustodyTable,
    Entry,
    cancel_timers,
    commit_point,
    count,
    status_reply,
)
from overlay.capsule.leases import LIVE, MAX_JOINT, NO_BALLOT, CustodyRecord, State
from overlay.capsule.members import MemberView
from overlay.capsule.messages import (
    Committed,
    ReceiptMsg,
    Replicate,
    ReplicateAck,
    SubmitAck,
    SyncReply,
    SyncRequest,
)
from overlay.core.effects import CancelTimer, Effect, Emit, Send, SetTimer
from overlay.core.ids import PeerId

#: Re-arm a record's timers and act on its state (custody.Custody._resume).
Resume = Callable[[Entry, float], list[Effect]]
#: Longest wait between two handoffs of a finished copy not known committed.
SETTLE_RETRY_MAX_S = 60.0


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
        amnesia: Amnesia | None = None,
    ) -> None:
        self.me = me
        self.amnesia = amnesia or Amnesia()
        self.view = view
        self.table = table
        self.k_c = k_c
        self.replicate_retry_s = replicate_retry_s

    def custodians(self, key: int) -> list[PeerId]:
        return self.view.closest(key, self.k_c)

    def config(self, key: int, current: tuple[PeerId, ...] = ()) -> tuple[PeerId, ...]:
        """The configuration this node would lead with: itself first, then the view's
        closest (k_c in all), padded with the members of `current` (in its order) to
        `current`'s size if the view holds fewer.

        Never smaller than the configuration it follows: a view may hide every other
        member for a moment (suspicions, refused dials under load) while they still
        answer, and a configuration of the leader alone would then commit every later
        version on one copy, which no one could take over if that node died (phase 1
        needs a majority of the newest configuration). A shrink buys nothing: the old
        majority answers phase 1 and the activation anyway. The price is the usual one
        of majorities: later versions need a majority of the padded configuration, not
        the leader alone."""
        rest = [p for p in self.custodians(key) if p != self.me]
        cfg = (self.me, *rest)[: self.k_c]
        if len(cfg) < len(current):
            cfg = (*cfg, *(p for p in current if p not in cfg))[: len(current)]
        return cfg

    def followers(self, e: Entry) -> list[PeerId]:
        """Every custodian of the current configuration and, until the activation
        commits, of the previous one (joint)."""
        peers = dict.fromkeys(e.record.config)
        for cfg in e.joint:
            peers.update(dict.fromkeys(cfg))
        peers.pop(self.me, None)
        return list(peers)

    def committed_by(self, e: Entry, version: int) -> bool:
        """A majority of the configuration (and, while joint, of the previous one)
        holds `version` at this node's ballot."""
        mine = (e.promise == e.ballot and e.record.ballot == e.ballot
                and not self.amnesia.abstains(e.record))
        for cfg in (e.record.config, *e.joint):
            have = sum(mine if p == self.me else e.acks.get(p, 0) >= version for p in cfg)
            if not cfg or have < len(cfg) // 2 + 1:
                return False
        return True

    def change(
        self, e: Entry, rec: CustodyRecord, now: float, actions: list[Effect]
    ) -> list[Effect]:
        """Adopt `rec` as leader, replicate it, and hold `actions` until it commits."""
        if rec.state in (State.SUBMITTED, State.LEASED):
            rec = replace(rec, wait_elapsed_s=max(0.0, now - e.wait_start))
        if rec.joint and not e.joint:
            rec = replace(rec, joint=())  # activated: copies stop naming the old one
        self.table.set_record(e, rec)
        if actions:
            e.actions.append((rec.version, actions))
        out = self.replicate(e, now)
        out.extend(self.commit(e))
        return out

    def hand_over(self, e: Entry, leader: PeerId) -> list[Effect]:
        """Our copy for `leader`, and the executor's receipt we hold (it may never have
        reached that leader): after a view change (`ensure_leading`) and when the
        executor retries a receipt the leader has not settled (`Leasing`)."""
        out: list[Effect] = [Send(leader, Replicate(e.record, commit_point(e)))]
        if e.pending_receipt is not None:
            out.append(Send(leader, ReceiptMsg(e.pending_receipt)))
        return out

    def replicate(self, e: Entry, now: float) -> list[Effect]:
        out: list[Effect] = []
        if not e.leading or e.syncing:
            return out
        msg = Replicate(e.record, commit_point(e))
        lagging = False
        for p in self.followers(e):
            # Not to a peer the membership has dropped: a configuration padded with it
            # (`config`) would otherwise cost a frame per record per retry for as long
            # as it stays dead; the view change that brings it back replicates to it
            # (custody.on_members_changed). A hidden member still gets frames.
            if e.acks.get(p, 0) < e.record.version and self.view.is_member(p):
                out.append(Send(p, msg))
                lagging = True
        if lagging:
            out.append(SetTimer(("c.repl", e.record.capsule_id), now + self.replicate_retry_s))
        return out

    def commit(self, e: Entry) -> list[Effect]:
        """Release the actions of every version a majority of custodians holds."""
        if not e.leading or e.syncing:
            return []
        out: list[Effect] = []
        before = e.committed
        targets = self.followers(e)  # before an activation's commit retires `joint`
        while e.actions:
            version, acts = e.actions[0]
            if not self.committed_by(e, version):
                break
            e.actions.pop(0)
            e.committed = max(e.committed, version)
            out.extend(acts)
        if e.joint and self.committed_by(e, e.record.version):
            e.joint = ()  # activated: later versions need a majority of this epoch only
        rec = e.record
        if e.committed < rec.version and self.committed_by(e, rec.version):
            e.committed = rec.version
        if e.committed > before and rec.ballot == e.ballot:
            self.table.note_committed(e, e.ballot, e.committed)
            if rec.terminal and e.committed >= rec.version:
                # No later Replicate will carry this commit point: tell the holders, so
                # each may report the outcome (and a deposed copy's holder learns it).
                notice = Committed(rec.capsule_id, e.ballot, rec.version)
                out.extend(Send(p, notice) for p in targets)
        return out


def _keep_on_adopt(acts: list[Effect]) -> list[Effect]:
    """Of effects held for a lineage another leader superseded, only the submitter's
    acknowledgement still holds (the capsule is in custody either way)."""
    return [a for a in acts if isinstance(a, Send) and isinstance(a.msg, SubmitAck)]


class Takeover:
    """Opening epochs (phase 1, activation), stepping aside, and the acceptor side."""

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
        amnesia: Amnesia | None = None,
    ) -> None:
        self.me = me
        self.amnesia = amnesia or Amnesia()
        self.view = view
        self.table = table
        self.replicator = replicator
        self.k_c = k_c
        self.sync_timeout_s = sync_timeout_s
        self.index_deps = index_deps
        self.resume = resume

    def ensure_leading(self, e: Entry, now: float, *, view_changed: bool = False
                       ) -> list[Effect]:
        """Lead `e` if the view makes us its leader, else step down and hand the leader
        our copy. `view_changed` (custody.on_members_changed only) adds the orphan
        handoff, which must never answer a message."""
        key = e.record.capsule.key
        leader = self.view.leader(key, self.k_c)
        out: list[Effect] = []
        if leader == self.me and not e.leading:
            e.leading = True
            e.acks = {}
            e.sync_tries = 0
            out.extend(self.start_sync(e, now))
        elif leader != self.me and e.leading:
            out.extend(self._stop(e))
            e.leading = False
            count(self.table.stats, "stepped_down")
        if leader != self.me and not e.leading:
            # Handoff: make sure the (possibly new) leader holds our copy, and the
            # executor's receipt we hold (it may never have reached that leader).
            # Re-sent on every view change until that leader acks a copy as new.
            if e.acks.get(leader, 0) < e.record.version:
                out.extend(self.replicator.hand_over(e, leader))
            elif view_changed and self.orphaned(e.record):
                # Acked, but the copy's executor is gone: a leader back with an empty
                # store before anyone noticed still counts as holding it, and with the
                # executor dead no receipt comes to carry the copy (`Leasing._hand_over`),
                # so the capsule stayed running for as long as that leader stayed up. A
                # leader that holds it acks. Never in answer to a message, so it costs
                # one handoff per follower per view change while the executor is gone.
                count(self.table.stats, "orphan_handoffs")
                out.extend(self.replicator.hand_over(e, leader))
            out.extend(self.watch_settle(e, now))
        return out

    def orphaned(self, rec: CustodyRecord) -> bool:
        """A live lease whose executor the view no longer holds."""
        return rec.state in LIVE and rec.executor is not None \
            and not self.view.can_execute(rec.executor)

    def watch_settle(self, e: Entry, now: float) -> list[Effect]:
        """A follower holding a finished copy not known committed hands it to the
        leader again, backing off to `SETTLE_RETRY_MAX_S`, until a commit point or a
        newer copy settles it. Its view-change handoff is not enough: the leader may
        have acked that version under a ballot it has since left (a deposed
        configuration's follower, found by campaign seed 27), or the handoff was lost."""
        if e.leading or not e.record.terminal or e.settled is e.record or e.settle_at > now:
            return []  # (an armed timer is not pushed back: views change every few s)
        delay = min(SETTLE_RETRY_MAX_S, self.sync_timeout_s * (1 << min(e.sync_tries, 5)))
        e.settle_at = now + delay
        return [SetTimer(("c.settle", e.record.capsule_id), e.settle_at)]

    def retry_settle(self, e: Entry, now: float) -> list[Effect]:
        e.settle_at = 0.0
        if e.leading or not e.record.terminal or e.settled is e.record:
            return []
        out: list[Effect] = []
        leader = self.view.leader(e.record.capsule.key, self.k_c)
        if leader != self.me:
            count(self.table.stats, "settle_handoffs")
            out.append(Send(leader, Replicate(e.record, commit_point(e))))
        e.sync_tries += 1
        return out + self.watch_settle(e, now)

    def _stop(self, e: Entry) -> list[Effect]:
        """Stop acting on `e` (held effects dropped, timers cancelled)."""
        e.syncing = False
        e.actions = []
        e.acks = {}
        e.joint = ()
        e.ballot = NO_BALLOT
        return [*cancel_timers(e), CancelTimer(("c.sync", e.record.capsule_id))]

    def step_aside(self, e: Entry, now: float) -> list[Effect]:
        """Another ballot is above ours: stop acting; if the view still makes us the
        leader, open a higher epoch after the sync back-off (not at once, so two
        nodes whose views disagree do not outbid each other at message speed)."""
        count(self.table.stats, "ballot_superseded")
        out = self._stop(e)
        if self.view.leader(e.record.capsule.key, self.k_c) != self.me:
            e.leading = False
            return out
        e.syncing = True
        e.sync_tries += 1
        out.append(SetTimer(("c.sync", e.record.capsule_id), now + self._backoff(e)))
        return out

    def _backoff(self, e: Entry) -> float:
        return self.sync_timeout_s * (1 << min(e.sync_tries, 3))

    # ------------------------------------------------------------ phase 1

    def start_sync(self, e: Entry, now: float) -> list[Effect]:
        """Open a new epoch: ask the newest configuration we know for promises."""
        rec = e.record
        e.syncing = True
        e.committed = 0
        epoch = max(rec.epoch, e.promise[0], e.ballot[0]) + 1
        if rec.epoch == 0:
            # A brand-new record starts its epoch at the clock (wall-clock seconds), so
            # its tokens (`epoch << EPOCH_SHIFT | n`) are above those of any lineage
            # started earlier, even one whose every copy was lost.
            epoch = max(epoch, min(int(now), (1 << 41) - 1))
        e.ballot = (epoch, self.me.raw)
        self.table.promise(e, e.ballot)
        # The leader is an acceptor too, unless it forgot what it promised (amnesia.py).
        e.promised = {} if self.amnesia.abstains(rec) else {self.me: None}
        e.need = [rec.config or tuple(self.replicator.custodians(rec.capsule.key))]
        # Not known activated: an earlier epoch may still act, so ask its configurations.
        e.need.extend(c for c in rec.joint if c and c not in e.need)
        e.max_version = max(e.max_version, rec.version)
        return self._ask(e, now)

    def _ask(self, e: Entry, now: float) -> list[Effect]:
        cid = e.record.capsule_id
        asked: dict[PeerId, None] = {}
        for cfg in e.need:
            asked.update((p, None) for p in cfg if p not in e.promised)
        out: list[Effect] = [Send(p, SyncRequest(cid, e.ballot, e.record)) for p in asked]
        out.append(SetTimer(("c.sync", cid), now + self._backoff(e)))
        return out + self._maybe_finish(e, now)

    def retry_sync(self, e: Entry, now: float) -> list[Effect]:
        """No quorum yet: ask again, with a higher ballot once ours was refused."""
        e.sync_tries += 1
        count(self.table.stats, "sync_retries")
        if e.promise != e.ballot:
            return self.start_sync(e, now)
        return self._ask(e, now)

    def _maybe_finish(self, e: Entry, now: float) -> list[Effect]:
        if not e.syncing or e.promise != e.ballot:
            return []
        for cfg in e.need:
            if sum(p in e.promised for p in cfg) < len(cfg) // 2 + 1:
                return []
        return self.finish_sync(e, now)

    def _learn(self, e: Entry, rec: CustodyRecord, now: float) -> list[Effect]:
        """A copy from another custodian: keep it if newer; a leader in phase 1 also
        chases a newer epoch's configuration."""
        self.table.saw_token(e, rec.token)
        e.max_version = max(e.max_version, rec.version)
        old = e.record
        if rec.order <= old.order:
            return []
        out: list[Effect] = []
        if old.terminal and old is not e.settled and (rec.state, rec.token) != (old.state,
                                                                                 old.token):
            # An outcome this node held but never knew committed, replaced by a later
            # epoch's copy: a deposed leader's run (docs/capsules.md, "Deposed copies").
            count(self.table.stats, "outcomes_superseded")
            out.append(Emit(ev.OutcomeSuperseded(old.capsule_id, old.state.value, old.token,
                                                 old.epoch, rec.epoch, rec.state.value)))
        if e.leading and rec.ballot != e.record.ballot:
            e.actions = [(v, _keep_on_adopt(a)) for v, a in e.actions]
        self.table.set_record(e, rec)
        e.wait_start = now - rec.wait_elapsed_s
        if rec.state in LIVE:
            e.last_hb = max(e.last_hb, now)
        if e.syncing and rec.epoch > 0:
            for cfg in (rec.config, *rec.joint):
                if cfg and cfg not in e.need:
                    e.need.append(cfg)
        return out

    def _take_newer(self, e: Entry, rec: CustodyRecord, committed: int,
                    now: float) -> list[Effect]:  # fmt: skip
        """Any holder's copy (and the commit point it names for its ballot): keep it if
        newer; a leader whose ballot it supersedes steps aside (Raft: a higher term
        deposes the leader that hears of it)."""
        newer = rec.order > e.record.order
        out = self._learn(e, rec, now)
        self.table.note_committed(e, rec.ballot, committed)
        if newer and e.leading and not e.syncing and e.ballot != rec.ballot:
            out.extend(self.step_aside(e, now))
        return out

    def finish_sync(self, e: Entry, now: float) -> list[Effect]:
        """Activation: the adopted record in our epoch and configuration, replicated to
        both the previous and the new configuration (committed on a majority of each)."""
        e.syncing = False
        e.sync_tries = 0
        cid = e.record.capsule_id
        old = e.record
        cfg = self.replicator.config(old.capsule.key, old.config)
        # Joint with the old configuration and with every one the old copy still
        # names: an activation that never committed does not retire its predecessor.
        joint = tuple(dict.fromkeys(c for c in (old.config, *old.joint) if c and c != cfg))
        if len(joint) > MAX_JOINT:
            # Dropping one would be unsafe: wait (a liveness limit, counted).
            count(self.table.stats, "joint_too_long")
            e.syncing = True
            return [SetTimer(("c.sync", cid), now + self._backoff(e))]
        e.joint = joint
        e.acks = {}
        fresh = old.epoch == 0
        rec = replace(old, version=max(e.max_version, old.version) + 1, epoch=e.ballot[0],
                      config=cfg, joint=e.joint)  # fmt: skip
        if rec.state in LIVE:
            e.last_hb = max(e.last_hb, now)  # a fresh lease period from the takeover
        actions: list[Effect] = []
        if not fresh:
            count(self.table.stats, "takeovers")
            actions.append(Emit(ev.CustodyTakenOver(cid, rec.state.value, rec.token)))
        if rec.terminal:
            # The old leader may have died between committing the end and announcing
            # it: say it again (the API may see CapsuleFinished twice, never a second
            # ReceiptAccepted).
            actions.append(Emit(ev.CapsuleFinished(cid, rec.state.value, rec.reason,
                                                   rec.receipt)))  # fmt: skip
            actions.append(Send(rec.origin, status_reply(rec)))
        out: list[Effect] = [CancelTimer(("c.sync", cid))]
        out.extend(self.replicator.change(e, rec, now, actions))
        out.extend(self.resume(e, now))
        return out

    # ------------------------------------------------------------ messages

    def _admit(self, peer: PeerId, rec: CustodyRecord, now: float) -> Entry | None:
        if not self.table.admit(rec.capsule_id):
            return None
        e = Entry(rec, now)
        self.table.entries[rec.capsule_id] = e
        self.table.set_record(e, rec)
        self.index_deps(e)
        e.acks[peer] = rec.version  # the sender holds it: no handoff back to it
        return e

    def on_replicate(self, peer: PeerId, msg: Replicate, now: float) -> list[Effect]:
        rec = msg.record
        if not self.view.is_live(peer):
            count(self.table.stats, "replicate_from_stranger")
            return []
        e = self.table.entries.get(rec.capsule_id)
        out: list[Effect] = []
        if e is None:
            e = self._admit(peer, rec, now)
            if e is None:
                return []
            self.table.note_committed(e, rec.ballot, msg.committed)
            out.extend(self.ensure_leading(e, now))
        else:
            n_need = len(e.need)
            # Another leader activated a higher ballot: ours no longer commits.
            out.extend(self._take_newer(e, rec, msg.committed, now))
            if e.leading and e.syncing and len(e.need) > n_need:
                out.extend(self._ask(e, now))  # a handoff from a newer epoch: chase it
        # An amnesiac custodian acks (so a handoff stops) but names no promise: a leader
        # counts only acks whose promise is its ballot.
        promise = NO_BALLOT if self.amnesia.abstains(e.record) else e.promise
        out.append(Send(peer, ReplicateAck(rec.capsule_id, e.record.version, e.record.ballot,
                                           promise, commit_point(e))))  # fmt: skip
        if rec.order < e.record.order:
            # Read repair: the sender holds an older copy (a handoff from a deposed
            # leader or a custodian left out of the new configuration, a lagging
            # follower): give it ours, so it stops reporting and acting on its own.
            count(self.table.stats, "copies_repaired")
            out.append(Send(peer, Replicate(e.record, commit_point(e))))
        r = e.pending_receipt
        if (r is not None and not e.leading and rec.state in LIVE and r.token == rec.token
                and r.executor == rec.executor):  # fmt: skip
            # The sender still leases what we hold a receipt for (its takeover sync
            # missed ours, or the executor cannot reach it): tell it.
            count(self.table.stats, "receipts_forwarded")
            out.append(Send(peer, ReceiptMsg(r)))
        out.extend(self.watch_settle(e, now))
        return out

    def on_replicate_ack(self, peer: PeerId, msg: ReplicateAck, now: float) -> list[Effect]:
        e = self.table.entries.get(msg.capsule_id)
        if e is None:
            return []
        self.table.note_committed(e, msg.ballot, msg.committed)
        if not e.leading:
            if msg.version > e.acks.get(peer, 0):
                e.acks[peer] = msg.version  # our handoff arrived (or it holds newer)
            return []
        if msg.promise > e.ballot:
            self.table.promise(e, msg.promise)  # learnt: our ballot is superseded
            return [] if e.syncing else self.step_aside(e, now)
        if msg.ballot == e.ballot and msg.promise == e.ballot:
            if msg.version > e.acks.get(peer, 0):
                e.acks[peer] = msg.version
        return self.replicator.commit(e)

    def on_sync_request(self, peer: PeerId, msg: SyncRequest, now: float) -> list[Effect]:
        cid = msg.capsule_id
        e = self.table.entries.get(cid)
        if e is None and msg.record is not None and msg.ballot != NO_BALLOT:
            e = self._admit(peer, msg.record, now)
        if e is None:
            return [Send(peer, SyncReply(cid, None, None, msg.ballot, False, NO_BALLOT))]
        out: list[Effect] = []
        if self.amnesia.abstains(e.record):
            count(self.table.stats, "amnesia_abstained")
            if e.leading and msg.ballot > e.ballot:
                out.extend(self.step_aside(e, now))  # no promise, but no contest either
            out.append(Send(peer, SyncReply(cid, e.record, e.pending_receipt, msg.ballot,
                                            False, NO_BALLOT)))  # fmt: skip
            return out
        ok = msg.ballot >= e.promise and msg.ballot != NO_BALLOT
        if ok:
            if e.leading and msg.ballot != e.ballot:
                out.extend(self.step_aside(e, now))  # the leader is an acceptor too
            self.table.promise(e, msg.ballot)
        out.append(Send(peer, SyncReply(cid, e.record, e.pending_receipt, msg.ballot, ok,
                                        e.promise)))  # fmt: skip
        return out

    def on_sync_reply(self, peer: PeerId, msg: SyncReply, now: float) -> list[Effect]:
        e = self.table.entries.get(msg.capsule_id)
        if e is None:
            return []
        if not e.leading or not e.syncing or msg.ballot != e.ballot:
            if e.leading and msg.promise > e.promise:
                self.table.promise(e, msg.promise)  # refused: retry_sync outbids it
            # A late or refused reply still carries the replier's copy: a newer one
            # replaces ours (read repair; a leader's phase 1 chases its configuration).
            return [] if msg.record is None else self._take_newer(e, msg.record, 0, now)
        if msg.promise > e.promise:
            self.table.promise(e, msg.promise)  # refused: retry_sync outbids it
        n_need = len(e.need)
        out: list[Effect] = []
        if msg.record is not None:
            out = self._learn(e, msg.record, now)
        held = e.pending_receipt
        if msg.receipt is not None and (held is None or msg.receipt.token > held.token):
            # Handed over: `resume` settles the capsule with it if it matches the lease.
            count(self.table.stats, "receipts_handed_over")
            e.pending_receipt = msg.receipt
        if msg.promised:
            e.promised[peer] = None
        if len(e.need) > n_need:
            return out + self._ask(e, now)  # chase the newer epoch's configuration
        return out + self._maybe_finish(e, now)

    def on_committed(self, peer: PeerId, msg: Committed, now: float) -> list[Effect]:
        """The leader's commit point for a finished version: report it from now on."""
        e = self.table.entries.get(msg.capsule_id)
        if e is not None:
            self.table.note_committed(e, msg.ballot, msg.version)
        return []
