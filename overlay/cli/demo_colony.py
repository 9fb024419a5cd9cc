"""The multi-node half of `colony demo`: a local colony of daemons on 127.0.0.1.

Starts N `colony daemon` processes (separate homes, free ports; the first one is the
bootstrap and the others start together once it answers), waits until every node's
gossip view lists every member alive, publishes a generated dataset on node 1, fetches
it on two other nodes (the second fetch is served by both earlier holders), verifies
the bytes, then submits a capsule from a node that does not hold the dataset: a shell
command that reads the dataset as an input CID and writes a summary. It shows which
node the custodians placed it on, follows it to its end and reads the output by CID on
yet another node. Every process it started is stopped at the end — also on error,
Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from overlay.cli.cmd_node import init_home
from overlay.cli.fmt import human_bytes as _human
from overlay.client import ApiClient, ApiUnavailable
from overlay.core.errors import ColonyError
from overlay.runtime.net.ports import free_port

START_TIMEOUT_S = 30.0
CONVERGE_TIMEOUT_S = 60.0
CAPSULE_TIMEOUT_S = 60.0

#: The capsule's command: summarise the dataset it gets as inputs/<cid>.
SUMMARY_SCRIPT = r"""set -e
d="inputs/$DATASET"
{
  echo "summary of $DATASET"
  awk -F, 'NR > 1 { n++; s += $2 }
    END { printf "measurements.csv: %d rows, mean value %.2f\n", n, s / n }' \
    "$d/data/measurements.csv"
  for f in "$d"/data/raw/*.bin; do
    cksum < "$f" | awk -v f="$(basename "$f")" '{ printf "%s: %d bytes, crc %s\n", f, $2, $1 }'
  done
} > summary.txt
echo "wrote summary.txt ($(wc -l < summary.txt) lines)"
"""


def summary_spec(dataset_cid: str) -> dict[str, Any]:
    """The capsule spec the demo submits (also written to summarise.json)."""
    return {
        "name": "summarise",
        "command": ["sh", "-c", SUMMARY_SCRIPT],
        "env": {"DATASET": dataset_cid},
        "inputs": [dataset_cid],
        "outputs": ["summary.txt"],
        "maxexectime_s": 60,
        "maxwaittime_s": 30,
        "conditions": {"executor": "subprocess"},
    }


class LocalColony:
    def __init__(self, root: Path, n: int) -> None:
        self.root = root
        self.n = n
        self.homes = [root / f"node{i + 1}" for i in range(n)]
        self.procs: list[subprocess.Popen[bytes]] = []
        self.clients: list[ApiClient] = []
        self.ids: list[str] = []

    def name(self, peer: str | None) -> str:
        """`nodeN` for a peer id of this colony."""
        return f"node{self.ids.index(peer) + 1}" if peer in self.ids else str(peer)

    def start(self, say: Callable[..., None]) -> None:
        """Node 1 first (the bootstrap), then all the others at once."""
        ports = [(free_port(), free_port()) for _ in self.homes]
        for home in self.homes:
            self.ids.append(str(init_home(home, quiet=True).peer_id))
        boot = f"/ip4/127.0.0.1/tcp/{ports[0][0]}/p2p/{self.ids[0]}"
        for i, (p2p, api) in enumerate(ports):
            self._spawn(i, p2p, api, [] if i == 0 else [boot])
            if i == 0:
                self.clients.append(self._wait_api(0, api))
                say(f"   node1  {self.ids[0]}  p2p :{p2p}  api :{api}  (bootstrap)")
        for i, (p2p, api) in enumerate(ports[1:], start=1):
            self.clients.append(self._wait_api(i, api))
            say(f"   node{i + 1}  {self.ids[i]}  p2p :{p2p}  api :{api}")

    def _spawn(self, i: int, p2p: int, api: int, bootstrap: list[str]) -> None:
        home = self.homes[i]
        argv = [sys.executable, "-m", "overlay.cli.main", "--home", str(home), "daemon",
                "--listen", f"/ip4/127.0.0.1/tcp/{p2p}", "--api", f"127.0.0.1:{api}"]
        for b in bootstrap:
            argv += ["--bootstrap", b]
        with open(home / "daemon.log", "wb") as log:
            # Own session: a Ctrl-C in the terminal reaches the demo only, which then
            # stops every daemon gracefully (stop() below).
            self.procs.append(subprocess.Popen(
                argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
            ))

    def _wait_api(self, i: int, port: int) -> ApiClient:
        home = self.homes[i]
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.procs[i].poll() is not None:
                tail = (home / "daemon.log").read_text(errors="replace")[-2000:]
                raise ColonyError(f"node{i + 1} exited during start-up:\n{tail}")
            try:
                token = (home / "api.token").read_text().strip()
                client = ApiClient("127.0.0.1", port, token, timeout_s=300)
                client.call("GET", "/v1/id")
                return client
            except (OSError, ApiUnavailable):
                if time.monotonic() > deadline:
                    raise ColonyError(
                        f"node{i + 1} did not start within {START_TIMEOUT_S:.0f} s "
                        f"(log: {home / 'daemon.log'})"
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


def _final(items: Iterable[dict[str, Any]]) -> dict[str, Any]:
    last: dict[str, Any] = {}
    for item in items:
        last = item
    return last


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (e.g. `timeout`, a CI runner) unwinds like Ctrl-C, so the daemons —
    in sessions of their own — are stopped too."""

    def raise_interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    try:
        old = signal.signal(signal.SIGTERM, raise_interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def run_colony_demo(root: Path, n: int, dataset: Path, say: Callable[..., None]) -> int:
    colony = LocalColony(root, n)
    done = False
    with _sigterm_as_interrupt():
        try:
            say(f"7. starting a local colony of {n} daemons on 127.0.0.1")
            t0 = time.monotonic()
            colony.start(say)
            took = colony.wait_converged()
            say(f"8. all up in {time.monotonic() - t0:.1f} s; gossip converged {took:.1f} s "
                f"after the last start: every node sees {n} members alive")
            cid = _share_dataset(colony, dataset, say)
            if n >= 3:
                _run_capsule(colony, cid, say)
            done = True
        finally:
            colony.stop()
            started = len(colony.procs)
            if done:
                say(f"17. stopped all {started} daemons (graceful leave)")
            else:
                say(f"demo stopped early: stopped the {started} daemon(s) it had started "
                    f"(logs: {colony.root}/node*/daemon.log, kept with --keep or --home)")
    return 0


def _share_dataset(colony: LocalColony, dataset: Path, say: Callable[..., None]) -> str:
    """Publish on node1, find it in the DHT, fetch it on node2 and on the last node."""
    n = colony.n
    for m in colony.clients[-1].call("GET", "/v1/members"):
        rtt = "" if m["rtt_ms"] is None else f"  rtt {m['rtt_ms']:.1f} ms"
        me = f"  (node{n} itself)" if m["self"] else ""
        say(f"   {colony.name(m['id'])}  {m['id']}  {m['state']}{rtt}{me}")
    pub = _final(colony.clients[0].stream("POST", "/v1/publish", {"path": str(dataset)}))
    cid = str(pub["cid"])
    say(f"9. node1 published {dataset.name}/: {cid}")
    say(f"   {pub['blocks']} blocks, {_human(pub['size'])}; "
        f"announced to the DHT with {pub['provide']['lookups']} lookup(s)")
    provs = colony.clients[1].call("POST", "/v1/dht/findprovs", {"cid": cid})
    say(f"10. node2 asks the DHT who provides it: {len(provs['providers'])} provider(s) "
        f"in {provs['hops']} hop(s)")
    for i in sorted({1, n - 1}):
        res = _final(colony.clients[i].stream("POST", "/v1/fetch", {"cid": cid}))
        by = ", ".join(f"{colony.name(p)}: {k}" for p, k in res["providers"].items())
        say(f"11. node{i + 1} fetched {res['blocks_fetched']} blocks "
            f"({_human(res['bytes_fetched'])}); blocks came from {by}")
        if i != n - 1:
            time.sleep(1.0)  # let the fetcher's provider record land before the next fetch
    _verify(colony.homes[n - 1], cid, dataset)
    say(f"12. node{n} exported the dataset from its own store: byte-identical to the original")
    return cid


def _run_capsule(colony: LocalColony, dataset_cid: str, say: Callable[..., None]) -> None:
    """Node3 submits a capsule over the dataset; another node reads its output by CID."""
    sub = 2  # node3: it does not hold the dataset
    spec = summary_spec(dataset_cid)
    spec_file = colony.root / "summarise.json"
    spec_file.write_text(json.dumps(spec, indent=2) + "\n")
    client = colony.clients[sub]
    t0 = time.monotonic()
    r = client.call("POST", "/v1/capsules/submit", {"spec": spec})
    cap = str(r["id"])
    say(f"13. node3 submitted a capsule (signed with its key): {cap}")
    say(f"    sh -c: reads inputs/<dataset CID>, writes summary.txt "
        f"(= `colony capsule submit {spec_file.name} --wait`)")
    if r.get("placement"):
        say(f"    waiting: {r['placement']}")
    final: dict[str, Any] = {}
    for row in client.stream("GET", "/v1/capsules/wait", id=cap,
                             timeout=str(CAPSULE_TIMEOUT_S)):  # fmt: skip
        final = row
        at = f"+{time.monotonic() - t0:.2f} s"
        if row.get("done"):
            break
        where = ""
        if row.get("executor"):
            ex = row["executor"]
            holders = (colony.ids[0], colony.ids[1], colony.ids[-1])
            holds = (" (holds the dataset)" if ex in holders
                     else " (fetches the dataset by CID first)")
            where = f" on {colony.name(ex)}{holds}, lease token {row['token']}"
        say(f"    {at:>8}  {row['state']}{where}")
    ex = final.get("executor") or final.get("receipt_executor")
    say(f"    {'+' + format(time.monotonic() - t0, '.2f') + ' s':>8}  {final['state']} "
        f"on {colony.name(ex)}, exit status {final.get('exit_status')}")
    if final.get("state") != "succeeded":
        raise ColonyError(f"demo: capsule {cap} {final.get('state')}: {final.get('reason')}"
                          f" (see `colony --home {colony.homes[sub]} capsule logs {cap}`)")
    custody = _custodians(colony, cap)
    say(f"14. custody: {custody} — the 3 nodes closest to the capsule id; "
        f"the leader placed it on {colony.name(ex)}")
    out_cid = str(final["outputs"][0])
    say(f"15. its signed receipt names the output summary.txt = {out_cid}")
    # A node that neither submitted nor ran it.
    reader = next(i for i in (3, 1, 0, 4) if i < colony.n and colony.ids[i] != ex and i != sub)
    res = _final(colony.clients[reader].stream("POST", "/v1/fetch", {"cid": out_cid}))
    text = _read(colony.homes[reader], out_cid)
    by = ", ".join(colony.name(p) for p in res["providers"]) or "its own store"
    say(f"16. node{reader + 1} fetched the output by CID (from {by}) and reads it:")
    for line in text.decode(errors="replace").splitlines():
        say(f"    | {line}")
    if "measurements.csv: 4000 rows" not in text.decode(errors="replace"):
        raise ColonyError("demo: the capsule's summary is not what the dataset gives")


def _custodians(colony: LocalColony, cap: str) -> str:
    held = []
    for i, c in enumerate(colony.clients):
        for row in c.call("GET", "/v1/capsules"):
            role = str(row.get("role", ""))
            if row["id"] == cap and ("leader" in role or "custodian" in role):
                held.append(f"node{i + 1}" + (" (leader)" if "leader" in role else ""))
    return ", ".join(sorted(held, key=lambda s: "leader" not in s)) or "?"


def _read(home: Path, cid: str) -> bytes:
    from overlay.core.cid import Cid
    from store.blockstore import open_home_store
    from store.exporter import Exporter

    with open_home_store(home) as store:
        return Exporter(store).read_all(Cid.parse(cid))


def _verify(home: Path, cid: str, original: Path) -> None:
    from overlay.core.cid import Cid
    from store.blockstore import open_home_store
    from store.exporter import Exporter

    out = home / "exported"
    with open_home_store(home) as store:
        Exporter(store).get(Cid.parse(cid), out)
    for f in sorted(original.rglob("*")):
        if f.is_file() and (out / f.relative_to(original)).read_bytes() != f.read_bytes():
            raise ColonyError(f"demo: {f.relative_to(original)} differs after the fetch")
