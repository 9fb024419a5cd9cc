"""The multi-node half of `colony demo`: a local colony of daemons on 127.0.0.1.

Starts N `colony daemon` processes (separate homes, free ports, the first one as
bootstrap), waits until every node's gossip view lists every member alive, publishes a
generated dataset on node 1, fetches it on two other nodes (the second fetch is served
by both earlier holders), verifies the bytes, shows who served which blocks, sends a
user event, and stops every process it started — also on error or Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from overlay.cli.cmd_node import init_home
from overlay.core.errors import ColonyError
from overlay.runtime.api_client import ApiClient, ApiUnavailable
from overlay.runtime.identity import KEY_FILE, load_identity
from overlay.runtime.ports import free_port

START_TIMEOUT_S = 30.0
CONVERGE_TIMEOUT_S = 60.0


class LocalColony:
    def __init__(self, root: Path, n: int) -> None:
        self.root = root
        self.n = n
        self.homes = [root / f"node{i + 1}" for i in range(n)]
        self.procs: list[subprocess.Popen[bytes]] = []
        self.clients: list[ApiClient] = []
        self.ids: list[str] = []

    def start(self, say: Callable[..., None]) -> None:
        bootstrap: list[str] = []
        for i, home in enumerate(self.homes):
            kp = init_home(home, quiet=True)
            self.ids.append(str(kp.peer_id))
            p2p, api = free_port(), free_port()
            argv = [sys.executable, "-m", "overlay.cli.main", "--home", str(home), "daemon",
                    "--listen", f"/ip4/127.0.0.1/tcp/{p2p}", "--api", f"127.0.0.1:{api}"]
            for b in bootstrap:
                argv += ["--bootstrap", b]
            log = open(home / "daemon.log", "wb")  # noqa: SIM115 - closed with the process
            self.procs.append(subprocess.Popen(
                argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
            ))
            log.close()
            self._wait_api(i, home, api)
            if i == 0:
                bootstrap.append(f"/ip4/127.0.0.1/tcp/{p2p}/p2p/{kp.peer_id}")
            say(f"   node{i + 1}  {kp.peer_id}  p2p :{p2p}  api :{api}")

    def _wait_api(self, i: int, home: Path, port: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.procs[i].poll() is not None:
                tail = (home / "daemon.log").read_text(errors="replace")[-2000:]
                raise ColonyError(f"node{i + 1} exited during start-up:\n{tail}")
            try:
                token = (home / "api.token").read_text().strip()
                client = ApiClient("127.0.0.1", port, token, timeout_s=300)
                client.call("GET", "/v1/id")
                self.clients.append(client)
                return
            except (OSError, ApiUnavailable):
                if time.monotonic() > deadline:
                    raise ColonyError(
                        f"node{i + 1} did not start within {START_TIMEOUT_S:.0f} s"
                    ) from None
                time.sleep(0.1)

    def wait_converged(self) -> float:
        started = time.monotonic()
        while True:
            views = [
                {m["id"] for m in c.call("GET", "/v1/members") if m["state"] == "alive"}
                for c in self.clients
            ]
            if all(len(v) == self.n for v in views):
                return time.monotonic() - started
            if time.monotonic() - started > CONVERGE_TIMEOUT_S:
                sizes = [len(v) for v in views]
                raise ColonyError(f"membership did not converge: views of sizes {sizes}")
            time.sleep(0.2)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)  # graceful leave
        deadline = time.monotonic() + 10
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def _final(items: Any) -> dict[str, Any]:
    last: dict[str, Any] = {}
    for item in items:
        last = item
    return last


def run_colony_demo(root: Path, n: int, dataset: Path, say: Callable[..., None]) -> int:
    from overlay.cli.fmt import human_bytes as _human

    colony = LocalColony(root, n)
    try:
        say(f"7. starting a local colony of {n} daemons on 127.0.0.1")
        colony.start(say)
        took = colony.wait_converged()
        say(f"8. gossip converged in {took:.1f} s: every node sees {n} members alive")
        for m in colony.clients[-1].call("GET", "/v1/members"):
            rtt = "" if m["rtt_ms"] is None else f"  rtt {m['rtt_ms']:.1f} ms"
            me = f"  (node{n} itself)" if m["self"] else ""
            say(f"   {m['id']}  {m['state']}{rtt}{me}")
        pub = _final(colony.clients[0].stream("POST", "/v1/publish", {"path": str(dataset)}))
        cid = pub["cid"]
        say(f"9. node1 published {dataset.name}/: {cid}")
        say(f"   {pub['blocks']} blocks, {_human(pub['size'])}; "
            f"announced to the DHT with {pub['provide']['lookups']} lookup(s)")
        provs = colony.clients[1].call("POST", "/v1/dht/findprovs", {"cid": cid})
        say(f"10. node2 asks the DHT who provides it: {len(provs['providers'])} provider(s) "
            f"in {provs['hops']} hop(s)")
        for i in (1, n - 1):
            res = _final(colony.clients[i].stream("POST", "/v1/fetch", {"cid": cid}))
            by = ", ".join(
                f"node{colony.ids.index(p) + 1}: {k}" for p, k in res["providers"].items()
            )
            say(f"11. node{i + 1} fetched {res['blocks_fetched']} blocks "
                f"({_human(res['bytes_fetched'])}); blocks came from {by}")
            time.sleep(1.0)  # let the fetcher's provider record land before the next fetch
        _verify(colony.homes[n - 1], cid, dataset)
        say(f"12. node{n} exported the dataset from its own store: byte-identical to the original")
        colony.clients[2].call("POST", "/v1/events/send",
                               {"name": "demo", "payload": "hello from node3"})
        say("13. node3 sent a user event to the colony (see `colony events watch`)")
    finally:
        colony.stop()
        say(f"14. stopped all {n} daemons (graceful leave)")
    return 0


def _verify(home: Path, cid: str, original: Path) -> None:
    from store.blockstore import open_home_store
    from store.cid import Cid
    from store.exporter import Exporter

    out = home / "exported"
    with open_home_store(home) as store:
        Exporter(store).get(Cid.parse(cid), out)
    for f in sorted(original.rglob("*")):
        if f.is_file() and (out / f.relative_to(original)).read_bytes() != f.read_bytes():
            raise ColonyError(f"demo: {f.relative_to(original)} differs after the fetch")
    load_identity(home / KEY_FILE)
