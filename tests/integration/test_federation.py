"""Two colonies of real daemons on 127.0.0.1, different owners (docs/federation.md).

Colony A: a0 (founder) and a1 (member, submit, execute, no admit). Colony B: b0
(founder) and b1 (member only). B's daemons bootstrap into the same DHT through a0;
gossip stays per colony (a0 refuses b0's gossip). a0 publishes two private DAGs and
gives B a grant: read of the first and third, submit, 2 capsules a day.

- b0 holds the grant (token): it reads the granted private DAG byte-identical and its
  copy becomes private in B; the other private DAG of A stays refused.
- b0 resolves a label of A under the grant's prefix (`shared-`) and reads its private
  DAG; a label outside the prefix is refused.
- b1 first holds only bad grants (one signed by a1, who lacks admit; one expired):
  A refuses both, naming why, and b1 reads nothing. With none held, A finds the grant
  in the DHT (/colony/grant/<A>/<B>) and b1 reads the DAG.
- b0 submits a capsule that runs in A, reads its receipt through A's nodes and its
  output (private in A) from the executor; the third capsule of the day is refused
  and the refusal names the quota and figures.
- `colony colony status` shows the grant given (with usage) on a0 and held on b0.
- a0 revokes the grant: every A node has the revocation within the stated bound
  (measured), and b1's next read of a granted DAG is refused.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from colony_cluster import Cluster, Node, colony_cmd, deterministic_bytes, wait_for

from overlay.cli.main import main as colony_main
from overlay.core.cid import Cid
from overlay.core.grants import Grant
from overlay.core.wire import cbor_encode
from overlay.runtime.process.identity import KEY_FILE, load_identity
from overlay.runtime.services.grant_store import HELD_FILE
from overlay.runtime.services.trust_state import Trust, parse_colony_id

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

#: Stated in docs/federation.md: a revocation reaches every node of the colony that
#: gave the grant within this (gossip dissemination; a node that missed it: push-pull).
REVOCATION_BOUND_S = 10.0


def run(n: Node, *args: str) -> tuple[int, str, str]:
    """`colony ARGS` in this process (no interpreter start-up per command)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = colony_main(["--home", str(n.home), *args])
    return rc, out.getvalue(), err.getvalue()


def cmd(n: Node, *args: str) -> str:
    rc, out, err = run(n, *args)
    assert rc == 0, f"colony {' '.join(args)} failed: {err[-2000:]}"
    return out


def publish(n: Node, path: Path) -> str:
    return str(json.loads(cmd(n, "publish", str(path), "--json"))["cid"])


def fetch_ok(n: Node, cid: str, out: Path) -> None:
    got = json.loads(cmd(n, "fetch", cid, "-o", str(out), "--json"))
    assert got["done"] and not got["error"], got


def fetch_refused(n: Node, cid: str, out: Path) -> None:
    """The wants get no answer (as from a node without the blocks)."""
    with pytest.raises((subprocess.TimeoutExpired, AssertionError)):
        colony_cmd(n.home, "fetch", cid, "-o", str(out), "--json", timeout=3)
    assert not out.exists()


def log_lines(n: Node, *needles: str) -> list[str]:
    return [ln for ln in n.log.read_text().splitlines() if all(s in ln for s in needles)]


class World:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.a = Cluster(root / "a", 2)
        self.b = Cluster(root / "b", 2)
        self.files: dict[str, Path] = {}
        self.cids: dict[str, str] = {}
        self.serial = ""

    @property
    def a0(self) -> Node:
        return self.a.nodes[0]

    def start(self) -> None:
        (a0, a1), (b0, b1) = self.a.nodes, self.b.nodes
        self.a.prepare()
        self.b.prepare()
        self.a_id = json.loads(cmd(a0, "colony", "create", "alpha", "--json"))["colony"]
        self.b_id = json.loads(cmd(b0, "colony", "create", "beta", "--json"))["colony"]
        for founder, member, roles in ((a0, a1, "member,submit,execute"), (b0, b1, "member")):
            tok = self.root / f"{member.home.name}-{founder.home.parent.name}.token"
            cmd(founder, "cert", "issue", member.peer_id, "--roles", roles, "--expires", "1d",
                "--bootstrap", founder.addr, "--out", str(tok))  # fmt: skip
            cmd(member, "join", str(tok))
        a0.start()
        wait_for(a0.up, 60, "a0's API")
        # B's founder enters the shared DHT through a0; b1 joins B through b0.
        a1.start([a0.addr])
        b0.start([a0.addr])
        wait_for(b0.up, 60, "b0's API")
        b1.start([b0.addr, a0.addr])
        for n in (a1, b1):
            wait_for(n.up, 60, f"{n.home.name}'s API")
        self.a.wait_converged(30)
        self.b.wait_converged(30)
        for name, seed in (("secret", 1), ("other", 2), ("later", 3)):
            p = self.root / f"{name}.bin"
            p.write_bytes(deterministic_bytes(300_000, seed=seed))
            self.files[name], self.cids[name] = p, publish(a0, p)
            cmd(a0, "colony", "private", self.cids[name])
        out = cmd(a0, "grant", "issue", self.b_id, "--roles", "read,submit",
                  "--root", self.cids["secret"], "--root", self.cids["later"],
                  "--prefix", "shared-", "--capsules", "2", "--expires", "1d",
                  "--json")  # fmt: skip
        row = json.loads(out)
        assert row["dht"]["dht_acks"] >= 1, row
        self.serial = row["serial"]
        (self.root / "grant.token").write_text(row["token"])
        cmd(b0, "grant", "accept", str(self.root / "grant.token"))

    def close(self) -> None:
        self.a.close()
        self.b.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = World(tmp_path_factory.mktemp("federation"))
    try:
        w.start()
        yield w
    finally:
        w.close()


def test_granted_dag_is_read_and_the_other_is_not(world: World) -> None:
    (a0, _), (b0, _) = world.a.nodes, world.b.nodes
    fetch_refused(b0, world.cids["other"], world.root / "b0-other.bin")
    fetch_ok(b0, world.cids["secret"], world.root / "b0-secret.bin")
    assert (world.root / "b0-secret.bin").read_bytes() == world.files["secret"].read_bytes()
    assert log_lines(a0, "federation_session", b0.peer_id)
    # B keeps its copy members-only too.
    assert world.cids["secret"] in cmd(b0, "colony", "private").split()
    # Gossip stays per colony: b0 is no member of A.
    assert b0.peer_id not in {r["id"] for r in a0.members()}


def test_a_label_under_the_grant_prefix_is_read(world: World) -> None:
    (a0, _), (b0, _) = world.a.nodes, world.b.nodes
    d = world.root / "shared"
    d.mkdir()
    (d / "data.bin").write_bytes(deterministic_bytes(200_000, seed=4))
    root = json.loads(cmd(a0, "sync", "push", "shared-data", str(d), "--json"))["cid"]
    cmd(a0, "colony", "private", root)
    got = json.loads(cmd(b0, "grant", "label", world.a_id, "shared-data", "--json"))
    assert got["cid"] == root
    fetch_ok(b0, root, world.root / "b0-shared")
    assert (world.root / "b0-shared" / "data.bin").read_bytes() == (d / "data.bin").read_bytes()
    rc, _, err = run(b0, "grant", "label", world.a_id, "private-data")
    assert rc != 0 and "is not under the prefix 'shared-'" in err, err


def test_bad_grants_are_refused_with_reasons_then_the_dht_grant_works(world: World) -> None:
    (a0, a1), (_, b1) = world.a.nodes, world.b.nodes
    now = time.time()
    a1_key = load_identity(a1.home / KEY_FILE)
    a_owner, b_owner = parse_colony_id(world.a_id), parse_colony_id(world.b_id)
    secret = [Cid.parse(world.cids["secret"])]
    non_admit = Grant.issue(a1_key, a_owner, b_owner, ["read"], now, now + 3600, roots=secret,
                            chain=Trust(a1.home).own_chain)  # fmt: skip
    owner_key = Trust(a0.home).owner_key
    assert owner_key is not None
    expired = Grant.issue(owner_key, a_owner, b_owner, ["read"], now - 7200, now - 3600,
                          roots=secret)  # fmt: skip
    held = b1.home / "trust" / HELD_FILE
    held.write_bytes(cbor_encode([{"g": g.to_bytes(), "a": []} for g in (non_admit, expired)]))
    fetch_refused(b1, world.cids["later"], world.root / "b1-bad.bin")
    refused = wait_for(lambda: log_lines(a0, "federation_refused", b1.peer_id), 10,
                       "a0 to log why it refused b1's grants")  # fmt: skip
    text = "\n".join(refused)
    assert "may not admit in this colony: role admit not granted" in text, text
    assert f"grant {expired.serial[:12]} expired at" in text, text
    held.unlink()
    # No grant held: a0 finds the one it gave B in the DHT.
    wait_for(lambda: fetch_ok(b1, world.cids["secret"], world.root / "b1-secret.bin") or True,
             40, "b1 to read the granted DAG through the DHT grant")  # fmt: skip
    assert (world.root / "b1-secret.bin").read_bytes() == world.files["secret"].read_bytes()
    # (b0, a member of B, may have served the blocks: the proof went to a0 first.)
    assert log_lines(a0, "federation_session", b1.peer_id)


def _spec(root: Path, name: str) -> Path:
    p = root / f"{name}.toml"
    p.write_text(f'name = "{name}"\ncommand = ["sh", "-c", "echo {name} > out.txt"]\n'
                 'outputs = ["out.txt"]\nmaxexectime_s = 30\n')  # fmt: skip
    return p


def test_capsule_runs_in_a_receipt_readable_and_quota_refusal(world: World) -> None:
    (b0, _) = world.b.nodes[:1] * 2
    a_ids = {n.peer_id for n in world.a.nodes}
    first = json.loads(cmd(b0, "grant", "submit", world.a_id, str(_spec(world.root, "one")),
                           "--json"))  # fmt: skip

    def done() -> dict[str, Any] | None:
        rec: dict[str, Any] = json.loads(cmd(b0, "grant", "get", world.a_id, first["id"],
                                             "--json"))  # fmt: skip
        return rec if rec["state"] == "succeeded" else None

    rec = wait_for(done, 60, "B's capsule to succeed in A")
    assert rec["receipt_executor"] in a_ids and rec["exit_status"] == 0 and rec["outputs"]
    assert rec["submitter"] == b0.peer_id
    # Its output is private in A, yet its submitter reads it from the executor.
    assert any(log_lines(n, "federation_outputs", first["id"]) for n in world.a.nodes)
    out = world.root / "b0-out"
    wait_for(lambda: fetch_ok(b0, rec["outputs"][0], out) or True, 40,
             "b0 to read its output (once the executor's provider record is in the DHT)")
    assert (out / "out.txt" if out.is_dir() else out).read_text() == "one\n"
    cmd(b0, "grant", "submit", world.a_id, str(_spec(world.root, "two")))
    rc, _, err = run(b0, "grant", "submit", world.a_id, str(_spec(world.root, "three")))
    assert rc != 0
    assert f"quota exceeded: colony {world.b_id[:4]}" in err, err
    assert f"used 2 of 2 capsules today under grant {world.serial[:12]}" in err, err


def test_status_shows_grants_given_with_usage_and_held(world: World) -> None:
    (b0, _) = world.b.nodes[:1] * 2
    st = json.loads(cmd(world.a0, "colony", "status", "--json"))
    (given,) = st["grants"]["given"]
    assert given["serial"] == world.serial and given["usage"]["capsules"] == 2
    assert given["usage"]["bytes"] >= 300_000  # at least b0's read of the granted DAG
    text = cmd(world.a0, "colony", "status")
    assert f"grant given {world.serial[:12]}" in text and "capsules 2 of 2" in text
    held = json.loads(cmd(b0, "colony", "status", "--json"))["grants"]["held"]
    assert [h["serial"] for h in held] == [world.serial] and held[0]["status"] == "valid"


def test_revoked_grant_is_refused_everywhere_within_the_bound(world: World) -> None:
    (_, b1) = world.b.nodes
    before = [n.api().call("GET", "/v1/trust")["revocations"] for n in world.a.nodes]
    t0 = time.monotonic()
    cmd(world.a0, "grant", "revoke", world.serial[:12])
    for n, k in zip(world.a.nodes, before, strict=True):
        wait_for(lambda n=n, k=k: n.api().call("GET", "/v1/trust")["revocations"] > k,
                 REVOCATION_BOUND_S, f"{n.home.name} to hold the revocation")  # fmt: skip
    took = time.monotonic() - t0
    print(f"grant revocation on every node of A: {took:.2f} s (bound {REVOCATION_BOUND_S:g} s)")
    # b1's session (from the DHT grant, which covers "later") ended with the grant:
    # its wants for that private DAG now go by the outsider rule and get no answer.
    fetch_refused(b1, world.cids["later"], world.root / "b1-later.bin")
    rc, out, _ = run(world.a0, "grant", "show", world.serial[:12], "--json")
    assert rc == 1 and json.loads(out)["status"] == "revoked", out
