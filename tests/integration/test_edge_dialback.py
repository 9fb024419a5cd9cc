"""`/colony/dialback/1.0.0` against a real daemon: it dials back only the
IP the request came from, refuses malformed requests and requesters over its rate
limit with a reason, and stays up. Loopback only; no root needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from colony_cluster import Cluster

from overlay.core.crypto import KeyPair
from overlay.p2p.reachability import PROTO_DIALBACK, GuardConfig
from overlay.runtime.net.transport import RemoteError, Transport

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]
BURST = GuardConfig().per_ip_burst


def test_dialback_dials_only_the_observed_ip_and_rate_limits(tmp_path: Path) -> None:
    with Cluster(tmp_path, 1) as c:
        node = c.nodes[0]
        outcome: dict[str, Any] = {}

        async def main() -> None:
            async with Transport.open(KeyPair.generate(), ["/ip4/127.0.0.1/tcp/0"]) as t:
                port = int(t.listen_addrs[0].split("/tcp/")[1].split("/")[0])
                peer = await t.connect(node.addr)
                with pytest.raises(RemoteError, match="must be a map"):
                    await t.request(peer, PROTO_DIALBACK, "garbage", timeout=20)
                with pytest.raises(RemoteError, match="addrs"):
                    await t.request(peer, PROTO_DIALBACK, {"addrs": ["x"] * 50}, timeout=20)
                # We name other hosts; it must dial 127.0.0.1 (where we connect from).
                req = {"addrs": [f"/ip4/192.0.2.7/tcp/{port}", "/ip4/198.51.100.1/tcp/9"],
                       "t_ms": 0}
                outcome["first"] = await t.request(peer, PROTO_DIALBACK, req, timeout=30)
                for _ in range(BURST - 1):
                    await t.request(peer, PROTO_DIALBACK, req, timeout=30)
                with pytest.raises(RemoteError, match="rate limit"):
                    await t.request(peer, PROTO_DIALBACK, req, timeout=30)

        trio.run(main)
        first = outcome["first"]
        assert first["observed"].startswith("/ip4/127.0.0.1/tcp/"), first
        dialled = {r["addr"]: r["ok"] for r in first["results"]}
        port = next(a for a in dialled if not a.endswith("/tcp/9")).split("/tcp/")[1]
        assert dialled == {f"/ip4/127.0.0.1/tcp/{port}": True, "/ip4/127.0.0.1/tcp/9": False}
        assert isinstance(first["t_ms"], int) and first["proc_ms"] >= 0
        # The daemon is fine and counted what it did.
        snap = node.api().call("GET", "/v1/doctor")["reachability"]
        assert snap["served"] == BURST and snap["refused"] == 1, snap
