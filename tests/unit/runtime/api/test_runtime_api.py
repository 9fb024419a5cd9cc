"""Control API over real loopback sockets: auth, routing, errors, NDJSON streams."""

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from overlay.client import ApiCallFailed, ApiClient, ApiUnavailable
from overlay.runtime.api.server import ApiError, ApiServer, Request, Response, load_or_create_token

TOKEN = "t" * 64


def make_server() -> ApiServer:
    api = ApiServer(TOKEN)

    @api.route("GET", "/v1/echo")
    async def echo(req: Request) -> Any:
        return {"q": req.arg("q")}

    @api.route("POST", "/v1/sum")
    async def total(req: Request) -> Any:
        return {"sum": sum(req.json()["xs"])}

    @api.route("GET", "/v1/fail")
    async def fail(req: Request) -> Any:
        raise ApiError(409, "capsule already cancelled")

    @api.route("GET", "/v1/bug")
    async def bug(req: Request) -> Any:
        return 1 / 0

    @api.route("GET", "/v1/count")
    async def count(req: Request) -> Response:
        async def gen() -> AsyncIterator[Any]:
            for i in range(int(req.arg("n", "3") or 3)):
                yield {"i": i}
                await trio.sleep(0)

        return Response(stream=gen())

    @api.route("GET", "/metrics")
    async def metrics(req: Request) -> Response:
        return Response(raw=b"colony_up 1\n", content_type="text/plain; version=0.0.4")

    return api


def run_with_server(fn: Any) -> Any:
    """Serve on an ephemeral loopback port; run the blocking client in a thread."""
    result: list[Any] = []

    async def main() -> None:
        api = make_server()
        async with trio.open_nursery() as n:
            port = await n.start(api.serve, "127.0.0.1", 0)
            result.append(await trio.to_thread.run_sync(fn, port))
            n.cancel_scope.cancel()

    trio.run(main)
    return result[0]


def test_calls_streams_and_errors() -> None:
    def client(port: int) -> Any:
        c = ApiClient("127.0.0.1", port, TOKEN, timeout_s=10)
        out: dict[str, Any] = {
            "echo": c.call("GET", "/v1/echo", q="hi"),
            "sum": c.call("POST", "/v1/sum", {"xs": [1, 2, 3]}),
            "stream": list(c.stream("GET", "/v1/count", n=4)),
            "metrics": c.call("GET", "/metrics"),
        }
        for path in ("/v1/fail", "/v1/bug", "/v1/nope"):
            try:
                c.call("GET", path)
            except ApiCallFailed as e:
                out[path] = (e.status, str(e))
        try:
            ApiClient("127.0.0.1", port, "wrong" * 10).call("GET", "/v1/echo")
        except ApiCallFailed as e:
            out["auth"] = e.status
        return out

    out = run_with_server(client)
    assert out["echo"] == {"q": "hi"}
    assert out["sum"] == {"sum": 6}
    assert out["stream"] == [{"i": i} for i in range(4)]
    assert out["metrics"] == b"colony_up 1\n"
    assert out["/v1/fail"] == (409, "capsule already cancelled")
    assert out["/v1/bug"][0] == 500 and "ZeroDivisionError" in out["/v1/bug"][1]
    assert out["/v1/nope"][0] == 404
    assert out["auth"] == 401


def test_garbage_on_the_socket_costs_only_that_connection() -> None:
    def client(port: int) -> Any:
        import socket

        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"\x00\xffNOT HTTP AT ALL\r\n\r\n")
            s.recv(100)
        return ApiClient("127.0.0.1", port, TOKEN, timeout_s=10).call("GET", "/v1/echo", q="ok")

    assert run_with_server(client) == {"q": "ok"}


def test_unreachable_daemon_gives_clear_message() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ApiUnavailable, match="colony daemon"):
        ApiClient("127.0.0.1", port, TOKEN, timeout_s=2).call("GET", "/v1/echo")


def test_token_file_is_private_and_stable(tmp_path: Path) -> None:
    t1 = load_or_create_token(tmp_path)
    assert (tmp_path / "api.token").stat().st_mode & 0o777 == 0o600
    assert load_or_create_token(tmp_path) == t1 and len(t1) == 64
