"""Bitswap 1.2.0 interop with helia (js-libp2p TCP + Noise + Yamux, @helia/bitswap).

(a) helia fetches, by CID, datasets `colony publish`ed on a real daemon (CIDv1 with
    raw leaves and CIDv0, several blocks each) and the bytes match;
(b) the daemon `colony fetch`es a dataset added to helia, and the bytes match;
on both network stacks under the transport (native and py-libp2p).
helia has no routers and no DHT: every block it gets came over Bitswap from our
daemon, and the daemon, finding no DHT provider, asks its connected peers (helia).

The helia peer (tests/integration/js_bitswap/peer.mjs) is installed with `npm ci` from
the committed package.json + package-lock.json into a cache directory keyed by the
lock file's hash (node_modules never lands in the repository; a second run reuses
it). `undici` is overridden to 7.x: @libp2p/http pulls undici 8, which needs node 22.
Skipped, with the reason, only when node/npm is missing or the npm registry is
unreachable.
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
from colony_cluster import Cluster, colony_cmd, deterministic_bytes

JS_DIR = Path(__file__).parent / "js_bitswap"
NETWORK_ERRORS = ("ENOTFOUND", "EAI_AGAIN", "ECONNREFUSED", "ETIMEDOUT", "ENETUNREACH",
                  "ECONNRESET", "network")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]  # first run: npm ci


def install_js_peers() -> Path:
    """`npm ci` the js peers once per lock file; return the directory to run them in."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("helia interop needs node and npm (not installed)")
    lock = (JS_DIR / "package-lock.json").read_bytes()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    cache = base / "colony" / "js-bitswap" / hashlib.sha256(lock).hexdigest()[:16]
    if not (cache / "node_modules" / ".package-lock.json").exists():
        cache.mkdir(parents=True, exist_ok=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copyfile(JS_DIR / name, cache / name)
        r = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=cache, timeout=300, capture_output=True, text=True,
        )
        if r.returncode != 0:
            if any(e in r.stderr for e in NETWORK_ERRORS):
                pytest.skip(f"npm registry unreachable, cannot install helia: {r.stderr[-300:]}")
            raise AssertionError(f"npm ci failed ({r.returncode}): {r.stderr[-2000:]}")
    for script in JS_DIR.glob("*.mjs"):
        shutil.copyfile(script, cache / script.name)
    return cache


class Helia:
    """The helia process, spoken to one JSON line at a time (blocking, bounded)."""

    def __init__(self, cache: Path, log: Path) -> None:
        self._log = open(log, "wb")  # noqa: SIM115 (closed in close(), lives with the process)
        self.proc = subprocess.Popen(
            ["node", "peer.mjs"], cwd=cache, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self._log, start_new_session=True,
        )
        ready = self._line(60)
        assert ready.get("event") == "ready", ready
        self.peer_id: str = ready["peerId"]
        self.addr: str = ready["addrs"][0]

    def _line(self, timeout_s: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        import selectors

        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(timeout_s):
                raise AssertionError(f"helia did not answer within {timeout_s:.0f} s")
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"helia exited ({self.proc.poll()})")
        msg: dict[str, Any] = json.loads(line)
        return msg

    def call(self, timeout_s: float = 60.0, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd).encode() + b"\n")
        self.proc.stdin.flush()
        reply = self._line(timeout_s)
        assert reply.get("ok"), reply.get("error")
        return reply

    def close(self) -> None:
        try:
            self.call(timeout_s=10, cmd="stop")
            self.proc.wait(timeout=10)
        except Exception:
            self.proc.kill()
            self.proc.wait(timeout=10)
        finally:
            self._log.close()


@pytest.mark.parametrize("stack", ["native", "py-libp2p"])
def test_helia_and_colony_exchange_datasets_over_bitswap(tmp_path: Path, stack: str) -> None:
    cache = install_js_peers()
    with Cluster(tmp_path / "c", 1, env={"COLONY_NETWORK_STACK": stack}) as c:
        node = c.nodes[0]
        helia = Helia(cache, tmp_path / "helia.log")
        try:
            assert helia.call(cmd="dial", addr=node.addr)["peer"] == node.peer_id

            # (a) helia fetches what the daemon published (1 MiB: 4 leaves + a root).
            for version, size in (("1", 1_000_000), ("0", 600_000)):
                src = tmp_path / f"colony-v{version}.bin"
                src.write_bytes(deterministic_bytes(size, seed=int(version) + 3))
                cid = colony_cmd(node.home, "publish", "--cid-version", version,
                                 str(src)).stdout.strip()
                out = tmp_path / f"helia-got-v{version}.bin"
                got = helia.call(cmd="cat", cid=cid, out=str(out), timeoutMs=60_000)
                assert got["bytes"] == size
                assert out.read_bytes() == src.read_bytes()

            # (b) the daemon fetches what helia added (CIDv1, raw leaves, 5 blocks).
            src = tmp_path / "helia.bin"
            src.write_bytes(deterministic_bytes(1_200_000, seed=11))
            cid = helia.call(cmd="add", path=str(src), cidVersion=1, rawLeaves=True)["cid"]
            out = tmp_path / "colony-got.bin"
            r = colony_cmd(node.home, "fetch", cid, "-o", str(out), timeout=120)
            assert out.read_bytes() == src.read_bytes(), r.stderr
            assert helia.peer_id[-6:] in r.stderr  # blocks by provider: helia's
        finally:
            helia.close()
