"""Reads of capsule state for the API: `/colony/capsule-info/1.0.0` and its JSON views.

Request/response (canonical CBOR) between members:

    {"op": "status", "id": capsule id}   → {"record": custody record | None,
                                            "pending": custody record | None}
    {"op": "find", "id": capsule id}     → the same, searched in this cell
    {"op": "log", "id", "token": n, "offset": bytes}  → {"data": bytes, "gone": bool}

"status" answers this node's report of the capsule (`Custody.report`): "record" the
newest copy it knows committed, "pending" a newer copy it holds that is not known
committed (a deposed leader's own run may be one: docs/capsules.md, "Deposed copies");
an answer without "pending" (an older node) is taken as committed. "log" answers
bytes of a running attempt's log from `offset` (at most `LOG_CHUNK_BYTES`), `gone`
once the run directory no longer exists (the attempt ended; its log is in the store).
These are reads of state the capsule core already keeps; they change nothing.
`CapsuleReads.find_report` asks this node and the capsule's custodians (k_c closest
live members, plus `READ_EXTRA` since views differ during churn) and keeps the
newest committed copy, and the newest pending one if it is newer still; `find_record`
is the copy to act on (committed, else a pending one that has not finished). For a
capsule it forwarded to another cell (services/cell_forward.py) it also asks the
member that took it to "find" it among its own cell's custodians.

Who may read (docs/trust.md, "Private data"): colony mode, members gossip admitted
only (`MemberGate`; "status" and "find" also from members of other cells whose chain
this node learned), and a run's stored log and outputs are private DAGs (the
executor marks them); open mode, anyone — there is no privacy without a colony.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog
import trio

from overlay.capsule.core import CapsuleCore
from overlay.capsule.custody_table import Report
from overlay.capsule.leases import CustodyRecord
from overlay.capsule.spec import Capsule, capsule_key, check_capsule_id
from overlay.core.errors import ColonyError, RemoteProtocolError, WireError
from overlay.core.ids import PeerId
from overlay.core.validate import uint
from overlay.runtime.context import Membership, Network
from overlay.runtime.executors.base import LOG_NAME
from overlay.runtime.jsontypes import JsonObject

log = structlog.get_logger("colony.capsules")

PROTO_CAPSULE_INFO = "/colony/capsule-info/1.0.0"
INFO_TIMEOUT_S = 3.0
#: Reads ask this many members beyond the k_c closest (views differ during churn).
READ_EXTRA = 2
#: Largest log piece one info request returns (well under the 4 MiB frame limit).
LOG_CHUNK_BYTES = 256 * 1024
#: Forwarded capsules whose reads this node follows into their cell.
MAX_REMOTE = 10_000


def record_json(rec: CustodyRecord) -> JsonObject:
    spec = rec.capsule.spec
    r = rec.receipt
    return {
        "id": rec.capsule_id,
        "name": spec.name,
        "state": rec.state.value,
        "reason": rec.reason,
        "version": rec.version,
        "token": rec.token,
        "executor": str(rec.executor) if rec.executor else None,
        "attempts": rec.attempts,
        "submitter": str(rec.capsule.submitter),
        "origin": str(rec.origin),
        "submitted_at": rec.capsule.submitted_at,
        # Lineage: the trigger, cron or generator that launched it (trigger_def.py).
        "trigger": rec.capsule.derived[0].id if rec.capsule.derived else None,
        # custody: the epoch and its k_c custodians, leader first; executors excluded
        "epoch": rec.epoch,
        "custodians": [str(p) for p in rec.config],
        "excluded": [str(p) for p in rec.excluded],
        "conditions": {"cpu": spec.conditions.cpu, "mem_mib": spec.conditions.mem_mib,
                       "gpu": spec.conditions.gpu, "executor": spec.conditions.executor,
                       "labels": dict(spec.conditions.labels),
                       "location": spec.conditions.location},
        "priority": spec.priority, "maxexectime_s": spec.maxexectime_s,
        "maxretries": spec.maxretries,
        "command": list(spec.command),
        "function": spec.function,
        "inputs": list(spec.inputs),
        "declared_outputs": list(spec.outputs),
        "dependencies": list(spec.dependencies),
        "exit_status": r.exit_status if r else None,
        "outputs": list(r.outputs) if r else [],
        "log_cid": (r.log_cid or None) if r else None,
        "receipt_executor": str(r.executor) if r else None,
        "started": r.started if r else None,
        "finished": r.finished if r else None,
    }


#: `state` of a report whose only copy finished but is not known committed: its
#: outcome is not the capsule's until a majority holds it (it may never be).
UNCONFIRMED = "unconfirmed"


def report_json(rep: Report) -> JsonObject:
    """A report as the API shows it: the committed copy (`committed` true), or the
    newest held copy when none is known committed, with a finished one's outcome
    withheld (`state` "unconfirmed"); `pending` summarises a newer uncommitted copy."""
    out = record_json(rep.record or rep.newest)
    out["committed"] = rep.record is not None
    if rep.record is None and rep.newest.terminal:
        out.update(state=UNCONFIRMED, exit_status=None, outputs=[], log_cid=None,
                   receipt_executor=None, started=None, finished=None)  # fmt: skip
    p = rep.pending
    out["pending"] = None if p is None else {
        "state": p.state.value, "epoch": p.epoch, "version": p.version, "token": p.token,
        "leader": str(p.config[0]) if p.config else None,
        "custodians": [str(q) for q in p.config],
        "executor": str(p.executor) if p.executor else None,
        "receipt_executor": str(p.receipt.executor) if p.receipt else None,
        "exit_status": p.receipt.exit_status if p.receipt else None,
    }
    return out


def reported_state(rep: Report) -> str:
    """The state a report shows (`report_json`'s "state")."""
    if rep.record is not None:
        return rep.record.state.value
    return UNCONFIRMED if rep.newest.terminal else rep.newest.state.value


def acted_on(rep: Report | None) -> CustodyRecord | None:
    """The copy a read acts on: the committed one, else a pending copy that has not
    finished (a capsule whose first version is not yet committed); never an
    uncommitted outcome."""
    if rep is None:
        return None
    if rep.record is not None:
        return rep.record
    return None if rep.newest.terminal else rep.newest


def newest_copy(local: CustodyRecord | None,
                found: list[CustodyRecord]) -> CustodyRecord | None:
    """The copy of highest `order` (epoch, leader, version), the order custodians keep
    (overlay/capsule/leases.py). By version alone, a copy a superseded leader wrote
    and never committed (a minority's during a partition) could beat the epoch that
    replaced it."""
    best = local
    for rec in found:
        if best is None or rec.order > best.order:
            best = rec
    return best


def merge_reports(reports: list[Report]) -> Report | None:
    """One report from several nodes': the newest committed copy (committed copies of
    later epochs succeed earlier ones), and the newest pending copy if newer still."""
    settled = newest_copy(None, [r.record for r in reports if r.record is not None])
    pending = newest_copy(None, [r.pending for r in reports if r.pending is not None])
    if pending is not None and settled is not None and pending.order <= settled.order:
        pending = None
    if settled is None and pending is None:
        return None
    return Report(settled, pending)


def report_to_wire(rep: Report | None) -> dict[str, object]:
    if rep is None:
        return {"record": None, "pending": None}
    return {"record": rep.record.to_wire() if rep.record else None,
            "pending": rep.pending.to_wire() if rep.pending else None}  # fmt: skip


def report_from_wire(reply: object, capsule_id: str) -> Report | None:
    """A "status"/"find" answer; one without "pending" (an older node) holds its copy
    as committed, as it did before. Raises the WireError family on a bad record."""
    if not isinstance(reply, dict):
        return None
    raw, raw_p = reply.get("record"), reply.get("pending")
    rec = None if raw is None else CustodyRecord.from_wire(raw)
    pending = None if raw_p is None else CustodyRecord.from_wire(raw_p)
    if rec is not None and rec.capsule_id != capsule_id:
        rec = None
    if pending is not None and pending.capsule_id != capsule_id:
        pending = None
    return None if rec is None and pending is None else Report(rec, pending)


@dataclass
class Known:
    """What this node knows of a capsule submitted through it (for `ps`)."""

    capsule: Capsule
    state: str = "submitting"
    reason: str = ""
    outputs: tuple[str, ...] = ()
    exit_status: int | None = None
    #: The cell it was forwarded to (placement across cells), "" when placed here.
    cell: str = ""

    def as_json(self) -> JsonObject:
        out: JsonObject = {"id": self.capsule.id, "name": self.capsule.spec.name,
                           "state": self.state, "reason": self.reason,
                           "outputs": list(self.outputs), "exit_status": self.exit_status,
                           "submitted_at": self.capsule.submitted_at}  # fmt: skip
        if self.cell:
            out["cell"] = self.cell
        return out


class MemberGate:
    """Colony mode: capsule traffic only from members gossip admitted (DESIGN §3).
    Open mode (`colony_owner` None): anyone; the core still verifies every signature
    and fencing token. Refusals are counted in `stats["refused_non_member"]`.
    `reads_ok` also admits status reads from members of other cells whose chain this
    node learned (a submitter that forwarded a capsule here, services/cell_forward.py)."""

    def __init__(
        self, colony_owner: bytes | None, membership: Membership, stats: dict[str, int]
    ) -> None:
        self.colony_owner = colony_owner
        self.membership = membership
        self.stats = stats
        self.reads_ok: Callable[[PeerId], bool] = lambda peer: False

    def check(self, peer: PeerId, *, read: bool = False) -> None:
        if self.colony_owner is None:
            return
        if read and self.reads_ok(peer):
            return
        if not self.membership.is_member(peer):
            self.stats["refused_non_member"] = self.stats.get("refused_non_member", 0) + 1
            raise RemoteProtocolError(f"{peer.short()} is not a member of this colony")


class CapsuleReads:
    """Both ends of `/colony/capsule-info/1.0.0`: asking custodians, answering them."""

    def __init__(
        self,
        core: CapsuleCore,
        network: Network,
        membership: Membership,
        gate: MemberGate,
        runs_dir: Path,
    ) -> None:
        self.core = core
        self.network = network
        self.membership = membership
        self.gate = gate
        self.runs_dir = runs_dir
        self.me = core.me
        #: Capsules this node forwarded to another cell → the member that took them
        #: (services/cell_forward.py); reads go through it. Oldest forgotten.
        self.remote: dict[str, PeerId] = {}

    def follow(self, capsule_id: str, via: PeerId) -> None:
        while len(self.remote) >= MAX_REMOTE:
            del self.remote[next(iter(self.remote))]
        self.remote[capsule_id] = via

    def local_report(self, capsule_id: str) -> Report | None:
        return self.core.custody.report(capsule_id)

    def local_record(self, capsule_id: str) -> CustodyRecord | None:
        """This node's copy to act on (`acted_on`: never an uncommitted outcome)."""
        return acted_on(self.local_report(capsule_id))

    async def find_record(self, capsule_id: str) -> CustodyRecord | None:
        """The copy to act on among this node and the capsule's custodians: the newest
        committed one, else a pending one that has not finished (`acted_on`)."""
        return acted_on(await self.find_report(capsule_id))

    async def find_report(self, capsule_id: str) -> Report | None:
        """The newest committed copy among this node and the capsule's custodians, and
        a newer pending copy if one holds it (`merge_reports`)."""
        local = self.local_report(capsule_id)
        # Ask beyond the custodians of our own view: the core hides a peer for a while
        # after a dropped connection, and views differ while membership settles.
        key = capsule_key(capsule_id)
        live = sorted((m.peer for m in self.membership.list_members()),
                      key=lambda p: p.key ^ key)  # fmt: skip
        peers = [p for p in live[: self.core.custody.config.k_c + READ_EXTRA] if p != self.me]
        found: list[Report] = [] if local is None else [local]
        via = self.remote.get(capsule_id)

        async def ask(peer: PeerId) -> None:
            # The member of another cell that took a forwarded capsule searches its
            # own cell's custodians ("find"); a custodian here answers its copy.
            op = "find" if peer == via else "status"
            try:
                reply = await self.network.request(
                    peer, PROTO_CAPSULE_INFO, {"op": op, "id": capsule_id},
                    timeout=INFO_TIMEOUT_S * (2 if op == "find" else 1),
                )
                rep = report_from_wire(reply, capsule_id)
                if rep is not None:
                    found.append(rep)
            except (ColonyError, KeyError, TypeError) as e:
                log.debug("capsule_info_failed", peer=str(peer), error=str(e))

        async with trio.open_nursery() as n:
            for p in peers if via is None else [*peers, via]:
                n.start_soon(ask, p)
        return merge_reports(found)

    async def read_log(self, executor: PeerId, capsule_id: str, token: int,
                       offset: int) -> tuple[bytes, bool]:  # fmt: skip
        """Bytes of a running attempt's log from `offset`; (data, gone) — gone when the
        run directory no longer exists (the attempt ended; its log is in the store)."""
        if executor == self.me:
            return read_run_log(self.runs_dir, capsule_id, token, offset)
        reply = await self.network.request(
            executor, PROTO_CAPSULE_INFO,
            {"op": "log", "id": capsule_id, "token": token, "offset": offset},
            timeout=INFO_TIMEOUT_S,
        )
        if not isinstance(reply, dict) or not isinstance(reply.get("data"), bytes):
            raise ColonyError(f"bad log reply from {executor.short()}")
        return reply["data"], bool(reply.get("gone"))

    async def on_info_request(self, peer: PeerId, obj: object) -> object:
        op = obj.get("op") if isinstance(obj, dict) else None
        self.gate.check(peer, read=op in ("status", "find"))
        if not isinstance(obj, dict):
            raise RemoteProtocolError("capsule info request must be a map")
        try:
            cid = check_capsule_id(obj.get("id"))
        except WireError as e:
            raise RemoteProtocolError(str(e)) from None
        if op == "status":
            return report_to_wire(self.local_report(cid))
        if op == "find":  # a capsule it forwarded here: search this cell's custodians
            # (one that this node forwarded on is not followed further: no loops)
            rep = self.local_report(cid) if cid in self.remote else await self.find_report(cid)
            return report_to_wire(rep)
        if op == "log":
            token, offset = _uint(obj.get("token")), _uint(obj.get("offset"))
            data, gone = read_run_log(self.runs_dir, cid, token, offset)
            return {"data": data, "gone": gone}
        raise RemoteProtocolError(f"unknown capsule info op {op!r}")


def _uint(v: object) -> int:
    return uint(v, "", limit=1 << 62, error=RemoteProtocolError,
                message="log token and offset must be non-negative integers")


def read_run_log(runs_dir: Path, capsule_id: str, token: int, offset: int) -> tuple[bytes, bool]:
    path = runs_dir / f"{capsule_id}.{token}" / LOG_NAME
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(LOG_CHUNK_BYTES), False
    except FileNotFoundError:
        return b"", True
