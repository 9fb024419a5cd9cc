"""Route declarations and the OpenAPI 3.1 document generated from them (DESIGN §9).

Each route module passes a `RouteDoc` to `ApiServer.add` next to its handler: the same
call registers the handler and feeds `/v1/openapi.json`, so the document cannot drift
from the table of routes. A route registered without one still appears, with the
first line of its handler's docstring and an open response schema.

Schemas are plain JSON Schema 2020-12 dicts (what OpenAPI 3.1 uses), built with the
small helpers below. Streams (NDJSON) declare the schema of one item, and every
operation lists the one error shape (`Error`, overlay/runtime/api/server.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

Schema = dict[str, Any]

STR: Schema = {"type": "string"}
INT: Schema = {"type": "integer"}
NUM: Schema = {"type": "number"}
BOOL: Schema = {"type": "boolean"}
ANY: Schema = {}
OBJ: Schema = {"type": "object"}


def nullable(s: Schema) -> Schema:
    return {"anyOf": [s, {"type": "null"}]}


def arr(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def obj(required: tuple[str, ...] = (), /, **props: Schema) -> Schema:
    """An object with these properties; `required` names those always present.
    Extra properties are allowed: a response may grow a field without breaking clients."""
    out: Schema = {"type": "object", "properties": props}
    if required:
        out["required"] = list(required)
    return out


ERROR: Schema = obj(("error",), error=obj(("code", "message"), code=STR, message=STR))


@dataclass(frozen=True)
class RouteDoc:
    """What the OpenAPI document says about one route."""

    summary: str
    query: Mapping[str, Schema] = field(default_factory=dict)
    body: Schema | None = None
    response: Schema = field(default_factory=lambda: dict(ANY))
    #: The response is NDJSON: `response` is the schema of one line.
    stream: bool = False
    tag: str = ""
    #: The response is bytes of this media type (e.g. a file), not JSON.
    media: str = ""


Route = tuple[str, str]


def _summary(fn: Callable[..., object] | None, method: str, path: str) -> str:
    doc = (getattr(fn, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else f"{method} {path}"


def _operation(method: str, path: str, doc: RouteDoc, open_paths: tuple[str, ...]) -> Schema:
    ok: Schema
    if doc.media:
        ok = {"description": "the bytes", "content": {doc.media: {
            "schema": {"type": "string", "description": "the raw bytes"}}}}
    elif doc.stream:
        ok = {"description": "NDJSON stream; each line is one item, the last may be an "
                             "error object", "content": {"application/x-ndjson": {
                                 "schema": doc.response}}}
    elif path == "/metrics":
        ok = {"description": "Prometheus text", "content": {"text/plain": {"schema": STR}}}
    else:
        ok = {"description": "OK", "content": {"application/json": {"schema": doc.response}}}
    err = {"description": "error", "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/Error"}}}}
    op: Schema = {
        "operationId": (method.lower() + path.replace("/", "_").replace(".", "_")),
        "summary": doc.summary,
        "responses": {"200": ok, "4XX": err, "5XX": err},
    }
    if doc.tag:
        op["tags"] = [doc.tag]
    if doc.query:
        op["parameters"] = [{"name": n, "in": "query", "required": False, "schema": s}
                            for n, s in doc.query.items()]
    if doc.body is not None:
        op["requestBody"] = {"required": True,
                             "content": {"application/json": {"schema": doc.body}}}
    if path in open_paths:
        op["security"] = []
    return op


def build_document(
    routes: Mapping[Route, Callable[..., object]], docs: Mapping[Route, RouteDoc],
    open_paths: tuple[str, ...], version: str,
) -> Schema:
    """The OpenAPI 3.1 document of exactly the routes registered, in path order."""
    paths: dict[str, Schema] = {}
    for method, path in sorted(routes, key=lambda r: (r[1], r[0])):
        doc = docs.get((method, path)) or RouteDoc(_summary(routes[(method, path)], method,
                                                            path))
        paths.setdefault(path, {})[method.lower()] = _operation(method, path, doc, open_paths)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Colony control API", "version": version,
                 "description": "The local daemon's API: the CLI and the SDK "
                                "(overlay.client) use it. Errors: one shape, a stable code."},
        "servers": [{"url": "http://127.0.0.1:5101"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": {"Error": ERROR},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "the token in <home>/api.token"}},
        },
    }
