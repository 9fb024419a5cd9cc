"""An NDJSON stream whose client hangs up is stopped at once, not at its next line:
a watch that waits long between lines (events, a running capsule's log) must not
keep its generator (an event-bus channel, a poller) running for a client gone."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import trio

from overlay.runtime.api.server import ApiServer, Request, Response

TOKEN = "s" * 64


def test_a_hung_up_watch_is_closed_and_the_server_keeps_serving() -> None:
    closed = trio.Event()
    seen: list[str] = []

    async def main() -> None:
        api = ApiServer(TOKEN)

        @api.route("GET", "/v1/quiet")
        async def quiet(req: Request) -> Response:
            async def gen() -> AsyncIterator[Any]:
                try:
                    yield {"first": True}
                    await trio.sleep_forever()  # a watch with nothing more to say
                    yield {"never": True}
                finally:
                    closed.set()

            return Response(stream=gen())

        @api.route("GET", "/v1/count")
        async def count(req: Request) -> Response:
            async def gen() -> AsyncIterator[Any]:
                for i in range(3):
                    yield {"i": i}

            return Response(stream=gen())

        async with trio.open_nursery() as n:
            port = await n.start(api.serve, "127.0.0.1", 0)

            def hang_up() -> None:
                s = socket.create_connection(("127.0.0.1", port), timeout=10)
                s.sendall(f"GET /v1/quiet HTTP/1.1\r\nHost: x\r\n"
                          f"Authorization: Bearer {TOKEN}\r\n\r\n".encode())
                got = b""
                while b'{"first": true}' not in got:
                    got += s.recv(4096)
                seen.append("first")
                s.close()

            await trio.to_thread.run_sync(hang_up)
            with trio.fail_after(5):
                await closed.wait()  # stopped by the hang-up, not by a later write

            def full_stream() -> list[Any]:  # a normal stream still ends normally
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                c.request("GET", "/v1/count", headers={"Authorization": f"Bearer {TOKEN}"})
                r = c.getresponse()
                lines = [json.loads(x) for x in r.read().splitlines()]
                c.request("GET", "/v1/count", headers={"Authorization": f"Bearer {TOKEN}"})
                lines += [json.loads(x) for x in c.getresponse().read().splitlines()]
                c.close()  # the same connection served two streams (keep-alive)
                return lines

            lines = await trio.to_thread.run_sync(full_stream)
            assert lines == [{"i": 0}, {"i": 1}, {"i": 2}] * 2
            n.cancel_scope.cancel()

    trio.run(main)
    assert seen == ["first"]


def test_a_stream_that_raises_ends_with_an_error_line_and_the_server_lives() -> None:
    async def main() -> list[str]:
        api = ApiServer(TOKEN)

        @api.route("GET", "/v1/broken")
        async def broken(req: Request) -> Response:
            async def gen() -> AsyncIterator[Any]:
                yield {"ok": 1}
                raise RuntimeError("a bug in a stream")

            return Response(stream=gen())

        @api.route("GET", "/v1/fine")
        async def fine(req: Request) -> dict[str, int]:
            return {"fine": 1}

        async with trio.open_nursery() as n:
            port = await n.start(api.serve, "127.0.0.1", 0)

            def get(path: str) -> str:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                c.request("GET", path, headers={"Authorization": f"Bearer {TOKEN}"})
                return c.getresponse().read().decode()

            lines = await trio.to_thread.run_sync(get, "/v1/broken")
            after = await trio.to_thread.run_sync(get, "/v1/fine")
            n.cancel_scope.cancel()
        return [lines, after]

    lines, after = trio.run(main)
    items = [json.loads(x) for x in lines.splitlines()]
    assert items[0] == {"ok": 1}
    assert items[-1]["error"]["code"] == "internal" and "a bug in a stream" in lines
    assert json.loads(after) == {"fine": 1}


def test_a_watch_reset_by_its_client_costs_the_server_nothing() -> None:
    """A client that resets the connection (RST, as a killed process or a proxy does)
    during a stream: the reset reached the nursery as an ExceptionGroup, which the
    per-connection handler did not catch, and stopped the whole server (a daemon died
    this way in a suite run). Now the stream ends and the server keeps serving."""
    import struct

    closed = trio.Event()

    async def main() -> None:
        api = ApiServer(TOKEN)

        @api.route("GET", "/v1/ticks")
        async def ticks(req: Request) -> Response:
            async def gen() -> AsyncIterator[Any]:
                try:
                    for i in range(10**6):
                        yield {"i": i, "pad": "x" * 4096}  # keeps the socket busy
                        await trio.sleep(0)
                finally:
                    closed.set()

            return Response(stream=gen())

        @api.route("GET", "/v1/ok")
        async def ok(req: Request) -> object:
            return {"ok": True}

        async with trio.open_nursery() as n:
            port = await n.start(api.serve, "127.0.0.1", 0)

            def reset() -> None:
                s = socket.create_connection(("127.0.0.1", port), timeout=10)
                s.sendall(f"GET /v1/ticks HTTP/1.1\r\nHost: x\r\n"
                          f"Authorization: Bearer {TOKEN}\r\n\r\n".encode())
                s.recv(65536)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()  # RST, with the server mid-stream

            for _ in range(5):
                await trio.to_thread.run_sync(reset)
            with trio.fail_after(5):
                await closed.wait()

            def still_up() -> Any:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                c.request("GET", "/v1/ok", headers={"Authorization": f"Bearer {TOKEN}"})
                return json.loads(c.getresponse().read())

            assert await trio.to_thread.run_sync(still_up) == {"ok": True}
            n.cancel_scope.cancel()

    trio.run(main)


def test_a_stream_whose_source_broke_ends_with_the_reason_not_in_silence() -> None:
    """A producer's own stream breaking (a peer's stream during a fetch) is not the
    client's hang-up: the client gets an error line it can show, the drop is counted and
    the connection serves the next request."""

    async def main() -> None:
        api = ApiServer(TOKEN)

        @api.route("GET", "/v1/broken")
        async def broken(req: Request) -> Response:
            async def gen() -> AsyncIterator[Any]:
                yield {"phase": "fetching"}
                raise trio.BrokenResourceError("peer reset the block stream")

            return Response(stream=gen())

        async with trio.open_nursery() as n:
            port = await n.start(api.serve, "127.0.0.1", 0)

            def read_twice() -> list[Any]:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                out = []
                for _ in range(2):
                    c.request("GET", "/v1/broken", headers={"Authorization": f"Bearer {TOKEN}"})
                    out.append([json.loads(x) for x in c.getresponse().read().splitlines()])
                c.close()
                return out

            first, second = await trio.to_thread.run_sync(read_twice)
            assert first == second
            assert first[0] == {"phase": "fetching"}
            assert first[1]["error"]["code"] == "unavailable"
            assert "peer reset the block stream" in first[1]["error"]["message"]
            assert api.streams_broken == 2 and api.errors == 0
            text = "\n".join(str(m) for m in api.metrics.collect())
            assert "streams_broken" in text
            n.cancel_scope.cancel()

    trio.run(main)
