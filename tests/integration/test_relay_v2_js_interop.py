"""Circuit relay v2 interop with js-libp2p 3.x (`@libp2p/circuit-relay-v2`, `@libp2p/dcutr`)
on 127.0.0.1.

1. Our relay, js client: a js node listening on `<our relay>/p2p-circuit` reserves on
   our relay (serve_non_members); our node A dials it at
   `…/p2p/R/p2p-circuit/p2p/<js>` and pings and identifies it over the circuit (js
   sees a limited, relayed connection); then js dials our node B (which holds a
   reservation in our own protocol: the relay stops the non-member's circuit in v2)
   and pings B through it.
2. js relay, our clients: B reserves on a js circuit relay server (our protocol is
   not spoken there, so the dialer falls back to v2 and checks js's voucher), A
   reaches B at `…/p2p/<js relay>/p2p-circuit/p2p/B`, requests and ping run over
   it, and B upgrades the js-relayed connection with DCUtR to a direct one.

js's own DCUtR cannot punch on loopback: it sends and accepts only public addresses
(`isPublicAndDialable`), so the hole punch with a js node needs public addresses
(see docs/edge-nat.md, Known limits). The js peer (js_relay/relay_peer.mjs) is
installed with `npm install` from the committed lock file into a cache directory keyed by
its hash; skipped, with the reason, when node or npm is missing or the install fails
(no registry).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from edge_stack import ECHO, edge_node
from js_deps import npm_args

from overlay.core.crypto import KeyPair
from overlay.core.ids import PeerId
from overlay.p2p.connection import Connection

JS_DIR = Path(__file__).parent / "js_relay"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

RELAY_ON = {"enabled": True, "max_rate": 0, "serve_non_members": True}


def _install() -> Path:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("js-libp2p relay interop needs node and npm (not installed)")
    lock = (JS_DIR / "package-lock.json").read_bytes()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    cache = base / "colony" / "js-relay" / hashlib.sha256(lock).hexdigest()[:16]
    if not (cache / "node_modules" / ".package-lock.json").exists():
        cache.mkdir(parents=True, exist_ok=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copyfile(JS_DIR / name, cache / name)
        try:
            subprocess.run(
                [npm, *npm_args("js_relay")],
                cwd=cache, check=True, timeout=180, capture_output=True,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
            pytest.skip(f"npm install of the js-libp2p relay peer failed (no registry?): {e}")
    # Atomically (a copy, then a rename): a test of another worker may be starting
    # node on this file at this moment (test_transport_quic_js_interop is shared).
    tmp = cache / f"relay_peer.mjs.{os.getpid()}"
    shutil.copyfile(JS_DIR / "relay_peer.mjs", tmp)
    os.replace(tmp, cache / "relay_peer.mjs")
    return cache


class JsPeer:
    """The js-libp2p process, spoken to one JSON line at a time."""

    def __init__(self, proc: trio.Process) -> None:
        self.proc = proc
        self._buf = b""
        self.ready: dict[str, Any] = {}

    @property
    def peer(self) -> PeerId:
        return PeerId.from_base58(self.ready["peerId"])

    async def line(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        with trio.fail_after(40):
            while b"\n" not in self._buf:
                chunk = await self.proc.stdout.receive_some(65536)
                if not chunk:
                    raise AssertionError("js peer exited")
                self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        msg: dict[str, Any] = json.loads(line)
        return msg

    async def call(self, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        await self.proc.stdin.send_all(json.dumps(cmd).encode() + b"\n")
        reply = await self.line()
        assert reply.get("ok"), reply.get("error")
        return reply


@asynccontextmanager
async def js_peer(cache: Path, **opts: Any) -> AsyncIterator[JsPeer]:
    proc = await trio.lowlevel.open_process(
        ["node", "relay_peer.mjs", json.dumps(opts)], cwd=cache,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )
    try:
        js = JsPeer(proc)
        js.ready = await js.line()
        assert js.ready["event"] == "ready", js.ready
        yield js
        await js.call(cmd="stop")
    finally:
        with trio.move_on_after(5):
            await proc.wait()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def wait_for(pred: object, what: str, timeout: float = 20.0) -> None:
    with trio.move_on_after(timeout):
        while not pred():  # type: ignore[operator]
            await trio.sleep(0.05)
        return
    raise AssertionError(f"timed out waiting for {what}")


def test_js_reserves_on_our_relay_and_both_dial_through_it() -> None:
    cache = _install()
    trio.run(_js_client, cache)


async def _js_client(cache: Path) -> None:
    ka, kr, kb = (KeyPair.generate() for _ in range(3))
    members = {k.peer_id for k in (ka, kr, kb)}
    with trio.fail_after(150):
        async with (
            edge_node(members, kr, relay=RELAY_ON) as r,
            edge_node(members, ka, edge={"holepunch": False}) as a,
            edge_node(members, kb) as b,
        ):
            relay_addr = r.t.addrs[0]
            async with js_peer(cache, listen=["/ip4/127.0.0.1/tcp/0",
                                               f"{relay_addr}/p2p-circuit"]) as js:
                circuit = f"{relay_addr}/p2p-circuit/p2p/{js.peer}"
                assert circuit in js.ready["addrs"], js.ready["addrs"]
                book = r.dialer.relay.book
                assert book.kinds[js.peer] == "v2" and js.peer in book.reservations
                # A reaches js through our relay (the standard address, hop CONNECT).
                await a.t.connect(r.t.addrs[0])
                assert await a.t.connect(circuit) == js.peer
                assert a.dialer.paths[js.peer].kind == "relayed"
                assert len(await a.t.ping(js.peer, count=2)) == 2
                info = await a.t.identify(js.peer)
                assert info.agent_version is not None and "js-libp2p" in info.agent_version
                assert "/libp2p/circuit/relay/0.2.0/stop" in info.protocols
                conns = (await js.call(cmd="connections", peerId=str(a.peer)))["connections"]
                assert any(c["limited"] and "/p2p-circuit" in c["remoteAddr"]
                           and c["direction"] == "inbound" for c in conns), conns
                # js dials B through our relay; B reserved in our own protocol, the relay
                # stops js's (a non-member's) circuit in v2.
                await b.t.connect(r.t.addrs[0])
                await b.dialer.relay.reserve(r.peer)
                got = await js.call(cmd="dial_ping",
                                    addr=f"{relay_addr}/p2p-circuit/p2p/{b.peer}")
                assert got["remotePeer"] == str(b.peer) and got["rttMs"] >= 0
                assert got["conn"]["limited"] and "/p2p-circuit" in got["conn"]["remoteAddr"]
                await wait_for(lambda: b.t.is_connected(js.peer), "b to hold the circuit")
                assert b.dialer.paths[js.peer].kind == "relayed"
                rs = r.dialer.relay.status()["relaying"]
                assert rs["circuits_opened"] == 2 and rs["refusals"] == {}, rs
                # B (inbound side) tried DCUtR with js; on loopback js accepts no
                # private address, so the punch fails and the circuit stays.
                await wait_for(lambda: js.peer in b.dialer.holepunch.results  # type: ignore[union-attr]
                               , "b's punch attempt to finish")
                assert b.t.is_connected(js.peer)


def test_we_reserve_on_a_js_relay_and_punch_over_it() -> None:
    cache = _install()
    trio.run(_js_relay, cache)


async def _js_relay(cache: Path) -> None:
    ka, kb = (KeyPair.generate() for _ in range(2))
    members = {ka.peer_id, kb.peer_id}
    edge = {"holepunch_grace_s": 0.5}
    with trio.fail_after(150):
        async with (
            js_peer(cache, relayServer=True) as relay,
            edge_node(members, ka, edge=edge) as a,
            edge_node(members, kb, edge=edge) as b,
        ):
            relay_addr = f"{relay.ready['addrs'][0]}"
            for n in (a, b):
                await n.t.connect(relay_addr)
            # Our protocol is not spoken there: the dialer falls back to v2.
            ttl = await b.dialer._reserve(relay.peer)
            assert ttl > 60 and relay.peer in b.dialer.relay.reservations
            assert b.dialer.relay_v2 is not None and relay.peer in b.dialer.relay_v2.reservations
            assert (await relay.call(cmd="relay_stats"))["reservations"] == 1
            assert await a.t.connect(f"{relay_addr}/p2p-circuit/p2p/{b.peer}") == b.peer
            assert a.dialer.paths[b.peer].kind == "relayed"
            # js's default limit is 128 KiB per relayed connection: small requests only.
            assert await a.t.request(b.peer, ECHO, {"n": 1}) == ["echo", {"n": 1}]
            assert len(await a.t.ping(b.peer, count=1)) == 1
            # B, on the inbound side, punches to A over the js-relayed connection.
            ha = a.t.native_host()
            assert ha is not None
            await wait_for(lambda: ha.direct_connection(b.peer) is not None, "a direct conn")
            await wait_for(lambda: b.dialer.status()["peers"][str(a.peer)]["kind"] == "direct",
                           "b's path to turn direct")
            # After the grace period the circuit is closed, and the transport's streams
            # reopen on the direct connection: more than js's 128 KiB limit flows.
            def circuits() -> int:
                return sum(1 for c in ha.connections(b.peer)
                           if isinstance(c, Connection)
                           and not isinstance(c.stream, trio.SocketStream) and not c.closed)

            await wait_for(lambda: circuits() == 0, "the js-relayed circuit to close")
            for _ in range(4):
                assert await a.t.request(b.peer, ECHO, b"x" * 200_000) == ["echo", b"x" * 200_000]
