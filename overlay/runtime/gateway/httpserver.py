"""The gateway's HTTP/1.1 server: h11 for parsing, trio for the socket, bodies streamed
from the block store through worker threads with bounded memory.

Unlike the control API (api/server.py: JSON, a bearer token, bodies in memory) this
serves anonymous clients, GET and HEAD only, and bodies of any size: a `Reply` carries
either bytes or a `Body`, a factory of a plain iterator of byte pieces that reads the
store (overlay/runtime/gateway/dag.py). `pump` runs that iterator on worker threads,
`BATCH_BYTES` at a time, one batch ahead of the socket (reading and hashing overlap
sending); at most `QUEUE_BATCHES` + 2 batches exist at once, so a response of any
size costs a few MiB.

Bounds: at most `max_connections` connections (one more gets a 503 at once);
a request head of at most 64 KiB, read within `HEAD_TIMEOUT_S`; a request body is
refused (413); each send must progress within `SEND_TIMEOUT_S`. A failure while a body
streams closes the connection before the body ends, so the client sees a truncated
response (PATH_GATEWAY.md: once 200 is sent, a missing block ends the stream), and a
Content-Length response cannot be mistaken for complete.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import h11
import structlog
import trio

from overlay.core.errors import ColonyError

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = structlog.get_logger("colony.gateway")

HEAD_TIMEOUT_S = 30.0
#: How long a connection over the limit may take to send its request before its 503.
BUSY_TIMEOUT_S = 2.0
SEND_TIMEOUT_S = 60.0
MAX_HEAD_BYTES = 64 * 1024
BATCH_BYTES = 1 << 20
QUEUE_BATCHES = 1

#: A response body read from the store: called once, on a worker thread.
Body = Callable[[], Iterable[bytes | memoryview]]


@dataclass
class HttpRequest:
    method: str
    #: The path as sent (still percent-encoded) and the raw query string.
    path: str
    query: str
    headers: dict[str, str]

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    #: A streamed body; `length` is its size when known (else chunked encoding).
    stream: Body | None = None
    length: int | None = None


Handler = Callable[[HttpRequest], Awaitable[Reply]]


def _batches(pieces: Iterator[bytes | memoryview]) -> list[bytes | memoryview]:
    out: list[bytes | memoryview] = []
    n = 0
    for p in pieces:
        out.append(p)
        n += len(p)
        if n >= BATCH_BYTES:
            break
    return out


async def pump(body: Body, write: Callable[[bytes | memoryview], Awaitable[None]],
               limiter: trio.CapacityLimiter | None = None) -> int:
    """Run `body` on worker threads and `write` its pieces in order; the byte count.

    An error of either side (reading the store, writing the socket) stops both and is
    raised here as itself, not wrapped in an exception group."""
    holder: list[Iterator[bytes | memoryview]] = []

    def take() -> list[bytes | memoryview]:
        if not holder:
            holder.append(iter(body()))
        return _batches(holder[0])

    send, recv = trio.open_memory_channel[list[bytes | memoryview]](QUEUE_BATCHES)
    failed: list[Exception] = []

    async def produce() -> None:
        async with send:
            try:
                while batch := await trio.to_thread.run_sync(take, limiter=limiter):
                    await send.send(batch)
            except Exception as e:  # the reader's error ends the body; raised below
                failed.append(e)

    total = 0
    async with trio.open_nursery() as n:
        n.start_soon(produce)
        try:
            async with recv:
                async for batch in recv:
                    for piece in batch:
                        await write(piece)
                        total += len(piece)
        except Exception as e:
            failed.append(e)
            n.cancel_scope.cancel()
    if failed:
        raise failed[0]
    return total


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


class HttpServer:
    """Serves `handler` on a TCP listener; one task per connection."""

    def __init__(self, handler: Handler, *, max_connections: int = 64,
                 threads: trio.CapacityLimiter | None = None) -> None:
        self._handler = handler
        self._threads = threads
        self._limit = trio.CapacityLimiter(max_connections)
        #: Connections answered 503 because `max_connections` were being served.
        self.busy = 0
        self.requests = 0
        self.bytes_sent = 0
        self.streams_broken = 0

    async def serve(
        self, host: str, port: int, task_status: TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listeners = await trio.open_tcp_listeners(port, host=host)
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self._conn, listeners)

    async def _conn(self, stream: trio.SocketStream) -> None:
        try:
            self._limit.acquire_nowait()
        except trio.WouldBlock:  # full: say so at once rather than queue sockets
            self.busy += 1
            await self._busy(stream)
            return
        try:
            await self._serve(stream)
        finally:
            self._limit.release()

    async def _busy(self, stream: trio.SocketStream) -> None:
        """503 to a connection over `max_connections` (its request read first, briefly,
        so closing does not reset the connection before the client reads the 503)."""
        body = b"the gateway is serving as many connections as it may; retry shortly\n"
        head = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; "
                b"charset=utf-8\r\nretry-after: 1\r\nconnection: close\r\n"
                b"content-length: %d\r\n\r\n" % len(body))
        try:
            with trio.move_on_after(BUSY_TIMEOUT_S):
                await stream.receive_some(MAX_HEAD_BYTES)
                await stream.send_all(head + body)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await stream.aclose()

    async def _serve(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        try:
            while True:
                req = None
                with trio.move_on_after(HEAD_TIMEOUT_S):
                    req = await self._read(conn, stream)
                if req is None:
                    return
                if not await self._answer(conn, stream, req):
                    return
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except h11.RemoteProtocolError as e:
            await self._refuse(conn, stream, e)
        except (h11.ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError,
                trio.TooSlowError) as e:
            log.debug("gateway_connection_dropped", reason=str(e))
        finally:
            await stream.aclose()

    async def _refuse(
        self, conn: h11.Connection, stream: trio.SocketStream, e: h11.RemoteProtocolError
    ) -> None:
        """Answer a malformed request with its status (400, 413, 431…) and close."""
        log.debug("gateway_bad_request", reason=str(e))
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = f"{e}\n".encode()
        try:
            data = conn.send(h11.Response(status_code=e.error_status_hint, headers=[
                ("content-type", "text/plain; charset=utf-8"), ("connection", "close"),
                ("content-length", str(len(body)))]))
            await self._send(stream, (data or b"") + body)
        except (h11.ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError,
                trio.TooSlowError):
            pass

    async def _read(self, conn: h11.Connection, stream: trio.SocketStream) -> HttpRequest | None:
        head: h11.Request | None = None
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                if not data and conn.their_state is h11.IDLE:
                    return None
                conn.receive_data(data)
                continue
            if isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                raise h11.RemoteProtocolError("a request body is not accepted here", 413)
            elif isinstance(event, h11.EndOfMessage) and head is not None:
                url = urlsplit(head.target.decode("latin-1"))
                headers: dict[str, str] = {}
                for k, v in head.headers:
                    name, value = k.decode().lower(), v.decode("latin-1")
                    headers[name] = f"{headers[name]}, {value}" if name in headers else value
                return HttpRequest(head.method.decode(), url.path, url.query, headers)
            else:
                return None

    async def _answer(
        self, conn: h11.Connection, stream: trio.SocketStream, req: HttpRequest
    ) -> bool:
        """Send the reply; False when the connection must close (a broken stream)."""
        self.requests += 1
        try:
            reply = await self._handler(req)
        except Exception as e:  # a handler bug must not take the daemon down
            log.exception("gateway_handler_failed", path=req.path)
            reply = Reply(500, [("content-type", "text/plain; charset=utf-8")],
                          f"internal error: {type(e).__name__}\n".encode())
        headers = [("server", "colony-gateway"), *reply.headers]
        send_body = req.method != "HEAD" and reply.status not in (204, 304)
        if reply.stream is None:
            length: int | None = len(reply.body)
        else:
            length = reply.length
        if length is not None and reply.status != 304:
            headers.append(("content-length", str(length)))
        elif reply.status != 304 and send_body:
            headers.append(("transfer-encoding", "chunked"))
        await self._send(stream, conn.send(h11.Response(
            status_code=reply.status, headers=headers, reason=_reason(reply.status))))
        if send_body and reply.stream is not None:
            async def write(piece: bytes | memoryview) -> None:
                # h11 frames the piece without copying it (a memoryview passes through).
                parts = conn.send_with_data_passthrough(h11.Data(data=piece))  # type: ignore[arg-type]
                for part in parts or ():
                    await self._send(stream, part)
            try:
                self.bytes_sent += await pump(reply.stream, write, self._threads)
            except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
                return False  # the client went away or stopped reading
            except Exception as e:  # the store failed mid-body: end it short
                self.streams_broken += 1
                level = log.warning if isinstance(e, ColonyError) else log.exception
                level("gateway_stream_broken", path=req.path, error=str(e))
                return False
        elif send_body and reply.body:
            await self._send(stream, conn.send(h11.Data(data=reply.body)))
            self.bytes_sent += len(reply.body)
        await self._send(stream, conn.send(h11.EndOfMessage()))
        return True

    @staticmethod
    async def _send(stream: trio.SocketStream, data: bytes | memoryview | None) -> None:
        if data:
            with trio.fail_after(SEND_TIMEOUT_S):
                await stream.send_all(data)


__all__ = ["Body", "HttpRequest", "HttpServer", "Reply", "pump"]
