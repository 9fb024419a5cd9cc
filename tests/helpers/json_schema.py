"""A small JSON Schema (2020-12 subset) validator and an OpenAPI 3.1 structural check.

jsonschema and openapi-spec-validator are not installed here, so the tests check the
subset the daemon's document uses (overlay/runtime/api/openapi.py): type, properties,
required, items, anyOf, enum, $ref into components. `check_schema` rejects any other
keyword, so the document cannot quietly use one this validator ignores.
"""

from __future__ import annotations

from typing import Any

KEYWORDS = {"type", "properties", "required", "items", "anyOf", "enum", "$ref",
            "description"}
TYPES = {"string", "integer", "number", "boolean", "object", "array", "null"}
METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def _type_ok(t: str, v: Any) -> bool:
    return {
        "string": isinstance(v, str),
        "integer": isinstance(v, int) and not isinstance(v, bool),
        "number": isinstance(v, (int, float)) and not isinstance(v, bool),
        "boolean": isinstance(v, bool),
        "object": isinstance(v, dict),
        "array": isinstance(v, list),
        "null": v is None,
    }[t]


def errors(schema: dict[str, Any], value: Any, doc: dict[str, Any], at: str = "$") -> list[str]:
    """Why `value` does not match `schema` (empty when it does)."""
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/components/schemas/")
        return errors(doc["components"]["schemas"][name], value, doc, at)
    if "anyOf" in schema:
        if any(not errors(s, value, doc, at) for s in schema["anyOf"]):
            return []
        return [f"{at}: {value!r:.80} matches none of anyOf"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{at}: {value!r:.80} not in {schema['enum']}"]
    t = schema.get("type")
    if t is not None and not _type_ok(t, value):
        return [f"{at}: {value!r:.80} is not {t}"]
    out: list[str] = []
    if isinstance(value, dict):
        out += [f"{at}: missing {k!r}" for k in schema.get("required", []) if k not in value]
        for k, s in schema.get("properties", {}).items():
            if k in value:
                out += errors(s, value[k], doc, f"{at}.{k}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            out += errors(schema["items"], item, doc, f"{at}[{i}]")
    return out


def check_schema(schema: Any, doc: dict[str, Any], at: str) -> list[str]:
    """Structural problems of one schema of the document."""
    if not isinstance(schema, dict):
        return [f"{at}: schema is not an object"]
    out = [f"{at}: unknown keyword {k}" for k in schema if k not in KEYWORDS]
    if "type" in schema and schema["type"] not in TYPES:
        out.append(f"{at}: bad type {schema['type']!r}")
    if "$ref" in schema:
        name = str(schema["$ref"]).removeprefix("#/components/schemas/")
        if name not in doc.get("components", {}).get("schemas", {}):
            out.append(f"{at}: dangling $ref {schema['$ref']}")
    for k, s in schema.get("properties", {}).items():
        out += check_schema(s, doc, f"{at}.properties.{k}")
    if "items" in schema:
        out += check_schema(schema["items"], doc, f"{at}.items")
    for i, s in enumerate(schema.get("anyOf", [])):
        out += check_schema(s, doc, f"{at}.anyOf[{i}]")
    if "required" in schema and not set(schema["required"]) <= set(schema.get("properties",
                                                                                {})):
        out.append(f"{at}: required names a property it does not declare")
    return out


def check_openapi(doc: dict[str, Any]) -> list[str]:
    """Structural problems of an OpenAPI 3.1 document (the rules the 3.1 schema states
    for the parts this API uses: version, info, paths, operations, responses, refs)."""
    out: list[str] = []
    if not str(doc.get("openapi", "")).startswith("3.1."):
        out.append("openapi is not 3.1.x")
    info = doc.get("info", {})
    if not (isinstance(info.get("title"), str) and isinstance(info.get("version"), str)):
        out.append("info needs title and version strings")
    op_ids: set[str] = set()
    for path, item in doc.get("paths", {}).items():
        if not path.startswith("/"):
            out.append(f"path {path!r} does not start with /")
        for method, op in item.items():
            where = f"{method.upper()} {path}"
            if method not in METHODS:
                out.append(f"{where}: not an HTTP method")
                continue
            oid = op.get("operationId")
            if oid in op_ids:
                out.append(f"{where}: duplicate operationId {oid}")
            op_ids.add(oid)
            if not op.get("responses"):
                out.append(f"{where}: no responses")
            for code, resp in op.get("responses", {}).items():
                if not (code.isdigit() or code in ("4XX", "5XX", "default")):
                    out.append(f"{where}: bad response key {code}")
                if "description" not in resp:
                    out.append(f"{where} {code}: response needs a description")
                for ctype, media in resp.get("content", {}).items():
                    out += check_schema(media.get("schema"), doc, f"{where} {code} {ctype}")
            for p in op.get("parameters", []):
                if p.get("in") not in ("query", "header", "path", "cookie") or "name" not in p:
                    out.append(f"{where}: bad parameter {p}")
            body = op.get("requestBody")
            if body is not None:
                for ctype, media in body.get("content", {}).items():
                    out += check_schema(media.get("schema"), doc, f"{where} body {ctype}")
    for name, s in doc.get("components", {}).get("schemas", {}).items():
        out += check_schema(s, doc, f"components.schemas.{name}")
    return out
