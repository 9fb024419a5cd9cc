"""Control-API routes for triggers, crons and generators (overlay/capsule/trigger_def.py).

| route                     | does                                                    |
|---------------------------|---------------------------------------------------------|
| POST /v1/triggers/add     | check a definition, sign it as a trigger capsule, submit |
| GET  /v1/triggers         | triggers created through or held here, and their firings |
| GET  /v1/triggers/get     | one trigger: record, definition, next ticks of a cron   |
| POST /v1/triggers/rm      | cancel a trigger (its origin node or creator only)      |

A definition is checked completely before anything is signed: the schedule, the
filter, the template's variables, and the template rendered for a sample event (or
the next tick) must give a valid capsule spec, so a trigger that could never fire is
refused with the reason instead of failing later on some other node.
"""

from __future__ import annotations

import json
import time

from gossip.messages import UserEvent
from overlay.capsule.spec import Capsule, CapsuleSpec, SpecError
from overlay.capsule.trigger_def import TRIGGER_FUNCTION, Origin, TriggerDef, TriggerError
from overlay.capsule.trigger_spec import trigger_spec
from overlay.core.certs import chain_to_wire
from overlay.core.crypto import KeyPair
from overlay.core.errors import ColonyError
from overlay.core.wire import cbor_encode
from overlay.runtime.api.openapi import INT, NUM, OBJ, STR, RouteDoc, arr, nullable, obj
from overlay.runtime.api.server import ApiError, ApiServer, Reply, Request
from overlay.runtime.jsontypes import JsonObject
from overlay.runtime.services.capsule_info import record_json, reported_state
from overlay.runtime.services.capsules import CapsuleService
from overlay.runtime.services.trigger_runs import TriggerRuns

DEFINITION_KEYS = ("on", "schedule", "filter", "catchup", "count", "within_s")
TRIGGER_ROW = obj(("id", "name", "state", "on"), id=STR, name=STR, state=STR, on=STR,
                  schedule=nullable(STR), filter=nullable(STR), template=OBJ,
                  fired_here=INT, next=arr(INT))


def build_trigger(keypair: KeyPair, body: JsonObject, chain_hex: str, now: float) -> Capsule:
    """The signed trigger capsule for an API body; ApiError(400) naming what is wrong."""
    kw: dict[str, str | int | float] = {}
    for key in DEFINITION_KEYS:
        v = body.get(key)
        if v is not None:
            if not isinstance(v, str | int | float) or isinstance(v, bool):
                raise ApiError(400, f"{key} must be a string or a number")
            kw[key] = v
    template = body.get("template")
    if not isinstance(template, dict):
        raise ApiError(400, "template must be a capsule spec (a JSON object)")
    kw["template"] = json.dumps(template, sort_keys=True, separators=(",", ":"))
    if chain_hex:
        kw["chain"] = chain_hex
    try:
        spec, tdef = trigger_spec(str(body.get("name") or ""), kw)
    except (TriggerError, SpecError) as e:
        raise ApiError(400, f"bad trigger: {e}") from None
    cap = Capsule.sign(keypair, spec, now)
    _check_renders(cap, tdef, now)
    return cap


def _check_renders(cap: Capsule, tdef: TriggerDef, now: float) -> None:
    """Render the template for a sample origin: a bad spec is refused now, not later."""
    if tdef.schedule is not None:
        tick = tdef.schedule.next_after(now, cap.submitted_at)
        if tick is None:
            raise ApiError(400, f"bad trigger: schedule {tdef.schedule.text!r} never fires")
        origin = Origin(tick=tick)
    else:
        sample = UserEvent.create(KeyPair.generate(), tdef.event_name or "sample", b"", 0, 0)
        origin = Origin(events=(sample,))
    try:  # a workflow template: every capsule of it, and its order (no cycle)
        for member in tdef.members(cap.id, cap.spec.name, origin):
            CapsuleSpec.from_dict(tdef.render(cap.id, cap.spec.name, origin, member))
    except (SpecError, KeyError, TriggerError) as e:
        raise ApiError(400, f"bad trigger: its template gives a bad spec: {e}") from None


def trigger_row(cap: Capsule, state: str, fired_here: int, now: float) -> JsonObject:
    tdef = cap.trigger_def
    assert tdef is not None
    kw = dict(cap.spec.kwargs)
    on = f"{tdef.on}:{tdef.event_name}" if tdef.event_name else tdef.on
    nxt: list[int] = []
    if tdef.schedule is not None:
        t = now
        for _ in range(3):
            tick = tdef.schedule.next_after(t, cap.submitted_at)
            if tick is None:
                break
            nxt.append(tick)
            t = tick
    return {"id": cap.id, "name": cap.spec.name, "state": state, "on": on,
            "schedule": tdef.schedule.text if tdef.schedule else None,
            "filter": tdef.filter.text or None, "catchup": tdef.catchup,
            "count": tdef.count, "within_s": tdef.within_s,
            "template": json.loads(str(kw["template"])), "created": cap.submitted_at,
            "fired_here": fired_here, "next": nxt}  # fmt: skip


def add_trigger_routes(api: ApiServer, svc: CapsuleService, keypair: KeyPair,
                       runs: TriggerRuns) -> None:
    me = keypair.peer_id

    def chain_hex() -> str:
        chain = svc.authority.chain
        return cbor_encode(chain_to_wire(chain)).hex() if chain else ""

    async def add(req: Request) -> Reply:
        cap = build_trigger(keypair, req.json(), chain_hex(), time.time())
        k = await svc.submit(cap)
        if k.state == "rejected":
            raise ApiError(422, f"trigger {cap.id} rejected: {k.reason}")
        return trigger_row(cap, k.state, 0, time.time())

    def fired(cid: str) -> int:
        return runs.fired_by.get(cid, 0)

    async def ls(req: Request) -> Reply:
        rows: dict[str, JsonObject] = {}
        for rep in svc.core.custody.reports():
            rec = rep.newest
            if rec.capsule.spec.function == TRIGGER_FUNCTION:
                rows[rec.capsule_id] = trigger_row(rec.capsule, reported_state(rep),
                                                   fired(rec.capsule_id), time.time())
        for cid, k in svc.known.items():
            if cid not in rows and k.capsule.spec.function == TRIGGER_FUNCTION:
                found = await svc.find_record(cid)
                state = found.state.value if found else k.state
                rows[cid] = trigger_row(k.capsule, state, fired(cid), time.time())
        return sorted(rows.values(), key=lambda r: float(str(r["created"])))

    async def get(req: Request) -> Reply:
        cid = str(req.arg("id") or "")
        rec = await svc.find_record(cid) if cid else None
        if rec is None or rec.capsule.spec.function != TRIGGER_FUNCTION:
            raise ApiError(404, f"no trigger {cid!r} known to this node's colony")
        row = trigger_row(rec.capsule, rec.state.value, fired(cid), time.time())
        row["record"] = record_json(rec)
        return row

    async def rm(req: Request) -> Reply:
        body = req.json()
        cid = str(body.get("id") or "")
        rec = await svc.find_record(cid) if cid else None
        if rec is None or rec.capsule.spec.function != TRIGGER_FUNCTION:
            raise ApiError(404, f"no trigger {cid!r} known to this node's colony")
        if me not in (rec.origin, rec.capsule.submitter):
            raise ApiError(403, f"trigger {cid} was created through {rec.origin.short()}; "
                           "only that node or its creator may remove it")  # fmt: skip
        try:
            await svc.cancel(cid, "trigger removed")
        except ColonyError as e:
            raise ApiError(503, str(e)) from None
        return {"id": cid, "state": "cancelling"}

    add_body = obj(("on", "template"), name=STR, on=STR, schedule=STR, filter=STR,
                   template=OBJ, catchup=STR, count=INT, within_s=NUM)
    for method, path, fn, doc in [
        ("POST", "/v1/triggers/add", add, RouteDoc(
            "check, sign and submit a trigger, cron or generator", body=add_body,
            response=TRIGGER_ROW)),
        ("GET", "/v1/triggers", ls, RouteDoc(
            "triggers created through or held by this node", response=arr(TRIGGER_ROW))),
        ("GET", "/v1/triggers/get", get, RouteDoc(
            "one trigger: definition, custody record, next ticks", query={"id": STR},
            response=TRIGGER_ROW)),
        ("POST", "/v1/triggers/rm", rm, RouteDoc(
            "remove a trigger (its origin node or creator only)", body=obj(("id",), id=STR),
            response=obj(("id", "state"), id=STR, state=STR))),
    ]:
        api.add(method, path, fn, RouteDoc(doc.summary, doc.query, doc.body, doc.response,
                                           doc.stream, tag="triggers"))
