"""The NAT test topology itself: NAT mapping behaviour, latency, loss, rate,
no inbound path into the NAT'd sites, and teardown. Other edge tests build on it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from netns_topology import Topology, skip_reason

pytestmark = pytest.mark.slow

_SKIP = skip_reason()


@pytest.fixture(scope="module")
def topo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    if _SKIP:
        pytest.skip(_SKIP)
    with Topology(tmp_path_factory.mktemp("netns"), delay_ms=20, loss_pct=1,
                  rate_mbit=16) as t:
        yield t


def test_nat_mapping_behaviour_measured_with_stun(topo: Topology) -> None:
    for ns, ip in topo.public.items():
        r = topo.stun_probe(ns)
        assert r["nat_type"] == "none", r
        assert all(m.startswith(ip + ":") for m in r["mapped"].values()), r
    a, b = topo.sites["a"], topo.sites["b"]
    ra = topo.stun_probe(a.host_ns)
    assert ra["nat_type"] == "endpoint-independent", ra
    ports = {m for m in ra["mapped"].values()}
    assert ports == {f"{a.wan_ip}:{ra['local'].split(':')[1]}"}, ra  # one mapping, port kept
    rb = topo.stun_probe(b.host_ns)
    assert rb["nat_type"] == "symmetric", rb
    mapped = list(rb["mapped"].values())
    assert len(set(mapped)) == 2 and all(m.startswith(b.wan_ip + ":") for m in mapped), rb


def test_wan_latency_from_the_delay_line(topo: Topology) -> None:
    pub_ip = next(iter(topo.public.values()))
    for site in topo.sites.values():
        rtt = topo.rtt_ms(site.host_ns, pub_ip)
        # One delay line per WAN link, crossed once each way.
        assert 2 * topo.delay_ms <= rtt < 2 * topo.delay_ms + 40, (site.label, rtt)
    # Public members share the segment with no delay line.
    other = list(topo.public.values())[1]
    assert topo.rtt_ms(next(iter(topo.public)), other) < 5


def test_no_inbound_path_into_a_nat(topo: Topology) -> None:
    """A listener behind the NAT is unreachable at the router's public address."""
    site = topo.sites["a"]
    listener = topo.popen(site.host_ns, [sys.executable, "-c",
                          "import socket,time\ns=socket.create_server(('0.0.0.0',4001))\n"
                          "time.sleep(60)"])
    try:
        code = ("import socket,sys\ns=socket.socket(); s.settimeout(3)\n"
                "try: s.connect((sys.argv[1],4001)); print('open')\n"
                "except OSError as e: print('closed', e)\n")
        out = topo.python(next(iter(topo.public)), code, site.wan_ip)
        assert out.startswith("closed"), out
        # ...while the host reaches the public side (outbound through the NAT).
        out = topo.python(site.host_ns, code, "198.18.0.10")
        assert out.startswith("closed") and "refused" in out, out  # RST from a live host
    finally:
        listener.kill()


def test_rate_limit_and_loss_on_the_wan(topo: Topology) -> None:
    """2 MiB uploaded from a NAT'd host take at least size/rate; the nft loss rule is set."""
    site, pub_ns = topo.sites["b"], next(iter(topo.public))
    pub_ip = topo.public[pub_ns]
    sink = topo.popen(pub_ns, [sys.executable, "-c",
                      "import socket\ns=socket.create_server(('0.0.0.0',5001))\n"
                      "c,_=s.accept()\nwhile c.recv(1<<16): pass\n"])
    try:
        code = ("import socket,sys,time\n"
                "for _ in range(50):\n"
                "    try: s=socket.create_connection((sys.argv[1],5001),timeout=5); break\n"
                "    except OSError: time.sleep(0.1)\n"
                "t=time.perf_counter(); s.sendall(b'x'*(2<<20)); s.shutdown(1); s.recv(1)\n"
                "print(time.perf_counter()-t)\n")
        secs = float(topo.python(site.host_ns, code, pub_ip, timeout=60))
        mbit = 2 * 8 * 1.048576 / secs
        assert mbit <= topo.rate_mbit * 1.1, f"{mbit:.1f} Mbit/s exceeds the tbf rate"
    finally:
        sink.kill()
    rules = topo.run(site.router_ns, "nft", "list", "table", "inet", "wanloss").stdout
    assert "numgen random mod 100 < 1" in rules, rules


def test_teardown_removes_namespaces(tmp_path: Path) -> None:
    if _SKIP:
        pytest.skip(_SKIP)
    t = Topology(tmp_path, loss_pct=0, rate_mbit=0)
    with t:
        names = list(t.namespaces)
        assert len(names) == 9
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(n in left for n in names), left
