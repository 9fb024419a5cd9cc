"""Control-API routes for sync labels (overlay/runtime/services/sync.py, docs/sync.md).

| route                | body / query                          | does                      |
|----------------------|---------------------------------------|---------------------------|
| POST /v1/sync/pull   | {label, dir}                          | write its version at dir  |
| POST /v1/sync/push   | {label, dir, base?, conflict?}        | import dir, move the label |
| GET  /v1/sync/status | ?label=&dir=                          | record, dir's base        |

Paths are on the daemon's host, as for `/v1/publish`.
"""

from __future__ import annotations

from pathlib import Path

from dht.labels import check_label
from overlay.core.errors import ColonyError, WireError
from overlay.runtime.api.openapi import INT, STR, RouteDoc, nullable, obj
from overlay.runtime.api.server import ApiError, ApiServer, Reply, Request
from overlay.runtime.jsontypes import JsonObject
from overlay.runtime.services.sync import CONFLICT_RULES, SyncConflict, SyncService

LABEL_ROW = obj(("label", "cid", "seq"), label=STR, cid=nullable(STR), seq=nullable(INT),
                writer=nullable(STR), prev=nullable(STR), expires=nullable({"type": "number"}),
                base=nullable(STR), state=STR)


def _path(body: JsonObject, key: str = "dir") -> Path:
    text = body.get(key)
    if not isinstance(text, str) or not text:
        raise ApiError(400, f"{key} must be a path on the daemon's host")
    return Path(text).expanduser()


def _label(v: object) -> str:
    """A well-formed label name, else 400 (a bad name is the caller's input, not a
    failure of the DHT behind the route, which answered 502 before)."""
    if not isinstance(v, str) or not v:
        raise ApiError(400, "label is required")
    try:
        return check_label(v)
    except WireError as e:
        raise ApiError(400, str(e)) from None


def add_sync_routes(api: ApiServer, sync: SyncService) -> None:
    async def pull(req: Request) -> Reply:
        body = req.json()
        label, dest = _label(body.get("label")), _path(body)
        if dest.exists():
            raise ApiError(409, f"{dest} exists; pull writes a new directory")
        try:
            rec = await sync.pull(label, dest)
        except ColonyError as e:
            raise ApiError(404 if "names nothing" in str(e) else 502, str(e)) from None
        return {"label": label, "cid": rec.value, "seq": rec.seq, "dir": str(dest),
                "writer": str(rec.writer)}

    async def push(req: Request) -> Reply:
        body = req.json()
        label, src = _label(body.get("label")), _path(body)
        conflict = str(body.get("conflict") or "keep-newest")
        if conflict not in CONFLICT_RULES:
            raise ApiError(400, f"conflict must be one of {', '.join(CONFLICT_RULES)}")
        base = body.get("base")
        if base is not None and not isinstance(base, str):
            raise ApiError(400, "base must be a CID")
        if not src.is_dir():
            raise ApiError(400, f"{src} is not a directory")
        try:
            p = await sync.push(label, src, base, conflict)
        except SyncConflict as e:
            raise ApiError(409, str(e)) from None
        except ColonyError as e:
            raise ApiError(502, str(e)) from None
        return {"label": label, "cid": p.cid, "seq": p.seq, "pushed": p.pushed,
                "replaced": p.replaced, "conflict": p.conflict or None}

    async def status(req: Request) -> Reply:
        label = _label(req.arg("label"))
        d = req.arg("dir")
        base = sync.base_of(label, Path(d).expanduser()) if d else None
        try:
            rec = await sync.resolve(label)
        except ColonyError as e:
            raise ApiError(502, str(e)) from None
        if rec is None:
            return {"label": label, "cid": None, "seq": None, "base": base, "state": "unset"}
        state = "unknown" if base is None else ("up to date" if base == rec.value else
                                                 "behind" if base else "not pulled here")
        return {"label": label, "cid": rec.value, "seq": rec.seq, "writer": str(rec.writer),
                "prev": rec.prev or None, "expires": rec.expires, "base": base, "state": state}

    for method, path, fn, doc in [
        ("POST", "/v1/sync/pull", pull, RouteDoc(
            "write a label's current version at a new directory",
            body=obj(("label", "dir"), label=STR, dir=STR),
            response=obj(("label", "cid", "seq"), label=STR, cid=STR, seq=INT, dir=STR))),
        ("POST", "/v1/sync/push", push, RouteDoc(
            "import a directory and move the label to it (conflict: keep-newest, fail, both)",
            body=obj(("label", "dir"), label=STR, dir=STR, base=STR, conflict=STR),
            response=obj(("label", "cid", "seq"), label=STR, cid=STR, seq=INT, pushed=STR,
                         replaced=STR, conflict=nullable(STR)))),
        ("GET", "/v1/sync/status", status, RouteDoc(
            "a label's current record and a directory's base", query={"label": STR, "dir": STR},
            response=LABEL_ROW)),
    ]:
        api.add(method, path, fn, RouteDoc(doc.summary, doc.query, doc.body, doc.response,
                                           doc.stream, tag="sync"))
