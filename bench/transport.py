"""Transport baselines: what the libp2p data path costs next to raw TCP (DESIGN §3).

Prints, each with its limit and ratio:
  * raw trio TCP loopback MB/s (the limit for everything below);
  * one py-libp2p Noise+Yamux stream MB/s, bare and through the adapter (RAW
    frames), in one process and between two processes;
  * 1 KiB request/response rate on one long-lived stream (adapter, request ids)
    vs a new stream per request (multistream-select each time), vs raw TCP;
  * connection set-up time with max_connections_per_peer=1 vs py-libp2p's 3;
  * RSS of a process after importing the adapter (py-libp2p) vs without;
  * a cProfile of the bulk data path: where the time goes.

Run: .venv/bin/python bench/transport.py [--quick] [--profile]
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
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from overlay.core.crypto import KeyPair
from overlay.core.ids import PeerId
from overlay.runtime.transport import Codec, Transport, TransportConfig

LOOP = "/ip4/127.0.0.1/tcp/0"
BULK = "/colony/bench-bulk/1.0.0"
RPC = "/colony/bench-rpc/1.0.0"
CHUNK = 256 * 1024
MiB = 1024 * 1024


def line(name: str, value: float, unit: str, limit: float | None = None, what: str = "") -> None:
    ratio = f"  ratio {value / limit:.3f} of {what} ({limit:,.0f} {unit})" if limit else ""
    print(f"{name:<52} {value:>10,.1f} {unit}{ratio}", flush=True)


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
        listeners = await n.start(trio.serve_tcp, sink, 0, )
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


# ---------------------------------------------------------------- libp2p in one process


async def _pair_run(body: Callable[[Transport, Transport], Awaitable[float]]) -> float:
    async with Transport.open(KeyPair.generate(), [LOOP]) as a, Transport.open(
        KeyPair.generate(), [LOOP]
    ) as b:
        a.add_addrs(b.peer_id, b.listen_addrs)
        return await body(a, b)


async def adapter_mb_s(a: Transport, b: Transport, total: int) -> float:
    """RAW frames of 256 KiB through the adapter (framing, queue, batching)."""
    got = 0
    done = trio.Event()

    def on_message(peer: PeerId, body: bytes) -> None:
        nonlocal got
        got += len(body)
        if got >= total:
            done.set()

    b.set_handler(BULK, on_message=on_message, codec=Codec.RAW)
    a.codec_for(BULK, Codec.RAW)
    payload = b"x" * CHUNK
    await a.send(b.peer_id, BULK, payload)  # open the stream first
    got = 0
    t0 = time.perf_counter()
    for _ in range(total // CHUNK):
        await a.send(b.peer_id, BULK, payload)
    await done.wait()
    return total / (time.perf_counter() - t0) / MiB


async def bare_stream_mb_s(a: Transport, b: Transport, total: int) -> float:
    """A py-libp2p stream with no adapter framing: write 256 KiB, read to a sink."""
    done = trio.Event()

    async def sink(net: Any) -> None:
        got = 0
        while got < total:
            data = await net.read(CHUNK)
            if not data:
                break
            got += len(data)
        done.set()

    b._host.set_stream_handler("/bench/bare/1", sink)
    await a.connect(b.peer_id)
    net = await a._host.new_stream(a._host.get_id().__class__(b.peer_id.raw), ["/bench/bare/1"])
    payload = b"x" * CHUNK
    t0 = time.perf_counter()
    for _ in range(total // CHUNK):
        await net.write(payload)
    await done.wait()
    dt = time.perf_counter() - t0
    bare_stream_mb_s.zero_window_waits = getattr(net.muxed_stream, "_zero_window_waits", -1)  # type: ignore[attr-defined]
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
    async def echo(net: Any) -> None:
        data = await net.read(65536)
        await net.write(data)
        await net.close()

    b._host.set_stream_handler("/bench/echo-once/1", echo)
    await a.connect(b.peer_id)
    pid = a._host.get_id().__class__(b.peer_id.raw)
    msg = b"x" * 1024
    t0 = time.perf_counter()
    for _ in range(count):
        net = await a._host.new_stream(pid, ["/bench/echo-once/1"])
        await net.write(msg)
        got = 0
        while got < len(msg):
            got += len(await net.read(65536))
        await net.close()
    return count / (time.perf_counter() - t0)


async def connect_ms(per_peer: int) -> float:
    async with Transport.open(KeyPair.generate(), [LOOP]) as a, Transport.open(
        KeyPair.generate(), [LOOP]
    ) as b:
        a._network.connection_config.max_connections_per_peer = per_peer
        t0 = time.perf_counter()
        await a.connect(b.addrs[0])
        return (time.perf_counter() - t0) * 1000


# ---------------------------------------------------------------- two processes


SERVE = """
import logging, sys, structlog, trio
sys.path.insert(0, {root!r})
logging.disable(logging.WARNING)
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
from overlay.core.crypto import KeyPair
from overlay.runtime.transport import Codec, Transport
async def main():
    async with Transport.open(KeyPair.generate(), ["/ip4/127.0.0.1/tcp/0"]) as t:
        total = {total}
        got = 0
        done = trio.Event()
        def on_message(peer, body):
            nonlocal got
            got += len(body)
            if got >= total:
                done.set()
        t.set_handler({proto!r}, on_message=on_message, codec=Codec.RAW)
        print(t.addrs[0], flush=True)
        await done.wait()
        print("done", flush=True)
        await trio.sleep(0.5)
trio.run(main)
"""


async def two_process_mb_s(total: int) -> float:
    root = str(Path(__file__).resolve().parent.parent)
    code = SERVE.format(root=root, total=total + CHUNK, proto=BULK)
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-c", code], stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    buf = b""
    with trio.fail_after(30):
        while b"\n" not in buf:
            buf += await proc.stdout.receive_some(4096)
    addr = buf.split(b"\n", 1)[0].decode()
    try:
        async with Transport.open(KeyPair.generate(), [LOOP], TransportConfig()) as a:
            a.codec_for(BULK, Codec.RAW)
            peer = await a.connect(addr)
            payload = b"x" * CHUNK
            await a.send(peer, BULK, payload)
            t0 = time.perf_counter()
            for _ in range(total // CHUNK):
                await a.send(peer, BULK, payload)
            with trio.fail_after(60):
                while b"done" not in buf:
                    buf += await proc.stdout.receive_some(4096)
            return total / (time.perf_counter() - t0) / MiB
    finally:
        with trio.move_on_after(5):
            await proc.wait()
        if proc.returncode is None:
            proc.kill()


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


# ---------------------------------------------------------------- main


async def main(quick: bool, profile: bool) -> None:
    reps = 2 if quick else 3
    bulk = (32 if quick else 128) * MiB
    rpc = 500 if quick else 2000

    raw = await best(reps, lambda: raw_tcp_mb_s(bulk * 4))()
    line("raw trio TCP loopback (one process)", raw, "MB/s")
    bare = await best(reps, lambda: _pair_run(lambda a, b: bare_stream_mb_s(a, b, bulk)))()
    line("py-libp2p Noise+Yamux stream, bare (one process)", bare, "MB/s", raw, "raw TCP")
    adapted = await best(reps, lambda: _pair_run(lambda a, b: adapter_mb_s(a, b, bulk)))()
    line("adapter RAW 256 KiB frames (one process)", adapted, "MB/s", raw, "raw TCP")
    two = await best(reps, lambda: two_process_mb_s(bulk))()
    line("adapter RAW 256 KiB frames (two processes)", two, "MB/s", raw, "raw TCP")

    raw_rps = await best(reps, lambda: raw_tcp_rps(rpc * 4))()
    line("raw trio TCP 1 KiB round trips", raw_rps, "req/s")
    ll = await best(reps, lambda: _pair_run(lambda a, b: long_lived_rps(a, b, rpc)))()
    line("adapter request on one long-lived stream (1 KiB)", ll, "req/s", raw_rps, "raw TCP")
    per = await best(reps, lambda: _pair_run(lambda a, b: stream_per_request_rps(a, b, rpc)))()
    line("new libp2p stream per request (1 KiB)", per, "req/s", ll, "long-lived")

    one = min([await connect_ms(1) for _ in range(reps)])
    three = min([await connect_ms(3) for _ in range(reps)])
    line("connection set-up, max_connections_per_peer=1", one, "ms")
    line("connection set-up, py-libp2p default (3)", three, "ms", one, "per_peer=1")

    base = rss_mib("import trio, cbor2, nacl.signing, structlog, overlay.core.wire")
    with_p2p = rss_mib("import trio, cbor2, nacl.signing, structlog, overlay.core.wire\n"
                       "import overlay.runtime.transport")
    line("RSS after imports, without py-libp2p", base, "MiB")
    line("RSS after importing the adapter (py-libp2p)", with_p2p, "MiB", base, "without")

    if profile:
        prof = cProfile.Profile()
        prof.enable()
        await _pair_run(lambda a, b: adapter_mb_s(a, b, bulk))
        prof.disable()
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(18)
        print("\ncProfile of the adapter bulk path (sorted by own time):")
        print("\n".join(out.getvalue().splitlines()[6:]))


if __name__ == "__main__":
    import logging

    # py-libp2p logs a benign identify race on fast close at ERROR level.
    logging.disable(logging.CRITICAL)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller transfers, fewer runs")
    ap.add_argument("--profile", action="store_true", help="cProfile the bulk data path")
    args = ap.parse_args()
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    trio.run(main, args.quick, args.profile)
