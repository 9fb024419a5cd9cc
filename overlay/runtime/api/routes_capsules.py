"""Control-API routes for capsules and workflows (docs/capsules.md, "Running capsules").

| method, path                 | body / query               | result                         |
|------------------------------|----------------------------|--------------------------------|
| POST /v1/capsules/submit     | {spec, nonce?}             | {id, state, reason, placement, cell?}
| GET  /v1/capsules            |                            | [{id, name, state, …}]  (ps)   |
| GET  /v1/capsules/get        | ?id=                       | the custody record as JSON     |
| GET  /v1/capsules/wait       | ?id=&timeout=              | NDJSON states, last {done}     |
| GET  /v1/capsules/logs       | ?id=&follow=1              | NDJSON {data}, last {done}     |
| POST /v1/capsules/cancel     | {id, reason?}              | {id, state}                    |
| POST /v1/workflows/submit    | {workflow, nonce?}         | {name: id}, capsules           |
| GET  /v1/capsules/stats      |                            | view size, core counters       |

Specs are signed here with the node's key (the node's user is the submitter) and go
to custody through the capsule core. Reads ask this node and the capsule's custodians
(`CapsuleService.find_record`), so `get`, `wait` and `logs` work from any node; a
capsule placed in another cell (services/cell_forward.py; `cell` in the submit
answer) is read through the member of that cell that took it.
The routes use the capsule service, the node's key and `Blocks`, not the daemon.
"""

from __future__ import annotations

import codecs
import secrets
import time
from collections.abc import AsyncIterator

import trio

from overlay.capsule.custody_table import Report
from overlay.capsule.leases import CustodyRecord, State
from overlay.capsule.placement import place
from overlay.capsule.spec import Capsule, CapsuleSpec, SpecError, check_capsule_id
from overlay.capsule.workflow_spec import Workflow
from overlay.core.cid import Cid
from overlay.core.crypto import KeyPair
from overlay.core.errors import ColonyError, WireError
from overlay.runtime.api.openapi import ANY, BOOL, INT, OBJ, STR, RouteDoc, arr, nullable, obj
from overlay.runtime.api.server import ApiError, ApiServer, Reply, Request, Response
from overlay.runtime.context import Blocks
from overlay.runtime.jsontypes import Json, JsonObject
from overlay.runtime.services.capsule_info import report_json
from overlay.runtime.services.capsules import CapsuleService
from store.exporter import Exporter

POLL_S = 0.5
LOG_POLL_S = 0.5
#: `ps` refreshes at most this many unfinished capsules from their custodians.
PS_REFRESH = 64
MAX_WAIT_S = 7 * 24 * 3600.0
SUBMITTED = obj(("id", "state"), id=STR, name=nullable(STR), state=STR, reason=ANY,
                placement=nullable(STR), cell=STR)
#: `committed`: the copy shown is known held by a majority of its configuration;
#: `pending`: a newer copy not known committed (docs/capsules.md, "Deposed copies").
RECORD = obj(("id", "state"), id=STR, name=nullable(STR), state=STR, reason=ANY,
             executor=nullable(STR), exit_status=nullable(INT), role=STR,
             committed=BOOL, pending=nullable(OBJ))
#: Custody states as ColonyOS counts them (waiting = not yet running).
_COLONYOS_STATE = {
    State.SUBMITTED: "waiting", State.LEASED: "waiting", State.RUNNING: "running",
    State.SUCCEEDED: "succeeded", State.FAILED: "failed", State.CANCELLED: "cancelled",
}


def _id(text: object) -> str:
    try:
        return check_capsule_id(text)
    except WireError as e:
        raise ApiError(400, f"not a capsule id: {e}") from None


def _nonce(body: JsonObject) -> int:
    n = body.get("nonce")
    if n is None:
        return secrets.randbits(62)  # every submit is a new capsule unless asked otherwise
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n < 1 << 63:
        raise ApiError(400, "nonce must be a non-negative integer")
    return n


def placement_hint(svc: CapsuleService, spec: CapsuleSpec, capsule_id: str = "") -> str:
    """Why no member this node knows of could run `spec` now ("" when some could, or
    when the capsule was placed in another cell: this node's members do not matter)."""
    if capsule_id in svc.reads.remote:
        return ""
    cands = [(m.peer, m.ad) for m in svc.core.view.members() if "execute" in m.roles]
    result = place(spec.conditions, cands, inputs=spec.inputs)
    return "" if result.ok else result.reason


def _record_or_404(rec: CustodyRecord | Report | None, cid: str) -> JsonObject:
    if rec is None:
        raise ApiError(404, f"capsule {cid} is unknown to this node and its custodians")
    return report_json(rec if isinstance(rec, Report) else Report(rec, None))


def _submitted_at(row: JsonObject) -> float:
    t = row.get("submitted_at")
    return float(t) if isinstance(t, (int, float)) else 0.0


def add_capsule_routes(
    api: ApiServer, svc: CapsuleService, keypair: KeyPair, blocks: Blocks
) -> None:
    me = keypair.peer_id

    async def submit_one(cap: Capsule, *, cross_cell: bool = True) -> JsonObject:
        k = await svc.submit(cap, cross_cell=cross_cell)
        if k.state == "rejected":
            raise ApiError(422, f"capsule {cap.id} rejected: {k.reason}")
        hint = placement_hint(svc, cap.spec, cap.id)  # after submit: the capsule layer is up
        out: JsonObject = {"id": cap.id, "name": cap.spec.name, "state": k.state,
                           "reason": k.reason, "placement": hint}  # fmt: skip
        if k.cell:  # forwarded to another cell (services/cell_forward.py)
            out["cell"] = k.cell
        return out

    async def submit(req: Request) -> Reply:
        body = req.json()
        try:
            spec = CapsuleSpec.from_dict(body.get("spec"))
        except SpecError as e:
            raise ApiError(400, f"bad capsule spec: {e}") from None
        if spec.dependencies:
            raise ApiError(400, "dependencies name other capsules of a workflow: "
                           "submit it with `colony workflow submit`")  # fmt: skip
        cap = Capsule.sign(keypair, spec, time.time(), _nonce(body))
        return await submit_one(cap)

    async def workflow_submit(req: Request) -> Reply:
        body = req.json()
        try:
            wf = Workflow.from_dict(body.get("workflow"))
        except SpecError as e:
            raise ApiError(400, f"bad workflow: {e}") from None
        caps = wf.sign(keypair, time.time(), _nonce(body))
        names = [s.name for s in wf.order()]
        out: list[Json] = []
        ids: JsonObject = {}
        for name, cap in zip(names, caps, strict=True):
            # Parents first: custody polls them by id, in this cell (no forwarding).
            item = await submit_one(cap, cross_cell=False)
            item["name"] = name
            ids[name] = cap.id
            out.append(item)
        return {"workflow": wf.name, "ids": ids, "capsules": out}

    async def ps(req: Request) -> Reply:
        rows: dict[str, JsonObject] = {}
        for rep in svc.core.custody.reports():
            # The copy known committed; a newer uncommitted one only as "pending".
            row = report_json(rep)
            cid = rep.newest.capsule_id
            row["role"] = "leader" if svc.core.custody.is_leading(cid) else "custodian"
            rows[cid] = row
        stale = []
        for cid, k in svc.known.items():
            if cid in rows:
                rows[cid]["role"] = f"{rows[cid]['role']}+origin"
                continue
            rows[cid] = {**k.as_json(), "role": "origin"}
            if k.state not in ("succeeded", "failed", "cancelled", "rejected"):
                stale.append(cid)

        async def refresh(cid: str) -> None:
            rep = await svc.find_report(cid)
            if rep is not None:
                rows[cid] = {**report_json(rep), "role": "origin"}

        async with trio.open_nursery() as n:
            for cid in stale[-PS_REFRESH:]:
                n.start_soon(refresh, cid)
        return sorted(rows.values(), key=_submitted_at)

    async def get(req: Request) -> Reply:
        cid = _id(req.arg("id"))
        rep = await svc.find_report(cid)
        out = _record_or_404(rep, cid)
        if out["state"] == State.SUBMITTED.value and rep is not None:
            spec = rep.newest.capsule.spec
            out["placement"] = placement_hint(svc, spec, cid)
        return out

    async def wait(req: Request) -> Response:
        cid = _id(req.arg("id"))
        try:
            timeout = float(req.arg("timeout") or MAX_WAIT_S)
        except ValueError:
            raise ApiError(400, "timeout must be a number of seconds") from None
        first = await svc.find_report(cid)
        _record_or_404(first, cid)

        async def gen() -> AsyncIterator[Json]:
            rep = first
            last = None
            deadline = trio.current_time() + timeout
            while True:
                assert rep is not None
                row = report_json(rep)
                key = (row["state"], row["token"])
                if rep.record is not None and rep.record.terminal:  # committed: the outcome
                    yield {**row, "done": True}
                    return
                if key != last:
                    last = key
                    if row["state"] == State.SUBMITTED.value:
                        row["placement"] = placement_hint(svc, rep.newest.capsule.spec, cid)
                    yield row
                if trio.current_time() >= deadline:
                    raise ColonyError(f"capsule {cid} still {row['state']} after {timeout:g} s")
                await svc.changed(POLL_S)
                rep = await svc.find_report(cid) or rep

        return Response(stream=gen())

    async def logs(req: Request) -> Response:
        cid = _id(req.arg("id"))
        follow = req.arg("follow") in ("1", "true", "yes")
        first = await svc.find_record(cid)
        _record_or_404(first, cid)

        async def gen() -> AsyncIterator[Json]:
            rec = first
            token, offset = -1, 0
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            while True:
                assert rec is not None
                if rec.terminal:
                    r = rec.receipt
                    if r is not None and r.log_cid:
                        data = await _read_cid(blocks, r.log_cid)
                        # The stored log is the run's log plus a trailer: skip what we
                        # already streamed of this attempt.
                        start = offset if token == r.token else 0
                        text = decoder.decode(data[start:], final=True)
                        if text:
                            yield {"data": text}
                    yield {"done": True, "state": rec.state.value, "reason": rec.reason,
                           "exit_status": r.exit_status if r else None,
                           "log_cid": r.log_cid if r else None}  # fmt: skip
                    return
                if rec.state in (State.LEASED, State.RUNNING) and rec.executor is not None:
                    if rec.token != token:
                        if token != -1:
                            yield {"attempt": rec.token, "executor": str(rec.executor)}
                        token, offset = rec.token, 0
                        decoder.reset()
                    try:
                        data, _gone = await svc.read_log(rec.executor, cid, token, offset)
                    except ColonyError:
                        data = b""  # executor unreachable for now; custody will decide
                    if data:
                        offset += len(data)
                        yield {"data": decoder.decode(data)}
                        continue  # more may be waiting: read again at once
                if not follow:
                    yield {"done": True, "state": rec.state.value, "reason": rec.reason,
                           "exit_status": None, "log_cid": None}  # fmt: skip
                    return
                await trio.sleep(LOG_POLL_S)
                rec = await svc.find_record(cid) or rec

        return Response(stream=gen())

    async def cancel(req: Request) -> Reply:
        body = req.json()
        cid = _id(body.get("id"))
        rec = await svc.find_record(cid)
        _record_or_404(rec, cid)
        assert rec is not None
        if me not in (rec.origin, rec.capsule.submitter):
            raise ApiError(403, f"capsule {cid} was submitted through {rec.origin.short()}; "
                           "only that node or the submitter may cancel it")  # fmt: skip
        await svc.cancel(cid, str(body.get("reason", ""))[:200])
        with trio.move_on_after(10.0):
            while rec is not None and not rec.terminal:
                await svc.changed(POLL_S)
                rec = await svc.find_record(cid) or rec
        assert rec is not None
        return {"id": cid, "state": rec.state.value, "reason": rec.reason}

    def counts() -> dict[tuple[str, ...], float]:
        """Capsules this node leads, by ColonyOS state and executor kind: each capsule
        has one leader, so summing the series over a colony's nodes counts it once."""
        out: dict[tuple[str, ...], float] = {}
        for rep in svc.core.custody.reports():
            rec = rep.record  # committed states only
            if rec is not None and svc.core.custody.is_leading(rec.capsule_id):
                key = (_COLONYOS_STATE[rec.state], rec.capsule.spec.conditions.executor or "any")
                out[key] = out.get(key, 0) + 1
        return out

    api.metrics.gauge("capsules", "capsules led here by state (waiting, running, succeeded, "
                      "failed, cancelled) and executor kind", counts, "state,executor")

    async def stats(req: Request) -> Reply:
        core = svc.core
        return {
            "members": len(core.view), "view_version": core.view.version,
            "records": len(core.custody.records()), "running": len(core.executor.running),
            "custody": dict(core.custody.stats), "executor": dict(core.executor.stats),
            "origin": dict(core.origin.stats), "attempts": dict(svc.attempts.stats),
            "service": dict(svc.stats), "custody_store_writes": svc.custody_store.writes,
            "executors": list(svc.kinds),
            # Placement across cells (services/cell_forward.py): plans, probes, forwards.
            "cross_cell": svc.cross.stats_json() if svc.cross is not None else {},
        }

    id_q = {"id": STR}
    for method, path, fn, doc in [
        ("GET", "/v1/capsules/stats", stats, RouteDoc(
            "capsule view size and core counters", response=OBJ)),
        ("POST", "/v1/capsules/submit", submit, RouteDoc(
            "sign a capsule spec with this node's key and submit it",
            body=obj(("spec",), spec=OBJ, nonce=INT), response=SUBMITTED)),
        ("GET", "/v1/capsules", ps, RouteDoc(
            "capsules submitted through or held by this node (ps)", response=arr(RECORD))),
        ("GET", "/v1/capsules/get", get, RouteDoc(
            "one capsule's custody record", query=id_q, response=RECORD)),
        ("GET", "/v1/capsules/wait", wait, RouteDoc(
            "follow a capsule's state until it ends; the last line has done",
            query={**id_q, "timeout": STR}, response=obj((), state=STR, done=BOOL),
            stream=True)),
        ("GET", "/v1/capsules/logs", logs, RouteDoc(
            "a capsule's log: {data} chunks, {attempt}, last {done, state}",
            query={**id_q, "follow": {"enum": ["1", "0"]}},
            response=obj((), data=STR, done=BOOL, state=STR), stream=True)),
        ("POST", "/v1/capsules/cancel", cancel, RouteDoc(
            "cancel a capsule (its origin node or submitter only)",
            body=obj(("id",), id=STR, reason=nullable(STR)),
            response=obj(("id", "state"), id=STR, state=STR, reason=nullable(STR)))),
        ("POST", "/v1/workflows/submit", workflow_submit, RouteDoc(
            "sign and submit a workflow: a DAG of capsules by name",
            body=obj(("workflow",), workflow=OBJ, nonce=INT),
            response=obj(("workflow", "ids", "capsules"), workflow=STR, ids=OBJ,
                         capsules=arr(SUBMITTED)))),
    ]:
        api.add(method, path, fn, RouteDoc(doc.summary, doc.query, doc.body, doc.response,
                                           doc.stream, tag="capsules"))


async def _read_cid(blocks: Blocks, text: str) -> bytes:
    """A (small) file by CID: from the local store, fetched from the colony if needed."""
    cid = Cid.parse(text)

    def read() -> bytes:
        return Exporter(blocks.store).read_all(cid)

    try:
        return await trio.to_thread.run_sync(read)
    except ColonyError:
        await blocks.fetch_dag(cid)
        return await trio.to_thread.run_sync(read)
