"""Federation on real daemons (127.0.0.1): revocation spread and the cost of a proof
(docs/federation.md).

Colony A of `--daemons` nodes (default 3), colony B of one node bootstrapping into the
shared DHT through A's founder. A's founder publishes a private DAG of `--mib` MiB and
gives B a grant to read it.

1. Read: B fetches the granted DAG (its node proves itself to the provider first,
   `/colony/federation/1.0.0`), next to a member of A fetching the same DAG from the
   same provider in the same run (no proof, the member rule): seconds and the ratio.
2. Revocation: wall-clock seconds from a certificate revocation of a spare member of
   A (in-process CLI) until every node of A holds it (`GET /v1/trust` revocations) —
   the limit: the same gossip path — then the same for `colony grant revoke` on the
   nodes still members: ratio grant / certificate.

Run: .venv/bin/python bench/federation.py [--daemons 3] [--mib 8]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import pathlib
import sys
import tempfile
import time

_HERE = pathlib.Path(__file__).resolve().parent
if sys.path and pathlib.Path(sys.path[0] or ".").resolve() == _HERE:
    sys.path[0] = str(_HERE.parent)
sys.path.insert(0, str(_HERE.parent / "tests" / "integration"))

from colony_cluster import Cluster, Node, deterministic_bytes, wait_for  # noqa: E402

from overlay.cli.main import main as colony_main  # noqa: E402


def cli(node: Node, *args: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = colony_main(["--home", str(node.home), *args])
    if rc != 0:
        raise RuntimeError(f"colony {' '.join(args)} failed: {err.getvalue()[-1000:]}")
    return out.getvalue()


def revocations(n: Node) -> int:
    return int(n.api().call("GET", "/v1/trust")["revocations"])


def spread(nodes: list[Node], revoke: list[str], owner: Node) -> float:
    """Seconds from the revoke command until every node holds one more revocation."""
    before = [revocations(n) for n in nodes]
    t = time.perf_counter()
    cli(owner, *revoke)
    for n, k in zip(nodes, before, strict=True):

        def learnt(n: Node = n, k: int = k) -> bool:
            return revocations(n) > k

        wait_for(learnt, 60, f"{n.home.name} to learn it", every=0.01)
    return time.perf_counter() - t


def fetch_s(node: Node, cid: str) -> float:
    t = time.perf_counter()
    got = json.loads(cli(node, "fetch", cid, "--json"))
    if not got["done"] or got["error"]:
        raise RuntimeError(f"fetch failed: {got}")
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--daemons", type=int, default=3, help="nodes of colony A (≥ 3)")
    ap.add_argument("--mib", type=int, default=8, help="size of the granted DAG")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        a, b = Cluster(root / "a", max(3, args.daemons)), Cluster(root / "b", 1)
        try:
            a.prepare()
            b.prepare()
            owner, reader, *rest = a.nodes
            (b0,) = b.nodes
            cli(owner, "colony", "create", "alpha")
            b_id = json.loads(cli(b0, "colony", "create", "beta", "--json"))["colony"]
            for m in (reader, *rest):
                tok = root / f"{m.home.name}.token"
                cli(owner, "cert", "issue", m.peer_id, "--roles", "member", "--expires", "1d",
                    "--bootstrap", owner.addr, "--out", str(tok))  # fmt: skip
                cli(m, "join", str(tok))
            a.launch()
            b0.start([owner.addr])
            wait_for(b0.up, 60, "b0's API")
            a.wait_converged(60)
            data = root / "data.bin"
            data.write_bytes(deterministic_bytes(args.mib << 20, seed=7))
            cid = json.loads(cli(owner, "publish", str(data), "--json"))["cid"]
            cli(owner, "colony", "private", cid)
            token = json.loads(cli(owner, "grant", "issue", b_id, "--roles", "read",
                                   "--root", cid, "--json"))  # fmt: skip
            (root / "g.token").write_text(token["token"])
            cli(b0, "grant", "accept", str(root / "g.token"))
            member_s = fetch_s(reader, cid)
            grantee_s = fetch_s(b0, cid)
            cert_s = spread(a.nodes, ["cert", "revoke", rest[-1].peer_id], owner)
            live = a.nodes[:-1]  # the revoked member hears no more gossip
            grant_s = spread(live, ["grant", "revoke", token["serial"][:12]], owner)
        finally:
            a.close()
            b.close()
    load = os.getloadavg()[0]
    print(f"federation on {len(a.nodes)} + 1 real daemons, 127.0.0.1, load average {load:.2f}")
    print(f"1. read {args.mib} MiB private DAG: member of A (limit) {member_s:6.2f} s")
    print(f"   grantee of B (proof + grant)        {grantee_s:6.2f} s   "
          f"ratio {grantee_s / member_s:.2f}")
    print(f"2. certificate revocation on every A node (limit) {cert_s:6.3f} s")
    print(f"   grant revocation on every A node               {grant_s:6.3f} s   "
          f"ratio {grant_s / cert_s:.2f}")


if __name__ == "__main__":
    main()
