"""DCUtR hole punching through real NATs, in network namespaces.

Topology (tests/integration/netns_topology.py) with a third site: pub1 (public, seed,
relays), site a and site c each behind an endpoint-independent ("cone") NAT, site b
behind a symmetric NAT (`--random-fully`), site d behind a fourth cone NAT; 20 ms
delay lines, 1 % loss and a rate limit on every WAN link. Five real `colony daemon`
processes; the NAT'd ones dial with `dial_order = ["holepunch", "relay"]` and keep a
reservation at pub1. c and d also listen on QUIC (`/udp/4001/quic-v1`); d punches
over QUIC only (`holepunch_transports = ["quic"]`), a has no QUIC listener.

Asserted:
* a ↔ c (cone ↔ cone): the relay circuit is upgraded to a direct TCP connection by
  DCUtR (simultaneous open through both NATs); `/v1/doctor` on both says `direct`,
  "holepunch"; a dataset published on c is fetched by a byte-identical while pub1
  relays (almost) nothing more;
* c ↔ d (cone ↔ cone, QUIC): the circuit is upgraded to a direct QUIC connection (A
  dials, B sends punch packets through its NAT); the doctor says "quic"; a dataset
  published on d is fetched by c byte-identical over it;
* b ↔ a (symmetric ↔ cone): the punch fails, the connection stays relayed, and
  `/v1/doctor` says why (the symmetric NAT, the punch's own failure reason) — or,
  rarely and unexplained so far, the punch gets through (accepted, and printed).

Bad input and the punch storm are tested on 127.0.0.1 (test_edge_holepunch.py).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from netns_topology import NsDaemon, Topology, skip_reason, wait_until
from test_edge_webrtc_nat import edge_events, set_key, start_through_seed

pytestmark = pytest.mark.slow

_SKIP = skip_reason()
DATASET = 4 * 1024 * 1024
QUIC_DATASET = 1024 * 1024
EI, SYM = "endpoint-independent", "symmetric"


def configure(d: NsDaemon, topo: Topology, *, relay: bool, nat: bool,
              quic: tuple[str, ...] = ()) -> None:
    """`quic`: listen on UDP too and punch over these transports."""
    conf = d.home / "config.toml"
    text = conf.read_text()
    if quic:
        text = set_key(text, "network", "listen", json.dumps(
            [f"/ip4/{d.ip}/tcp/{d.P2P_PORT}", f"/ip4/{d.ip}/udp/{d.P2P_PORT}/quic-v1"]))
        text = set_key(text, "edge", "holepunch_transports", json.dumps(list(quic)))
    text = set_key(text, "edge", "stun", json.dumps([f"stun:{s}" for s in topo.stun_servers]))
    text = set_key(text, "edge", "holepunch_grace_s", "2.0")
    if relay:
        text = set_key(text, "relay", "enabled", "true")
        # Four NAT'd members: up to 6 circuits per member (both ways to 3 others, the
        # failed punches keep theirs); the default 4 per peer would refuse some.
        text = set_key(text, "relay", "max_circuits_per_peer", "8")
        text = set_key(text, "relay", "max_circuits", "32")
    if nat:
        text = set_key(text, "edge", "keep_reservations", "1")
        text = set_key(text, "edge", "dial_order", '["holepunch", "relay"]')
    conf.write_text(text)


def paths(d: NsDaemon) -> dict[str, Any]:
    """peer id → the doctor's path record (kind, via, detail)."""
    return dict(d.api("GET", "/v1/doctor")["connections"]["peers"])


def test_holepunch_cone_to_cone_and_symmetric_falls_back(tmp_path: Path) -> None:
    if _SKIP:
        pytest.skip(_SKIP)
    t0 = time.monotonic()

    def phase(what: str) -> None:
        print(f"{time.monotonic() - t0:6.1f} s  {what}")

    with Topology(tmp_path / "net", delay_ms=20, loss_pct=1, rate_mbit=40,
                  site_nats=(("a", EI), ("b", SYM), ("c", EI), ("d", EI))) as topo:
        ns1, ip1 = next(iter(topo.public.items()))
        nodes = {"pub1": NsDaemon(topo, ns1, ip1, tmp_path / "pub1" / "home", "pub1")}
        for label, site in topo.sites.items():
            nodes[label] = NsDaemon(topo, site.host_ns, site.host_ip,
                                    tmp_path / label / "home", label)
        try:
            _scenario(topo, nodes, tmp_path, phase)
        except BaseException:
            print(edge_events(nodes))
            raise


def _scenario(topo: Topology, nodes: dict[str, NsDaemon], tmp_path: Path, phase: Any) -> None:
    for name, d in nodes.items():
        d.home.parent.mkdir(parents=True)
        d.init()
        quic = {"c": ("tcp", "quic"), "d": ("quic",)}.get(name, ())
        configure(d, topo, relay=name == "pub1", nat=name != "pub1", quic=quic)
    pub1, a, b, c, d = nodes["pub1"], nodes["a"], nodes["b"], nodes["c"], nodes["d"]
    start_through_seed(nodes, "pub1")
    phase("all four alive everywhere")

    def punched(x: NsDaemon, y: NsDaemon) -> bool:
        p = paths(x).get(y.peer_id) or {}
        return p.get("kind") == "direct" and str(p.get("detail", "")).startswith("holepunch")

    wait_until(lambda: punched(a, c) and punched(c, a), 90, "a <-> c punched to direct")
    phase("a <-> c direct through both cone NATs")
    detail = paths(a)[c.peer_id]["detail"] + " / " + paths(c)[a.peer_id]["detail"]
    assert "initiator" in detail and "responder" in detail, detail
    assert detail.count("tcp") == 2, detail  # a has no QUIC listener: TCP punched
    wait_until(lambda: punched(c, d) and punched(d, c), 90, "c <-> d punched to direct")
    detail = paths(c)[d.peer_id]["detail"] + " / " + paths(d)[c.peer_id]["detail"]
    assert detail.count("quic") == 2 and "tcp" not in detail, detail
    phase(f"c <-> d direct over QUIC through both cone NATs ({detail})")

    def fell_back(x: NsDaemon, y: NsDaemon) -> str:
        p = paths(x).get(y.peer_id) or {}
        text = str(p.get("detail", ""))
        return text if p.get("kind") == "relayed" and "holepunch failed" in text else ""

    def outcome() -> str:
        if punched(a, b) or punched(b, a):
            return "punched"
        return fell_back(a, b) or fell_back(b, a)

    why = wait_until(outcome, 120, "a <-> b: the punch to fail and say why")
    if why == "punched":
        # --random-fully should defeat this; bench/holepunch.py saw 1 punch in 10 get
        # through all the same (unexplained, docs/edge-nat.md "Known limits").
        phase("a <-> b: a lucky punch through the symmetric NAT (no fallback to check)")
    else:
        phase(f"a <-> b relayed: {why}")
        if "symmetric" not in why:
            # The punch's verdict came before b's STUN probes had named its NAT (seen
            # once on a loaded machine): the reason is then the punch's own, and the
            # doctor names the symmetric NAT once the probes have.
            assert "holepunch failed: " in why, why
            wait_until(lambda: b.api("GET", "/v1/doctor")["reachability"]["nat_type"]
                       == "symmetric", 60, "b's doctor to name its NAT symmetric")

    # A dataset from c to a over the punched path: pub1 relays (almost) none of it.
    relayed_before = pub1.api("GET", "/v1/doctor")["connections"]["relay"]["relaying"]
    data = os.urandom(DATASET)
    src = tmp_path / "dataset.bin"
    src.write_bytes(data)
    pub = json.loads(c.colony("publish", str(src), "--json", timeout=120))
    out = tmp_path / "fetched.bin"
    got = json.loads(a.colony("fetch", pub["cid"], "-o", str(out), "--json", timeout=180))
    assert got["done"] and not got.get("error"), got
    assert out.read_bytes() == data
    relayed_after = pub1.api("GET", "/v1/doctor")["connections"]["relay"]["relaying"]
    grew = relayed_after["bytes_relayed"] - relayed_before["bytes_relayed"]
    assert grew < DATASET // 4, (grew, relayed_after)
    assert punched(a, c)
    phase(f"{DATASET >> 20} MiB c -> a byte-identical over the punched path "
          f"(relay carried {grew} B meanwhile)")
    punch = a.api("GET", "/v1/doctor")["connections"]["holepunch"]
    assert punch["successes"] >= 1, punch

    # A dataset from d to c over the punched QUIC path.
    data = os.urandom(QUIC_DATASET)
    src = tmp_path / "dataset-quic.bin"
    src.write_bytes(data)
    pub = json.loads(d.colony("publish", str(src), "--json", timeout=120))
    out = tmp_path / "fetched-quic.bin"
    got = json.loads(c.colony("fetch", pub["cid"], "-o", str(out), "--json", timeout=180))
    assert got["done"] and not got.get("error"), got
    assert out.read_bytes() == data
    assert punched(c, d)
    punch = d.api("GET", "/v1/doctor")["connections"]["holepunch"]
    assert punch["by_transport"].get("quic", 0) >= 1 and "tcp" not in punch["by_transport"]
    phase(f"{QUIC_DATASET >> 20} MiB d -> c byte-identical over the punched QUIC path")
