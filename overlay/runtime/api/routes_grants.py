"""Control-API routes for federation (docs/federation.md): grants and cross-colony capsules.

| method, path                 | body / query          | result                              |
|------------------------------|-----------------------|-------------------------------------|
| GET  /v1/grants              |                       | grants given (with usage) and held  |
| POST /v1/grants/publish      | {grant: hex}          | kept here, put in the DHT           |
| POST /v1/federation/submit   | {colony, spec, nonce?}| a capsule run in that colony        |
| GET  /v1/federation/capsule  | ?colony=&id=          | its custody record there            |
| POST /v1/federation/label    | {colony, label}       | a granted label's current root      |

Thin: each route reads its input, calls the federation service and turns a refusal
(ColonyError, a peer's RemoteError) into a 400 (422 for a refused capsule).
"""

from __future__ import annotations

import secrets

from overlay.capsule.spec import CapsuleSpec, SpecError
from overlay.core.errors import ColonyError, ConfigError
from overlay.runtime.api.openapi import OBJ, STR, RouteDoc, obj
from overlay.runtime.api.server import ApiError, ApiServer, Reply, Request
from overlay.runtime.services.capsule_info import record_json
from overlay.runtime.services.federation import FederationService
from overlay.runtime.services.federation_grantee import Grantee


def add_grant_routes(api: ApiServer, svc: FederationService, grantee: Grantee) -> None:
    async def grants(req: Request) -> Reply:
        return await svc.status()

    async def publish(req: Request) -> Reply:
        try:
            return await svc.publish(str(req.json().get("grant", "")))
        except ColonyError as e:
            raise ApiError(400, str(e)) from None

    async def submit(req: Request) -> Reply:
        body = req.json()
        try:
            spec = CapsuleSpec.from_dict(body.get("spec"))
        except SpecError as e:
            raise ApiError(400, f"bad capsule spec: {e}") from None
        nonce = body.get("nonce")
        if not isinstance(nonce, int) or isinstance(nonce, bool) or not 0 <= nonce < 1 << 63:
            nonce = secrets.randbits(62)
        try:
            return await grantee.submit_to(str(body.get("colony", "")), spec, nonce)
        except ConfigError as e:
            raise ApiError(422, str(e)) from None
        except ColonyError as e:
            raise ApiError(400, str(e)) from None

    async def capsule(req: Request) -> Reply:
        colony, cid = req.arg("colony") or "", req.arg("id") or ""
        try:
            rec = await grantee.record_in(colony, cid)
        except ColonyError as e:
            raise ApiError(400, str(e)) from None
        if rec is None:
            raise ApiError(404, f"capsule {cid} is unknown to colony {colony}")
        return record_json(rec)

    async def label(req: Request) -> Reply:
        body = req.json()
        try:
            return await grantee.read_label(str(body.get("colony", "")), str(body.get("label", "")))
        except ColonyError as e:
            raise ApiError(400, str(e)) from None

    api.add("POST", "/v1/federation/label", label, RouteDoc(
        "resolve a label of another colony that a held grant covers", tag="trust",
        body=obj(("colony", "label"), colony=STR, label=STR), response=OBJ))
    api.add("GET", "/v1/grants", grants, RouteDoc(
        "grants given (with today's usage) and held", tag="trust", response=OBJ))
    api.add("POST", "/v1/grants/publish", publish, RouteDoc(
        "keep a grant of this colony and put it in the DHT", tag="trust",
        body=obj(("grant",), grant=STR), response=OBJ))
    api.add("POST", "/v1/federation/submit", submit, RouteDoc(
        "run a capsule in another colony through a held grant", tag="capsules",
        body=obj(("colony", "spec"), colony=STR, spec=OBJ), response=OBJ))
    api.add("GET", "/v1/federation/capsule", capsule, RouteDoc(
        "a capsule's custody record in another colony", tag="capsules",
        query={"colony": STR, "id": STR}, response=OBJ))
