"""Gateway throughput: a 256 MiB file over the trustless HTTP gateway vs `colony cat`.

One daemon with `[gateway] listen` set; the file is added with `colony add`, read once
to warm the page cache, then, alternating, each measurement best of `--runs`:

  * `colony cat CID > /dev/null`: the limit, a local zero-copy read of the same
    blocks (it includes the CLI's start-up, as a user's `cat` does);
  * `curl -o /dev/null http://GATEWAY/ipfs/CID` (the deserialised file);
  * `curl … ?format=car` (the same blocks as a CAR stream);
  * `curl … /ipfs/DIR/name` through a directory (path resolution adds one block).

It prints each MB/s with its ratio to `colony cat` of the same run, the daemon's
peak RSS growth while the gateway streams (memory must stay bounded: the file is
never held), and the load average before and after (the machine is shared; compare
figures of one run only).

Run: .venv/bin/python bench/gateway.py [--mib 256] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from colony_cluster import Cluster, Node, colony_cmd, deterministic_bytes  # noqa: E402

from overlay.runtime.net.ports import free_port  # noqa: E402

MiB = 1 << 20


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) process `pid` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed_cat(node: Node, cid: str, size: int) -> tuple[float, int, float]:
    """Seconds for `colony cat` of `cid` into /dev/null, 0, and its CPU seconds."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLONY_")}
    c0 = children_cpu_s()
    t0 = time.perf_counter()
    with open(os.devnull, "wb") as null:
        subprocess.run([sys.executable, "-m", "overlay.cli.main", "--home", str(node.home),
                        "cat", cid], stdout=null, check=True, env=env, cwd=ROOT)
    return time.perf_counter() - t0, 0, children_cpu_s() - c0


def timed_curl(url: str, size: int | None, pid: int) -> tuple[float, int, float]:
    """Seconds for curl to download `url` into /dev/null, the daemon's peak RSS (KiB)
    sampled meanwhile and the daemon's CPU seconds (the server's cost, not curl's).
    The byte count is checked (`size`: exact; None: > 0)."""
    peak = [rss_kib(pid)]
    c0 = cpu_s(pid)
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.02):
            peak[0] = max(peak[0], rss_kib(pid))

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    t0 = time.perf_counter()
    r = subprocess.run(["curl", "-s", "-o", os.devnull, "-w", "%{http_code} %{size_download}",
                        url], capture_output=True, text=True, check=True)
    dt = time.perf_counter() - t0
    stop.set()
    th.join()
    code, got = r.stdout.split()
    assert code == "200", (url, r.stdout)
    assert (int(got) == size) if size is not None else int(got) > 0, (url, got, size)
    return dt, peak[0], cpu_s(pid) - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    if shutil.which("curl") is None:
        sys.exit("curl is needed")
    size = args.mib * MiB
    with tempfile.TemporaryDirectory(prefix="bench-gw-") as tmp:
        port = free_port()
        c = Cluster(Path(tmp) / "c", 1, env={"COLONY_GATEWAY_LISTEN": f"127.0.0.1:{port}"})
        with c:
            node = c.nodes[0]
            d = Path(tmp) / "d"
            d.mkdir()
            (d / "data.bin").write_bytes(deterministic_bytes(size, seed=7))
            root = colony_cmd(node.home, "add", "-r", "-Q", str(d), timeout=600).stdout.strip()
            cid = colony_cmd(node.home, "ls", root).stdout.split()[0]
            (d / "data.bin").unlink()
            base = f"http://127.0.0.1:{port}/ipfs"
            print(f"load average before: {load()}   file: {args.mib} MiB, {cid}")
            timed_cat(node, cid, size)  # warm the page cache for both readers
            rss0 = rss_kib(node.pid)
            best: dict[str, float] = {}
            cpu: dict[str, float] = {}
            peak = rss0
            for _ in range(args.runs):
                runs: dict[str, Callable[[], tuple[float, int, float]]] = {
                    "colony cat": lambda: timed_cat(node, cid, size),
                    "gateway file": lambda: timed_curl(f"{base}/{cid}", size, node.pid),
                    "gateway CAR": lambda: timed_curl(f"{base}/{cid}?format=car", None,
                                                      node.pid),
                    "gateway DIR/path": lambda: timed_curl(f"{base}/{root}/data.bin", size,
                                                           node.pid),
                }
                for name, fn in runs.items():
                    dt, rss, used = fn()
                    peak = max(peak, rss)
                    best[name] = min(best.get(name, dt), dt)
                    cpu[name] = min(cpu.get(name, used), used)
            limit = size / best["colony cat"] / 1e6
            gib = size / (1 << 30)
            print(f"{'measurement':<20} {'MB/s':>9} {'ratio to colony cat':>20} "
                  f"{'CPU s/GiB':>10}")
            for name, dt in best.items():
                mbs = size / dt / 1e6
                print(f"{name:<20} {mbs:>9.0f} {mbs / limit:>20.2f} {cpu[name] / gib:>10.2f}")
            print("(CPU: colony cat's whole process incl. start-up; the gateway rows: the "
                  "daemon's, not curl's)")
            print(f"daemon RSS: {rss0 / 1024:.0f} MiB before, peak {peak / 1024:.0f} MiB while "
                  f"streaming (growth {(peak - rss0) / 1024:.0f} MiB for a {args.mib} MiB file)")
            print(f"load average after: {load()}")


if __name__ == "__main__":
    main()
