"""The dashboard on a real ApiServer over loopback: login, the session cookie on API
routes next to the bearer token, CSRF for state-changing cookie calls, expiry, the
pages' security headers, and the store reads of the data page."""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from overlay.runtime.api.server import ApiServer, Request
from overlay.runtime.dashboard.routes import add_dashboard_routes
from store.blockstore import BlockStore
from store.importer import Importer, ImportOptions
from store.pins import Pins

TOKEN = "a" * 64


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def serve(store: BlockStore, clock: Clock, fn: Callable[[int], Any]) -> Any:
    result: list[Any] = []

    async def main() -> None:
        api = ApiServer(TOKEN)

        @api.route("POST", "/v1/poke")
        async def poke(req: Request) -> object:
            return {"poked": True}

        @api.route("GET", "/v1/id")
        async def ident(req: Request) -> object:
            return {"id": "me"}

        add_dashboard_routes(api, TOKEN, store, now=clock)
        async with trio.open_nursery() as n:
            port = await n.start(api.serve, "127.0.0.1", 0)
            result.append(await trio.to_thread.run_sync(fn, port))
            n.cancel_scope.cancel()

    trio.run(main)
    return result[0]


def req(port: int, method: str, path: str, body: object = None,
        headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    data = None if body is None else json.dumps(body).encode()
    c.request(method, path, body=data, headers=headers or {})
    r = c.getresponse()
    out = (r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    c.close()
    return out


def code(body: bytes) -> str:
    return str(json.loads(body)["error"]["code"])


def test_login_cookie_csrf_and_expiry(tmp_path: Path) -> None:
    clock = Clock()

    def run(port: int) -> None:
        csrf = {"X-Colony-CSRF": "1", "Content-Type": "application/json"}
        st, _, body = req(port, "GET", "/v1/id")
        assert st == 401 and code(body) == "unauthorized"
        st, _, body = req(port, "POST", "/dashboard/login", {"token": "b" * 64}, csrf)
        assert st == 401 and code(body) == "bad_token"
        st, _, body = req(port, "POST", "/dashboard/login", {"token": TOKEN})  # no header
        assert st == 403 and code(body) == "csrf"
        st, hdrs, body = req(port, "POST", "/dashboard/login", {"token": TOKEN}, csrf)
        assert st == 200 and json.loads(body)["expires_in_s"] == 12 * 3600
        cookie = hdrs["set-cookie"]
        assert cookie.startswith(f"colony_session_{port}=")
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN not in cookie
        jar = {"Cookie": cookie.split(";")[0]}
        assert req(port, "GET", "/v1/id", headers=jar)[0] == 200
        st, _, body = req(port, "POST", "/v1/poke", {}, jar)  # cookie alone may not change state
        assert st == 403 and code(body) == "csrf"
        assert req(port, "POST", "/v1/poke", {}, {**jar, **csrf})[0] == 200
        evil = {**jar, **csrf, "Origin": "http://127.0.0.1:1"}
        assert req(port, "POST", "/v1/poke", {}, evil)[0] == 403
        bearer = {"Authorization": f"Bearer {TOKEN}"}  # the CLI and SDK: unchanged
        assert req(port, "POST", "/v1/poke", {}, bearer)[0] == 200
        clock.t += 12 * 3600 + 1
        st, _, body = req(port, "GET", "/v1/id", headers=jar)
        assert st == 401 and code(body) == "session_expired"
        st, hdrs, _ = req(port, "POST", "/dashboard/logout", {}, {**jar, **csrf})
        assert st == 200 and "Max-Age=0" in hdrs["set-cookie"]

    with BlockStore(tmp_path / "b") as store:
        serve(store, clock, run)


def test_pages_are_open_with_security_headers_and_outside_openapi(tmp_path: Path) -> None:
    def run(port: int) -> None:
        st, hdrs, body = req(port, "GET", "/dashboard/")
        assert st == 200 and hdrs["content-type"].startswith("text/html")
        assert b'src="/dashboard/js/app.js"' in body
        assert "script-src 'self'" in hdrs["content-security-policy"]
        assert hdrs["x-frame-options"] == "DENY"
        st, hdrs, _ = req(port, "GET", "/dashboard/js/pages/colony.js")
        assert st == 200 and hdrs["content-type"].startswith("text/javascript")
        assert req(port, "GET", "/dashboard/../api.token")[0] == 404
        assert req(port, "GET", "/dashboard/nope.js")[0] == 404
        assert req(port, "DELETE", "/dashboard/")[0] == 405
        auth = {"Authorization": f"Bearer {TOKEN}"}
        doc = json.loads(req(port, "GET", "/v1/openapi.json", headers=auth)[2])
        assert "/v1/dashboard/ls" in doc["paths"]
        assert not any(p.startswith("/dashboard") for p in doc["paths"])

    with BlockStore(tmp_path / "b") as store:
        serve(store, Clock(), run)


def test_pins_and_dag_browser_by_path(tmp_path: Path) -> None:
    src = tmp_path / "site"
    (src / "docs").mkdir(parents=True)
    (src / "docs" / "a.txt").write_text("hello from a\n" * 3)
    (src / "top.txt").write_text("top\n")
    with BlockStore(tmp_path / "b") as store:
        added = Importer(store, ImportOptions()).add_path(src, recursive=True)
        Pins(store).add(added.cid, recursive=True, name="site")
        root = str(added.cid)

        def run(port: int) -> None:
            auth = {"Authorization": f"Bearer {TOKEN}"}
            pins = json.loads(req(port, "GET", "/v1/dashboard/pins", headers=auth)[2])
            assert pins == [{"cid": root, "type": "recursive", "names": ["site"]}]
            d = json.loads(req(port, "GET", f"/v1/dashboard/ls?path={root}", headers=auth)[2])
            assert d["type"] == "directory"
            assert {e["name"]: e["type"] for e in d["entries"]} == {"docs": "directory",
                                                                   "top.txt": "file"}
            f = json.loads(req(port, "GET", f"/v1/dashboard/ls?path={root}/docs/a.txt",
                               headers=auth)[2])
            assert f["type"] == "file" and f["preview"] == "hello from a\n" * 3
            st, _, body = req(port, "GET", f"/v1/dashboard/ls?path={root}/nope", headers=auth)
            assert st == 404 and code(body) == "not_found"
            assert req(port, "GET", "/v1/dashboard/ls?path=garbage", headers=auth)[0] == 404
            assert req(port, "GET", "/v1/dashboard/ls", headers=auth)[0] == 400

        serve(store, Clock(), run)


def test_sim_run_folder_reads_are_confined_to_the_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps(
        {"counters": {"joins": 3}, "distributions": {}, "info": {"nodes": 3}}))
    (run / "timeseries.csv").write_text("t,live\n10.0,2\n20.0,3\n")
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 16
    (run / "plot.png").write_bytes(png)
    (tmp_path / "secret.png").write_bytes(b"not the run's")
    (run / "link.png").symlink_to(tmp_path / "secret.png")
    (tmp_path / "other").mkdir()

    def run_(port: int) -> None:
        auth = {"Authorization": f"Bearer {TOKEN}"}

        def get(path: str, **q: str) -> tuple[int, dict[str, str], bytes]:
            from urllib.parse import urlencode
            return req(port, "GET", f"{path}?{urlencode(q)}", headers=auth)

        st, _, body = get("/v1/dashboard/sim", dir=str(run))
        r = json.loads(body)
        assert st == 200 and r["metrics"]["counters"] == {"joins": 3}
        assert r["plots"] == ["link.png", "plot.png"] and r["tables"] == ["timeseries.csv"]
        st, hdrs, body = get("/v1/dashboard/sim/file", dir=str(run), name="plot.png")
        assert st == 200 and hdrs["content-type"] == "image/png" and body == png
        st, _, body = get("/v1/dashboard/sim/file", dir=str(run), name="timeseries.csv")
        assert st == 200 and body.decode().splitlines()[-1] == "20.0,3"
        for bad in [dict(dir=str(run), name="../secret.png"),  # out of the run
                    dict(dir=str(run), name="link.png"),  # a link out of it
                    dict(dir=str(run), name="metrics.json"),  # not a plot or table
                    dict(dir=str(tmp_path / "other"), name="x.png")]:  # not a run
            st, _, body = get("/v1/dashboard/sim/file", **bad)
            assert st == 404 and code(body) == "not_found", bad
        assert get("/v1/dashboard/sim", dir="relative/run")[0] == 404
        assert get("/v1/dashboard/sim", dir=str(tmp_path / "other"))[0] == 404

    with BlockStore(tmp_path / "b") as store:
        serve(store, Clock(), run_)
