"""Test helper: real libp2p transports on 127.0.0.1 with the edge stack (signal,
relay, dialer, aiortc bridge) composed as the daemon does (overlay.runtime.edge.dialer.
open_edge). Used by test_webrtc_*.py and test_relay_*.py."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from overlay.core.crypto import KeyPair
from overlay.core.ids import PeerId
from overlay.runtime.edge.dialer import Dialer
from overlay.runtime.edge.stack import open_edge
from overlay.runtime.net.transport import Transport, TransportConfig
from overlay.runtime.process.config import DEFAULTS

#: Both network stacks under the transport (overlay/p2p and py-libp2p).
STACKS = ("native", "py-libp2p")

ECHO = "/test/echo/1.0.0"


def skip_without_host_candidates() -> None:
    """aioice gathers host candidates from every interface except 127.0.0.1; on a
    machine with loopback only, ICE has nothing to pair and WebRTC cannot work."""
    import ifaddr
    import pytest

    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str) and ip.ip != "127.0.0.1":
                return
    pytest.skip("no non-loopback IPv4 address: aioice gathers no ICE host candidates")


@dataclass
class EdgeNode:
    keypair: KeyPair
    t: Transport
    dialer: Dialer

    @property
    def peer(self) -> PeerId:
        return self.keypair.peer_id


def conf(**sections: dict[str, Any]) -> dict[str, dict[str, Any]]:
    c = copy.deepcopy(DEFAULTS)
    for name, values in sections.items():
        c.setdefault(name, {}).update(values)
    return c


@asynccontextmanager
async def edge_node(
    members: set[PeerId],
    keypair: KeyPair | None = None,
    stack: str = "native",
    listen: tuple[str, ...] = ("/ip4/127.0.0.1/tcp/0",),
    **sections: dict[str, Any],
) -> AsyncIterator[EdgeNode]:
    kp = keypair or KeyPair.generate()
    async with Transport.open(kp, list(listen), TransportConfig(stack=stack)) as t:

        async def echo(peer: PeerId, obj: Any) -> Any:
            return ["echo", obj]

        t.set_handler(ECHO, on_request=echo)
        async with open_edge(t, kp, conf(**sections), members.__contains__) as d:
            yield EdgeNode(kp, t, d)
