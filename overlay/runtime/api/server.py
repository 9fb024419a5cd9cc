"""Control API: HTTP/1.1 on 127.0.0.1 with a bearer token (DESIGN §9).

The `colony` CLI talks to the local daemon through this. Requests and responses are
JSON; long-running or watch-style endpoints stream newline-delimited JSON (NDJSON,
chunked transfer encoding) so the CLI can draw progress and follow events.

Security: the token is 32 random bytes (hex) in `<home>/api.token`, mode 0600, made
at daemon start if missing; every route except `/metrics` (Prometheus text; read-only
counters) needs `Authorization: Bearer <token>`, compared in constant time, or another
credential the daemon plugs in (`session_auth`: the web dashboard's HttpOnly session
cookie, overlay/runtime/dashboard/). A `mount`ed prefix (the dashboard's static pages
and its login) is served without either: its handler checks what it must. The server
binds loopback by default; requests are bounded in header and body size, and a slow
client costs only its own connection (per-connection timeouts).

HTTP parsing is h11's (the sans-IO model this project imitates); this module only
moves bytes between h11 and a trio stream.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import h11
import structlog
import trio

from overlay.core.errors import ColonyError, ConfigError
from overlay.runtime.api.metrics import StatsCollector
from overlay.runtime.api.openapi import OBJ, RouteDoc, build_document
from overlay.runtime.gateway.httpserver import Body, pump
from overlay.runtime.jsontypes import Json

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = structlog.get_logger("colony.api")

TOKEN_FILE = "api.token"
#: Where a running daemon writes the address its API really listens on, so the CLI
#: finds a daemon started with `--api HOST:PORT` (or port 0) without a config edit.
ADDR_FILE = "api.addr"
MAX_BODY_BYTES = 16 * 1024 * 1024
#: The version in the OpenAPI document; routes live under /v1.
API_VERSION = "1.0.0"
REQUEST_TIMEOUT_S = 30.0


#: The stable error code each status gets unless a route names a finer one. Every
#: error response, plain or the last line of an NDJSON stream, has one shape:
#: `{"error": {"code": CODE, "message": TEXT}}` (the SDK maps CODE to its exceptions).
ERROR_CODES: dict[int, str] = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 409: "conflict", 422: "unprocessable", 500: "internal",
    502: "bad_gateway", 503: "unavailable",
}


class ApiError(ColonyError):
    """An error with an HTTP status and a stable code, shown to the user as its message."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or ERROR_CODES.get(status, "bad_request" if status < 500 else "internal")


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    """The one JSON error shape of the control API."""
    return {"error": {"code": code, "message": message}}


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        """The body: a JSON object (every route takes one), else a 400."""
        if not self.body:
            return {}
        try:
            body = json.loads(self.body)
        except ValueError as e:
            raise ApiError(400, f"request body is not JSON: {e}") from None
        if not isinstance(body, dict):
            raise ApiError(400, f"request body must be a JSON object, not {type(body).__name__}")
        return body

    def arg(self, name: str, default: str | None = None) -> str | None:
        vals = self.query.get(name)
        return vals[0] if vals else default


@dataclass
class Response:
    status: int = 200
    body: object = None  # JSON-able
    stream: AsyncIterator[object] | None = None  # yields JSON-able items (NDJSON)
    raw: bytes | None = None
    #: Bytes read from the store on worker threads, sent chunked (routes_content.py).
    byte_stream: Body | None = None
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)


#: A route: returns a Response, or a JSON-able body for a 200 response.
#: What a route that builds its reply itself returns.
Reply = Json | Response
Handler = Callable[[Request], Awaitable[object]]
#: A credential other than the bearer token: True when the request carries a valid
#: one, False when it carries none; raises ApiError (401/403) for a bad one.
SessionAuth = Callable[[Request], bool]


def load_or_create_token(home: Path) -> str:
    path = home / TOKEN_FILE
    if path.exists():
        token = path.read_text().strip()
        if len(token) < 32:
            raise ConfigError(f"API token in {path} is too short; delete it to make a new one")
        return token
    token = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def write_api_addr(home: Path, host: str, port: int) -> None:
    tmp = home / (ADDR_FILE + ".tmp")
    tmp.write_text(f"{host}:{port}\n")
    os.replace(tmp, home / ADDR_FILE)  # atomic: a reader sees the old or the new address


def split_hostport(listen: str) -> tuple[str, int]:
    """`HOST:PORT` (or `[V6]:PORT`) of an `[api] listen` value or an api.addr file."""
    host, _, port = listen.rpartition(":")
    try:
        return host.strip("[]") or "127.0.0.1", int(port)
    except ValueError:
        raise ConfigError(f"API address {listen!r} is not host:port") from None


def remove_api_addr(home: Path) -> None:
    (home / ADDR_FILE).unlink(missing_ok=True)


class ApiServer:
    def __init__(self, token: str, *, open_paths: tuple[str, ...] = ("/metrics",)) -> None:
        self._token = token.encode()
        self._routes: dict[tuple[str, str], Handler] = {}
        self._docs: dict[tuple[str, str], RouteDoc] = {}
        self._open_paths = open_paths
        #: (prefix, handler): open paths outside the OpenAPI document (static pages).
        self._mounts: list[tuple[str, Handler]] = []
        self.session_auth: SessionAuth | None = None
        #: What `/metrics` exports; route modules add the series of their area.
        self.metrics = StatsCollector()
        self.requests = 0
        self.errors = 0
        #: Streams ended because a stream their producer read from broke (not the client).
        self.streams_broken = 0
        self.metrics.counter("api", "control API: requests, internal errors (handler or "
                             "stream bugs), streams ended because a source they read "
                             "from broke", lambda: {"requests": self.requests,
                                                    "errors": self.errors,
                                                    "streams_broken": self.streams_broken})
        self.add("GET", "/v1/openapi.json", self._openapi, RouteDoc(
            "this document: OpenAPI 3.1, generated from the route declarations", response=OBJ))

    def route(self, method: str, path: str) -> Callable[[Handler], Handler]:
        def deco(fn: Handler) -> Handler:
            self._routes[(method.upper(), path)] = fn
            return fn

        return deco

    def add(self, method: str, path: str, fn: Handler, doc: RouteDoc | None = None) -> None:
        """Register a route; `doc` declares it in `/v1/openapi.json`."""
        self._routes[(method.upper(), path)] = fn
        if doc is not None:
            self._docs[(method.upper(), path)] = doc

    def mount(self, prefix: str, fn: Handler) -> None:
        """Serve every method and path under `prefix` with `fn`, without the token and
        outside the OpenAPI document: for static pages and a login that checks the
        token itself. Registered routes win over a mount."""
        self._mounts.append((prefix, fn))

    def _mounted(self, req: Request) -> Handler | None:
        if (req.method, req.path) in self._routes:
            return None
        for prefix, fn in self._mounts:
            if req.path == prefix.rstrip("/") or req.path.startswith(prefix):
                return fn
        return None

    async def _openapi(self, req: Request) -> object:
        return build_document(self._routes, self._docs, self._open_paths, API_VERSION)

    async def serve(
        self, host: str, port: int, task_status: TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listeners = await trio.open_tcp_listeners(port, host=host)
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self._handle_conn, listeners)

    async def _handle_conn(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        try:
            while True:
                with trio.move_on_after(REQUEST_TIMEOUT_S) as scope:
                    req = await self._read_request(conn, stream)
                if scope.cancelled_caught or req is None:
                    return
                await self._respond(conn, stream, req)
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (h11.ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError) as e:
            log.debug("api_connection_dropped", reason=str(e))
        finally:
            await stream.aclose()

    async def _read_request(
        self, conn: h11.Connection, stream: trio.SocketStream
    ) -> Request | None:
        head: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                conn.receive_data(data)
                if not data and conn.their_state is not h11.DONE:
                    return None
                continue
            if isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY_BYTES:
                    raise h11.RemoteProtocolError("request body too large")
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                url = urlsplit(head.target.decode("latin-1"))
                headers = {k.decode().lower(): v.decode("latin-1") for k, v in head.headers}
                return Request(
                    head.method.decode(), url.path, parse_qs(url.query), bytes(body), headers
                )
            elif isinstance(event, h11.ConnectionClosed):
                return None

    def _authorised(self, req: Request) -> bool:
        if req.path in self._open_paths:
            return True
        auth = req.headers.get("authorization", "")
        if auth.startswith("Bearer "):
            return hmac.compare_digest(auth[7:].strip().encode(), self._token)
        return self.session_auth is not None and self.session_auth(req)

    async def _respond(
        self, conn: h11.Connection, stream: trio.SocketStream, req: Request
    ) -> None:
        self.requests += 1
        try:
            handler = self._mounted(req)
            if handler is None and not self._authorised(req):
                raise ApiError(401, "missing or wrong API token (see <home>/api.token)")
            handler = handler or self._routes.get((req.method, req.path))
            if handler is None:
                known = any(p == req.path for _, p in self._routes)
                raise ApiError(405 if known else 404, f"no route {req.method} {req.path}")
            result = await handler(req)
            resp = result if isinstance(result, Response) else Response(body=result)
        except ApiError as e:
            resp = Response(e.status, error_body(e.code, str(e)))
        except ColonyError as e:
            resp = Response(400, error_body("bad_request", str(e)))
        except Exception as e:  # a handler bug must not take the daemon down
            self.errors += 1
            log.exception("api_handler_failed", path=req.path)
            resp = Response(
                500, error_body("internal", f"internal error: {type(e).__name__}: {e}")
            )
        await self._send(conn, stream, resp)

    async def _send(
        self, conn: h11.Connection, stream: trio.SocketStream, resp: Response
    ) -> None:
        headers = [("content-type", resp.content_type), *resp.headers]
        if resp.byte_stream is not None:
            await self._send_bytes(conn, stream, resp, resp.byte_stream)
        elif resp.stream is None:
            if resp.raw is not None:
                payload = resp.raw
            else:
                payload = (json.dumps(resp.body) + "\n").encode()
            headers.append(("content-length", str(len(payload))))
            head = h11.Response(status_code=resp.status, headers=headers)
            await stream.send_all(conn.send(head) + conn.send(h11.Data(data=payload)))
        else:
            headers[0] = ("content-type", "application/x-ndjson")
            headers.append(("transfer-encoding", "chunked"))
            head = h11.Response(status_code=resp.status, headers=headers)
            await stream.send_all(conn.send(head))
            await self._stream_body(conn, stream, resp.stream)
        await stream.send_all(conn.send(h11.EndOfMessage()))

    async def _send_bytes(
        self, conn: h11.Connection, stream: trio.SocketStream, resp: Response, body: Body
    ) -> None:
        """A chunked byte body. A failure once it started cannot change the status:
        the connection is closed before the last chunk, so the client sees a
        truncated body, never a complete-looking one."""
        headers = [("content-type", resp.content_type), *resp.headers,
                   ("transfer-encoding", "chunked")]
        await stream.send_all(conn.send(h11.Response(status_code=resp.status, headers=headers)))

        async def write(piece: bytes | memoryview) -> None:
            for part in conn.send_with_data_passthrough(h11.Data(data=piece)) or ():  # type: ignore[arg-type]
                await stream.send_all(part)

        try:
            await pump(body, write)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise
        except Exception as e:
            level = log.warning if isinstance(e, ColonyError) else log.exception
            level("api_byte_stream_broken", error=str(e))
            raise trio.BrokenResourceError(str(e)) from None

    async def _stream_body(
        self, conn: h11.Connection, stream: trio.SocketStream, items: AsyncIterator[object]
    ) -> None:
        """Send `items` as NDJSON lines; stop them as soon as the client hangs up.

        A watch may wait long between lines (events, a running capsule's log, a dashboard
        tab closed mid-stream); without this, a client that went away is noticed only at
        the next write, and its generator (an event-bus channel, a poller of custodians)
        runs until then. A client that half-closes its side is taken as gone (HTTP
        clients do not); bytes of a next request are kept by h11 for the next cycle."""
        gone = False
        try:
            async with _client_errors_unwrapped(), trio.open_nursery() as n:

                async def watch_hangup() -> None:
                    nonlocal gone
                    with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                        while data := await stream.receive_some(65536):
                            conn.receive_data(data)
                    gone = True  # EOF or a reset: the client is gone either way
                    n.cancel_scope.cancel()

                n.start_soon(watch_hangup)
                last = await self._send_items(conn, stream, items)
                if last is not None:
                    await stream.send_all(conn.send(h11.Data(data=last)))
                n.cancel_scope.cancel()
        finally:
            aclose = getattr(items, "aclose", None)
            if aclose is not None:
                with trio.CancelScope(shield=True):
                    await aclose()
        if gone:
            raise trio.BrokenResourceError("the client closed the connection during a stream")

    async def _send_items(
        self, conn: h11.Connection, stream: trio.SocketStream, items: AsyncIterator[object]
    ) -> bytes | None:
        """Send each item as a line; return the error line a failing producer ends with.

        Only a failed write is the client's hang-up. A producer's own stream that broke (a
        fetch's stream from a peer, an executor's pipe) ends this stream with an error
        line the client can show: closing quietly reads as "the stream ended before it
        was done" with no reason."""
        while True:
            try:
                item = await anext(items)
            except StopAsyncIteration:
                return None
            except ColonyError as e:
                code = e.code if isinstance(e, ApiError) else "bad_request"
                return (json.dumps(error_body(code, str(e))) + "\n").encode()
            except (trio.BrokenResourceError, trio.ClosedResourceError) as e:
                self.streams_broken += 1
                log.warning("api_stream_source_broken", error=repr(e))
                why = f"a stream this request read from broke: {str(e) or type(e).__name__}"
                return (json.dumps(error_body("unavailable", why)) + "\n").encode()
            except Exception as e:  # a stream's bug ends that stream, not the daemon
                self.errors += 1
                log.exception("api_stream_failed")
                why = f"internal error: {e!r}"[:300]
                return (json.dumps(error_body("internal", why)) + "\n").encode()
            line = (json.dumps(item) + "\n").encode()
            await stream.send_all(conn.send(h11.Data(data=line)))


@asynccontextmanager
async def _client_errors_unwrapped() -> AsyncIterator[None]:
    """A nursery wraps a client's hang-up (a reset, a write to a closed socket) in an
    ExceptionGroup, which the per-connection handler's `except BrokenResourceError`
    does not catch: it reached the daemon's nursery and stopped the daemon. Unwrap a
    group of only such errors into one BrokenResourceError; anything else stays."""
    try:
        yield
    except BaseExceptionGroup as eg:
        _, rest = eg.split((trio.BrokenResourceError, trio.ClosedResourceError))
        if rest is not None:
            raise
        raise trio.BrokenResourceError("the client went away during a stream") from None
