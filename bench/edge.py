"""Edge profile footprint: idle CPU and RSS of daemons, and where memory goes.

Measured in one run, on loopback:
  * three colonies of 3 daemons each, started together and left idle (joined,
    gossiping, probing; no user traffic): edge profile on the native libp2p stack,
    edge profile on py-libp2p (`[network] stack = "py-libp2p"`), and the lan profile
    on the native stack for comparison. After membership converges and a settle
    period, each daemon's CPU time (utime + stime from /proc) over `--window` seconds
    gives its idle CPU %; RSS is sampled at the end (VmRSS) with the peak (VmHWM);
  * bare processes importing the same dependencies, for the RSS baseline;
  * the RSS each import step adds (python → trio → … → the daemon module), which is
    where the memory goes.

Limits: idle CPU < 1 %, idle RSS ≤ 60 MB (= 57.2 MiB). Each figure is
printed with its ratio to the limit. On a 2-core machine shared with other work the
CPU figures are noisy: compare profiles within one run.

Run: .venv/bin/python bench/edge.py [--window 60]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from colony_cluster import Cluster, wait_for  # noqa: E402

CPU_LIMIT_PCT = 1.0
RSS_LIMIT_MIB = 60e6 / (1 << 20)
TICK = os.sysconf("SC_CLK_TCK")
THIRD_PARTY = ("trio", "structlog", "cbor2", "nacl.signing", "lmdb", "h11",
               "cryptography.hazmat.primitives.ciphers.aead", "prometheus_client")
STEPS = (*THIRD_PARTY, "gossip.swim", "dht.core", "store.blockstore", "overlay.capsule.core",
         "overlay.p2p.host", "overlay.runtime.net.transport", "overlay.runtime.api.routes",
         "overlay.runtime.daemon", "overlay.runtime.run")

_RSS_CODE = """
import importlib, sys
def rss():
    for l in open('/proc/self/status'):
        if l.startswith('VmRSS:'):
            return int(l.split()[1])
prev = rss()
print('python', prev)
for m in sys.argv[1:]:
    importlib.import_module(m)
    print(m, rss())
"""


def import_steps(mods: tuple[str, ...]) -> list[tuple[str, int]]:
    out = subprocess.run([sys.executable, "-c", _RSS_CODE, *mods], capture_output=True,
                         text=True, check=True, timeout=120, cwd=ROOT).stdout
    return [(line.rsplit(" ", 1)[0], int(line.rsplit(" ", 1)[1]))
            for line in out.splitlines()]


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {key}")


def loaded_webrtc(pid: int) -> bool:
    """aiortc's native deps (PyAV, libsrtp) mapped: something started WebRTC (+~34 MiB)."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return "site-packages/av/" in maps or "pylibsrtp" in maps


def stack_supported(stack: str) -> bool:
    from overlay.runtime.process import config as cfg

    return "stack" in cfg.DEFAULTS["network"] or stack == "native"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--window", type=float, default=60.0, help="idle window, seconds")
    ap.add_argument("--settle", type=float, default=10.0)
    args = ap.parse_args()

    configs = [("edge", "native"), ("edge", "py-libp2p"), ("lan", "native")]
    configs = [c for c in configs if stack_supported(c[1])]
    steps = import_steps(STEPS)
    bare = import_steps(THIRD_PARTY)[-1][1]
    bare_libp2p = import_steps((*THIRD_PARTY, "libp2p"))[-1][1]
    daemon_imports = steps[-1][1]

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        clusters = []
        try:
            for i, (profile, stack) in enumerate(configs):
                env = {"COLONY_NODE_PROFILE": profile, "COLONY_NETWORK_STACK": stack}
                c = Cluster(Path(tmp) / f"c{i}", 3, env=env)
                clusters.append(c)
                c.start()
            for c in clusters:
                c.wait_converged(120)
            settle_end = time.monotonic() + args.settle
            wait_for(lambda: time.monotonic() > settle_end, args.settle + 5, "settle")
            t0 = time.monotonic()
            before = [[cpu_s(n.pid) for n in c.nodes] for c in clusters]
            end = t0 + args.window
            wait_for(lambda: time.monotonic() > end, args.window + 5, "idle window", every=1)
            wall = time.monotonic() - t0
            for (profile, stack), c, b in zip(configs, clusters, before, strict=True):
                cpu = [(cpu_s(n.pid) - b0) / wall * 100 for n, b0 in zip(c.nodes, b,
                                                                           strict=True)]
                rss = [status_kib(n.pid, "VmRSS") / 1024 for n in c.nodes]
                hwm = [status_kib(n.pid, "VmHWM") / 1024 for n in c.nodes]
                rtc = [loaded_webrtc(n.pid) for n in c.nodes]
                results.append((profile, stack, cpu, rss, hwm, rtc))
        finally:
            for c in clusters:
                c.close()

    print(f"idle window {wall:.0f} s; 3 daemons per colony, all colonies at once "
          f"(2 shared cores)")
    print(f"{'bare process importing the third-party deps':<48} {bare / 1024:7.1f} MiB RSS")
    print(f"{'  ... and libp2p (py-libp2p stack)':<48} {bare_libp2p / 1024:7.1f} MiB RSS")
    print(f"{'bare process importing the daemon module':<48} {daemon_imports / 1024:7.1f} "
          "MiB RSS")
    for profile, stack, cpu, rss, hwm, rtc in results:
        label = f"idle daemon, {profile} profile, {stack} stack"
        mean_cpu, max_rss = statistics.mean(cpu), max(rss)
        base = bare_libp2p if stack == "py-libp2p" else bare
        print(f"{label:<48} CPU {mean_cpu:5.2f} % (max {max(cpu):.2f}; ratio "
              f"{mean_cpu / CPU_LIMIT_PCT:.2f} of the 1 % limit)")
        print(f"{'':<48} RSS {statistics.mean(rss):5.1f} MiB (max {max_rss:.1f}, peak "
              f"{max(hwm):.1f}; ratio {max_rss / RSS_LIMIT_MIB:.2f} of 60 MB; "
              f"+{max_rss - base / 1024:.1f} MiB over the bare imports)")
        print(f"{'':<48} per daemon: {', '.join(f'{r:.1f}' for r in rss)} MiB; "
              f"{sum(rtc)} of {len(rss)} loaded aiortc/PyAV")
        plain = [r for r, w in zip(rss, rtc, strict=True) if not w]
        if plain and len(plain) < len(rss):
            print(f"{'':<48} without WebRTC loaded: {max(plain):.1f} MiB (ratio "
                  f"{max(plain) / RSS_LIMIT_MIB:.2f} of 60 MB)")
    print("where the memory goes (RSS added by each import, in order):")
    prev = None
    for name, kib in steps:
        if prev is not None:
            print(f"  {name:<46} +{(kib - prev) / 1024:5.1f} MiB  -> {kib / 1024:6.1f}")
        else:
            print(f"  {name:<46} {kib / 1024:6.1f} MiB")
        prev = kib


if __name__ == "__main__":
    main()
