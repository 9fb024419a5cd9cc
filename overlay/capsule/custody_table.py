"""The custody table: every capsule this node holds as a custodian, and its indexes.

One `Entry` per capsule: the replicated `CustodyRecord` plus what only this node knows
about it (leading or following, the takeover sync in progress, which custodian acked
which version, the effects waiting for a majority, refused executors, dependencies
still awaited, a receipt kept for a takeover, the highest fencing token ever seen).

`CustodyTable` owns the entries and keeps three indexes consistent with them, so the
concern modules (replication.py, leasing.py, workflow.py) change a record only through
`set_record` and never edit an index by hand:

- `reserved`: executor → number of live leases it holds here (placement spreads load);
- `waiters`: parent capsule id → children waiting for it (workflow dependencies);
- `dirty`: capsule ids changed since the last `take_durable` (durable.py, DESIGN §9).

Reports (docs/capsules.md, "Deposed copies"): a holder may apply a version that never
commits (a leader cut off from its configuration applies a receipt to its own copy), so
an entry also keeps `settled`, the newest copy it *knows* a majority held (its own
commit as leader; the commit point a `Replicate`, `ReplicateAck` or `Committed` names
for that ballot), and `recent`, the held copies of the current ballot newer than it
(at most `MAX_RECENT`; the commit point usually names the version before the one
held). `report` gives the two: reads show `settled`, and the held copy only as pending.

Invariants: `len(entries) <= max_records`; to admit one more, the oldest finished
record with no pending effects is evicted (counted), else admission is refused
(counted). `Entry.max_token >= record.token` always (offers use `max_token + 1`).
Timer ids of a record's leader are `("c.<kind>", capsule_id[, token])`;
`cancel_timers` lists them all.
"""

from __future__ import annotations

from dataclasses import dataclass

from overlay.capsule.dataflow import ParentOutput, named_outputs, parent_label
from overlay.capsule.durable import DurableRecord, changed_events
from overlay.capsule.leases import LIVE, NO_BALLOT, Ballot, CustodyRecord, State
from overlay.capsule.messages import StatusReply
from overlay.capsule.receipts import Receipt
from overlay.core.certs import Certificate
from overlay.core.effects import CancelTimer, Effect
from overlay.core.ids import PeerId

#: Held copies of one ballot kept until a commit point names them (a follower learns
#: version v committed with v+1; a leader's acks may lag a few changes).
MAX_RECENT = 4


def count(stats: dict[str, int], name: str, n: int = 1) -> None:
    stats[name] = stats.get(name, 0) + n


class Entry:
    """This node's state for one capsule it holds (see the module docstring)."""

    __slots__ = (
        "acks", "actions", "ballot", "chain", "committed", "dep_outputs", "deps",
        "handoff_at", "joint", "last_hb", "last_reason", "leading", "max_token",
        "max_version", "need", "pending_receipt", "promise", "promised", "recent", "record",
        "refused", "settle_at", "settled", "sync_tries", "syncing", "wait_start",
    )  # fmt: skip

    def __init__(self, record: CustodyRecord, now: float) -> None:
        self.record = record
        self.wait_start = now - record.wait_elapsed_s
        self.last_hb = now
        self.leading = False
        self.syncing = False
        #: The highest ballot this node promised (persisted with the record).
        self.promise: Ballot = record.ballot
        #: The ballot this node leads (or tries to open) the record with.
        self.ballot: Ballot = NO_BALLOT
        #: Phase 1: custodians that promised `ballot`, the configurations of which a
        #: majority must promise, the retries so far, the highest version seen.
        self.promised: dict[PeerId, None] = {}
        self.need: list[tuple[PeerId, ...]] = []
        self.sync_tries = 0
        self.max_version = record.version
        #: The previous epoch's configuration until this epoch's activation commits.
        self.joint: tuple[tuple[PeerId, ...], ...] = ()
        #: Custodian -> version it acked at `ballot` (a follower: what it handed over).
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
        #: The newest copy known committed (None: none known yet), and the held copies
        #: of the record's ballot between it and `record`, oldest first.
        self.settled: CustodyRecord | None = None
        self.recent: tuple[CustodyRecord, ...] = ()
        #: When this follower next hands a finished, unsettled copy over (0: not armed).
        self.settle_at = 0.0
        #: Before this time a retried receipt does not make this follower hand it over
        #: again (`Leasing.on_receipt`: one handoff per heartbeat interval).
        self.handoff_at = 0.0


@dataclass(frozen=True, slots=True)
class Report:
    """What a node may say about a capsule: `record`, the newest copy it knows a
    majority of its configuration held (None: none known), and `pending`, a newer
    copy it holds that is not known committed (None: it holds `record`). A pending
    copy may be one a deposed leader wrote and a later epoch replaced: never report
    its outcome as the capsule's."""

    record: CustodyRecord | None
    pending: CustodyRecord | None

    @property
    def newest(self) -> CustodyRecord:
        rec = self.pending or self.record
        assert rec is not None
        return rec


def report(e: Entry) -> Report:
    settled = e.settled
    return Report(settled, None if e.record is settled else e.record)


def commit_point(e: Entry) -> int:
    """The highest version of the held copy's ballot this node knows committed."""
    rec, settled = e.record, e.settled
    point = settled.version if settled is not None and settled.ballot == rec.ballot else 0
    if e.leading and e.ballot == rec.ballot:
        point = max(point, e.committed)
    return point


def cancel_timers(e: Entry) -> list[Effect]:
    """Cancel every timer the leader of `e` may have armed."""
    cid, tok = e.record.capsule_id, e.record.token
    return [CancelTimer(t) for t in (("c.place", cid), ("c.wait", cid), ("c.deps", cid),
            ("c.repl", cid), ("c.offer", cid, tok), ("c.offer", cid, tok, 1),
            ("c.lease", cid, tok), ("c.exec", cid, tok))]  # fmt: skip


def status_reply(rec: CustodyRecord) -> StatusReply:
    """The answer to a `StatusQuery` (and the origin's notice when a capsule ends)."""
    r = rec.receipt
    spec = rec.capsule.spec
    named = named_outputs(spec, r.outputs) if r else ()
    return StatusReply(rec.capsule_id, rec.state.value, rec.token, rec.reason,
                       tuple(c for _, c in named), r.exit_status if r else None,
                       tuple(n for n, _ in named),
                       parent_label(spec, rec.capsule_id))  # fmt: skip


class CustodyTable:
    """The entries, bounded by `max_records`, and the indexes kept with them."""

    def __init__(self, *, max_records: int, durable: bool, stats: dict[str, int]) -> None:
        self.max_records = max_records
        #: Track changes for `take_durable` (off only where no disk is modelled).
        self.durable = durable
        self.stats = stats
        self.entries: dict[str, Entry] = {}
        self.reserved: dict[PeerId, int] = {}
        self.waiters: dict[str, dict[str, None]] = {}
        self.dirty: dict[str, None] = {}

    def set_record(self, e: Entry, rec: CustodyRecord) -> None:
        """Make `rec` the entry's record, keeping `reserved`, `max_token` and `dirty`."""
        old = e.record
        if old.state in LIVE and old.executor is not None:
            n = self.reserved.get(old.executor, 0) - 1
            if n > 0:
                self.reserved[old.executor] = n
            else:
                self.reserved.pop(old.executor, None)
        if rec.state in LIVE and rec.executor is not None:
            self.reserved[rec.executor] = self.reserved.get(rec.executor, 0) + 1
        if rec is not old:
            if old.ballot != rec.ballot:
                e.recent = ()
            elif rec.version > old.version and old is not e.settled:
                e.recent = (*e.recent[1 - MAX_RECENT:], old)
        e.record = rec
        if rec.ballot > e.promise:
            e.promise = rec.ballot
        if rec.token > e.max_token:
            e.max_token = rec.token
        if self.durable:
            self.dirty[rec.capsule_id] = None

    def note_committed(self, e: Entry, ballot: Ballot, version: int) -> None:
        """Versions up to `version` of `ballot` are held by a majority: the newest held
        copy among them becomes `settled` (what reads report)."""
        if version <= 0:
            return
        best = None
        for rec in (*e.recent, e.record):  # oldest first
            if rec.ballot == ballot and rec.version <= version:
                best = rec
        if best is None or (e.settled is not None and best.order <= e.settled.order):
            return
        e.settled = best
        e.recent = tuple(r for r in e.recent if r.order > best.order)

    def saw_token(self, e: Entry, token: int) -> None:
        """Another custodian's copy holds `token`: never offer it (or below) again."""
        if token > e.max_token:
            e.max_token = token
            if self.durable:
                self.dirty[e.record.capsule_id] = None

    def promise(self, e: Entry, ballot: Ballot) -> None:
        """Promise `ballot` (never lower); persisted with the record."""
        if ballot > e.promise:
            e.promise = ballot
            if self.durable:
                self.dirty[e.record.capsule_id] = None

    def admit(self, capsule_id: str) -> bool:
        """Make room for one more record; False (counted) if every record is live."""
        if len(self.entries) < self.max_records:
            return True
        for cid, e in self.entries.items():
            if e.record.terminal and not e.actions:
                self.drop(cid)
                count(self.stats, "evicted_finished")
                return True
        count(self.stats, "custody_full")
        return False

    def drop(self, cid: str) -> None:
        e = self.entries.pop(cid)
        self.set_record(e, CustodyRecord(e.record.capsule, e.record.origin, State.FAILED))
        # Marked dirty by set_record; take_durable finds no entry and emits a delete.
        for dep in e.deps:
            self.stop_waiting(dep, cid)

    def wait_for(self, dep: str, child: str) -> None:
        self.waiters.setdefault(dep, {})[child] = None

    def stop_waiting(self, dep: str, child: str) -> None:
        waiters = self.waiters.get(dep)
        if waiters is not None:
            waiters.pop(child, None)
            if not waiters:
                del self.waiters[dep]

    def take_durable(self) -> list[Effect]:
        """`CustodyRecordChanged` for every record changed since the last call."""
        if not self.dirty:
            return []
        out = changed_events(self.dirty, self._snapshot)
        self.dirty = {}
        return out

    def _snapshot(self, cid: str) -> DurableRecord | None:
        e = self.entries.get(cid)
        return DurableRecord(e.record, e.chain, e.max_token, e.promise) if e else None
