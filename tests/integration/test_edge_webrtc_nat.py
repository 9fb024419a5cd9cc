"""NAT'd members over WebRTC and the relay, in network namespaces.

Topology (tests/integration/netns_topology.py): two public members pub1 and pub2,
site a behind an endpoint-independent NAT, site b behind a symmetric NAT
(`--random-fully`), coturn as STUN server, 20 ms delay lines, 1 % loss and a rate
limit on both WAN links. Four real `colony daemon` processes, every one joins via
pub1 (which relays: `[relay] enabled`).

Expected and asserted:
* all four see each other alive (gossip reaches the NAT'd nodes);
* pub2 and both NAT'd nodes connect over WebRTC (no inbound TCP into a NAT; the
  NAT'd nodes are configured not to dial members but the seed over TCP; ICE with
  STUN candidates works since one side is public), signalled through pub1;
* a ↔ b: ICE cannot punch a symmetric NAT from behind another NAT, so they connect
  through pub1's relay (end-to-end Noise over the circuit);
* a 16 MiB dataset published on b is fetched byte-identical by a across both NATs
  (relayed), and 1 MiB published on a is fetched by pub2 over WebRTC;
* `/v1/doctor` on each node reports how each peer is reached;
* with TURN configured, a and b do get a data channel through the symmetric NAT,
  on relayed candidates (coturn), 64 KiB echoed intact.

Refusals of bad input (signals from non-members, offers for unknown peers, replays,
relay requests beyond the limits) are tested on 127.0.0.1 in test_webrtc_signal.py
and test_relay_circuit.py.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from netns_topology import NsDaemon, Topology, skip_reason, wait_until

pytestmark = pytest.mark.slow

_SKIP = skip_reason()
DATASET = 16 * 1024 * 1024


def set_key(text: str, section: str, key: str, value: str) -> str:
    """Replace `key = …` inside `[section]` of a config.toml (the template has every key)."""
    start = text.index(f"[{section}]\n")
    end = text.find("\n[", start + 1)
    end = len(text) if end < 0 else end
    body, n = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value}", text[start:end], count=1)
    assert n == 1, f"[{section}] {key} not in the config template"
    return text[:start] + body + text[end:]


def configure(d: NsDaemon, topo: Topology, *, relay: bool, nat: bool) -> None:
    conf = d.home / "config.toml"
    text = conf.read_text()
    stun = json.dumps([f"stun:{s}" for s in topo.stun_servers])
    text = set_key(text, "edge", "stun", stun)
    if relay:
        text = set_key(text, "relay", "enabled", "true")
    # This test is about WebRTC and the relay as they were before hole punching
    # (test_edge_holepunch_nat.py tests DCUtR): no punch, no holepunch dial method.
    text = set_key(text, "edge", "holepunch", "false")
    text = set_key(text, "edge", "dial_order", '["direct", "webrtc", "relay"]')
    if nat:  # as an edge device's operator would: don't wait for reachability
        text = set_key(text, "edge", "keep_reservations", "1")
        # No outbound TCP to members other than the seed (dialled directly while
        # alone): otherwise whether a ↔ pub2 is TCP (a dials first) or WebRTC (pub2
        # dials first) would be a race, and the WebRTC path is what is under test.
        text = set_key(text, "edge", "dial_order", '["webrtc", "relay"]')
    conf.write_text(text)


def start_through_seed(nodes: dict[str, NsDaemon], seed: str, timeout: float = 90) -> None:
    """Start `nodes[seed]`, then every other node bootstrapping through it; return
    once every node sees every node alive."""
    first = nodes[seed]
    first.start()
    wait_until(lambda: first.api("GET", "/v1/id"), 30, f"{seed}'s API")
    for name, d in nodes.items():
        if name != seed:
            d.start([first.addr])
    ids = {d.peer_id for d in nodes.values()}
    for name, d in nodes.items():
        wait_until(lambda d=d: d.alive_ids() >= ids, timeout, f"{name} to see all alive")


EDGE_EVENTS = (
    "peer_reached",
    "peer_accepted",
    "peer_unreachable",
    "dial_method_failed",
    "relay_circuit_opened",
    "relay_circuit_closed",
    "reachability_changed",
    "inbound_attach_failed",
    "webrtc_accept_failed",
    "stream_dropped",
)


def edge_events(nodes: dict[str, NsDaemon]) -> str:
    """The dialling story of every node, in time order (printed when the test fails)."""
    rows = []
    for name, d in nodes.items():
        for line in d.log.read_text(errors="replace").splitlines() if d.log.exists() else []:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("event") in EDGE_EVENTS:
                rest = {
                    k: str(v)[:160]
                    for k, v in ev.items()
                    if k not in ("event", "level", "timestamp")
                }
                rows.append(f"{ev.get('timestamp', '')[11:23]} {name:4} {ev['event']} {rest}")
    return "\n".join(sorted(rows))


def drop_counters(nodes: dict[str, NsDaemon]) -> str:
    """Every node's non-zero drop and exchange counters (printed when the test fails)."""
    rows = []
    for name, d in nodes.items():
        try:
            st = d.api("GET", "/v1/stats", timeout=5)
        except Exception as e:  # the node may be the failure
            rows.append(f"{name:4} no stats: {e}")
            continue
        drops = {k: v for k, v in st.get("drops", {}).items() if v}
        rows.append(f"{name:4} drops {drops} exchange {st.get('exchange')}")
    return "\n".join(rows)


def kinds(d: NsDaemon) -> dict[str, str]:
    """peer id → how `d` reaches it (direct / webrtc / relayed), from /v1/doctor."""
    report = d.api("GET", "/v1/doctor")
    peers = report["connections"]["peers"]
    return {p: info["kind"] for p, info in peers.items()}


def test_nat_members_connect_over_webrtc_and_relay(tmp_path: Path) -> None:
    if _SKIP:
        pytest.skip(_SKIP)
    t0 = time.monotonic()

    def phase(what: str) -> None:  # where the minute goes, shown with -s
        print(f"{time.monotonic() - t0:6.1f} s  {what}")

    with Topology(tmp_path / "net", delay_ms=20, loss_pct=1, rate_mbit=40) as topo:
        (ns1, ip1), (ns2, ip2) = list(topo.public.items())
        a, b = topo.sites["a"], topo.sites["b"]
        nodes = {
            "pub1": NsDaemon(topo, ns1, ip1, tmp_path / "pub1" / "home", "pub1"),
            "pub2": NsDaemon(topo, ns2, ip2, tmp_path / "pub2" / "home", "pub2"),
            "a": NsDaemon(topo, a.host_ns, a.host_ip, tmp_path / "a" / "home", "a"),
            "b": NsDaemon(topo, b.host_ns, b.host_ip, tmp_path / "b" / "home", "b"),
        }
        # A real Internet has default routes: without one, coturn's relay socket
        # gets ENETUNREACH for a peer's private host candidate and closes the whole
        # allocation. A route into an unconnected veth drops such packets quietly.
        topo.ip(topo.inet, "link", "add", "void0", "type", "veth", "peer", "name", "void1")
        for dev in ("void0", "void1"):
            topo.ip(topo.inet, "link", "set", dev, "up")
        topo.ip(topo.inet, "route", "add", "default", "dev", "void0")
        try:
            _scenario(topo, nodes, tmp_path, phase)
        except BaseException:
            print(edge_events(nodes))
            print(drop_counters(nodes))
            raise
        _turn_between_nats(topo, tmp_path / "turn")
        phase("a <-> b over WebRTC through TURN")


def _turn_between_nats(topo: Topology, d: Path) -> None:
    """TURN as the configured fallback: with `[edge] turn`, ICE gets through the
    symmetric NAT after all, on relayed (TURN) candidates."""
    d.mkdir()
    turn = topo.turn_server
    script = str(Path(__file__).with_name("webrtc_turn_peer.py"))
    stun = [f"stun:{s}" for s in topo.stun_servers]
    procs = {}
    for role, site in (("offer", "a"), ("answer", "b")):
        argv = [
            sys.executable,
            script,
            role,
            str(d),
            turn["url"],
            turn["username"],
            turn["password"],
            *stun,
        ]
        procs[role] = topo.popen(topo.sites[site].host_ns, argv, log=d / f"{role}.log")
    results = {}
    for role, p in procs.items():
        p.wait(timeout=60)
        text = (d / f"{role}.log").read_text(errors="replace")
        lines = [ln for ln in text.splitlines() if ln.startswith("{")]
        assert p.returncode == 0 and lines, f"{role} end failed: {text[-1500:]}"
        results[role] = json.loads(lines[-1])
    assert results["offer"]["echoed"] and results["answer"]["echoed"], results
    assert "relay" in results["offer"]["path"] and "relay" in results["answer"]["path"], results


def _scenario(topo: Topology, nodes: dict[str, NsDaemon], tmp_path: Path, phase: Any) -> None:
    for name, d in nodes.items():
        d.home.parent.mkdir(parents=True)
        d.init()
        configure(d, topo, relay=(name == "pub1"), nat=name in ("a", "b"))
    phase("topology built, homes initialised")
    pub1, pub2, na, nb = nodes["pub1"], nodes["pub2"], nodes["a"], nodes["b"]
    start_through_seed(nodes, "pub1")

    phase("all four alive everywhere")
    # pub2 → a and pub2 → b: WebRTC (signalled via pub1); a ↔ b: relayed via pub1.
    wait_until(lambda: kinds(pub2).get(na.peer_id) == "webrtc", 60, "pub2→a over WebRTC")
    wait_until(lambda: kinds(pub2).get(nb.peer_id) == "webrtc", 60, "pub2→b over WebRTC")
    # Nothing else makes a and b talk before the fetch: ask for it explicitly
    # through gossip traffic (membership probes) or the fetch below.
    phase("pub2 reaches a and b over WebRTC")
    data = os.urandom(DATASET)
    src = tmp_path / "dataset.bin"
    src.write_bytes(data)
    pub = json.loads(nb.colony("publish", str(src), "--json", timeout=120))
    assert pub["done"], pub
    phase("16 MiB published on b")
    out = tmp_path / "fetched.bin"
    got = json.loads(na.colony("fetch", pub["cid"], "-o", str(out), "--json", timeout=180))
    assert got["done"] and not got.get("error"), got
    assert out.read_bytes() == data
    phase("fetched by a across both NATs")
    assert kinds(na).get(nb.peer_id) == "relayed", kinds(na)
    assert kinds(nb).get(na.peer_id) == "relayed", kinds(nb)
    status = na.api("GET", "/v1/doctor")["connections"]
    assert pub1.peer_id in status["relays_in_use"], status
    assert kinds(na).get(pub1.peer_id) == "direct"

    # A dataset on the endpoint-independent side, fetched by pub2 over WebRTC.
    small = os.urandom(1024 * 1024)
    src2 = tmp_path / "small.bin"
    src2.write_bytes(small)
    pub_a = json.loads(na.colony("publish", str(src2), "--json", timeout=120))
    out2 = tmp_path / "small-fetched.bin"
    got2 = json.loads(pub2.colony("fetch", pub_a["cid"], "-o", str(out2), "--json", timeout=120))
    assert got2["done"] and out2.read_bytes() == small, got2
    assert kinds(pub2).get(na.peer_id) == "webrtc"
    phase("1 MiB from a fetched by pub2 over WebRTC")
