"""Client for the control API, used by the CLI (synchronous, stdlib only).

Finds the daemon from `<home>/api.addr` (written by the running daemon), else
`<home>/config.toml` (`[api] listen`), and `<home>/api.token`.
Errors come back as `ApiUnavailable` (no daemon listening) or `ApiCallFailed` (the
daemon answered with an error), each with a message meant for the user.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from overlay.core.errors import ColonyError
from overlay.runtime.api.server import ADDR_FILE, TOKEN_FILE
from overlay.runtime.process import config as cfg


class ApiUnavailable(ColonyError):
    pass


class ApiCallFailed(ColonyError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def split_hostport(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    try:
        return host.strip("[]") or "127.0.0.1", int(port)
    except ValueError:
        raise ColonyError(f"API address {listen!r} is not host:port") from None


class ApiClient:
    def __init__(self, host: str, port: int, token: str, timeout_s: float = 60.0) -> None:
        self.host, self.port, self.token, self.timeout_s = host, port, token, timeout_s

    @classmethod
    def for_home(cls, home: Path, timeout_s: float = 60.0) -> ApiClient:
        try:  # the address a running daemon really bound (`--api`, env, port 0)
            listen = (home / ADDR_FILE).read_text().strip()
        except OSError:
            listen = cfg.load(home)["api"]["listen"]
        host, port = split_hostport(listen)
        token_path = home / TOKEN_FILE
        if not token_path.exists():
            raise ApiUnavailable(
                f"no API token in {home}: is the daemon running? start it with `colony daemon`"
            )
        return cls(host, port, token_path.read_text().strip(), timeout_s)

    def _open(
        self, method: str, path: str, body: object, query: dict[str, object] | None
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        if query:
            path += "?" + urlencode({k: v for k, v in query.items() if v is not None})
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": f"Bearer {self.token}"}
        if payload is not None:
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, path, body=payload, headers=headers)
            resp = conn.getresponse()
        except (ConnectionRefusedError, OSError) as e:
            conn.close()
            raise ApiUnavailable(
                f"cannot reach the daemon at {self.host}:{self.port} ({e.strerror or e}); "
                "start it with `colony daemon`"
            ) from None
        if resp.status >= 400:
            try:
                msg = json.loads(resp.read()).get("error", resp.reason)
            except ValueError:
                msg = resp.reason
            conn.close()
            raise ApiCallFailed(resp.status, msg)
        return conn, resp

    def call(self, method: str, path: str, body: object = None, **query: object) -> Any:
        conn, resp = self._open(method, path, body, query)
        try:
            data = resp.read()
        finally:
            conn.close()
        if resp.getheader("content-type", "").startswith("application/json"):
            return json.loads(data) if data else None
        return data

    def stream(
        self, method: str, path: str, body: object = None, **query: object
    ) -> Iterator[Any]:
        """Yield NDJSON items as the daemon produces them."""
        conn, resp = self._open(method, path, body, query)
        try:
            while line := resp.readline():
                item = json.loads(line)
                if isinstance(item, dict) and set(item) == {"error"}:
                    raise ApiCallFailed(500, item["error"])
                yield item
        finally:
            conn.close()
