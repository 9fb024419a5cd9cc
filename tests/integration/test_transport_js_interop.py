"""Interop with js-libp2p 3.x: TCP + Noise + Yamux, identify and ping, both directions.

The js peer (tests/integration/js/peer.mjs) is installed with `npm ci` from the
committed package.json + package-lock.json into a cache directory keyed by the
lock file's hash, so node_modules never lands in the repository and a second run
reuses it. Skipped, with the reason, only when node or npm is not installed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import trio

from overlay.core.crypto import KeyPair
from overlay.core.ids import PeerId
from overlay.runtime.net.transport import Transport, TransportConfig

JS_DIR = Path(__file__).parent / "js"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def _install() -> Path:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("js-libp2p interop needs node and npm (not installed)")
    lock = (JS_DIR / "package-lock.json").read_bytes()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    cache = base / "colony" / "js-interop" / hashlib.sha256(lock).hexdigest()[:16]
    if not (cache / "node_modules" / ".package-lock.json").exists():
        cache.mkdir(parents=True, exist_ok=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copyfile(JS_DIR / name, cache / name)
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=cache, check=True, timeout=180, capture_output=True,
        )
    shutil.copyfile(JS_DIR / "peer.mjs", cache / "peer.mjs")
    return cache


class JsPeer:
    """The js-libp2p process, spoken to one JSON line at a time."""

    def __init__(self, proc: trio.Process) -> None:
        self.proc = proc
        self._buf = b""

    async def line(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        with trio.fail_after(30):
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


@pytest.mark.parametrize("stack", ["native", "py-libp2p"])
def test_js_libp2p_dials_us_and_we_dial_it(stack: str) -> None:
    cache = _install()

    async def main() -> None:
        cfg = TransportConfig(stack=stack)
        async with Transport.open(KeyPair.generate(), ["/ip4/127.0.0.1/tcp/0"], cfg) as t:
            proc = await trio.lowlevel.open_process(
                ["node", "peer.mjs"], cwd=cache,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            )
            try:
                js = JsPeer(proc)
                ready = await js.line()
                assert ready["event"] == "ready"
                js_id = PeerId.from_base58(ready["peerId"])

                # js dials us: Noise + Yamux negotiate, js pings us, identify runs.
                r = await js.call(cmd="dial_ping", addr=t.addrs[0])
                assert r["remotePeer"] == str(t.peer_id)
                assert r["rttMs"] >= 0
                assert "/ipfs/ping/1.0.0" in r["protocols"]
                assert "/ipfs/id/1.0.0" in r["protocols"]
                assert r["agentVersion"].startswith(
                    "colony/" if stack == "native" else "py-libp2p"
                )

                # We ping js on that connection and read what identify told us.
                assert js_id in t.connected_peers()
                rtts = await t.ping(js_id, count=2)
                assert len(rtts) == 2
                info = await t.identify(js_id)
                assert "/ipfs/ping/1.0.0" in info.protocols
                assert info.agent_version is not None and "js-libp2p" in info.agent_version
                await t.disconnect(js_id, "test: now dial the other way")
                with trio.fail_after(10):
                    while js_id in t.connected_peers():
                        await trio.sleep(0.02)

                # We dial js: a fresh connection from our side.
                assert await t.connect(ready["addrs"][0]) == js_id
                rtts = await t.ping(js_id, count=2)
                assert len(rtts) == 2
                info = await t.identify(js_id)
                assert "/ipfs/id/1.0.0" in info.protocols
                # js reports where it sees our connection come from.
                assert info.observed_addr is not None
                assert info.observed_addr.startswith("/ip4/127.0.0.1/tcp/")
                peer_info = await js.call(cmd="peer_info", peerId=str(t.peer_id))
                assert "/ipfs/ping/1.0.0" in peer_info["protocols"]
                await js.call(cmd="stop")
            finally:
                with trio.move_on_after(5):
                    await proc.wait()
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()

    trio.run(main)
