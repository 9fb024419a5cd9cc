"""Start and stop N real `colony daemon` processes on 127.0.0.1 (tests and benches).

Each node gets a temp home (`colony init`), a free libp2p port and a free API port
written into its config.toml (so plain `colony --home H members` finds it, and a
restart with the same home reuses both). Node 0 is the seed; the others bootstrap
through it. Daemons run in their own process group; `close()` (always called by the
context manager, and by `atexit` as a last resort) SIGKILLs every group.

Every wait is a poll of the control API with a deadline; nothing sleeps blindly.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from overlay.cli.cmd_node import init_home
from overlay.cli.main import main as colony_main
from overlay.client import ApiClient
from overlay.runtime.net.ports import free_port

REPO = Path(__file__).resolve().parents[2]
_LIVE: set[subprocess.Popen[bytes]] = set()


def _kill_all() -> None:
    for p in list(_LIVE):
        _killpg(p)


atexit.register(_kill_all)


def _killpg(p: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(p.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        p.wait(timeout=10)
    _LIVE.discard(p)


def colony_cmd(home: Path, *args: str, timeout: float = 120.0,
               check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        [sys.executable, "-m", "overlay.cli.main", "--home", str(home), *args],
        capture_output=True, text=True, timeout=timeout, cwd=REPO,
        env={k: v for k, v in os.environ.items() if not k.startswith("COLONY_")},
    )
    if check and r.returncode != 0:
        raise AssertionError(f"colony {' '.join(args)} failed ({r.returncode}): {r.stderr[-2000:]}")
    return r


def cli(home: Path, *args: str) -> str:
    """Run `colony --home HOME ARGS` in this process; its stdout (fails on a non-zero exit)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(io.StringIO()):
        rc = colony_main(["--home", str(home), *args])
    assert rc == 0, f"colony {' '.join(args)} failed: {buf.getvalue()}"
    return buf.getvalue()


class DaemonExited(RuntimeError):
    """A daemon process died while we waited on it: fail now, not at the deadline."""


def wait_for(pred: Callable[[], Any], timeout: float, what: str, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            v = pred()
            if v:
                return v
        except DaemonExited:
            raise
        except Exception as e:  # a daemon not up yet, a refused connection
            last_exc = e
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}"
                                 + (f" (last error: {last_exc})" if last_exc else ""))
        time.sleep(every)


class Node:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.proc: subprocess.Popen[bytes] | None = None
        self.peer_id = ""
        self.p2p_port = 0
        self.api_port = 0
        self.log = home.parent / f"{home.name}.log"

    @property
    def addr(self) -> str:
        return f"/ip4/127.0.0.1/tcp/{self.p2p_port}/p2p/{self.peer_id}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def api(self, timeout_s: float = 30.0) -> ApiClient:
        return ApiClient.for_home(self.home, timeout_s)

    def init_config(self) -> None:
        """Free 127.0.0.1 ports for libp2p and the API, JSON logs; kept across restarts."""
        self.p2p_port, self.api_port = free_port(), free_port()
        conf = self.home / "config.toml"
        text = conf.read_text()
        text = re.sub(r'(?m)^listen = \[[^\]]*\]',
                      f'listen = ["/ip4/127.0.0.1/tcp/{self.p2p_port}"]', text, count=1)
        text = text.replace('listen = "127.0.0.1:5101"', f'listen = "127.0.0.1:{self.api_port}"')
        text = text.replace('format = "auto"', 'format = "json"')
        conf.write_text(text)

    def start(self, bootstrap: list[str] | None = None, env: dict[str, str] | None = None) -> None:
        argv = [sys.executable, "-m", "overlay.cli.main", "--home", str(self.home), "daemon"]
        for b in bootstrap or []:
            argv += ["--bootstrap", b]
        with open(self.log, "ab") as f:
            self.proc = subprocess.Popen(
                argv, stdout=f, stderr=f, stdin=subprocess.DEVNULL, cwd=REPO,
                start_new_session=True,
                env={**{k: v for k, v in os.environ.items() if not k.startswith("COLONY_")},
                     **(env or {})},
            )
        _LIVE.add(self.proc)

    def up(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise DaemonExited(f"daemon {self.home.name} exited {self.proc.returncode}: "
                               + self.log.read_text()[-2000:])
        return bool(self.api(5).call("GET", "/v1/id"))

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None:
            if sig == signal.SIGKILL:
                _killpg(self.proc)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.proc.pid, sig)

    def members(self, include_gone: bool = False) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.api(10).call(
            "GET", "/v1/members", all="1" if include_gone else None)
        return rows

    def state_of(self, peer_id: str) -> str | None:
        for r in self.members(include_gone=True):
            if r["id"] == peer_id:
                return str(r["state"])
        return None

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")


class Cluster:
    """`with Cluster(tmp, n) as c:` — n daemons up, all bootstrapped through node 0."""

    def __init__(self, root: Path, n: int, start_timeout: float = 90.0,
                 env: dict[str, str] | None = None) -> None:
        self.root = root
        self.nodes = [Node(root / f"n{i:02d}") for i in range(n)]
        self.start_timeout = start_timeout
        self.env = env

    def __enter__(self) -> Cluster:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def start(self) -> None:
        self.prepare()
        self.launch()

    def prepare(self) -> None:
        """Homes, identities and ports for every node; no daemon started."""
        # What `colony init` does, in this process: the suite builds ~50 clusters, and a
        # subprocess per node (plus one per `colony id`) cost each ~1-2 s of start-up.
        # tests/unit/cli and tests/integration/test_cli*.py run the command itself.
        for node in self.nodes:
            node.home.parent.mkdir(parents=True, exist_ok=True)
            node.peer_id = str(init_home(node.home, quiet=True).peer_id)
            node.init_config()

    def launch(self) -> None:
        # Every daemon at once: a node whose seed is not listening yet retries its
        # bootstrap after 1 s (services/bootstrap.py), which is sooner than waiting for
        # the seed's start-up (imports alone are ~1.5 s of CPU) before starting the rest.
        seed = self.nodes[0]
        seed.start(env=self.env)
        for node in self.nodes[1:]:
            node.start([seed.addr], env=self.env)
        for node in self.nodes:
            wait_for(node.up, self.start_timeout, f"daemon {node.home.name} API")

    def wait_converged(self, timeout: float, nodes: list[Node] | None = None) -> None:
        """Every node lists every (given) node as alive."""
        nodes = nodes or self.nodes
        want = {n.peer_id for n in nodes}

        def converged() -> bool:
            for n in nodes:
                alive = {r["id"] for r in n.members() if r["state"] == "alive"}
                if not want <= alive:
                    return False
            return True

        try:
            wait_for(converged, timeout, f"{len(nodes)} nodes to see each other alive", every=0.5)
        except AssertionError as e:
            seen: list[int | str] = []
            for n in nodes:
                try:
                    seen.append(sum(r["state"] == "alive" and r["id"] in want
                                    for r in n.members()))
                except Exception as x:
                    seen.append(repr(x))
            raise AssertionError(f"{e}; alive counts per node: {seen}") from None

    def close(self) -> None:
        for node in self.nodes:
            if node.proc is not None:
                _killpg(node.proc)


@contextlib.contextmanager
def cluster(root: Path, n: int, **kw: Any) -> Iterator[Cluster]:
    with Cluster(root, n, **kw) as c:
        yield c


def deterministic_bytes(n: int, seed: int = 1) -> bytes:
    """n reproducible, incompressible-looking bytes (fast: numpy-free PRNG blocks)."""
    import hashlib

    out = bytearray()
    block = hashlib.sha256(seed.to_bytes(8, "big")).digest()
    # Expand with SHAKE: one call, deterministic for (n, seed).
    out += hashlib.shake_256(block).digest(n)
    return bytes(out)
