"""Fetch throughput of real daemons vs the transport baselines.

Prints, in one run, each with its limit and ratio:
  * raw trio TCP loopback MB/s (the ceiling);
  * one bare Noise+Yamux stream between two processes, py-libp2p and native
    (bench/transport.py): the limit for a fetch over one connection;
  * 1 KiB request/response rate on one long-lived stream, both stacks;
  * `fetch` of a dataset between separate daemon processes from 1 provider and
    from 3 providers (the publisher plus two earlier fetchers, found by the DHT),
    as ratios to the bare stream of the daemons' stack (goal: ≥ 0.8);
  * the same with every daemon's send rate capped at 20 MB/s
    (`[network] max_send_rate`, as WAN peers would be): 3 providers vs 1
    (goal: ≥ 2.5×);
  * CPU seconds per GiB fetched, of the fetching daemon (also split into user and
    system time) and of all providers together (utime + stime of every thread, from
    /proc): steadier than MB/s on a shared machine, and what the fetch path costs
    whatever the other load;
  * the write limits of the same run: buffered writes to a new file (no fsync, the
    page cache) and fsync'd LMDB batches of 64 blocks into a fresh store;
  * the fetcher's floor (bench/fetch_floor.py): CPU s/GiB and MB/s of receiving the
    bare stream, sha2-256 and synced LMDB puts, their sum, and the fetch's CPU ÷ that
    floor and MB/s ÷ min(stream, puts) (also with `--cpu`, per fetch).

Run: .venv/bin/python bench/fetch.py [--mib 64] [--stack native|py-libp2p]

`--durability N` instead compares, in N interleaved rounds, the ways fetched blocks
could be committed (synced batches as kept, metasync=False, sync=False with one sync
at the end, bigger batches): the measurement behind docs/store.md's choice.

`--repeat N` instead fetches one dataset N times in a row between two daemons (the
fetcher's copy is removed by `colony gc` before each fetch) and reports the stalls
(fetches slower than 5x the median), the slowest fetch and every drop counter of both
daemons (/v1/stats "drops"), e.g. `bench/fetch.py --repeat 300 --mib 64`.

`--cpu N` instead fetches one dataset N times between two daemons (a fresh store,
then after `colony gc`) and prints each fetch's CPU s/GiB of the fetcher (user and
system) and of the provider, with the bare native stream measured before and after;
`--profile DIR` adds py-spy recordings of both daemons (issue #16), e.g.
`bench/fetch.py --cpu 4 --mib 256 --profile /tmp/prof`.
Loopback on a shared 2-core machine is noisy; all daemons and the client share it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, bench/ is sys.path[0] and its modules named like packages
# (bench/store.py) would shadow them: the repository root first.
if sys.path and Path(sys.path[0] or ".").resolve() == ROOT / "bench":
    sys.path[0] = str(ROOT)
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from colony_cluster import Cluster, Node, colony_cmd, deterministic_bytes, wait_for  # noqa: E402

# Siblings as `bench.…` (the root is on sys.path), so mypy resolves them too.
from bench import fetch_floor  # noqa: E402
from bench.transport import (  # noqa: E402
    MiB,
    _pair_run,
    best,
    line,
    long_lived_rps,
    raw_tcp_mb_s,
    two_process,
)

RATE_LIMIT = 20_000_000  # bytes/s per provider


def cpu_us(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds, all threads, a process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tck = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tck, int(fields[12]) / tck


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) a process has used so far."""
    return sum(cpu_us(pid))


def timed_fetch(
    node: Node, cid: str, providers: list[Node] | None = None
) -> tuple[float, dict[str, object]]:
    """(MB/s, final progress); the progress also gets `cpu_s_per_gib` of the fetcher
    and of `providers` together."""
    provs = providers or []
    u0 = cpu_us(node.pid)
    c0 = cpu_s(node.pid), sum(cpu_s(p.pid) for p in provs)
    t0 = time.perf_counter()
    final: dict[str, object] = {}
    found: list[str] = []
    for item in node.api(600).stream("POST", "/v1/fetch", {"cid": cid}):
        if item.get("phase") == "providers":
            found = list(item["providers"])
        final = item
    dt = time.perf_counter() - t0
    assert final.get("done") and not final.get("error"), final
    gib = int(final["bytes_fetched"]) / 2**30  # type: ignore[call-overload]
    c1 = cpu_s(node.pid), sum(cpu_s(p.pid) for p in provs)
    u1 = cpu_us(node.pid)
    # The fetcher's system time is mostly the kernel copying blocks into page-cache
    # pages (perf: copy_folio_from_iter_atomic), which on this VM is slow for pages
    # it has not used lately: shown apart from user time.
    final["cpu_s_per_gib"] = {"fetcher": round((c1[0] - c0[0]) / gib, 2),
                              "fetcher_user": round((u1[0] - u0[0]) / gib, 2),
                              "fetcher_sys": round((u1[1] - u0[1]) / gib, 2),
                              "providers": round((c1[1] - c0[1]) / gib, 2)}
    # The providers the fetch's own DHT lookup found when its walk ended; those whose
    # answer came later (a busy provider) join the fetch as they appear and are in
    # the final line's "providers_late" (docs/dht.md, issue #16).
    final["providers_found"] = len(found)
    return int(final["bytes_fetched"]) / dt / 1e6, final  # type: ignore[call-overload]


def durable_write_rate(tmp: Path, size: int) -> float:
    """MB/s of committing `size` bytes of 256 KiB blocks to a fresh LMDB store in
    fsync'd batches of 64, as a fetch commits them: a fetch that is acknowledged only
    once durable cannot beat it, whatever the stream does."""
    from overlay.core.cid import RAW, Cid
    from store.blockstore import BlockStore

    block = 256 * 1024
    blobs = [os.urandom(block) for _ in range(64)]
    batches = []
    for b in range(size // block // 64):
        batch = []
        for j, blob in enumerate(blobs):
            data = blob[:-8] + (b * 64 + j).to_bytes(8, "big")
            batch.append((Cid.of(RAW, data), data, None))
        batches.append(batch)
    with BlockStore(tmp / "disk-limit") as store:
        t0 = time.perf_counter()
        for batch in batches:
            store.put_many(batch)
        dt = time.perf_counter() - t0
    return len(batches) * 64 * block / dt / 1e6


def buffered_write_rate(tmp: Path, size: int) -> float:
    """MB/s of writing `size` bytes to a new file in 1 MiB writes, no fsync: how fast
    the kernel takes new page-cache pages. Every stored block goes through such pages,
    so nothing durable is faster; on this VM it ranged 131–3,300 MB/s (slow for pages
    the host has to back again). The file is kept (its pages stay in use) so the
    fetches after it do not reuse them."""
    chunk = os.urandom(1 << 20)
    t0 = time.perf_counter()
    with open(tmp / "page-cache-limit.bin", "wb", buffering=0) as f:
        for _ in range(size >> 20):
            f.write(chunk)
    return size / (time.perf_counter() - t0) / 1e6


#: The commit policies compared by `--durability`: (name, blocks a batch, lmdb.open
#: flags, one env.sync(True) at the end).
MODES: list[tuple[str, int, dict[str, bool], bool]] = [
    ("synced 64-block batches (kept)", 64, {}, False),
    ("metasync=False, 64-block batches", 64, {"metasync": False}, True),
    ("sync=False, one sync at the end", 64, {"sync": False}, True),
    ("synced 256-block batches", 256, {}, False),
    ("writemap, synced 64-block batches", 64, {"writemap": True}, False),
]


def durability_modes(tmp: Path, size: int, rounds: int) -> None:
    """MB/s and CPU s/GiB of committing `size` bytes of 256 KiB blocks to a fresh store
    under each of MODES, interleaved `rounds` times in a rotating order (the disk's
    rate drifts; compare within a round). The kept policy is the first of MODES;
    docs/store.md has the argument."""
    import resource

    import lmdb

    from overlay.core.cid import RAW, Cid
    from store.blockstore import BlockStore

    block = 256 * 1024
    blobs = [os.urandom(block) for _ in range(64)]
    items = []
    for i in range(size // block):
        data = blobs[i % 64][:-8] + i.to_bytes(8, "big")
        items.append((Cid.of(RAW, data), data, None))
    real_open = lmdb.open
    for r in range(rounds):
        # Rotated each round: the first store of a round writes into page-cache pages
        # the kernel has not used lately, which are slow on this VM (docs/store.md).
        for m in [(r + k) % len(MODES) for k in range(len(MODES))]:
            name, per, flags, end_sync = MODES[m]
            lmdb.open = lambda *a, _f=flags, **k: real_open(*a, **{**k, **_f})  # type: ignore[assignment]
            try:
                with BlockStore(tmp / f"mode-{m}") as store:
                    ru0 = resource.getrusage(resource.RUSAGE_SELF)
                    t0 = time.perf_counter()
                    for j in range(0, len(items), per):
                        store.put_many(items[j:j + per])
                    if end_sync:
                        store.env.sync(True)
                    dt = time.perf_counter() - t0
                    ru1 = resource.getrusage(resource.RUSAGE_SELF)
            finally:
                lmdb.open = real_open
                shutil.rmtree(tmp / f"mode-{m}", ignore_errors=True)
            cpu = (ru1.ru_utime - ru0.ru_utime + ru1.ru_stime - ru0.ru_stime) / (size / 2**30)
            print(f"  round {r + 1}: {name:36s} {size / dt / 1e6:8,.0f} MB/s  "
                  f"CPU {cpu:.2f} s/GiB", flush=True)


def settle(nodes: list[Node], limit_s: float = 15.0) -> float:
    """Wait (at most `limit_s`) until every daemon is about idle (< 0.15 CPU s per s
    over 0.5 s); the seconds waited. A fetch announces its DAG's blocks in the DHT
    when it ends (≈ 0.3 CPU s on the fetcher and 0.15 on each other daemon for
    1,031 blocks, issue #16): without this, the 3-provider fetch started while the
    fetcher before it was still announcing, on the same 2 cores, and the 1-provider
    fetch never did."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < limit_s:
        c0 = [cpu_s(n.pid) for n in nodes]
        time.sleep(0.5)
        if all(cpu_s(n.pid) - c < 0.075 for n, c in zip(nodes, c0, strict=True)):
            break
    return time.perf_counter() - t0


def wait_providers(node: Node, cid: str, want: set[str]) -> None:
    def ok() -> bool:
        r = node.api(60).call("POST", "/v1/dht/findprovs", {"cid": cid})
        return want <= set(r["providers"])

    wait_for(ok, 60, f"{len(want)} providers of {cid}")


def fetch_run(tmp: Path, size: int, stack: str,
              rate: int) -> tuple[float, float, dict[str, float]]:
    """(MB/s from 1 provider, MB/s from 3 providers, the 1-provider fetch's CPU s/GiB)
    on a fresh 4-daemon colony."""
    env = {"COLONY_NETWORK_STACK": stack, "COLONY_NETWORK_MAX_SEND_RATE": str(rate)}
    tag = f"{stack}-{rate}"
    with Cluster(tmp / f"c-{tag}", 4, env=env) as c:
        c.wait_converged(60)
        data = tmp / "data.bin"
        if not data.exists():
            data.write_bytes(deterministic_bytes(size, seed=64))
        r = colony_cmd(c.nodes[0].home, "publish", str(data), "--json", timeout=300)
        cid = json.loads(r.stdout)["cid"]
        n0, n1, n2, n3 = c.nodes
        settled = [settle(c.nodes)]
        one, f1 = timed_fetch(n1, cid, [n0])
        wait_providers(n2, cid, {n0.peer_id, n1.peer_id})
        timed_fetch(n2, cid)
        wait_providers(n3, cid, {n0.peer_id, n1.peer_id, n2.peer_id})
        settled.append(settle(c.nodes))
        three, f3 = timed_fetch(n3, cid, [n0, n1, n2])
        print(f"  [{tag}] waited for idle daemons before the 1- and 3-provider fetches: "
              f"{settled[0]:.1f} s, {settled[1]:.1f} s")
        for name, f in (("1 provider", f1), ("3 providers", f3)):
            print(f"  [{tag}] blocks by provider, {name} ({f['providers_found']} found, "
                  f"{f.get('providers_late', 0)} late): "
                  f"{sorted(f['providers'].values(), reverse=True)}; "  # type: ignore[attr-defined]
                  f"CPU s/GiB {f['cpu_s_per_gib']}")
        return one, three, f1["cpu_s_per_gib"]  # type: ignore[return-value]


STALL_FACTOR = 5.0


def repeat_run(tmp: Path, size: int, stack: str, n: int) -> dict[str, object]:
    """`n` consecutive fetches of one dataset from one provider: times, stalls, drops."""
    env = {"COLONY_NETWORK_STACK": stack}
    with Cluster(tmp / f"r-{stack}", 2, env=env) as c:
        c.wait_converged(60)
        data = tmp / "repeat.bin"
        data.write_bytes(deterministic_bytes(size, seed=65))
        r = colony_cmd(c.nodes[0].home, "publish", str(data), "--json", timeout=300)
        cid = json.loads(r.stdout)["cid"]
        provider, fetcher = c.nodes
        times: list[float] = []
        fetched = 0
        for i in range(n):
            colony_cmd(fetcher.home, "gc", "--json", timeout=300)  # fetch it all again
            t0 = time.perf_counter()
            _, final = timed_fetch(fetcher, cid, [provider])
            times.append(time.perf_counter() - t0)
            got = int(final["bytes_fetched"])  # type: ignore[call-overload]
            fetched += got
            print(f"  fetch {i + 1}/{n}: {times[-1]:.2f} s, {got / MiB:.1f} MiB", flush=True)
        median = sorted(times)[len(times) // 2]
        stalls = [round(t, 2) for t in times if t > STALL_FACTOR * median]
        drops = {name: node.api().call("GET", "/v1/stats")["drops"]
                 for name, node in (("provider", provider), ("fetcher", fetcher))}
        ex = fetcher.api().call("GET", "/v1/stats")["exchange"]
    return {"fetches": n, "mib": size // MiB, "median_s": round(median, 3),
            "max_s": round(max(times), 3), "stalls": stalls, "mib_fetched": fetched // MiB,
            "fetcher_want_timeouts": ex["timeouts"], "fetcher_rewants": ex["rewants"],
            "drops": drops}


def cpu_run(tmp: Path, size: int, stack: str, n: int, profile: str | None,
            profiler: str | None = None, cipher: str = "auto") -> None:
    """`n` fetches of one dataset between two daemons (the first into a fresh store,
    the rest after `colony gc`), each with the fetcher's and the provider's CPU s/GiB;
    the bare native stream before and after them (the wall-time limit of the same run).
    With `profile`, `profiler` (py-spy, py-spy:gil for what holds the interpreter, or
    perf for native code and the kernel; if on PATH) samples both daemons during the
    fetches and writes its files into that directory. py-spy counts a thread that
    is runnable but not running as busy, so on loaded cores its shares are wall
    time; perf's are CPU time."""
    import subprocess

    tmp.mkdir(parents=True, exist_ok=True)
    bare0 = trio.run(best(2, lambda: two_process(stack, 128 * MiB, True, cipher))) * MiB / 1e6
    line(f"bare native Noise+Yamux stream, {cipher} (before the fetches)", bare0, "MB/s")
    floor = fetch_floor.measure(tmp, size, stack, cipher)
    fetch_floor.report(floor)
    env = {"COLONY_NETWORK_STACK": stack, "COLONY_NETWORK_NOISE_CIPHER": cipher}
    with Cluster(tmp / f"cpu-{stack}-{cipher}", 2, env=env) as c:
        c.wait_converged(60)
        data = tmp / "cpu.bin"
        data.write_bytes(deterministic_bytes(size, seed=66))
        r = colony_cmd(c.nodes[0].home, "publish", str(data), "--json", timeout=300)
        cid = json.loads(r.stdout)["cid"]
        provider, fetcher = c.nodes
        # What the daemons burn doing nothing (gossip, DHT upkeep) over 5 s: part of
        # every fetch's CPU figure, and the bigger part the slower the fetch.
        idle0 = cpu_s(fetcher.pid), cpu_s(provider.pid)
        time.sleep(5.0)
        idle = (cpu_s(fetcher.pid) - idle0[0]) / 5, (cpu_s(provider.pid) - idle0[1]) / 5
        print(f"  idle CPU s per s: fetcher {idle[0]:.3f}, provider {idle[1]:.3f}", flush=True)
        spies: list[subprocess.Popen[bytes]] = []
        tool = (profiler or "").split(":")[0]
        if profile and tool and shutil.which(tool):
            Path(profile).mkdir(parents=True, exist_ok=True)
            for role, node in (("fetcher", fetcher), ("provider", provider)):
                out = str(Path(profile) / role)
                argv = (["perf", "record", "-F", "499", "-p", str(node.pid), "-o",
                         out + ".perf.data"] if tool == "perf" else
                        ["py-spy", "record", "--pid", str(node.pid), "--rate", "200",
                         "--threads", "--format", "speedscope", "--nonblocking",
                         *(["--gil"] if profiler == "py-spy:gil" else []),
                         "-o", out + ".json"])
                spies.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                              stderr=subprocess.DEVNULL))
            time.sleep(1.0)
        rates: list[float] = []
        try:
            for i in range(n):
                if i:
                    colony_cmd(fetcher.home, "gc", "--json", timeout=300)
                mbs, final = timed_fetch(fetcher, cid, [provider])
                rates.append(mbs)
                print(f"  fetch {i + 1}/{n} ({'fresh store' if not i else 'after gc'}): "
                      f"{mbs:,.1f} MB/s, of stream {mbs / bare0:.3f}; "
                      f"CPU s/GiB {final['cpu_s_per_gib']}", flush=True)
                # What the fetch costs after it is acknowledged (the fetcher announces
                # the DAG in the DHT): CPU until both daemons are idle again, less
                # their idle rate, per GiB fetched.
                a0, t0 = (cpu_s(fetcher.pid), cpu_s(provider.pid)), time.perf_counter()
                settle([fetcher, provider])
                dt = time.perf_counter() - t0
                gib = int(final["bytes_fetched"]) / 2**30  # type: ignore[call-overload]
                print(f"    after it (DHT announcement), CPU s/GiB: fetcher "
                      f"{(cpu_s(fetcher.pid) - a0[0] - idle[0] * dt) / gib:.2f}, provider "
                      f"{(cpu_s(provider.pid) - a0[1] - idle[1] * dt) / gib:.2f} "
                      f"({dt:.1f} s)", flush=True)
                ds = fetcher.api().call("GET", "/v1/stats")["dag_stream"]
                print(f"    blocks copied out of the received pieces (spanning two), all "
                      f"fetches so far: {ds.get('fetched_joined', '-')} of "
                      f"{ds['fetched_blocks']}", flush=True)
                cpu = final["cpu_s_per_gib"]["fetcher"]  # type: ignore[index]
                print(f"    vs the floor: {fetch_floor.versus(floor, cpu, mbs, bool(i))}",
                      flush=True)
        finally:
            for spy in spies:
                spy.send_signal(2)  # SIGINT: py-spy writes its file and exits
            for spy in spies:
                spy.wait(60)
    bare1 = trio.run(best(2, lambda: two_process(stack, 128 * MiB, True, cipher))) * MiB / 1e6
    line(f"bare native Noise+Yamux stream, {cipher} (after the fetches)", bare1, "MB/s")
    med = sorted(rates)[len(rates) // 2]
    line(f"fetch {size // MiB} MiB, median of {n}", med, "MB/s", max(bare0, bare1),
         "bare stream (best of before/after)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mib", type=int, default=64, help="dataset size (MiB)")
    ap.add_argument("--stack", default="native", choices=("native", "py-libp2p"),
                    help="network stack of the daemons")
    ap.add_argument("--repeat", type=int, default=0, metavar="N",
                    help="only fetch the dataset N times in a row; report stalls and drops")
    ap.add_argument("--durability", type=int, default=0, metavar="ROUNDS",
                    help="only compare commit policies for fetched blocks, ROUNDS times")
    ap.add_argument("--cpu", type=int, default=0, metavar="N",
                    help="only fetch N times between two daemons; CPU s/GiB of both ends")
    ap.add_argument("--profile", metavar="DIR",
                    help="with --cpu: profile both daemons, files into DIR")
    ap.add_argument("--cipher", default="auto",
                    help="with --cpu: [network] noise_cipher of both daemons and the bare "
                         "stream; comma-separated values run in turn (e.g. chacha,aesgcm)")
    ap.add_argument("--profiler", default="py-spy", choices=("py-spy", "py-spy:gil", "perf"),
                    help="with --profile: the sampler")
    args = ap.parse_args()
    size = args.mib * MiB
    if args.cpu:
        with tempfile.TemporaryDirectory() as tmp:
            for i, cipher in enumerate(args.cipher.split(",")):
                print(f"-- noise_cipher = {cipher}", flush=True)
                cpu_run(Path(tmp) / str(i), size, args.stack, args.cpu, args.profile,
                        args.profiler, cipher)
        return
    if args.durability:
        with tempfile.TemporaryDirectory() as tmp:
            durability_modes(Path(tmp), size, args.durability)
        return
    if args.repeat:
        with tempfile.TemporaryDirectory() as tmp:
            res = repeat_run(Path(tmp), size, args.stack, args.repeat)
        print(json.dumps(res, indent=2))
        return
    bulk = 128 * MiB

    # bench/transport.py reports MiB/s; everything here is in MB/s (10^6 bytes).
    tcp = trio.run(best(3, lambda: raw_tcp_mb_s(256 * MiB))) * MiB / 1e6
    line("raw trio TCP loopback", tcp, "MB/s")
    bare: dict[str, float] = {}
    for stack in ("py-libp2p", "native"):
        bare[stack] = trio.run(best(2, partial(two_process, stack, bulk, True))) * MiB / 1e6
        line(f"bare {stack} Noise+Yamux stream (two processes)", bare[stack], "MB/s", tcp,
             "raw TCP")
    line("bare stream: native", bare["native"], "MB/s", bare["py-libp2p"], "py-libp2p")
    rps: dict[str, float] = {}
    for stack in ("py-libp2p", "native"):
        rps[stack] = trio.run(best(2, partial(
            _pair_run, lambda a, b: long_lived_rps(a, b, 1000), stack)))
        line(f"{stack}: 1 KiB requests on one long-lived stream", rps[stack], "req/s")
    line("1 KiB requests: native", rps["native"], "req/s", rps["py-libp2p"], "py-libp2p")

    limit = bare[args.stack]
    with tempfile.TemporaryDirectory() as tmp:
        cache = buffered_write_rate(Path(tmp), size)
        line("buffered writes to a new file (no fsync)", cache, "MB/s")
        disk = durable_write_rate(Path(tmp), size)
        line("durable block writes on this disk (64-block fsync'd batches)", disk, "MB/s")
        floor = fetch_floor.measure(Path(tmp), size, args.stack, "auto")
        fetch_floor.report(floor)
        one, three, cpu1 = fetch_run(Path(tmp), size, args.stack, 0)
        print(f"  fetch from 1 provider (fresh store) vs the floor: "
              f"{fetch_floor.versus(floor, cpu1['fetcher'], one, False)}", flush=True)
        line(f"fetch {args.mib} MiB from 1 provider vs the disk", one, "MB/s", disk,
             "durable writes")
        line(f"fetch {args.mib} MiB from 1 provider ({args.stack})", one, "MB/s", limit,
             "bare stream")
        line(f"fetch {args.mib} MiB from 3 providers ({args.stack})", three, "MB/s", limit,
             "bare stream")
        one_l, three_l, _ = fetch_run(Path(tmp), size, args.stack, RATE_LIMIT)
        line("fetch, providers capped at 20 MB/s: 1 provider", one_l, "MB/s", RATE_LIMIT / 1e6,
             "the cap")
        line("fetch, providers capped at 20 MB/s: 3 providers", three_l, "MB/s", one_l,
             "1 provider (goal 2.5)")


if __name__ == "__main__":
    import logging

    import structlog

    logging.disable(logging.CRITICAL)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    main()
