"""The SDK's HTTP transport to the control API (synchronous, stdlib only).

Finds the daemon from `<home>/api.addr` (written by the running daemon), else
`<home>/config.toml` (`[api] listen`), and `<home>/api.token`. One HTTP/1.1 request
per call (the daemon is on loopback; a connection costs ~0.1 ms) with a per-call
timeout. Errors are the SDK's hierarchy (overlay/client/errors.py).
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from overlay.client.errors import DaemonUnavailable, from_response
from overlay.runtime.api.server import ADDR_FILE, TOKEN_FILE, split_hostport
from overlay.runtime.process import config as cfg


def daemon_address(home: Path) -> tuple[str, int, str]:
    """(host, port, token) of the daemon whose home is `home`."""
    try:  # the address a running daemon really bound (`--api`, env, port 0)
        listen = (home / ADDR_FILE).read_text().strip()
    except OSError:
        listen = cfg.load(home)["api"]["listen"]
    host, port = split_hostport(listen)
    token_path = home / TOKEN_FILE
    if not token_path.exists():
        raise DaemonUnavailable(
            f"no API token in {home}: is the daemon running? start it with `colony daemon`"
        )
    return host, port, token_path.read_text().strip()


class ApiClient:
    """Raw JSON calls and NDJSON streams; `overlay.client.Colony` wraps it with types."""

    def __init__(self, host: str, port: int, token: str, timeout_s: float = 60.0) -> None:
        self.host, self.port, self.token, self.timeout_s = host, port, token, timeout_s

    @classmethod
    def for_home(cls, home: Path, timeout_s: float = 60.0) -> ApiClient:
        return cls(*daemon_address(home), timeout_s)

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
        except OSError as e:  # refused, reset, timed out
            conn.close()
            raise DaemonUnavailable(
                f"cannot reach the daemon at {self.host}:{self.port} ({e.strerror or e}); "
                "start it with `colony daemon`"
            ) from None
        if resp.status >= 400:
            try:
                err: object = json.loads(resp.read())
            except ValueError:
                err = None
            conn.close()
            raise from_response(resp.status, err, resp.reason)
        return conn, resp

    def call(self, method: str, path: str, body: object = None, **query: object) -> Any:
        conn, resp = self._open(method, path, body, query)
        try:
            data = resp.read()
        except OSError as e:
            raise DaemonUnavailable(f"the daemon stopped answering: {e}") from None
        finally:
            conn.close()
        if resp.getheader("content-type", "").startswith("application/json"):
            return json.loads(data) if data else None
        return data

    def read_bytes(
        self, path: str, chunk_bytes: int = 1 << 20, **query: object
    ) -> Iterator[bytes]:
        """Yield a GET's byte body in pieces as it arrives (a file of any size)."""
        conn, resp = self._open("GET", path, None, query)
        try:
            while piece := resp.read(chunk_bytes):
                yield piece
        except (OSError, http.client.IncompleteRead) as e:
            raise DaemonUnavailable(f"the daemon's answer ended early: {e}") from None
        finally:
            conn.close()

    def stream(
        self, method: str, path: str, body: object = None, **query: object
    ) -> Iterator[Any]:
        """Yield NDJSON items as the daemon produces them; an error line raises."""
        conn, resp = self._open(method, path, body, query)
        try:
            while line := resp.readline():
                item = json.loads(line)
                if isinstance(item, dict) and set(item) == {"error"}:
                    raise from_response(500, item)
                yield item
        except OSError as e:
            raise DaemonUnavailable(f"the daemon stopped answering: {e}") from None
        finally:
            conn.close()
