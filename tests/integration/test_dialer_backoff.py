"""The edge dialer's back-off and addresses learned after a failed dial
(overlay/runtime/edge/dialer.py), with two real transports on 127.0.0.1.

The flake it pins (docs/reliability.md, 2026-12-06): an outsider first hears of a
member as a DHT "closer peer" without addresses, so every lookup that names it fails
with "no known address" and the dialer's back-off doubles towards 60 s. When a
provider record then brings the member's addresses, the transport lifts its own
back-off (`add_addrs`) but the dialer kept refusing, so a fetch that had just found
its only provider timed out without ever dialling it.
"""

from __future__ import annotations

import pytest
import trio
from edge_stack import ECHO, edge_node

from overlay.runtime.edge import dialer
from overlay.runtime.edge.dialer import DIRECT, DialFailed

pytestmark = pytest.mark.slow

NO_WEBRTC = {"webrtc": False}


@pytest.fixture(autouse=True)
def long_back_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """A first back-off of 30 s instead of 1 s, so a slow machine cannot outlast it
    between two steps of a test."""
    monkeypatch.setattr(dialer, "BACKOFF_MIN_S", 30.0)


def test_new_addresses_lift_the_dialers_back_off() -> None:
    async def main() -> None:
        async with edge_node(set(), edge=NO_WEBRTC) as a, edge_node(set(), edge=NO_WEBRTC) as b:
            # Named without addresses: the dial fails and the peer backs off.
            with pytest.raises(DialFailed, match="no known address"):
                await a.dialer.connect(b.peer)
            # The same (empty) knowledge again is refused at once, without a dial ...
            attempts = a.dialer.stats.attempts.get(DIRECT, 0)
            with pytest.raises(DialFailed, match="backing off"):
                await a.dialer.connect(b.peer)
            assert a.dialer.stats.attempts.get(DIRECT, 0) == attempts
            # ... but an address learned since (a provider record's) is tried at once.
            a.t.add_addrs(b.peer, b.t.listen_addrs)
            path = await a.dialer.connect(b.peer)
            assert path.kind == DIRECT and a.t.is_connected(b.peer)
            assert await a.t.request(b.peer, ECHO, "hi") == ["echo", "hi"]

    trio.run(main)


def test_known_addresses_that_failed_keep_the_back_off() -> None:
    async def main() -> None:
        async with edge_node(set(), edge=NO_WEBRTC) as a, edge_node(set(), edge=NO_WEBRTC) as b:
            dead = b.t.listen_addrs[0].rsplit("/", 1)[0] + "/1"  # port 1: refused
            a.t.add_addrs(b.peer, [dead])
            with pytest.raises(DialFailed, match="could not connect"):
                await a.dialer.connect(b.peer)
            # Learning the same address again is no reason to dial again.
            a.t.add_addrs(b.peer, [dead])
            with pytest.raises(DialFailed, match="backing off"):
                await a.dialer.connect(b.peer)

    trio.run(main)
