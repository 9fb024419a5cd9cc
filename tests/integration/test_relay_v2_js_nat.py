"""Circuit relay v2 with js-libp2p through real NATs, in network namespaces.

Topology (tests/integration/netns_topology.py): pub1 (public; a `colony daemon`
relaying with `[relay] serve_non_members`), site a behind a cone NAT (a `colony
daemon` holding a reservation at pub1), site c behind the other cone NAT (a
js-libp2p 3.x node with `@libp2p/circuit-relay-v2` and `@libp2p/dcutr`, listening on
`<pub1>/p2p-circuit`); 20 ms delay lines, 1 % loss, 40 Mbit/s on every WAN link.

Asserted: js reserves on our relay across its NAT; our daemon behind the other NAT
reaches it at `…/p2p/pub1/p2p-circuit/p2p/<js>` through `POST /v1/connect`; js pings
our daemon over that relayed connection; `/v1/doctor` on a says `relayed` via pub1
and pub1 counts the reservation and circuit. DCUtR then runs between js and our
daemon over the v2 circuit, and fails for the reason the docs give (js-libp2p's
DCUtR takes only addresses it deems public, and 198.18.0.0/15 is not; and its TCP
dials leave from ephemeral ports): the test records what happened and requires
that the relayed connection survives it. The punch itself between two of our
daemons is test_edge_holepunch_nat.py.
"""

from __future__ import annotations

import io
import json
import select
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from netns_topology import NsDaemon, Topology, skip_reason, wait_until
from test_edge_webrtc_nat import edge_events, set_key, start_through_seed
from test_relay_v2_js_interop import _install

# `long` (make test-long): ~40 s of namespaces, NATs and three processes; the suite keeps
# its loopback cousin (test_relay_v2_js_interop.py: the same js peer, both relay roles).
pytestmark = [pytest.mark.slow, pytest.mark.long, pytest.mark.timeout(300)]

_SKIP = skip_reason()
EI = "endpoint-independent"


class NsJsPeer:
    """The js relay peer in a namespace, one JSON line per command (blocking)."""

    def __init__(self, topo: Topology, ns: str, cache: Path, opts: dict[str, Any]) -> None:
        self.p = subprocess.Popen(
            ["ip", "netns", "exec", ns, "node", "relay_peer.mjs", json.dumps(opts)],
            cwd=cache, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            start_new_session=True,
        )
        topo.procs.append(self.p)  # killed by topo.close() whatever happens
        self._buf = b""
        self.ready = self.line(60)

    def line(self, timeout: float = 40) -> dict[str, Any]:
        # stdout=PIPE, buffered: a BufferedReader (read1 returns what one read gives).
        assert isinstance(self.p.stdout, io.BufferedReader)
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.p.stdout], [], [], left)[0]:
                raise AssertionError("js peer did not answer in time")
            chunk = self.p.stdout.read1(65536)
            if not chunk:
                raise AssertionError("js peer exited")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        msg: dict[str, Any] = json.loads(line)
        return msg

    def call(self, **cmd: Any) -> dict[str, Any]:
        assert self.p.stdin is not None
        self.p.stdin.write(json.dumps(cmd).encode() + b"\n")
        self.p.stdin.flush()
        reply = self.line()
        assert reply.get("ok"), reply.get("error")
        return reply


def test_js_behind_nat_reserves_on_our_relay_and_is_reached(tmp_path: Path) -> None:
    if _SKIP:
        pytest.skip(_SKIP)
    cache = _install()
    t0 = time.monotonic()

    def phase(what: str) -> None:
        print(f"{time.monotonic() - t0:6.1f} s  {what}")

    with Topology(tmp_path / "net", delay_ms=20, loss_pct=1, rate_mbit=40,
                  site_nats=(("a", EI), ("c", EI))) as topo:
        ns1, ip1 = next(iter(topo.public.items()))
        nodes = {"pub1": NsDaemon(topo, ns1, ip1, tmp_path / "pub1" / "home", "pub1"),
                 "a": NsDaemon(topo, topo.sites["a"].host_ns, topo.sites["a"].host_ip,
                               tmp_path / "a" / "home", "a")}
        try:
            _scenario(topo, nodes, cache, phase)
        except BaseException:
            print(edge_events(nodes))
            raise


def _scenario(topo: Topology, nodes: dict[str, NsDaemon], cache: Path, phase: Any) -> None:
    for name, d in nodes.items():
        d.home.parent.mkdir(parents=True)
        d.init()
        conf = d.home / "config.toml"
        text = conf.read_text()
        if name == "pub1":
            text = set_key(text, "relay", "enabled", "true")
            text = set_key(text, "relay", "serve_non_members", "true")
        else:
            text = set_key(text, "edge", "keep_reservations", "1")
            text = set_key(text, "edge", "holepunch_grace_s", "2.0")
        conf.write_text(text)
    pub1, a = nodes["pub1"], nodes["a"]
    start_through_seed(nodes, "pub1")
    phase("pub1 and a alive")
    site_c = topo.sites["c"]
    js = NsJsPeer(topo, site_c.host_ns, cache, {
        "listen": [f"/ip4/{site_c.host_ip}/tcp/4001", f"{pub1.addr}/p2p-circuit"]})
    js_id = js.ready["peerId"]
    circuit = f"{pub1.addr}/p2p-circuit/p2p/{js_id}"
    assert circuit in js.ready["addrs"], js.ready["addrs"]
    phase("js behind NAT c reserved on pub1")

    relaying = pub1.api("GET", "/v1/doctor")["connections"]["relay"]["relaying"]
    assert relaying["reservations"] >= 1, relaying
    # a, behind NAT a, dials the js node's relayed address through its control API.
    got = a.api("POST", "/v1/connect", {"addr": circuit}, timeout=40)
    assert got["id"] == js_id and got["connected"], got
    path = a.api("GET", "/v1/doctor")["connections"]["peers"][js_id]
    assert path["kind"] == "relayed" and path["via"] == pub1.peer_id, path
    phase("a reached js through pub1 (v2 CONNECT across both NATs)")
    # js pings a over a relayed connection of its own (js does not reuse a limited one):
    # a must hold its reservation at pub1 (kept by its dialer, in our protocol).
    wait_until(lambda: pub1.peer_id in a.api("GET", "/v1/doctor")["connections"]["relay"][
        "reservations_held"], 30, "a's reservation at pub1")
    rtts = [js.call(cmd="dial_ping", addr=f"{pub1.addr}/p2p-circuit/p2p/{a.peer_id}")["rttMs"]
            for _ in range(5)]
    conns = js.call(cmd="connections", peerId=a.peer_id)["connections"]
    assert any(c["limited"] and "/p2p-circuit" in c["remoteAddr"] for c in conns), conns
    phase(f"js pings a through the relay: rtt ms {sorted(rtts)}")
    relaying = pub1.api("GET", "/v1/doctor")["connections"]["relay"]["relaying"]
    assert relaying["circuits_opened"] >= 1, relaying
    # a, the inbound side of js's circuits, runs DCUtR with js over them; js refuses
    # (our addresses are not public to it). The relayed connection must survive.
    def punch_tried() -> dict[str, Any] | None:
        hp: dict[str, Any] | None = a.api("GET", "/v1/doctor")["connections"]["holepunch"]
        return hp if hp and hp["attempts"] >= 1 else None

    hp = wait_until(punch_tried, 30, "a's DCUtR attempt with js")
    doctor = a.api("GET", "/v1/doctor")["connections"]
    path = doctor["peers"].get(js_id)
    phase(f"relay circuits opened {relaying['circuits_opened']}; after DCUtR: a's path to "
          f"js {path}; a's holepunch {json.dumps(hp)[:300]}")
    assert path is not None and path["kind"] in ("relayed", "direct"), doctor["peers"]
    assert js.call(cmd="dial_ping",
                   addr=f"{pub1.addr}/p2p-circuit/p2p/{a.peer_id}")["rttMs"] >= 0
    wait_until(lambda: a.api("GET", "/v1/doctor")["connections"]["peers"].get(js_id), 10,
               "a still connected to js")
