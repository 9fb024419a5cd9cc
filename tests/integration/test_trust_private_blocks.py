"""Private data in a colony, with real daemons on 127.0.0.1 (docs/trust.md).

n0 founds a colony and publishes two files; it marks one private
(`colony colony private CID`). n1 is a certified member, n2 has no certificate. With
the default `[trust] serve_public = true`, n2 fetches the public file byte-identical
but gets nothing of the private one (n0 logs why), while member n1 fetches both.
Capsule submission uses the same chains: n1 (role `member` only) is refused, n0 runs,
and the outputs and log of its run are marked private by the executor.

The mark travels with the DAG: n1 learns it from n0 with its fetch (n1 never marked
anything itself). Then n0 is killed, so n1 is the only holder: outsider n2 asks n1
for the private DAG and is refused (n1 logs why), while another public DAG that n1
fetched flows from n1 to n2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from colony_cluster import (
    REPO,
    Cluster,
    Node,
    cli,
    colony_cmd,
    deterministic_bytes,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def publish(n: Node, path: Path) -> str:
    final = json.loads(colony_cmd(n.home, "publish", str(path), "--json", timeout=60).stdout)
    assert final["done"]
    return str(final["cid"])


def fetch(n: Node, cid: str, out: Path, timeout: float) -> dict[str, Any]:
    r = colony_cmd(n.home, "fetch", cid, "-o", str(out), "--json", timeout=timeout)
    final: dict[str, Any] = json.loads(r.stdout)
    return final


def fetch_refused(client: Node, server: Node, cid: str, out: Path, within: float) -> str:
    """Start `colony fetch` of a private DAG on `client`; return the line in which
    `server` logs refusing its wants. Then it waits one more second (a block served
    after all would have landed by then) and checks that nothing was written: the
    fetch either still waits or gave up, never done. Event-driven instead of a fixed
    timeout, so the test does not idle while the refusal is long logged."""
    p = subprocess.Popen(
        [sys.executable, "-m", "overlay.cli.main", "--home", str(client.home), "fetch", cid,
         "-o", str(out), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
        env={k: v for k, v in os.environ.items() if not k.startswith("COLONY_")},
    )  # fmt: skip
    try:
        refused = wait_for(
            lambda: [ln for ln in server.log.read_text().splitlines()
                     if "bitswap_private_refused" in ln and client.peer_id in ln],
            within, f"{server.home.name} to log refusing {client.home.name}'s private wants",
        )  # fmt: skip
        try:
            stdout, _ = p.communicate(timeout=1.0)
        except subprocess.TimeoutExpired:
            stdout = ""  # still waiting for blocks nobody will send: as expected
        if stdout:
            assert not json.loads(stdout).get("done"), stdout
        assert not out.exists()
        return str(refused[0])
    finally:
        p.kill()
        p.wait()


def test_private_dag_is_served_to_members_only(tmp_path: Path) -> None:
    c = Cluster(tmp_path / "c", 3)
    try:
        c.prepare()
        n0, n1, n2 = c.nodes
        cli(n0.home, "colony", "create", "lab")
        tok = tmp_path / "n1.token"
        cli(n0.home, "cert", "issue", n1.peer_id, "--roles", "member", "--expires", "1d",
            "--bootstrap", n0.addr, "--out", str(tok))  # fmt: skip
        cli(n1.home, "join", str(tok))
        c.launch()
        c.wait_converged(timeout=30, nodes=[n0, n1])

        public, secret = tmp_path / "public.bin", tmp_path / "secret.bin"
        public.write_bytes(deterministic_bytes(600_000, seed=1))
        secret.write_bytes(deterministic_bytes(600_000, seed=2))
        public_cid, secret_cid = publish(n0, public), publish(n0, secret)
        out = colony_cmd(n0.home, "colony", "private", secret_cid).stdout
        assert "private (members only)" in out

        # Outsider n2: the public dataset comes through, byte-identical ...
        got = fetch(n2, public_cid, tmp_path / "p2.bin", timeout=60)
        assert got["done"] and not got["error"]
        assert (tmp_path / "p2.bin").read_bytes() == public.read_bytes()
        # ... the private one does not (its wants get no answer).
        refused = fetch_refused(n2, n0, secret_cid, tmp_path / "s2.bin", within=20)
        assert "no certificate known" in refused

        # Member n1 gets the private dataset.
        got = fetch(n1, secret_cid, tmp_path / "s1.bin", timeout=60)
        assert got["done"] and not got["error"]
        assert (tmp_path / "s1.bin").read_bytes() == secret.read_bytes()

        # Capsules get roles from the same chains (capsule_service reads
        # trust.capsule_authority): n1 holds only `member`, so custody refuses its
        # submission with the reason; n0 holds `submit` and its capsule runs.
        spec = tmp_path / "hello.toml"
        spec.write_text('name = "hello"\ncommand = ["sh", "-c", "echo hi > out.txt"]\n'
                        'outputs = ["out.txt"]\nmaxexectime_s = 30\n')  # fmt: skip
        r = colony_cmd(n1.home, "capsule", "submit", str(spec), check=False, timeout=60)
        assert r.returncode != 0 and "role submit not granted" in r.stderr, r.stderr
        before = set(cli(n0.home, "colony", "private").split())
        r = colony_cmd(n0.home, "capsule", "submit", str(spec), "--wait", timeout=60)
        assert "succeeded" in r.stdout + r.stderr, r.stdout + r.stderr
        # Its output and log are members-only (marked by the executor, n0).
        marked = set(cli(n0.home, "colony", "private").split()) - before
        assert len(marked) >= 2, marked

        # The mark travelled with n1's copy: n1 learned it from n0 while fetching.
        learned = wait_for(
            lambda: [ln for ln in n1.log.read_text().splitlines()
                     if "private_mark_learned" in ln and secret_cid in ln],
            10, "n1 to learn the private mark from n0",
        )  # fmt: skip
        assert n0.peer_id in learned[0]
        assert secret_cid in cli(n1.home, "colony", "private").split()
        other = tmp_path / "public2.bin"
        other.write_bytes(deterministic_bytes(300_000, seed=3))
        other_cid = publish(n0, other)
        got = fetch(n1, other_cid, tmp_path / "o1.bin", timeout=60)
        assert got["done"] and not got["error"]

        # n1 becomes the only holder (once the DHT names it, as it provides what it
        # fetched). The outsider gets the public DAG from n1 ...
        for cid in (other_cid, secret_cid):

            def named(cid: str = cid) -> bool:
                return n1.peer_id in colony_cmd(
                    n2.home, "dht", "findprovs", cid, check=False, timeout=30).stdout

            wait_for(named, 60, "the DHT to name n1 a provider")
        n0.kill()
        got = fetch(n2, other_cid, tmp_path / "o2.bin", timeout=90)
        assert got["done"] and not got["error"]
        assert (tmp_path / "o2.bin").read_bytes() == other.read_bytes()
        # ... but not the private one: n1 honours n0's mark (its own serve_public is true).
        refused = fetch_refused(n2, n1, secret_cid, tmp_path / "s2b.bin", within=25)
        assert "no certificate known" in refused
    finally:
        c.close()
