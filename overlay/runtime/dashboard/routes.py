"""The web dashboard on the control API's port: static pages, login, a few reads.

| method, path                | auth          | what                                       |
|-----------------------------|---------------|--------------------------------------------|
| GET  /dashboard/…           | none          | the pages (static/, loaded at start)       |
| POST /dashboard/login       | the API token | {token} → session cookie, {expires_in_s}   |
| POST /dashboard/logout      | none          | drops the session, clears the cookie       |
| GET  /v1/dashboard/pins     | token/cookie  | [{cid, type, names}] pins of this node     |
| GET  /v1/dashboard/ls       | token/cookie  | ?path=CID[/a/b]: directory entries or file head |
| GET  /v1/dashboard/sim      | token/cookie  | ?dir=: a sim run folder's metrics, plot names |
| GET  /v1/dashboard/sim/file | token/cookie  | ?dir=&name=: one plot (PNG) or table (CSV) of it |

Every other route of the API accepts the session cookie as well as the bearer
token (`ApiServer.session_auth`), with the CSRF rule of sessions.py for calls that
change state. The pages are plain ES modules, HTML and CSS shipped in the wheel
(package data): no CDN, no build step, no third-party code. A strict
Content-Security-Policy (`'self'` only, no inline script or style) goes with every page.
"""

from __future__ import annotations

import contextlib
import hmac
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from overlay.core.errors import ColonyError
from overlay.runtime.api.openapi import ANY, BOOL, INT, OBJ, STR, RouteDoc, arr, nullable, obj
from overlay.runtime.api.server import ApiError, ApiServer, Request, Response
from overlay.runtime.dashboard import sessions as ss
from overlay.runtime.dashboard import simruns
from store.exporter import Exporter
from store.paths import parse_path, resolve
from store.pins import Pins

if TYPE_CHECKING:
    from overlay.core.cid import Cid
    from store.blockstore import BlockStore

STATIC = Path(__file__).parent / "static"
PREFIX = "/dashboard/"
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".txt": "text/plain"}
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
PAGE_HEADERS = [("content-security-policy", CSP), ("x-frame-options", "DENY"),
                ("x-content-type-options", "nosniff"), ("referrer-policy", "no-referrer"),
                ("cache-control", "no-cache")]
#: A file shown in the DAG browser: at most this many bytes of its head.
PREVIEW_BYTES = 16 * 1024
#: A directory shows at most this many entries (each costs a block read).
MAX_ENTRIES = 1000
ENTRY = obj(("name", "cid", "type", "size"), name=STR, cid=STR, type=STR, size=INT)


def load_static(root: Path = STATIC) -> dict[str, tuple[bytes, str]]:
    """Every page file by URL path, read once: the pages cannot change under a
    running daemon, and serving them costs no disk read."""
    out: dict[str, tuple[bytes, str]] = {}
    for f in sorted(root.rglob("*")):
        if f.is_file() and f.suffix in TYPES:
            out[PREFIX + f.relative_to(root).as_posix()] = (f.read_bytes(), TYPES[f.suffix])
    out[PREFIX] = out[PREFIX + "index.html"]
    out[PREFIX.rstrip("/")] = out[PREFIX]
    return out


class _Enough(Exception):
    """Stops a preview read at PREVIEW_BYTES."""


def _preview(ex: Exporter, cid: Cid) -> str:
    parts: list[bytes] = []
    got = [0]

    def write(mv: memoryview) -> None:
        parts.append(bytes(mv[: PREVIEW_BYTES - got[0]]))
        got[0] += len(parts[-1])
        if got[0] >= PREVIEW_BYTES:
            raise _Enough

    with contextlib.suppress(_Enough):
        ex.cat(cid, write)
    return b"".join(parts).decode("utf-8", "replace")


def _ls(store: BlockStore, text: str) -> dict[str, object]:
    path = parse_path(text)
    ex = Exporter(store)
    with store.reader() as r:
        cid = resolve(r, path) if path.segments else path.root
    info = ex.stat(cid)
    out: dict[str, object] = {"path": str(path), "cid": str(cid), "type": info.kind,
                              "size": info.size, "entries": None, "preview": None,
                              "truncated": False}
    if info.kind == "directory":
        entries = ex.ls(cid)
        out["truncated"] = len(entries) > MAX_ENTRIES
        out["entries"] = [{"name": e.name, "cid": str(e.cid), "type": e.kind, "size": e.size}
                          for e in entries[:MAX_ENTRIES]]
    elif info.kind in ("file", "raw-block"):
        out["preview"] = _preview(ex, cid)
    return out


def add_dashboard_routes(
    api: ApiServer, token: str, store: BlockStore,
    now: Callable[[], float] = time.monotonic,
) -> ss.SessionStore:
    """Serve the dashboard on `api` and let it accept the session cookie."""
    _add_read_routes(api, store)
    return _add_pages_and_login(api, token, now)


def _add_pages_and_login(
    api: ApiServer, token: str, now: Callable[[], float]
) -> ss.SessionStore:
    """The static pages, login and logout, and the cookie check of every other route."""
    files = load_static()
    sessions = ss.SessionStore()
    want = token.encode()

    def session_auth(req: Request) -> bool:
        found = sessions.check(ss.session_ids(req.headers.get("cookie", "")), now())
        if found is ss.Check.NONE:
            return False
        if found is ss.Check.EXPIRED:
            raise ApiError(401, "dashboard session expired or the daemon restarted: "
                           "log in again", code="session_expired")
        problem = ss.csrf_problem(req.method, req.headers)
        if problem:
            raise ApiError(403, problem, code="csrf")
        return True

    async def login(req: Request) -> Response:
        if ss.csrf_problem(req.method, req.headers):  # only the login page's script logs in
            raise ApiError(403, ss.csrf_problem(req.method, req.headers), code="csrf")
        given = str(req.json().get("token", "")).strip().encode()
        if not hmac.compare_digest(given, want):
            raise ApiError(401, "that is not this daemon's API token (see <home>/api.token)",
                           code="bad_token")
        s = sessions.create(now())
        name = ss.cookie_name(req.headers.get("host", ""))
        return Response(body={"ok": True, "expires_in_s": round(s.expires - now())},
                        headers=[("set-cookie", ss.set_cookie(name, s.sid, sessions.ttl_s)),
                                 ("cache-control", "no-store")])

    async def logout(req: Request) -> Response:
        if ss.csrf_problem(req.method, req.headers):
            raise ApiError(403, ss.csrf_problem(req.method, req.headers), code="csrf")
        sessions.drop(ss.session_ids(req.headers.get("cookie", "")))
        name = ss.cookie_name(req.headers.get("host", ""))
        return Response(body={"ok": True}, headers=[("set-cookie", ss.clear_cookie(name))])

    async def page(req: Request) -> Response:
        if req.path == PREFIX + "login" and req.method == "POST":
            return await login(req)
        if req.path == PREFIX + "logout" and req.method == "POST":
            return await logout(req)
        if req.method != "GET":
            raise ApiError(405, f"no route {req.method} {req.path}")
        hit = files.get(req.path)
        if hit is None:
            raise ApiError(404, f"no dashboard page {req.path}")
        body, ctype = hit
        return Response(raw=body, content_type=ctype, headers=list(PAGE_HEADERS))

    api.session_auth = session_auth
    api.mount(PREFIX, page)
    return sessions


def _add_read_routes(api: ApiServer, store: BlockStore) -> None:
    """What the data and simulation pages read beyond the API."""

    async def pins(req: Request) -> object:
        def read() -> list[dict[str, object]]:
            return [{"cid": str(p.cid), "type": p.mode.value, "names": list(p.names)}
                    for p in Pins(store).ls(None)]

        return await trio.to_thread.run_sync(read)

    async def ls(req: Request) -> object:
        text = req.arg("path") or ""
        if not text:
            raise ApiError(400, "give ?path=CID or CID/a/b")
        try:
            return await trio.to_thread.run_sync(_ls, store, text)
        except ColonyError as e:
            raise ApiError(404, f"{text}: {e} (fetch the DAG to this node first)",
                           code="not_found") from None

    async def sim(req: Request) -> object:
        try:
            return await trio.to_thread.run_sync(simruns.summary, req.arg("dir") or "")
        except simruns.SimRunError as e:
            raise ApiError(404, str(e)) from None

    async def sim_file(req: Request) -> Response:
        try:
            data, ctype = await trio.to_thread.run_sync(
                simruns.run_file, req.arg("dir") or "", req.arg("name") or "")
        except simruns.SimRunError as e:
            raise ApiError(404, str(e)) from None
        return Response(raw=data, content_type=ctype, headers=[("cache-control", "no-cache")])

    api.add("GET", "/v1/dashboard/pins", pins, RouteDoc(
        "this node's pins (the dashboard's data page)", tag="dashboard",
        response=arr(obj(("cid", "type", "names"), cid=STR, type=STR, names=arr(STR)))))
    api.add("GET", "/v1/dashboard/ls", ls, RouteDoc(
        "a directory's entries or a file's first 16 KiB, by CID or CID/path, from this "
        "node's store", tag="dashboard", query={"path": STR},
        response=obj(("path", "cid", "type", "size"), path=STR, cid=STR, type=STR, size=INT,
                     entries=nullable(arr(ENTRY)), preview=nullable(STR), truncated=BOOL)))
    api.add("GET", "/v1/dashboard/sim", sim, RouteDoc(
        "a `colony sim run` output folder on this host: metrics.json, plot and table names",
        tag="dashboard", query={"dir": STR},
        response=obj(("dir", "metrics", "plots", "tables"), dir=STR, metrics=OBJ,
                     plots=arr(STR), tables=arr(STR))))
    api.add("GET", "/v1/dashboard/sim/file", sim_file, RouteDoc(
        "one plot (image/png) or table (text/csv, first 2000 rows) of a sim run folder",
        tag="dashboard", query={"dir": STR, "name": STR}, response=ANY))
