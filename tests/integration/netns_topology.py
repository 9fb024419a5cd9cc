"""The edge/NAT test topology built from network namespaces.

```
            ┌──────────────────────── ns inet ("the Internet") ───────────────────────┐
            │ br0 198.18.0.1/24   coturn STUN/TURN on 198.18.0.10 and 198.18.0.11:3478│
            └──┬────────────┬──────────────────┬──────────────────────────┬───────────┘
      veth     │            │                  │ (L2 delay line ns wire-a) │ (wire-b)
  ns pub1 198.18.0.2  ns pub2 198.18.0.3       │  +latency                 │
                                      ns rtr-a wan 198.18.0.21     ns rtr-b wan 198.18.0.22
                                        MASQUERADE (endpoint-          MASQUERADE
                                        independent mapping)           --random-fully (symmetric)
                                        1 % loss (nft), tbf rate       1 % loss, tbf rate
                                      lan 10.0.1.1/24                lan 10.0.2.1/24
                                      ns edge-a 10.0.1.2             ns edge-b 10.0.2.2
```

Addresses: 198.18.0.0/15 is the benchmarking range (RFC 2544), used as "public"
addresses only inside these namespaces; the NAT'd sites use 10.0.x.0/24.

WAN links (router ↔ inet) carry the impairments, in both directions:
* loss: nft `numgen random mod 100 < N drop` in the router's prerouting/postrouting;
* rate: `tbf` on the router's wan egress (upload) and on inet's port to it (download);
* latency: `tc netem` does not exist on this kernel, so each WAN link runs through a
  *delay line*: a namespace with two IP-less veth ends and a small Python forwarder
  (`python netns_topology.py delay-line w0 w1 MS`, below) that reads every frame
  from one end with an AF_PACKET socket and writes it to the other end MS ms later.
  It is a cable with latency at layer 2, so ARP, NAT and TCP behave as on a real
  link. Offloads (TSO/GSO/tx checksum) are turned off (ethtool) on the veths that
  send into it, so it sees ordinary ≤ MTU frames with final checksums.
  `Topology.rtt_ms()` measures the result (TCP SYN → RST round trips).

Every command runs in a namespace with `ip netns exec`. Names carry the creating
pid (`cy<pid>x<rand>-…`), so namespaces left by a killed run are removed by the
next run, and parallel runs never collide. `close()` (context manager, and atexit as
a last resort) kills every process group started here, then deletes the namespaces.
`skip_reason()` says why the topology cannot be built here (not root, no `ip netns`,
missing iptables/nft/turnserver/ethtool); tests skip only then.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from overlay.cli.cmd_node import init_home

REPO = Path(__file__).resolve().parents[2]
PUBLIC_NET = "198.18.0"
STUN_IPS = ("198.18.0.10", "198.18.0.11")
STUN_PORT = 3478
TURN_USER, TURN_PASSWORD, TURN_REALM = "colony", "colony-test", "colony.test"
TOOLS = ("ip", "iptables", "nft", "tc", "ethtool", "turnserver")
_LIVE: list[Topology] = []


def _close_all() -> None:
    for t in list(_LIVE):
        t.close()


atexit.register(_close_all)


def skip_reason(tools: tuple[str, ...] = TOOLS) -> str | None:
    """Why namespaces cannot be built here, or None when they can (`tools`: the
    programs the caller's topology needs; by default the NAT topology's)."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add); run these tests as root"
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        return (f"missing {', '.join(missing)}: install with `make system-deps` "
                "(apt: iptables nftables coturn ethtool iproute2)")
    name = f"cy{os.getpid()}probe{secrets.token_hex(2)}"
    r = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if r.returncode != 0:
        return f"cannot create a network namespace here: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


def _delete_namespace(name: str) -> None:
    """Kill what still runs inside (it would keep the namespace alive), then delete."""
    r = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True)
    for pid in r.stdout.split():
        with contextlib.suppress(ProcessLookupError, PermissionError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    subprocess.run(["ip", "netns", "del", name], capture_output=True)


def remove_stale_namespaces() -> None:
    """Delete namespaces made by runs whose process no longer exists (kill -9'd tests),
    with the daemons, coturn and delay lines those runs left inside them."""
    r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    for line in r.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.match(r"cy(\d+)x[0-9a-f]+-", name)
        if m and not Path(f"/proc/{m.group(1)}").exists():
            _delete_namespace(name)


@dataclass
class Site:
    """A NAT'd site: one host behind one router doing MASQUERADE."""

    label: str  # "a" / "b"
    nat: str  # "endpoint-independent" | "symmetric"
    host_ns: str
    router_ns: str
    wire_ns: str
    host_ip: str
    router_lan_ip: str
    wan_ip: str


@dataclass
class Topology:
    """Build with `with Topology(tmp) as topo:`; see the module docstring."""

    tmp: Path
    delay_ms: float = 20.0
    loss_pct: int = 1
    rate_mbit: int = 40
    #: (label, NAT) of each NAT'd site; site k gets 10.0.k.0/24 and wan 198.18.0.(20+k).
    #: The hole-punch test adds endpoint-independent sites "c" and "d" (cone ↔ cone
    #: over TCP and over QUIC).
    site_nats: tuple[tuple[str, str], ...] = (("a", "endpoint-independent"),
                                              ("b", "symmetric"))
    tag: str = field(default_factory=lambda: f"cy{os.getpid()}x{secrets.token_hex(2)}")
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    public: dict[str, str] = field(default_factory=dict)  # ns → ip
    sites: dict[str, Site] = field(default_factory=dict)  # label → site

    # ------------------------------------------------------------ names and running

    def ns(self, role: str) -> str:
        return f"{self.tag}-{role}"

    @property
    def inet(self) -> str:
        return self.ns("inet")

    @property
    def stun_servers(self) -> list[str]:
        return [f"{ip}:{STUN_PORT}" for ip in STUN_IPS]

    @property
    def turn_server(self) -> dict[str, str]:
        return {"url": f"turn:{STUN_IPS[0]}:{STUN_PORT}", "username": TURN_USER,
                "password": TURN_PASSWORD}

    def run(self, ns: str, *argv: str, check: bool = True, timeout: float = 30.0,
            input_: str | None = None) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True,
                           timeout=timeout, input=input_, cwd=REPO)
        if check and r.returncode != 0:
            raise RuntimeError(f"[{ns}] {' '.join(argv)} failed ({r.returncode}): "
                               f"{(r.stderr or r.stdout).strip()[-1500:]}")
        return r

    def ip(self, ns: str, *args: str) -> None:
        r = subprocess.run(["ip", "-n", ns, *args], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise RuntimeError(f"ip -n {ns} {' '.join(args)}: {r.stderr.strip()}")

    def popen(self, ns: str, argv: list[str], log: Path | None = None,
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start a long-running process in `ns` (own process group, killed by close())."""
        out: Any = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
        try:
            p = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=out,
                                 stderr=subprocess.STDOUT if log else subprocess.DEVNULL,
                                 stdin=subprocess.DEVNULL, cwd=REPO, start_new_session=True,
                                 env=env)
        finally:
            if log:
                out.close()
        self.procs.append(p)
        return p

    def python(self, ns: str, code: str, *args: str, timeout: float = 30.0) -> str:
        """Run a Python snippet inside `ns` (the repo's interpreter); its stdout."""
        return self.run(ns, sys.executable, "-c", code, *args, timeout=timeout).stdout

    # ------------------------------------------------------------ build and teardown

    def __enter__(self) -> Topology:
        try:
            self.build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _add_ns(self, role: str) -> str:
        name = self.ns(role)
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
        self.namespaces.append(name)
        self.ip(name, "link", "set", "lo", "up")
        # No IPv6: router solicitations and DAD would only add noise to the links.
        self.run(name, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
                 "net.ipv6.conf.default.disable_ipv6=1")
        return name

    def build(self) -> None:
        remove_stale_namespaces()
        _LIVE.append(self)
        self.tmp.mkdir(parents=True, exist_ok=True)
        inet = self._add_ns("inet")
        self.ip(inet, "link", "add", "br0", "type", "bridge", "forward_delay", "0")
        for ip in (f"{PUBLIC_NET}.1", *STUN_IPS):
            self.ip(inet, "addr", "add", f"{ip}/24", "dev", "br0")
        self.ip(inet, "link", "set", "br0", "up")
        for i in (1, 2):
            ns = self._add_ns(f"pub{i}")
            self._plug_into_inet(ns, "eth0", f"p{i}")
            self.ip(ns, "addr", "add", f"{PUBLIC_NET}.{1 + i}/24", "dev", "eth0")
            self.ip(ns, "link", "set", "eth0", "up")
            self.public[ns] = f"{PUBLIC_NET}.{1 + i}"
        for k, (label, nat) in enumerate(self.site_nats, start=1):
            self._build_site(k, label, nat)
        self._start_coturn()

    def _plug_into_inet(self, ns: str, ifname: str, port: str) -> None:
        self.ip(ns, "link", "add", ifname, "type", "veth", "peer", "name", port, "netns",
                self.inet)
        self.ip(self.inet, "link", "set", port, "master", "br0")
        self.ip(self.inet, "link", "set", port, "up")

    def _no_offload(self, ns: str, ifname: str) -> None:
        self.run(ns, "ethtool", "-K", ifname, "tx", "off", "tso", "off", "gso", "off",
                 "gro", "off")

    def _build_site(self, k: int, label: str, nat: str) -> None:
        router, host, wire = (self._add_ns(f"rtr-{label}"), self._add_ns(f"edge-{label}"),
                              self._add_ns(f"wire-{label}"))
        site = Site(label, nat, host, router, wire, f"10.0.{k}.2", f"10.0.{k}.1",
                    f"{PUBLIC_NET}.{20 + k}")
        # router wan ── wire (delay line) ── inet bridge port
        self.ip(router, "link", "add", "wan", "type", "veth", "peer", "name", "w0", "netns", wire)
        self._plug_into_inet(wire, "w1", f"s{label}")
        for ns, dev in ((router, "wan"), (self.inet, f"s{label}")):
            self._no_offload(ns, dev)
        for dev in ("w0", "w1"):
            self._no_offload(wire, dev)
            self.ip(wire, "link", "set", dev, "promisc", "on")
            self.ip(wire, "link", "set", dev, "up")
        self.ip(router, "addr", "add", f"{site.wan_ip}/24", "dev", "wan")
        self.ip(router, "link", "set", "wan", "up")
        # router lan ── host
        self.ip(router, "link", "add", "lan", "type", "veth", "peer", "name", "eth0", "netns",
                host)
        self.ip(router, "addr", "add", f"{site.router_lan_ip}/24", "dev", "lan")
        self.ip(router, "link", "set", "lan", "up")
        self.ip(host, "addr", "add", f"{site.host_ip}/24", "dev", "eth0")
        self.ip(host, "link", "set", "eth0", "up")
        self.ip(host, "route", "add", "default", "via", site.router_lan_ip)
        self.run(router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        # NAT: plain MASQUERADE keeps the source port when it can, so one socket keeps
        # one public mapping for every destination (endpoint-independent mapping);
        # --random-fully picks a random port per connection (address-dependent:
        # "symmetric"). Linux conntrack filters inbound by the full 5-tuple either way.
        masq = ["iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "wan", "-j", "MASQUERADE"]
        if nat == "symmetric":
            masq.append("--random-fully")
        self.run(router, *masq)
        if self.loss_pct > 0:
            n = self.loss_pct
            rules = f"""
table inet wanloss {{
  chain pre {{ type filter hook prerouting priority -300; policy accept;
    iifname "wan" numgen random mod 100 < {n} drop; }}
  chain post {{ type filter hook postrouting priority 300; policy accept;
    oifname "wan" numgen random mod 100 < {n} drop; }}
}}
"""
            self.run(router, "nft", "-f", "-", input_=rules)
        if self.rate_mbit > 0:
            for ns, dev in ((router, "wan"), (self.inet, f"s{label}")):
                self.run(ns, "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate",
                         f"{self.rate_mbit}mbit", "burst", "64kb", "latency", "200ms")
        p = self.popen(wire, [sys.executable, str(Path(__file__).resolve()), "delay-line",
                              "w0", "w1", str(self.delay_ms)],
                       log=self.tmp / f"wire-{label}.log")
        self._wait_log(self.tmp / f"wire-{label}.log", "ready", p, f"delay line {label}")
        self.sites[label] = site

    def _wait_log(self, path: Path, needle: str, p: subprocess.Popen[bytes], what: str,
                  timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if path.exists() and needle in path.read_text(errors="replace"):
                return
            if p.poll() is not None:
                raise RuntimeError(f"{what} exited {p.returncode}: "
                                   f"{path.read_text(errors='replace')[-1500:]}")
            time.sleep(0.05)
        raise RuntimeError(f"{what} not ready after {timeout:.0f} s")

    def _start_coturn(self) -> None:
        d = self.tmp / "coturn"
        d.mkdir(exist_ok=True)
        conf = d / "turnserver.conf"
        conf.write_text("\n".join([
            *(f"listening-ip={ip}" for ip in STUN_IPS),
            f"listening-port={STUN_PORT}",
            f"relay-ip={STUN_IPS[0]}",
            "min-port=49152", "max-port=49999",
            f"realm={TURN_REALM}", "lt-cred-mech", f"user={TURN_USER}:{TURN_PASSWORD}",
            "fingerprint", "no-tls", "no-dtls", "no-cli", "no-multicast-peers",
            f"pidfile={d / 'turnserver.pid'}", f"log-file={d / 'turnserver.log'}",
            "simple-log", "no-stdout-log",
            # The test "Internet" is 198.18.0.0/15: coturn must relay to it.
            "allowed-peer-ip=198.18.0.0-198.19.255.255",
            "",
        ]))
        self.popen(self.inet, ["turnserver", "-c", str(conf)], log=d / "stdout.log")
        # Ready when a Binding request from a public member is answered.
        deadline = time.monotonic() + 20
        pub1 = next(iter(self.public))
        while True:
            r = self.stun_probe(pub1)
            if not r.get("error"):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"coturn not answering STUN: {r}; log: "
                                   + (d / "stdout.log").read_text(errors="replace")[-800:])
            time.sleep(0.2)

    def close(self) -> None:
        for p in reversed(self.procs):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)
        for p in self.procs:
            with contextlib.suppress(Exception):
                p.wait(timeout=10)
        self.procs.clear()
        for ns in reversed(self.namespaces):
            _delete_namespace(ns)  # also what left our process groups (e.g. --detach)
        self.namespaces.clear()
        if self in _LIVE:
            _LIVE.remove(self)

    # ------------------------------------------------------------ checks

    def stun_probe(self, ns: str) -> dict[str, Any]:
        """STUN Binding from one socket in `ns` to both coturn addresses (mapping type)."""
        out = self.run(ns, sys.executable, "-m", "overlay.runtime.edge.stun_probe",
                       *self.stun_servers, timeout=30).stdout
        result: dict[str, Any] = json.loads(out)
        return result

    def rtt_ms(self, ns: str, ip: str, samples: int = 9) -> float:
        """Median TCP SYN → RST round trip from `ns` to a closed port on `ip`."""
        code = (
            "import socket,sys,time,statistics\n"
            "out=[]\n"
            "for _ in range(int(sys.argv[2])):\n"
            "    s=socket.socket(); s.settimeout(3); t=time.perf_counter()\n"
            "    try: s.connect((sys.argv[1], 9))\n"
            "    except ConnectionRefusedError: out.append((time.perf_counter()-t)*1e3)\n"
            "    except OSError: pass\n"
            "    finally: s.close()\n"
            "print(statistics.median(out) if out else -1)\n"
        )
        return float(self.python(ns, code, ip, str(samples), timeout=60).strip())


# ---------------------------------------------------------------- the delay line

PACKET_OUTGOING = 4
ETH_P_ALL = 0x0003


def delay_line(if_a: str, if_b: str, delay_ms: float, max_queue: int = 20_000) -> None:
    """Forward every frame between two interfaces, `delay_ms` later (runs until killed).

    FIFO per direction (constant delay keeps order); a full queue drops the frame, as a
    router's buffer would.
    """
    import select

    delay = delay_ms / 1e3
    socks = []
    for name in (if_a, if_b):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        s.bind((name, 0))
        s.setblocking(False)
        socks.append(s)
    queues: list[deque[tuple[float, bytes]]] = [deque(), deque()]  # frames to send out of i
    print("ready", flush=True)
    while True:
        now = time.monotonic()
        due = [q[0][0] for q in queues if q]
        timeout = max(0.0, min(due) - now) if due else None
        readable, _, _ = select.select(socks, [], [], timeout)
        now = time.monotonic()
        for i, s in enumerate(socks):
            if s not in readable:
                continue
            q = queues[1 - i]
            for _ in range(512):
                try:
                    frame, addr = s.recvfrom(65536)
                except BlockingIOError:
                    break
                if addr[2] == PACKET_OUTGOING:
                    continue  # our own transmission on this interface
                if len(q) < max_queue:
                    q.append((now + delay, frame))
        for i, q in enumerate(queues):
            while q and q[0][0] <= now:
                _, frame = q.popleft()
                with contextlib.suppress(OSError):
                    socks[i].send(frame)


# ---------------------------------------------------------------- daemons in namespaces


def set_toml_key(text: str, section: str, key: str, value: str) -> str:
    """Set `key = value` in `[section]` of a TOML text (added if absent)."""
    lines = text.splitlines()
    try:
        start = lines.index(f"[{section}]")
    except ValueError:
        return text.rstrip("\n") + f"\n\n[{section}]\n{key} = {value}\n"
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("[")),
               len(lines))
    for i in range(start + 1, end):
        if re.match(rf"{re.escape(key)}\s*=", lines[i]):
            lines[i] = f"{key} = {value}"
            break
    else:
        lines.insert(start + 1, f"{key} = {value}")
    return "\n".join(lines) + "\n"


class DaemonExited(RuntimeError):
    """The daemon process is gone: waiting longer cannot help."""


class NsDaemon:
    """A `colony daemon` inside a namespace: its own home, API on that netns' loopback."""

    API_PORT = 5101
    P2P_PORT = 4001

    def __init__(self, topo: Topology, ns: str, ip: str, home: Path, name: str) -> None:
        self.topo, self.ns, self.ip, self.home, self.name = topo, ns, ip, home, name
        self.peer_id = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = home.parent / f"{name}.log"

    @property
    def addr(self) -> str:
        return f"/ip4/{self.ip}/tcp/{self.P2P_PORT}/p2p/{self.peer_id}"

    def init(self, profile: str = "lan", extra: str = "",
             settings: dict[tuple[str, str], str] | None = None) -> None:
        """`colony init` (with `--profile` when not lan), then fixed ports, JSON logs,
        `settings` ((section, key) → TOML value) and `extra` text appended."""
        # What `colony init [--profile]` does, in this process: no network is involved,
        # and two CLI subprocesses per node (init, id) were seconds per topology.
        self.peer_id = str(init_home(self.home, quiet=True, profile=profile).peer_id)
        conf = self.home / "config.toml"
        text = conf.read_text()
        text = re.sub(r'(?m)^listen = \[[^\]]*\]',
                      f'listen = ["/ip4/{self.ip}/tcp/{self.P2P_PORT}"]', text, count=1)
        text = re.sub(r'(?m)^format = "auto"', 'format = "json"', text, count=1)
        for (section, key), value in (settings or {}).items():
            text = set_toml_key(text, section, key, value)
        conf.write_text(text + extra)

    def colony(self, *args: str, timeout: float = 60.0, check: bool = True) -> str:
        """Run a `colony` CLI command inside the namespace; its stdout."""
        r = self.topo.run(self.ns, sys.executable, "-m", "overlay.cli.main", "--home",
                          str(self.home), *args, timeout=timeout, check=check)
        return r.stdout

    def start(self, bootstrap: list[str] | None = None) -> None:
        argv = [sys.executable, "-m", "overlay.cli.main", "--home", str(self.home), "daemon"]
        for b in bootstrap or []:
            argv += ["--bootstrap", b]
        env = {k: v for k, v in os.environ.items() if not k.startswith("COLONY_")}
        self.proc = self.topo.popen(self.ns, argv, log=self.log, env=env)

    def api(self, method: str, path: str, body: Any = None, timeout: float = 20.0) -> Any:
        """One control-API call from inside the namespace (stdlib client, no CLI import)."""
        if self.proc is not None and self.proc.poll() is not None:
            raise DaemonExited(f"daemon {self.name} exited {self.proc.returncode}: "
                               + self.log.read_text(errors="replace")[-2000:])
        code = (
            "import http.client,json,sys\n"
            "tok=open(sys.argv[1]).read().strip()\n"
            "c=http.client.HTTPConnection('127.0.0.1',int(sys.argv[2]),timeout=15)\n"
            "b=sys.argv[5] if len(sys.argv)>5 else None\n"
            "c.request(sys.argv[3],sys.argv[4],body=b,headers={'Authorization':'Bearer '+tok})\n"
            "r=c.getresponse(); print(r.status); print(r.read().decode())\n"
        )
        args = [str(self.home / "api.token"), str(self.API_PORT), method, path]
        if body is not None:
            args.append(json.dumps(body))
        out = self.topo.python(self.ns, code, *args, timeout=timeout)
        status, _, payload = out.partition("\n")
        if int(status) >= 400:
            raise RuntimeError(f"{self.name} {method} {path}: {status} {payload.strip()}")
        return json.loads(payload) if payload.strip() else None

    def alive_ids(self) -> set[str]:
        return {r["id"] for r in self.api("GET", "/v1/members") if r["state"] == "alive"}


def start_edge_colony(topo: Topology, root: Path, profile: str = "edge",
                      extra: str = "") -> dict[str, NsDaemon]:
    """Daemons on the topology: "pub1", "pub2" (public), "edge-a" (endpoint-independent
    NAT), "edge-b" (symmetric NAT); pub1 is the seed, the others bootstrap through it.
    Every node gets `[edge] stun` = both coturn addresses when the config knows [edge].
    Returns once every API answers (membership may still be converging)."""
    from overlay.runtime.process import config as cfg

    settings: dict[tuple[str, str], str] = {}
    if "edge" in cfg.DEFAULTS:
        settings["edge", "stun"] = "[" + ", ".join(f'"stun:{s}"' for s in topo.stun_servers) + "]"
    nodes: dict[str, NsDaemon] = {}
    for ns, ip in topo.public.items():
        name = ns.rsplit("-", 1)[1]
        nodes[name] = NsDaemon(topo, ns, ip, root / name, name)
    for site in topo.sites.values():
        name = f"edge-{site.label}"
        nodes[name] = NsDaemon(topo, site.host_ns, site.host_ip, root / name, name)
    for n in nodes.values():
        n.init(profile, extra, settings)
    seed = nodes["pub1"]
    seed.start()
    for n in nodes.values():  # at once: a node retries its bootstrap dial after 1 s
        if n is not seed:
            n.start([seed.addr])
    for n in nodes.values():
        wait_until(lambda n=n: n.api("GET", "/v1/id"), 60, f"{n.name}'s API")
    return nodes


def wait_until(pred: Any, timeout: float, what: str, every: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            v = pred()
            if v:
                return v
        except DaemonExited:
            raise
        except Exception as e:  # not up yet
            last = e
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}"
                                 + (f" (last error: {last})" if last else ""))
        time.sleep(every)


@contextlib.contextmanager
def topology(tmp: Path, **kw: Any) -> Iterator[Topology]:
    with Topology(tmp, **kw) as t:
        yield t


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "delay-line":
        with contextlib.suppress(KeyboardInterrupt):
            delay_line(sys.argv[2], sys.argv[3], float(sys.argv[4]))
    elif len(sys.argv) == 2 and sys.argv[1] == "demo":
        import tempfile  # build the topology, print what it measures, tear it down

        with tempfile.TemporaryDirectory() as d, topology(Path(d)) as t:
            for ns in [*t.public, *(s.host_ns for s in t.sites.values())]:
                print(ns, json.dumps(t.stun_probe(ns)))
            for s in t.sites.values():
                print(f"rtt {s.host_ns} -> 198.18.0.2: {t.rtt_ms(s.host_ns, '198.18.0.2'):.1f} ms")
    else:
        sys.exit("usage: netns_topology.py demo | delay-line IF_A IF_B DELAY_MS")
