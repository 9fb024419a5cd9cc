"""Reading a gateway request: the content path, the response format, byte ranges,
`entity-bytes` and `If-None-Match` (pure functions, no I/O).

Spec: ipfs/specs PATH_GATEWAY.md (`format`, `Accept`, `Range`, `If-None-Match`) and
TRUSTLESS_GATEWAY.md (`dag-scope`, `entity-bytes`, CAR `version`/`order`/`dups`
content type parameters and their `car-*` query twins, which take precedence).
RFC 9110 §12.5.1 (Accept, q-values), §14 (Range), §13.1.2 (If-None-Match, weak
comparison).

Invariants: every refusal is an `HttpError` carrying its status (400 malformed, 406
a format we do not produce, 416 a range outside the content) and a sentence saying
why; a URL path is checked by store/paths.parse_path twice, before percent-decoding
(so encoded separators and dots are refused) and after (so decoded names obey the
same rules); numbers are bounded in length before they are converted.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, unquote

from overlay.core.errors import ColonyError
from store.paths import ContentPath, PathError, parse_path

RAW_TYPE = "application/vnd.ipld.raw"
CAR_TYPE = "application/vnd.ipld.car"
#: Formats of PATH_GATEWAY.md this gateway does not produce: 406, not 400.
UNSUPPORTED_FORMATS = {
    "tar": "application/x-tar", "dag-json": "application/vnd.ipld.dag-json",
    "dag-cbor": "application/vnd.ipld.dag-cbor", "cbor": "application/cbor",
    "ipns-record": "application/vnd.ipfs.ipns-record",
}
_UNSUPPORTED_TYPES = set(UNSUPPORTED_FORMATS.values())
SCOPES = ("block", "entity", "all")
#: Longest decimal number accepted in a range (more than any file).
_MAX_DIGITS = 19


class HttpError(ColonyError):
    """A request the gateway refuses, with its HTTP status."""

    def __init__(self, status: int, message: str, headers: tuple[tuple[str, str], ...] = ()):
        super().__init__(message)
        self.status = status
        self.headers = headers


@dataclass(frozen=True, slots=True)
class CarParams:
    scope: str = "all"
    #: `entity-bytes` as given: (from, to); to None means `*`; negatives count from the end.
    entity_bytes: tuple[int, int | None] | None = None
    dups: bool = False

    def tag(self) -> str:
        eb = "" if self.entity_bytes is None else f"{self.entity_bytes[0]}:{self.entity_bytes[1]}"
        return f"{self.scope}|{eb}|{'y' if self.dups else 'n'}"


@dataclass(frozen=True, slots=True)
class Format:
    kind: str  # "raw" | "car" | "plain"
    car: CarParams = CarParams()
    #: The format came from `Accept` only (responses then name it in Content-Location).
    from_accept: bool = False


def content_path(url_path: str) -> ContentPath:
    """The content path of `/ipfs/CID[/a/b]` (still percent-encoded), checked."""
    try:
        parse_path(url_path)  # refuses %2F, %2e%2e, %5C, %00, '.', '..', '//' as typed
        raw = url_path[len("/ipfs/"):].rstrip("/").split("/")
        decoded = [unquote(s, errors="strict") for s in raw[1:]]
        return parse_path("/".join([raw[0], *decoded]))
    except UnicodeDecodeError:
        raise HttpError(400, f"path {url_path!r} is not UTF-8 once percent-decoded") from None
    except PathError as e:
        raise HttpError(400, str(e)) from None


def query(qs: str) -> dict[str, str]:
    """The query's parameters, each once (a repeated one is refused)."""
    try:
        parsed = parse_qs(qs, keep_blank_values=True, strict_parsing=False,
                          errors="strict", max_num_fields=32)
    except (UnicodeDecodeError, ValueError) as e:
        raise HttpError(400, f"malformed query string: {e}") from None
    out = {}
    for k, v in parsed.items():
        if len(v) > 1:
            raise HttpError(400, f"query parameter {k!r} given {len(v)} times")
        out[k] = v[0]
    return out


def _media(item: str) -> tuple[str, dict[str, str], float]:
    parts = [p.strip() for p in item.split(";")]
    params: dict[str, str] = {}
    q = 1.0
    for p in parts[1:]:
        k, _, v = p.partition("=")
        k, v = k.strip().lower(), v.strip().strip('"')
        if k == "q":
            try:
                q = float(v)
            except ValueError:
                q = 0.0
        elif k:
            params[k] = v
    return parts[0].lower(), params, q


def _car_variant(params: dict[str, str], q: dict[str, str]) -> CarParams | str:
    """The CAR we would send for these content type parameters and query, or why not."""
    version = q.get("car-version", params.get("version", "1"))
    order = q.get("car-order", params.get("order", "dfs"))
    dups = q.get("car-dups", params.get("dups", "n"))
    if version != "1":
        return f"CAR version {version!r}: only version=1 is produced"
    if order not in ("dfs", "unk"):
        return f"CAR order {order!r}: only order=dfs (or unk) is produced"
    if dups not in ("y", "n"):
        return f"CAR dups {dups!r}: must be y or n"
    scope = q.get("dag-scope", "all")
    if scope not in SCOPES:
        raise HttpError(400, f"dag-scope={scope!r}: must be one of {', '.join(SCOPES)}")
    eb = None
    if "entity-bytes" in q:
        eb = entity_bytes(q["entity-bytes"])
        scope = "entity"
    return CarParams(scope, eb, dups == "y")


def negotiate(q: dict[str, str], accept: str | None) -> Format:
    """`format` first, then `Accept` by q-value; no `Accept`: the deserialised file."""
    fmt = q.get("format")
    items = [_media(i) for i in accept.split(",") if i.strip()] if accept else []
    car_params = next((p for t, p, _ in items if t == CAR_TYPE), {})
    if fmt is not None:
        if fmt == "raw":
            return Format("raw")
        if fmt == "car":
            car = _car_variant(car_params, q)
            if isinstance(car, str):
                raise HttpError(406, car)
            return Format("car", car)
        if fmt in UNSUPPORTED_FORMATS:
            raise HttpError(406, f"format={fmt} is not produced by this gateway; "
                                 "it serves raw blocks, CAR streams and UnixFS files")
        raise HttpError(400, f"unknown format={fmt!r}; known here: raw, car")
    if not items:
        return Format("plain")
    reasons = []
    for mtype, params, qv in sorted(items, key=lambda it: -it[2]):
        if qv <= 0:
            continue
        if mtype == RAW_TYPE:
            return Format("raw", from_accept=True)
        if mtype == CAR_TYPE:
            car = _car_variant(params, q)
            if isinstance(car, str):
                reasons.append(car)
                continue
            return Format("car", car, from_accept=True)
        if mtype in _UNSUPPORTED_TYPES:
            reasons.append(f"{mtype} is not produced by this gateway")
            continue
        return Format("plain")
    raise HttpError(406, "no acceptable response: " + ("; ".join(reasons) or
                    "every type has q=0") + f" (produced: {RAW_TYPE}, {CAR_TYPE}, files)")


def _num(text: str, what: str) -> int:
    t = text.strip()
    body = t[1:] if t.startswith("-") else t
    if not body.isdigit() or not body.isascii() or len(body) > _MAX_DIGITS:
        raise HttpError(400, f"{what}: {text!r} is not an integer")
    return int(t)


def entity_bytes(text: str) -> tuple[int, int | None]:
    """`from:to` of `entity-bytes` (`to` may be `*`; either may be negative)."""
    lo, sep, hi = text.partition(":")
    if not sep:
        raise HttpError(400, f"entity-bytes={text!r}: expected from:to (e.g. 0:1023 or 0:*)")
    return _num(lo, "entity-bytes from"), None if hi.strip() == "*" else _num(
        hi, "entity-bytes to")


def resolve_entity_bytes(eb: tuple[int, int | None], size: int) -> tuple[int, int]:
    """[start, end) of the file `entity-bytes` names; 400 when wholly outside it."""
    lo, hi = eb
    start = lo if lo >= 0 else max(size + lo, 0)
    end = size if hi is None else (hi + 1 if hi >= 0 else size + hi + 1)
    end = min(end, size)
    if lo >= 0 and start >= size and size > 0:
        raise HttpError(400, f"entity-bytes={lo}:{'*' if hi is None else hi} starts past "
                             f"the end of the {size}-byte file")
    return start, max(end, start)


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """[start, end) of a single `Range: bytes=…` (RFC 9110 §14.1.2); None: send it all.

    A multi-range or a unit other than bytes is ignored (the whole content is sent, as
    RFC 9110 allows); a malformed or unsatisfiable one is a 416 naming the size."""
    if header is None:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes":
        return None
    if "," in spec:
        return None
    unsat = (("content-range", f"bytes */{size}"),)
    first, dash, last = spec.strip().partition("-")
    try:
        if not dash:
            raise HttpError(416, "")
        if first == "":  # suffix: the last N bytes
            n = _num(last, "range")
            if n <= 0 or size == 0:
                raise HttpError(416, f"range {header!r} asks for no bytes")
            return max(size - n, 0), size
        start = _num(first, "range")
        end = size - 1 if last == "" else _num(last, "range")
        if start < 0 or end < start:
            raise HttpError(416, f"range {header!r}: the last byte is before the first")
        if start >= size:
            raise HttpError(416, f"range {header!r} starts past the end of the {size}-byte "
                                 "content")
        return start, min(end, size - 1) + 1
    except HttpError as e:
        raise HttpError(416, str(e) or f"malformed range {header!r}; expected "
                        "bytes=FIRST-LAST, bytes=FIRST- or bytes=-SUFFIX", unsat) from None


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """`If-None-Match` matches `etag` by weak comparison (RFC 9110 §13.1.2)."""
    if not if_none_match:
        return False
    mine = etag.removeprefix("W/")
    for tag in if_none_match.split(","):
        t = tag.strip()
        if t == "*" or t.removeprefix("W/") == mine:
            return True
    return False


__all__ = ["CAR_TYPE", "RAW_TYPE", "CarParams", "Format", "HttpError", "byte_range",
           "content_path", "entity_bytes", "etag_matches", "negotiate", "query",
           "resolve_entity_bytes"]
