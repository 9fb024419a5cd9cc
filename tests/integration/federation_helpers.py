"""Two colonies of real daemons, different owners, and the federation checks both
federation worlds run (docs/federation.md): test_federation.py places the daemons on
127.0.0.1, test_federation_netns.py in network namespaces, one per daemon.

The world (`FederationWorld.start`): colony A (a[0] founder; its other members with
member, submit, execute: no admit) and colony B (b[0] founder; members only). a[0]
publishes four private DAGs ("secret", "other", "later", "guarded") and gives B a
grant: read of "secret", "later" and "guarded" and of labels under `shared-`, submit,
2 capsules a day;
b[0] accepts it. A subclass makes the homes (`prepare`), starts the daemons so that
B's enter the shared DHT through A's (`launch`) and stops them (`close`).

`run`/`cmd` call the `colony` CLI on a node's home: in this process for a node on
127.0.0.1 (no interpreter start-up per command), through `ip netns exec` for a
daemon in a namespace (its API listens on that namespace's loopback).
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import pytest
from colony_cluster import Node, colony_cmd, deterministic_bytes, wait_for
from netns_topology import NsDaemon

from overlay.cli.main import main as colony_main
from overlay.core.cid import Cid
from overlay.core.grants import Grant
from overlay.core.wire import cbor_encode
from overlay.runtime.process.identity import KEY_FILE, load_identity
from overlay.runtime.services.grant_store import HELD_FILE
from overlay.runtime.services.trust_state import Trust, parse_colony_id

Daemon = Node | NsDaemon

#: Stated in docs/federation.md: a revocation reaches every node of the colony that
#: gave the grant within this (gossip dissemination; a node that missed it: push-pull).
REVOCATION_BOUND_S = 10.0
A_MEMBER_ROLES = "member,submit,execute"
B_MEMBER_ROLES = "member"


def run(n: Daemon, *args: str, timeout: float = 120.0, local: bool = False
        ) -> tuple[int, str, str]:  # fmt: skip
    """`colony ARGS` on n's home: (exit code, stdout, stderr). `local`: a command that
    only reads and writes the home (no daemon), run in this process for any node."""
    if isinstance(n, NsDaemon) and not local:
        r = n.topo.run(n.ns, sys.executable, "-m", "overlay.cli.main", "--home", str(n.home),
                       *args, check=False, timeout=timeout)  # fmt: skip
        return r.returncode, r.stdout, r.stderr
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = colony_main(["--home", str(n.home), *args])
    return rc, out.getvalue(), err.getvalue()


def cmd(n: Daemon, *args: str, local: bool = False) -> str:
    rc, out, err = run(n, *args, local=local)
    assert rc == 0, f"colony {' '.join(args)} failed: {err[-2000:]}"
    return out


def api(n: Daemon, method: str, path: str) -> Any:
    """One control-API call (GET/POST without a body)."""
    if isinstance(n, NsDaemon):
        return n.api(method, path)
    return n.api().call(method, path)


def name_of(n: Daemon) -> str:
    return n.name if isinstance(n, NsDaemon) else f"{n.home.parent.name}/{n.home.name}"


def publish(n: Daemon, path: Path) -> str:
    return str(json.loads(cmd(n, "publish", str(path), "--json"))["cid"])


def fetch_ok(n: Daemon, cid: str, out: Path) -> bool:
    """True once the fetch completed (a `wait_for` predicate); raises otherwise."""
    got = json.loads(cmd(n, "fetch", cid, "-o", str(out), "--json"))
    assert got["done"] and not got["error"], got
    return True


def fetch_refused(n: Daemon, cid: str, out: Path) -> None:
    """The wants get no answer (as from a node without the blocks)."""
    with pytest.raises((subprocess.TimeoutExpired, AssertionError)):
        if isinstance(n, NsDaemon):
            rc, _, err = run(n, "fetch", cid, "-o", str(out), "--json", timeout=3)
            assert rc == 0, err
        else:
            colony_cmd(n.home, "fetch", cid, "-o", str(out), "--json", timeout=3)
    assert not out.exists()


def log_lines(n: Daemon, *needles: str) -> list[str]:
    return [ln for ln in n.log.read_text().splitlines() if all(s in ln for s in needles)]


def spec_file(root: Path, name: str) -> Path:
    p = root / f"{name}.toml"
    p.write_text(f'name = "{name}"\ncommand = ["sh", "-c", "echo {name} > out.txt"]\n'
                 'outputs = ["out.txt"]\nmaxexectime_s = 30\n')  # fmt: skip
    return p


class FederationWorld(ABC):
    """The two colonies and A's grant to B (module docstring); subclasses place them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.a: list[Daemon] = []
        self.b: list[Daemon] = []
        self.files: dict[str, Path] = {}
        self.cids: dict[str, str] = {}
        self.a_id = self.b_id = self.serial = self.token = ""

    @property
    def a0(self) -> Daemon:
        return self.a[0]

    @abstractmethod
    def prepare(self) -> None:
        """Fill `a` and `b` with nodes whose homes exist (`colony init` done)."""

    @abstractmethod
    def launch(self) -> None:
        """Start every daemon, B's entering the DHT through A's; return converged."""

    @abstractmethod
    def close(self) -> None:
        """Stop every daemon and remove what the world built."""

    def start(self) -> None:
        self.prepare()
        a0, b0 = self.a[0], self.b[0]
        # No daemon runs yet: these only write the homes.
        self.a_id = json.loads(cmd(a0, "colony", "create", "alpha", "--json", local=True))[
            "colony"]
        self.b_id = json.loads(cmd(b0, "colony", "create", "beta", "--json", local=True))[
            "colony"]
        for founder, members, roles in ((a0, self.a[1:], A_MEMBER_ROLES),
                                        (b0, self.b[1:], B_MEMBER_ROLES)):  # fmt: skip
            for member in members:
                tok = self.root / f"{name_of(member).replace('/', '-')}.token"
                cmd(founder, "cert", "issue", member.peer_id, "--roles", roles, "--expires",
                    "1d", "--bootstrap", founder.addr, "--out", str(tok), local=True)  # fmt: skip
                cmd(member, "join", str(tok), local=True)
        self.launch()
        for name, seed in (("secret", 1), ("other", 2), ("later", 3), ("guarded", 4)):
            p = self.root / f"{name}.bin"
            p.write_bytes(deterministic_bytes(300_000, seed=seed))
            self.files[name], self.cids[name] = p, publish(a0, p)
            cmd(a0, "colony", "private", self.cids[name])
        out = cmd(a0, "grant", "issue", self.b_id, "--roles", "read,submit",
                  "--root", self.cids["secret"], "--root", self.cids["later"],
                  "--root", self.cids["guarded"],
                  "--prefix", "shared-", "--capsules", "2", "--expires", "1d",
                  "--json")  # fmt: skip
        row = json.loads(out)
        assert row["dht"]["dht_acks"] >= 1, row
        self.serial, self.token = row["serial"], row["token"]
        (self.root / "grant.token").write_text(row["token"])
        cmd(b0, "grant", "accept", str(self.root / "grant.token"))


# ---------------------------------------------------------------- the checks


def check_granted_dag_read_and_the_other_not(w: FederationWorld) -> None:
    """b0 holds the grant: it reads the granted private DAG byte-identical and its copy
    becomes private in B; the other private DAG of A stays refused; gossip stays per
    colony."""
    a0, b0 = w.a[0], w.b[0]
    fetch_refused(b0, w.cids["other"], w.root / "b0-other.bin")
    fetch_ok(b0, w.cids["secret"], w.root / "b0-secret.bin")
    assert (w.root / "b0-secret.bin").read_bytes() == w.files["secret"].read_bytes()
    assert log_lines(a0, "federation_session", b0.peer_id)
    # B keeps its copy members-only too.
    assert w.cids["secret"] in cmd(b0, "colony", "private").split()
    # Gossip stays per colony: b0 is no member of A.
    assert b0.peer_id not in {r["id"] for r in api(a0, "GET", "/v1/members")}


def check_label_under_the_prefix_read(w: FederationWorld) -> None:
    """b0 resolves a label of A under the grant's prefix and reads its private DAG; a
    label outside the prefix is refused."""
    a0, b0 = w.a[0], w.b[0]
    d = w.root / "shared"
    d.mkdir()
    (d / "data.bin").write_bytes(deterministic_bytes(200_000, seed=4))
    root = json.loads(cmd(a0, "sync", "push", "shared-data", str(d), "--json"))["cid"]
    cmd(a0, "colony", "private", root)
    got = json.loads(cmd(b0, "grant", "label", w.a_id, "shared-data", "--json"))
    assert got["cid"] == root
    fetch_ok(b0, root, w.root / "b0-shared")
    assert (w.root / "b0-shared" / "data.bin").read_bytes() == (d / "data.bin").read_bytes()
    rc, _, err = run(b0, "grant", "label", w.a_id, "private-data")
    assert rc != 0 and "is not under the prefix 'shared-'" in err, err


def bad_grants(w: FederationWorld) -> dict[str, Grant]:
    """A grant of A to B signed by a1 (a member without admit) and one expired an hour
    ago (signed by A's owner), both for the "guarded" DAG."""
    a0, a1 = w.a[0], w.a[1]
    now = time.time()
    a_owner, b_owner = parse_colony_id(w.a_id), parse_colony_id(w.b_id)
    guarded = [Cid.parse(w.cids["guarded"])]
    non_admit = Grant.issue(load_identity(a1.home / KEY_FILE), a_owner, b_owner, ["read"], now,
                            now + 3600, roots=guarded, chain=Trust(a1.home).own_chain)  # fmt: skip
    owner_key = Trust(a0.home).owner_key
    assert owner_key is not None
    expired = Grant.issue(owner_key, a_owner, b_owner, ["read"], now - 7200, now - 3600,
                          roots=guarded)  # fmt: skip
    return {"non-admit": non_admit, "expired": expired}


def check_bad_grants_refused_then_the_dht_grant_works(w: FederationWorld) -> None:
    """b1 first holds only bad grants: A refuses both, naming why, and b1 reads nothing.
    With none held, A finds the grant in the DHT (/colony/grant/<A>/<B>) and b1 reads."""
    a0, b1 = w.a[0], w.b[1]
    bad = bad_grants(w)
    held = b1.home / "trust" / HELD_FILE
    held.write_bytes(cbor_encode([{"g": g.to_bytes(), "a": []} for g in bad.values()]))
    # "guarded": held by A alone. Not "secret": b0 read it in the first check, and b0
    # serves its colony-mate b1 (B's copy is private to B's members), so whether b1's
    # fetch failed depended on which provider it asked first (the DHT answers the
    # freshest record first since stop 32: b0's). Not "later": a fetch whose client
    # gave up keeps running in the daemon (services/blocks.py) and completes once the
    # DHT grant lets b1 in, and the revocation check reads "later" as refused.
    fetch_refused(b1, w.cids["guarded"], w.root / "b1-bad.bin")
    refused = wait_for(lambda: log_lines(a0, "federation_refused", b1.peer_id), 10,
                       "a0 to log why it refused b1's grants")  # fmt: skip
    text = "\n".join(refused)
    assert "may not admit in this colony: role admit not granted" in text, text
    assert f"grant {bad['expired'].serial[:12]} expired at" in text, text
    held.unlink()
    # No grant held: a0 finds the one it gave B in the DHT.
    # ("guarded" again: only a0 can serve it, so the read proves a0 let b1 in.)
    wait_for(lambda: fetch_ok(b1, w.cids["guarded"], w.root / "b1-guarded.bin"),
             40, "b1 to read the granted DAG through the DHT grant")  # fmt: skip
    assert (w.root / "b1-guarded.bin").read_bytes() == w.files["guarded"].read_bytes()
    assert log_lines(a0, "federation_session", b1.peer_id)


def check_capsule_runs_in_a_then_quota_refused(w: FederationWorld) -> None:
    """b0 submits a capsule that runs in A, reads its receipt through A's nodes and its
    output (private in A) from the executor; the third capsule of the day is refused
    naming the quota and the figures."""
    b0 = w.b[0]
    a_ids = {n.peer_id for n in w.a}
    first = json.loads(cmd(b0, "grant", "submit", w.a_id, str(spec_file(w.root, "one")),
                           "--json"))  # fmt: skip

    def done() -> dict[str, Any] | None:
        rec: dict[str, Any] = json.loads(cmd(b0, "grant", "get", w.a_id, first["id"], "--json"))
        return rec if rec["state"] == "succeeded" else None

    rec = wait_for(done, 60, "B's capsule to succeed in A")
    assert rec["receipt_executor"] in a_ids and rec["exit_status"] == 0 and rec["outputs"]
    assert rec["submitter"] == b0.peer_id
    # Its output is private in A, yet its submitter reads it from the executor.
    assert any(log_lines(n, "federation_outputs", first["id"]) for n in w.a)
    out = w.root / "b0-out"
    wait_for(lambda: fetch_ok(b0, rec["outputs"][0], out), 40,
             "b0 to read its output (once the executor's provider record is in the DHT)")
    assert (out / "out.txt" if out.is_dir() else out).read_text() == "one\n"
    cmd(b0, "grant", "submit", w.a_id, str(spec_file(w.root, "two")))
    rc, _, err = run(b0, "grant", "submit", w.a_id, str(spec_file(w.root, "three")))
    assert rc != 0
    assert f"quota exceeded: colony {w.b_id[:4]}" in err, err
    assert f"used 2 of 2 capsules today under grant {w.serial[:12]}" in err, err


def check_status_shows_grants_given_and_held(w: FederationWorld) -> None:
    """`colony colony status`: the grant given (with usage) on a0, held on b0."""
    a0, b0 = w.a[0], w.b[0]
    st = json.loads(cmd(a0, "colony", "status", "--json"))
    (given,) = st["grants"]["given"]
    assert given["serial"] == w.serial and given["usage"]["capsules"] == 2
    assert given["usage"]["bytes"] >= 300_000  # at least b0's read of the granted DAG
    text = cmd(a0, "colony", "status")
    assert f"grant given {w.serial[:12]}" in text and "capsules 2 of 2" in text
    held = json.loads(cmd(b0, "colony", "status", "--json"))["grants"]["held"]
    assert [h["serial"] for h in held] == [w.serial] and held[0]["status"] == "valid"


def revoke_everywhere(w: FederationWorld) -> tuple[float, float]:
    """a0 revokes the grant: every A node holds the revocation within the stated bound
    (measured), and b1's next read of a granted DAG is refused. Returns (unix time
    just before the revocation, seconds until every A node held it)."""
    b1 = w.b[1]
    before = [api(n, "GET", "/v1/trust")["revocations"] for n in w.a]
    t0_wall, t0 = time.time(), time.monotonic()
    cmd(w.a[0], "grant", "revoke", w.serial[:12])
    for n, k in zip(w.a, before, strict=True):

        def held(n: Daemon = n, k: int = k) -> bool:
            return bool(api(n, "GET", "/v1/trust")["revocations"] > k)

        wait_for(held, REVOCATION_BOUND_S, f"{name_of(n)} to hold the revocation")
    took = time.monotonic() - t0
    print(f"grant revocation held by every node of A ({len(w.a)}): {took:.2f} s "
          f"(bound {REVOCATION_BOUND_S:g} s)")
    # b1's session (from the DHT grant, which covers "later") ended with the grant:
    # its wants for that private DAG now go by the outsider rule and get no answer.
    fetch_refused(b1, w.cids["later"], w.root / "b1-later.bin")
    rc, out, _ = run(w.a[0], "grant", "show", w.serial[:12], "--json")
    assert rc == 1 and json.loads(out)["status"] == "revoked", out
    return t0_wall, took
