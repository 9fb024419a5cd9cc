"""The daemon's trustless HTTP gateway: configuration, serving policy, the optional
fetch of a missing root, and the listener (docs/gateway.md).

`[gateway] listen = "HOST:PORT"` turns it on (off by default). It is read-only and
anonymous, so its clients are treated as peers outside the colony: it serves what
Bitswap would serve such a peer (services/trust.py `filter_bitswap`) and nothing
else. In open mode (no colony) that is every stored block; in colony mode, nothing
when `[trust] serve_public = false`, and never a block of a DAG marked private (here,
or fetched under another member's mark). A refused block answers 404 exactly like a
missing one.

A non-recursive gateway by default (PATH_GATEWAY.md "Recursive vs non-recursive"):
it answers from the local store and says 404 for what is not there. With
`[gateway] fetch = true`, a request whose root block is missing first fetches that
root's DAG through the node's one DAG fetch (services/blocks.py), bounded by
`fetch_timeout_s` (504 when it runs out; 502 when the fetch fails). What arrives is
stored (and then provided, like any fetched DAG) and served by the same rules.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
import trio

from overlay.core.cid import Cid
from overlay.core.errors import ColonyError, ConfigError
from overlay.runtime.gateway.dag import NotServed
from overlay.runtime.gateway.handler import Planner, text_reply
from overlay.runtime.gateway.httpserver import HttpRequest, HttpServer, Reply
from overlay.runtime.gateway.request import HttpError, content_path

if TYPE_CHECKING:
    from trio_typing import TaskStatus

    from overlay.runtime.services.trust import TrustService
    from store.blockstore import BlockStore

log = structlog.get_logger("colony.gateway")

#: Worker threads the gateway's store reads may use at once (trio's default pool is 40).
WORKER_THREADS = 8
#: A DAG fetch: returns once every block of the root's DAG is stored.
Fetch = Callable[[Cid], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """`[gateway]` of config.toml."""

    listen: str = ""
    fetch: bool = False
    fetch_timeout_s: int = 30
    max_connections: int = 64

    @classmethod
    def from_config(cls, conf: dict[str, dict[str, Any]]) -> GatewayConfig:
        g = conf["gateway"]
        c = cls(str(g["listen"]), bool(g["fetch"]), int(g["fetch_timeout_s"]),
                int(g["max_connections"]))
        if c.fetch_timeout_s <= 0 or c.max_connections <= 0:
            raise ConfigError("[gateway] fetch_timeout_s and max_connections must be positive")
        host, _, port = c.listen.rpartition(":")
        if c.listen and (not host or not port.isdigit() or int(port) > 65535):
            raise ConfigError(f"[gateway] listen {c.listen!r} is not HOST:PORT "
                              '(e.g. "127.0.0.1:8080"; "" turns the gateway off)')
        return c


class TrustPolicy:
    """Serve a block to an anonymous client only when Bitswap would serve it to a
    peer outside the colony (the rule of services/trust.py `filter_bitswap`)."""

    def __init__(self, trust: TrustService) -> None:
        self._svc = trust
        self.refused = 0

    def prepare(self) -> None:
        """Before each request: while a private DAG is being fetched its block set
        grows, so recompute it (what Bitswap does per want list)."""
        if self._svc.trust.enabled and self._svc.growing:
            self._svc.refresh_private()

    def __call__(self, cid: Cid) -> None:
        t = self._svc.trust
        if not t.enabled:
            return
        if not t.serve_public or cid.multihash in self._svc.private:
            self.refused += 1
            raise NotServed(cid)


class Gateway:
    def __init__(self, store: BlockStore, policy: TrustPolicy, config: GatewayConfig,
                 fetch: Fetch | None = None) -> None:
        self.store = store
        self.policy = policy
        self.config = config
        self._fetch = fetch if config.fetch else None
        self.planner = Planner(store, policy)
        #: Store reads of the gateway run on at most this many threads, so a busy
        #: gateway cannot take every worker thread from the rest of the daemon.
        self.threads = trio.CapacityLimiter(WORKER_THREADS)
        self.http = HttpServer(self.handle, max_connections=config.max_connections,
                               threads=self.threads)
        self.fetched = 0

    async def handle(self, req: HttpRequest) -> Reply:
        self.policy.prepare()
        early = await self._before(req)
        if early is not None:
            return early
        return await trio.to_thread.run_sync(self.planner.plan, req, limiter=self.threads)

    async def _before(self, req: HttpRequest) -> Reply | None:
        """`only-if-cached` (412) and the optional fetch of a missing root."""
        if not req.path.startswith("/ipfs/") or req.method not in ("GET", "HEAD"):
            return None
        try:
            root = content_path(req.path).root
        except HttpError:
            return None  # the planner answers with the reason
        if self.store.has(root) and self._served(root):
            return None
        # Not here, or here but not public: both look the same from outside.
        if "only-if-cached" in (req.header("cache-control") or ""):
            return Reply(412)
        if self._fetch is None:
            return None
        with trio.move_on_after(self.config.fetch_timeout_s) as scope:
            try:
                await self._fetch(root)
            except ColonyError as e:
                return text_reply(502, f"could not fetch {root}: {e}")
        if scope.cancelled_caught:
            return text_reply(504, f"fetching {root} took longer than "
                                   f"{self.config.fetch_timeout_s} s; try again later")
        self.fetched += 1
        return None

    def _served(self, root: Cid) -> bool:
        try:
            self.policy(root)
        except NotServed:
            return False
        return True

    async def serve(
        self, host: str, port: int, task_status: TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            await self.http.serve(host, port, task_status=task_status)
        except OSError as e:  # the port is taken, the address is not ours
            raise ConfigError(f"[gateway] listen {host}:{port}: {e.strerror or e}") from None

    def stats(self) -> dict[str, int]:
        return {"requests": self.http.requests, "bytes_sent": self.http.bytes_sent,
                "streams_broken": self.http.streams_broken, "busy": self.http.busy,
                "refused": self.policy.refused,
                "fetched": self.fetched}


__all__ = ["Gateway", "GatewayConfig", "TrustPolicy"]
