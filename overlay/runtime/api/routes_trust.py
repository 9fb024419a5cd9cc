"""Control-API routes for colony trust (docs/trust.md): status, revoke, lookup, private.

Thin: each route reads its JSON body, calls the trust service and turns a refusal
(ColonyError, a LocalProtocolError from the gossip core, bad hex) into a 400.
"""

from __future__ import annotations

from overlay.core.errors import ColonyError, LocalProtocolError
from overlay.runtime.api.openapi import BOOL, OBJ, STR, RouteDoc, obj
from overlay.runtime.api.server import ApiError, ApiServer, Reply, Request
from overlay.runtime.services.trust import TrustService


def add_trust_routes(api: ApiServer, svc: TrustService) -> None:
    async def status(req: Request) -> Reply:
        return svc.status()

    async def private(req: Request) -> Reply:
        body = req.json()
        try:
            return svc.set_private(str(body.get("cid", "")), bool(body.get("private", True)))
        except ColonyError as e:
            raise ApiError(400, str(e)) from None

    async def revoke(req: Request) -> Reply:
        try:
            return await svc.revoke(str(req.json().get("revocation", "")))
        except (ColonyError, LocalProtocolError) as e:
            raise ApiError(400, str(e)) from None

    async def lookup(req: Request) -> Reply:
        try:
            return await svc.lookup(str(req.json().get("cert", "")))
        except ValueError:
            raise ApiError(400, "cert must be a certificate serial (hex)") from None

    api.add("GET", "/v1/trust", status, RouteDoc(
        "colony trust state: owner, certificate, revocations", tag="trust", response=OBJ))
    api.add("POST", "/v1/trust/revoke", revoke, RouteDoc(
        "publish a signed revocation", tag="trust", body=obj(("revocation",), revocation=STR),
        response=OBJ))
    api.add("POST", "/v1/trust/lookup", lookup, RouteDoc(
        "is this certificate serial revoked?", tag="trust", body=obj(("cert",), cert=STR),
        response=OBJ))
    api.add("POST", "/v1/trust/private", private, RouteDoc(
        "mark a CID private to the colony (or public again)", tag="trust",
        body=obj(("cid",), cid=STR, private=BOOL), response=OBJ))
