"""Transport baselines: what each libp2p data path costs next to raw TCP (DESIGN §3).

Prints, each with its limit and ratio, for both network stacks (`native` =
overlay/p2p, our own multistream/Noise/Yamux; `py-libp2p` = py-libp2p 0.8.1):
  * raw trio TCP loopback MB/s (the limit for everything below);
  * one bare Noise+Yamux stream MB/s (no Colony framing), in one process and
    between two processes;
  * the adapter with RAW 256 KiB frames between two processes;
  * 1 KiB request/response rate on one long-lived stream (adapter, request ids),
    a new stream per request (multistream-select each time), and raw TCP;
  * CPU time per bulk MiB and per request (both ends in one process): steadier
    than wall-clock figures when other work shares the cores;
  * connection set-up time;
  * RSS of a process after importing each stack vs without either;
  * with --profile, a cProfile of the native bulk path (both ends in one process).

Run: .venv/bin/python bench/transport.py [--quick] [--profile] [--stack native|py-libp2p]
Loopback on a shared 2-core machine is noisy: every figure is the best of N runs.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from overlay.core.crypto import KeyPair
from overlay.core.ids import PeerId
from overlay.runtime.net.transport import Codec, Transport, TransportConfig, TransportStream

LOOP = "/ip4/127.0.0.1/tcp/0"
BULK = "/colony/bench-bulk/1.0.0"
BARE = "/colony/bench-bare/1.0.0"
RPC = "/colony/bench-rpc/1.0.0"
ONCE = "/colony/bench-once/1.0.0"
CHUNK = 256 * 1024
WRITE = 256 * 1024  # bare-stream write size, as in the earlier py-libp2p baseline
MiB = 1024 * 1024
STACKS = ("native", "py-libp2p")


def line(name: str, value: float, unit: str, limit: float | None = None, what: str = "") -> None:
    ratio = f"  ratio {value / limit:.3f} of {what} ({limit:,.0f} {unit})" if limit else ""
    print(f"{name:<58} {value:>10,.1f} {unit}{ratio}", flush=True)


def best(n: int, fn: Callable[[], Awaitable[float]]) -> Callable[[], Awaitable[float]]:
    async def run() -> float:
        return max([await fn() for _ in range(n)])

    return run


# ---------------------------------------------------------------- raw TCP


async def raw_tcp_mb_s(total: int) -> float:
    done = trio.Event()
    received = 0

    async def sink(stream: trio.SocketStream) -> None:
        nonlocal received
        while received < total:
            data = await stream.receive_some(CHUNK)
            if not data:
                break
            received += len(data)
        done.set()

    async with trio.open_nursery() as n:
        listeners = await n.start(trio.serve_tcp, sink, 0)
        port = listeners[0].socket.getsockname()[1]
        client = await trio.open_tcp_stream("127.0.0.1", port)
        payload = b"x" * CHUNK
        t0 = time.perf_counter()
        sent = 0
        while sent < total:
            await client.send_all(payload)
            sent += CHUNK
        await done.wait()
        dt = time.perf_counter() - t0
        await client.aclose()
        n.cancel_scope.cancel()
    return total / dt / MiB


async def raw_tcp_rps(count: int) -> float:
    async def echo(stream: trio.SocketStream) -> None:
        while True:
            data = await stream.receive_some(65536)
            if not data:
                return
            await stream.send_all(data)

    async with trio.open_nursery() as n:
        listeners = await n.start(trio.serve_tcp, echo, 0)
        port = listeners[0].socket.getsockname()[1]
        client = await trio.open_tcp_stream("127.0.0.1", port)
        msg = b"x" * 1024
        t0 = time.perf_counter()
        for _ in range(count):
            await client.send_all(msg)
            got = 0
            while got < len(msg):
                got += len(await client.receive_some(65536))
        dt = time.perf_counter() - t0
        await client.aclose()
        n.cancel_scope.cancel()
    return count / dt


# ---------------------------------------------------------------- one process


async def _pair_run(
    body: Callable[[Transport, Transport], Awaitable[float]], stack: str = "native"
) -> float:
    cfg = TransportConfig(stack=stack)
    async with Transport.open(KeyPair.generate(), [LOOP], cfg) as a, Transport.open(
        KeyPair.generate(), [LOOP], cfg
    ) as b:
        a.add_addrs(b.peer_id, b.listen_addrs)
        return await body(a, b)


async def _sink(peer: PeerId, s: TransportStream) -> None:
    while await s.receive_some(CHUNK):
        pass
    await s.send_all(b"k")  # acknowledge after EOF: everything was read
    await s.aclose()


async def bare_stream_mb_s(a: Transport, b: Transport, total: int) -> float:
    """One negotiated stream, no Colony framing: 1 MiB writes to a sink that
    acknowledges after reading everything."""
    b.set_stream_handler(BARE, _sink)
    s = await a.open_stream(b.peer_id, BARE)
    payload = b"x" * WRITE
    t0 = time.perf_counter()
    for _ in range(total // WRITE):
        await s.send_all(payload)
    await s.send_eof()
    assert await s.receive_some(1) == b"k"
    dt = time.perf_counter() - t0
    await s.aclose()
    return total / dt / MiB


async def long_lived_rps(a: Transport, b: Transport, count: int) -> float:
    async def echo(peer: PeerId, obj: Any) -> Any:
        return obj

    b.set_handler(RPC, on_request=echo)
    msg = b"x" * 1024
    await a.request(b.peer_id, RPC, msg)
    t0 = time.perf_counter()
    for _ in range(count):
        await a.request(b.peer_id, RPC, msg)
    return count / (time.perf_counter() - t0)


async def stream_per_request_rps(a: Transport, b: Transport, count: int) -> float:
    async def echo(peer: PeerId, s: TransportStream) -> None:
        data = await s.receive_some(65536)
        await s.send_all(data)
        await s.aclose()

    b.set_stream_handler(ONCE, echo)
    await a.connect(b.peer_id)
    msg = b"x" * 1024
    t0 = time.perf_counter()
    for _ in range(count):
        s = await a.open_stream(b.peer_id, ONCE)
        await s.send_all(msg)
        got = 0
        while got < len(msg):
            got += len(await s.receive_some(65536))
        await s.aclose()
    return count / (time.perf_counter() - t0)


async def connect_ms(stack: str) -> float:
    cfg = TransportConfig(stack=stack)
    async with Transport.open(KeyPair.generate(), [LOOP], cfg) as a, Transport.open(
        KeyPair.generate(), [LOOP], cfg
    ) as b:
        t0 = time.perf_counter()
        await a.connect(b.addrs[0])
        return (time.perf_counter() - t0) * 1000


# ---------------------------------------------------------------- two processes


SERVE = """
import logging, sys, structlog, trio
sys.path.insert(0, {root!r})
logging.disable(logging.CRITICAL)
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
from overlay.core.crypto import KeyPair
from overlay.runtime.net.transport import Codec, Transport, TransportConfig
async def sink(peer, s):
    while await s.receive_some(262144):
        pass
    await s.send_all(b"k")
    await s.aclose()
async def main():
    cfg = TransportConfig(stack={stack!r}, noise_cipher={cipher!r})
    async with Transport.open(KeyPair.generate(), ["/ip4/127.0.0.1/tcp/0"], cfg) as t:
        got = 0
        def on_message(peer, body):
            nonlocal got
            got += len(body)
            if got >= {total}:
                print("done", flush=True)
        t.set_handler({bulk!r}, on_message=on_message, codec=Codec.RAW)
        t.set_stream_handler({bare!r}, sink)
        print(t.addrs[0], flush=True)
        await trio.sleep_forever()
trio.run(main)
"""


class Server:
    """A transport in another process: a RAW-frame counter and a bare-stream sink."""

    def __init__(self, stack: str, total: int, cipher: str = "auto") -> None:
        self.stack = stack
        self.cipher = cipher
        self.total = total
        self.proc: trio.Process | None = None
        self.buf = b""

    async def __aenter__(self) -> str:
        root = str(Path(__file__).resolve().parent.parent)
        code = SERVE.format(root=root, total=self.total, stack=self.stack, bulk=BULK, bare=BARE,
                           cipher=self.cipher)
        self.proc = await trio.lowlevel.open_process(
            [sys.executable, "-c", code], stdout=subprocess.PIPE
        )
        await self.read_until(b"\n", 60)
        return self.buf.split(b"\n", 1)[0].decode()

    async def read_until(self, marker: bytes, timeout: float) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with trio.fail_after(timeout):
            while marker not in self.buf:
                self.buf += await self.proc.stdout.receive_some(4096)

    async def __aexit__(self, *exc: Any) -> None:
        assert self.proc is not None
        self.proc.kill()
        await self.proc.wait()


async def two_process(stack: str, total: int, bare: bool, cipher: str = "auto") -> float:
    """MiB/s between two processes; `cipher`: both ends' `[network] noise_cipher`."""
    server = Server(stack, total + CHUNK, cipher)
    async with server as addr:
        cfg = TransportConfig(stack=stack, noise_cipher=cipher)
        async with Transport.open(KeyPair.generate(), [LOOP], cfg) as a:
            peer = await a.connect(addr)
            if bare:
                s = await a.open_stream(peer, BARE)
                payload = b"x" * WRITE
                t0 = time.perf_counter()
                for _ in range(total // WRITE):
                    await s.send_all(payload)
                await s.send_eof()
                with trio.fail_after(120):
                    assert await s.receive_some(1) == b"k"
                return total / (time.perf_counter() - t0) / MiB
            a.codec_for(BULK, Codec.RAW)
            payload = b"x" * CHUNK
            await a.send(peer, BULK, payload)
            t0 = time.perf_counter()
            for _ in range(total // CHUNK):
                await a.send(peer, BULK, payload)
            await server.read_until(b"done", 120)
            return total / (time.perf_counter() - t0) / MiB


# ---------------------------------------------------------------- RSS


def rss_mib(imports: str) -> float:
    code = (
        f"{imports}\n"
        "for line in open('/proc/self/status'):\n"
        "    if line.startswith('VmRSS:'):\n"
        "        print(int(line.split()[1]) / 1024)\n"
    )
    root = str(Path(__file__).resolve().parent.parent)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=root, check=True)
    return float(out.stdout.strip())


def daemon_idle_rss_mib(stack: str) -> float:
    """RSS of one idle `colony daemon` (alone, up 5 s) on `stack`."""
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "integration"))
    from colony_cluster import Cluster

    with tempfile.TemporaryDirectory() as tmp, Cluster(
        Path(tmp) / "c", 1, env={"COLONY_NETWORK_STACK": stack}
    ) as c:
        time.sleep(5)
        return c.nodes[0].rss_kib() / 1024


# ---------------------------------------------------------------- main


async def main(quick: bool, profile: bool, stacks: tuple[str, ...]) -> None:
    reps = 2 if quick else 3
    bulk = (64 if quick else 256) * MiB
    rpc = 500 if quick else 2000

    raw = await best(reps, lambda: raw_tcp_mb_s(bulk * 2))()
    line("raw trio TCP loopback (one process)", raw, "MB/s")
    raw_rps = await best(reps, lambda: raw_tcp_rps(rpc * 4))()
    line("raw trio TCP 1 KiB round trips", raw_rps, "req/s")
    results: dict[str, dict[str, float]] = {}
    for stack in stacks:
        r = results[stack] = {}
        print(f"-- {stack}")
        r["bare1"] = await best(
            reps, partial(_pair_run, lambda a, b: bare_stream_mb_s(a, b, bulk), stack))()
        line(f"{stack}: bare Noise+Yamux stream (one process)", r["bare1"], "MB/s", raw,
             "raw TCP")
        r["bare2"] = await best(reps, partial(two_process, stack, bulk, True))()
        line(f"{stack}: bare stream (two processes)", r["bare2"], "MB/s", raw, "raw TCP")
        r["adapter2"] = await best(reps, partial(two_process, stack, bulk, False))()
        line(f"{stack}: adapter RAW 256 KiB frames (two processes)", r["adapter2"], "MB/s",
             r["bare2"], "bare stream")
        # CPU time (both ends in this process, kernel included) is steadier than
        # wall time on a shared machine: it does not count waiting for a core.
        c0 = time.process_time()
        await _pair_run(lambda a, b: bare_stream_mb_s(a, b, bulk), stack)
        r["bulk_cpu"] = bulk / MiB / (time.process_time() - c0)
        line(f"{stack}: bulk MiB per CPU-second (both ends, one process)", r["bulk_cpu"],
             "MiB/cpu-s")
        c0 = time.process_time()
        await _pair_run(lambda a, b: long_lived_rps(a, b, rpc), stack)
        r["req_cpu"] = (time.process_time() - c0) / rpc * 1e6
        line(f"{stack}: CPU per 1 KiB request round trip (both ends)", r["req_cpu"], "us")
        r["rps"] = await best(
            reps, partial(_pair_run, lambda a, b: long_lived_rps(a, b, rpc), stack))()
        line(f"{stack}: request on one long-lived stream (1 KiB)", r["rps"], "req/s", raw_rps,
             "raw TCP")
        per = await best(
            reps, partial(_pair_run, lambda a, b: stream_per_request_rps(a, b, rpc), stack))()
        line(f"{stack}: new stream per request (1 KiB)", per, "req/s", r["rps"], "long-lived")
        conn = min([await connect_ms(stack) for _ in range(reps)])
        line(f"{stack}: connection set-up (TCP+Noise+Yamux)", conn, "ms")
    if len(stacks) == 2:
        print("-- native vs py-libp2p")
        n, p = results["native"], results["py-libp2p"]
        line("bare stream, two processes: native", n["bare2"], "MB/s", p["bare2"], "py-libp2p")
        line("1 KiB requests: native", n["rps"], "req/s", p["rps"], "py-libp2p")
        line("bulk MiB per CPU-second: native", n["bulk_cpu"], "MiB/cpu-s", p["bulk_cpu"],
             "py-libp2p")
        line("CPU per request: py-libp2p", p["req_cpu"], "us", n["req_cpu"], "native")

    base_imports = "import trio, cbor2, nacl.signing, structlog, overlay.core.wire"
    base = rss_mib(base_imports)
    native = rss_mib(f"{base_imports}\nimport overlay.runtime.net.transport, overlay.runtime."
                     "net.backend_native")
    pylibp2p = rss_mib(f"{base_imports}\nimport overlay.runtime.net.transport, overlay.runtime."
                       "net.backend_pylibp2p")
    line("RSS after base imports (trio, cbor2, nacl, structlog)", base, "MiB")
    line("RSS after importing the transport, native stack", native, "MiB", base, "base")
    line("RSS after importing the transport, py-libp2p stack", pylibp2p, "MiB", base, "base")
    d_native = daemon_idle_rss_mib("native")
    d_py = daemon_idle_rss_mib("py-libp2p")
    line("idle daemon RSS, native stack", d_native, "MiB", d_py, "py-libp2p daemon")
    line("idle daemon RSS, py-libp2p stack", d_py, "MiB")

    if profile:
        prof = cProfile.Profile()
        prof.enable()
        await _pair_run(lambda a, b: bare_stream_mb_s(a, b, bulk), "native")
        prof.disable()
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(18)
        print("\ncProfile of the native bare-stream path, both ends (sorted by own time):")
        print("\n".join(out.getvalue().splitlines()[6:]))


if __name__ == "__main__":
    import logging

    # py-libp2p logs a benign identify race on fast close at ERROR level.
    logging.disable(logging.CRITICAL)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller transfers, fewer runs")
    ap.add_argument("--profile", action="store_true", help="cProfile the native bulk path")
    ap.add_argument("--stack", choices=STACKS, action="append",
                    help="measure only this stack (repeatable; default: both)")
    args = ap.parse_args()
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    trio.run(main, args.quick, args.profile, tuple(args.stack or STACKS))
