"""Federation in network namespaces (issue #20's tests, docs/federation.md): two
colonies of three real daemons each, different owners, every daemon in its own
network namespace; A's and B's on two bridges joined by a router namespace.

```
                        ns rtr (ip_forward)
          bra 10.78.1.1/24                 brb 10.78.2.1/24
       ┌────────┬────────┐         ┌────────┬────────┬────────┐
     ns a0    ns a1    ns a2     ns b0    ns b1    ns b2    ns bx
   .1.10    .1.11    .1.12     .2.10    .2.11    .2.12    .2.50
  founder  member   member    founder  member   member   a member of B
           submit   submit                               with no daemon
           execute  execute                              (federation_probe.py)
```

Each daemon: its own home, libp2p on its address, the API on its namespace's
loopback (the `colony` CLI runs inside the namespace). A's daemons bootstrap through
a0, B's through b0 and a0 (one DHT, across the router); gossip stays per colony.
The world and most checks are federation_helpers.py's, shared with
test_federation.py (two daemons a colony on 127.0.0.1). Here, in addition, the
member of B in ns bx (`colony init` + a certificate from B's owner, no daemon)
speaks the federation protocol to every node of A itself:

- a forged grant (A's genuine grant with its body changed, the signature kept), one
  made up by a stranger key, one signed by a1 (a member without admit) and an
  expired one: each node of A refuses all four, each with its reason;
- the genuine grant is accepted by every node of A; after `colony grant revoke` on
  a0, every node of A refuses it as revoked within the stated bound (measured per
  node).
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from colony_cluster import REPO, Node
from federation_helpers import (
    REVOCATION_BOUND_S,
    FederationWorld,
    bad_grants,
    check_bad_grants_refused_then_the_dht_grant_works,
    check_capsule_runs_in_a_then_quota_refused,
    check_granted_dag_read_and_the_other_not,
    check_label_under_the_prefix_read,
    check_status_shows_grants_given_and_held,
    cmd,
    revoke_everywhere,
)
from federation_probe import parse_output
from netns_topology import NsDaemon, Topology, remove_stale_namespaces, skip_reason, wait_until

from overlay.core.cid import Cid
from overlay.core.crypto import KeyPair
from overlay.core.grants import Grant, GrantToken
from overlay.core.wire import cbor_decode, cbor_encode
from overlay.runtime.services.trust_state import parse_colony_id

_SKIP = skip_reason(tools=("ip", "sysctl"))
pytestmark = [pytest.mark.slow, pytest.mark.timeout(240),
              pytest.mark.skipif(_SKIP is not None, reason=_SKIP or "")]  # fmt: skip

NET = {"a": "10.78.1", "b": "10.78.2"}
PROBE_IP = f"{NET['b']}.50"
HERE = Path(__file__).resolve().parent
PROBE_CODE = (f"import sys; sys.path.insert(0, {str(HERE)!r}); import federation_probe; "
              "federation_probe.main()")  # fmt: skip


class NetnsWorld(FederationWorld):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.topo = Topology(root / "net")
        self.nodes: dict[str, list[NsDaemon]] = {"a": [], "b": []}
        self.probe_ns = ""
        self.probe_home = root / "bx"

    def prepare(self) -> None:
        remove_stale_namespaces()
        from netns_topology import _LIVE

        _LIVE.append(self.topo)  # closed at exit even if the fixture never gets to it
        t = self.topo
        rtr = t._add_ns("rtr")
        t.run(rtr, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        for colony, net in NET.items():
            br = f"br{colony}"
            t.ip(rtr, "link", "add", br, "type", "bridge", "forward_delay", "0")
            t.ip(rtr, "addr", "add", f"{net}.1/24", "dev", br)
            t.ip(rtr, "link", "set", br, "up")
            for i in range(3):
                name = f"{colony}{i}"
                ns = self._plug(name, br, f"{net}.{10 + i}", f"{net}.1")
                self.nodes[colony].append(
                    NsDaemon(t, ns, f"{net}.{10 + i}", self.root / colony / name, name))
        self.probe_ns = self._plug("bx", "brb", PROBE_IP, f"{NET['b']}.1")
        every = self.nodes["a"] + self.nodes["b"]
        for nd in every:
            nd.home.parent.mkdir(parents=True, exist_ok=True)
        with ThreadPoolExecutor(len(every)) as pool:  # `colony init` in each namespace
            list(pool.map(lambda nd: nd.init(), every))
        self.a, self.b = list(self.nodes["a"]), list(self.nodes["b"])

    def _plug(self, name: str, bridge: str, ip: str, gateway: str) -> str:
        """A namespace with eth0 at `ip` on `bridge` of the router, routed through it."""
        t = self.topo
        rtr, ns, port = t.ns("rtr"), t._add_ns(name), f"v{name}"
        t.ip(ns, "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", rtr)
        t.ip(rtr, "link", "set", port, "master", bridge)
        t.ip(rtr, "link", "set", port, "up")
        t.ip(ns, "addr", "add", f"{ip}/24", "dev", "eth0")
        t.ip(ns, "link", "set", "eth0", "up")
        t.ip(ns, "route", "add", "default", "via", gateway)
        return ns

    def launch(self) -> None:
        (a0, a1, a2), (b0, b1, b2) = self.nodes["a"], self.nodes["b"]
        a0.start()
        wait_until(lambda: a0.api("GET", "/v1/id"), 60, "a0's API")
        for nd in (a1, a2, b0):  # B's founder enters the shared DHT through a0
            nd.start([a0.addr])
        wait_until(lambda: b0.api("GET", "/v1/id"), 60, "b0's API")
        for nd in (b1, b2):
            nd.start([b0.addr, a0.addr])
        for colony in self.nodes.values():
            want = {nd.peer_id for nd in colony}
            wait_until(lambda c=colony, w=want: all(w <= nd.alive_ids() for nd in c), 60,
                       f"{'/'.join(nd.name for nd in colony)} to see each other alive")

    def start(self) -> None:
        super().start()
        # The probe: a member of B (B's owner signs its certificate) without a daemon.
        probe = Node(self.probe_home)
        cmd(probe, "init")
        peer = cmd(probe, "id").strip()
        tok = self.root / "bx.token"
        cmd(self.b[0], "cert", "issue", peer, "--roles", "member", "--expires", "1d",
            "--bootstrap", self.b[0].addr, "--out", str(tok), local=True)  # fmt: skip
        cmd(probe, "join", str(tok))

    def close(self) -> None:
        self.topo.close()

    # ------------------------------------------------------------ the probe

    def probe_argv(self, mode: str, grants: list[Grant]) -> list[str]:
        gfile = self.root / f"grants-{time.monotonic_ns()}.cbor"
        gfile.write_bytes(cbor_encode([g.to_bytes() for g in grants]))
        return ["ip", "netns", "exec", self.probe_ns, sys.executable, "-c", PROBE_CODE,
                str(self.probe_home), PROBE_IP, mode, str(gfile),
                *(nd.addr for nd in self.a)]  # fmt: skip

    def probe_once(self, grants: list[Grant]) -> dict[str, Any]:
        r = subprocess.run(self.probe_argv("once", grants), capture_output=True, text=True,
                           timeout=60, cwd=REPO)  # fmt: skip
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        (replies,) = parse_output(r.stdout)
        assert set(replies) == {nd.peer_id for nd in self.a}, replies
        return dict(replies)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetnsWorld]:
    w = NetnsWorld(tmp_path_factory.mktemp("fednet"))
    try:
        w.start()
        yield w
    finally:
        w.close()


def test_granted_dag_is_read_and_the_other_is_not(world: NetnsWorld) -> None:
    check_granted_dag_read_and_the_other_not(world)


def test_a_label_under_the_grant_prefix_is_read(world: NetnsWorld) -> None:
    check_label_under_the_prefix_read(world)


def _forged(genuine: Grant, other: str) -> Grant:
    """A's grant with more in its body (the other private DAG, no quota), the
    signature kept: it no longer verifies."""
    body = cbor_decode(genuine.envelope.body)
    body["roots"] = [*body["roots"], Cid.parse(other).to_bytes()]
    body["quota"] = {}
    env = dataclasses.replace(genuine.envelope, body=cbor_encode(body))
    return Grant(genuine.colony, genuine.grantee, genuine.roles, genuine.roots, genuine.prefix,
                 genuine.quota, genuine.issued, genuine.expires, genuine.chain, env)  # fmt: skip


def test_every_a_node_refuses_bad_grants_with_reasons(world: NetnsWorld) -> None:
    genuine = GrantToken.decode(world.token).grant
    now = time.time()
    stranger = KeyPair.generate()
    made_up = Grant.issue(stranger, parse_colony_id(world.a_id), parse_colony_id(world.b_id),
                          ["read"], now, now + 3600,
                          roots=[Cid.parse(world.cids["other"])])  # fmt: skip
    bad = bad_grants(world)
    replies = world.probe_once([_forged(genuine, world.cids["other"]), made_up,
                                bad["non-admit"], bad["expired"]])  # fmt: skip
    for peer, reply in replies.items():
        text = "\n".join(reply["refused"])
        assert reply["accepted"] == [] and len(reply["refused"]) == 4, (peer, reply)
        assert "grant refused:" in text and "signature on 'colony-grant' does not verify" in text
        assert (f"grant {made_up.serial[:12]} is signed by {str(stranger.peer_id)[:4]}" in text
                and "who is not the owner and shows no certificate chain" in text), text
        assert (f"grant {bad['non-admit'].serial[:12]} is signed by" in text
                and "may not admit in this colony: role admit not granted" in text), text
        assert f"grant {bad['expired'].serial[:12]} expired at" in text, text


def test_bad_grants_are_refused_with_reasons_then_the_dht_grant_works(world: NetnsWorld) -> None:
    check_bad_grants_refused_then_the_dht_grant_works(world)


def test_capsule_runs_in_a_receipt_readable_and_quota_refusal(world: NetnsWorld) -> None:
    check_capsule_runs_in_a_then_quota_refused(world)


def test_status_shows_grants_given_with_usage_and_held(world: NetnsWorld) -> None:
    check_status_shows_grants_given_and_held(world)


def test_revoked_grant_is_refused_by_every_a_node_within_the_bound(world: NetnsWorld) -> None:
    genuine = GrantToken.decode(world.token).grant
    argv = world.probe_argv(f"until-revoked:{REVOCATION_BOUND_S + 5:g}", [genuine])
    probe = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             cwd=REPO)  # fmt: skip
    try:
        assert probe.stdout is not None
        out: list[str] = []
        while not parse_output("".join(out)):  # the first answers: the probe is ready
            line = probe.stdout.readline()
            assert line, "probe exited early: " + "".join(out)[-2000:]
            out.append(line)
        (before,) = parse_output("".join(out))
        assert all(r["accepted"] == [world.serial] for r in before.values()), before
        t0, held_s = revoke_everywhere(world)
        rest, _ = probe.communicate(timeout=REVOCATION_BOUND_S + 30)
    finally:
        if probe.poll() is None:
            probe.kill()
            probe.wait()
    (_, refused_at) = parse_output("".join(out) + rest)
    took = {world_name(world, p): (t - t0 if t is not None else None)
            for p, t in refused_at.items()}  # fmt: skip
    print("grant refused as revoked by each node of A, from `colony grant revoke`: "
          + ", ".join(f"{k} {v:.3f} s" if v is not None else f"{k} never"
                      for k, v in sorted(took.items()))
          + f" (probe polls every 0.1 s; bound {REVOCATION_BOUND_S:g} s; held by every node by "
            f"API polls: {held_s:.2f} s)")
    assert all(v is not None and v <= REVOCATION_BOUND_S for v in took.values()), took


def world_name(w: NetnsWorld, peer: str) -> str:
    return next(nd.name for nd in w.nodes["a"] if nd.peer_id == peer)
