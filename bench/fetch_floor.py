"""The fetcher's floor on this machine (issue #16): what a verified, encrypted, durable
fetch cannot avoid, measured in the same run as the fetch it is compared with.

Three parts, each as CPU s/GiB and MB/s:
  (a) receiving the bare native Noise+Yamux stream (two processes, the receiver's CPU:
      decryption and the socket's copy; it reads with `receive_pieces`, as the fetcher
      does, so no copy the fetcher avoids is counted);
  (b) sha2-256 of 256 KiB blocks (hashlib, one thread);
  (c) bare synced LMDB puts of the same blocks, 64-block fsync'd batches, as a fetch
      commits them: into a fresh store (new page-cache pages, whose system time on this
      VM is large) and again after deleting them (the pages a re-fetch after
      `colony gc` reuses).
The floor is a + b + c: the fetcher's CPU ÷ floor says how much of it is above what
this machine needs, and the fetch's MB/s ÷ min(stream, durable puts) how close it
comes to the slower of its two wall-time limits.
"""

from __future__ import annotations

import hashlib
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import trio

from bench.transport import BARE, LOOP, SERVE, WRITE, MiB, Server
from overlay.core.crypto import KeyPair
from overlay.runtime.net.transport import Transport, TransportConfig

BLOCK = 256 * 1024
GiB = 2**30


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) process `pid` has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def self_cpu() -> tuple[float, float]:
    """(user, system) CPU seconds of this process, all threads."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime, ru.ru_stime


@dataclass
class Part:
    mb_s: float
    cpu_s_gib: float
    sys_s_gib: float = 0.0


@dataclass
class Floor:
    stream: Part
    sha256: Part
    puts_fresh: Part
    puts_reused: Part

    def total(self, reused: bool) -> float:
        puts = self.puts_reused if reused else self.puts_fresh
        return self.stream.cpu_s_gib + self.sha256.cpu_s_gib + puts.cpu_s_gib

    def wall_limit(self, reused: bool) -> float:
        puts = self.puts_reused if reused else self.puts_fresh
        return min(self.stream.mb_s, puts.mb_s)


class _PiecesServer(Server):
    """bench/transport.py's server, its bare sink reading as the fetcher reads."""

    async def __aenter__(self) -> str:
        root = str(Path(__file__).resolve().parent.parent)
        code = SERVE.format(root=root, total=self.total, stack=self.stack, bulk="/x/1",
                            bare=BARE, cipher=self.cipher)
        code = code.replace("s.receive_some(262144)", "s.receive_pieces(4194304)")
        self.proc = await trio.lowlevel.open_process([sys.executable, "-c", code],
                                                     stdout=subprocess.PIPE)
        await self.read_until(b"\n", 60)
        return self.buf.split(b"\n", 1)[0].decode()


async def _stream_once(stack: str, total: int, cipher: str) -> Part:
    server = _PiecesServer(stack, total, cipher)
    async with server as addr:
        assert server.proc is not None
        cfg = TransportConfig(stack=stack, noise_cipher=cipher)
        async with Transport.open(KeyPair.generate(), [LOOP], cfg) as a:
            peer = await a.connect(addr)
            s = await a.open_stream(peer, BARE)
            payload = b"x" * WRITE
            c0 = proc_cpu(server.proc.pid)
            t0 = time.perf_counter()
            for _ in range(total // WRITE):
                await s.send_all(payload)
            await s.send_eof()
            with trio.fail_after(120):
                assert await s.receive_some(1) == b"k"
            dt = time.perf_counter() - t0
            cpu = proc_cpu(server.proc.pid) - c0
    return Part(total / dt / 1e6, cpu / (total / GiB))


def stream_part(stack: str, cipher: str, total: int = 128 * MiB, runs: int = 2) -> Part:
    """(a): the best rate and the least receiver CPU of `runs` bare streams."""
    parts = [trio.run(_stream_once, stack, total, cipher) for _ in range(runs)]
    return Part(max(p.mb_s for p in parts), min(p.cpu_s_gib for p in parts))


def _blocks(size: int) -> list[bytes]:
    base = os.urandom(BLOCK)
    return [base[:-8] + i.to_bytes(8, "big") for i in range(size // BLOCK)]


def sha_part(blocks: list[bytes]) -> Part:
    """(b): sha2-256 of each block, on this thread."""
    c0 = time.thread_time()
    t0 = time.perf_counter()
    for b in blocks:
        hashlib.sha256(b).digest()
    dt = time.perf_counter() - t0
    gib = len(blocks) * BLOCK / GiB
    return Part(gib * GiB / dt / 1e6, (time.thread_time() - c0) / gib)


def puts_parts(tmp: Path, blocks: list[bytes]) -> tuple[Part, Part]:
    """(c): synced 64-block put_many batches into a fresh store, then the same again
    after deleting them all (LMDB reuses the freed pages, as after `colony gc`). The
    CIDs are computed before the clock starts: (b) counts the hashing."""
    from overlay.core.cid import RAW, Cid
    from store.blockstore import BlockStore

    items = [(Cid.of(RAW, b), b, None) for b in blocks]
    gib = len(blocks) * BLOCK / GiB
    out: list[Part] = []
    with BlockStore(tmp / "floor-puts") as store:
        for rnd in range(2):
            if rnd:
                store.delete_many([c.multihash for c, _, _ in items])
            u0, s0 = self_cpu()
            t0 = time.perf_counter()
            for j in range(0, len(items), 64):
                store.put_many(items[j:j + 64])
            dt = time.perf_counter() - t0
            u1, s1 = self_cpu()
            out.append(Part(gib * GiB / dt / 1e6, (u1 - u0 + s1 - s0) / gib, (s1 - s0) / gib))
    return out[0], out[1]


def measure(tmp: Path, size: int, stack: str, cipher: str) -> Floor:
    """All three parts; `size` bytes of blocks for (b) and (c)."""
    stream = stream_part(stack, cipher)
    blocks = _blocks(size)
    sha = sha_part(blocks)
    fresh, reused = puts_parts(tmp, blocks)
    return Floor(stream, sha, fresh, reused)


def report(f: Floor) -> None:
    for name, p in (("(a) receive the bare stream (decrypt, socket copy)", f.stream),
                    ("(b) sha2-256 of 256 KiB blocks", f.sha256),
                    ("(c) synced LMDB puts, fresh store", f.puts_fresh),
                    ("(c') synced LMDB puts, pages reused (after gc)", f.puts_reused)):
        sys_s = f" (system {p.sys_s_gib:.2f})" if p.sys_s_gib else ""
        print(f"  floor {name:<50} {p.cpu_s_gib:5.2f} CPU s/GiB{sys_s}, "
              f"{p.mb_s:8,.0f} MB/s", flush=True)
    print(f"  floor a+b+c: fresh store {f.total(False):.2f} CPU s/GiB, "
          f"re-fetch {f.total(True):.2f}", flush=True)


def versus(f: Floor, fetcher_cpu: float, mb_s: float, reused: bool) -> str:
    """The fetch against the floor: CPU ÷ floor, MB/s ÷ min(stream, durable puts)."""
    return (f"CPU {fetcher_cpu / f.total(reused):.2f}× floor ({f.total(reused):.2f}), "
            f"MB/s {mb_s / f.wall_limit(reused):.2f} of min(stream, puts) "
            f"({f.wall_limit(reused):,.0f})")
