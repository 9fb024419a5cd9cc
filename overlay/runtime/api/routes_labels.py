"""Control-API routes for this node's labels (overlay/runtime/services/node_labels.py).

| route | reply |
|---|---|
| GET /v1/labels  | {labels: {key: value}} |
| POST /v1/labels | body {set: {key: value}, delete: [key]}; {labels}: the new set, in the ad |

Thin: a refused change (bad key, too many, a value too long) is a 400 naming the rule.
"""

from __future__ import annotations

from overlay.core.errors import ConfigError
from overlay.runtime.api.openapi import OBJ, STR, RouteDoc, arr, obj
from overlay.runtime.api.server import ApiError, ApiServer, Reply, Request
from overlay.runtime.services.node_labels import NodeLabels

LABELS = obj(("labels",), labels=OBJ)


def add_label_routes(api: ApiServer, svc: NodeLabels) -> None:
    async def show(req: Request) -> Reply:
        return {"labels": dict(svc.labels)}

    async def change(req: Request) -> Reply:
        body = req.json()
        set_, delete = body.get("set") or {}, body.get("delete") or []
        if not isinstance(set_, dict) or not isinstance(delete, list):
            raise ApiError(400, "body: {\"set\": {key: value}, \"delete\": [key]}")
        try:
            return {"labels": dict(svc.apply(set_, delete))}
        except ConfigError as e:
            raise ApiError(400, str(e)) from None
        except OSError as e:  # labels.json could not be written: nothing was changed
            raise ApiError(500, f"labels not saved ({e}); nothing changed") from None

    api.add("GET", "/v1/labels", show, RouteDoc(
        "this node's labels (what capsules' conditions.labels match)", tag="node",
        response=LABELS))
    api.add("POST", "/v1/labels", change, RouteDoc(
        "set and delete labels on the running node: saved to labels.json, re-announced "
        "in the gossiped ad, used by the executor at once", tag="node",
        body=obj((), set=OBJ, delete=arr(STR)), response=LABELS))
