"""A peer flooding a daemon with frames while another fetches from it (the harness of
test_faults_flood.py and bench/flood.py).

The flooder is a Transport in the calling process with its own key: it connects to
the target and posts, at `rate` frames/s, a mix of malformed frames (random bytes and
truncated CBOR on the gossip and DHT protocols) and well-formed Bitswap want lists for
blocks nobody has. Posting never blocks the flooder (full queues drop on its side), so
the offered rate is what the target must absorb.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

import trio

from overlay.core.cid import RAW, Cid
from overlay.core.crypto import KeyPair
from overlay.core.ids import PeerId
from overlay.exchange.messages import BitswapMessage, WantEntry
from overlay.runtime.net.transport import Codec, Transport
from overlay.runtime.services.host_ad import PROTO_BITSWAP, PROTO_GOSSIP

KAD = "/colony/kad/1.0.0"


@dataclass
class FloodReport:
    offered: int = 0
    posted: int = 0
    reconnects: int = 0
    errors: list[str] = field(default_factory=list)


def _frames() -> list[tuple[str, bytes]]:
    wants = BitswapMessage(wants=tuple(
        WantEntry(Cid.of(RAW, os.urandom(16)).to_bytes(), priority=1)
        for _ in range(8))).to_bytes()
    return [(PROTO_GOSSIP, os.urandom(200)), (KAD, b"\x82\x00\xff"),
            (PROTO_BITSWAP, wants), (PROTO_GOSSIP, b"\xa1\x61"), (KAD, os.urandom(64))]


async def flood(target: PeerId, addr: str, rate: int, seconds: float,
                report: FloodReport) -> None:
    """Post `rate` frames/s at `target` for `seconds`, reconnecting if it drops us."""
    async with Transport.open(KeyPair.generate(), ["/ip4/127.0.0.1/tcp/0"]) as t:
        for proto in (PROTO_GOSSIP, PROTO_BITSWAP, KAD):
            t.codec_for(proto, Codec.RAW)
        await t.connect(addr)
        frames = _frames()
        tick = 0.01
        start = trio.current_time()
        deadline = start + seconds
        i = 0
        while trio.current_time() < deadline:
            if not t.is_connected(target):
                report.reconnects += 1
                try:
                    with trio.fail_after(5):
                        await t.connect(addr)
                except Exception as e:  # the target refuses us for now: keep trying
                    report.errors.append(repr(e)[:120])
                    await trio.sleep(0.2)
                    continue
            # Catch up to the rate since the start: on a busy machine a tick's sleep
            # lasts longer than 10 ms, and a fixed count per tick fell to ~half the rate.
            due = int((trio.current_time() - start) * rate) - report.offered
            for _ in range(max(1, min(due, rate))):
                proto, body = frames[i % len(frames)]
                i += 1
                report.offered += 1
                report.posted += bool(t.post(target, proto, body))
            await trio.sleep(tick)


#: A busy loop that stops by itself after argv[1] seconds (a leaked one still ends).
_HOG = ("import sys, time\nt = time.monotonic() + float(sys.argv[1])\n"
        "while time.monotonic() < t: pass")


def _pin(pid: int, cpus: set[int], nice: int | None) -> None:
    """Pin every thread of `pid` to `cpus`, at niceness `nice` if given (both are per
    thread on Linux: the threads that exist now; the ones started later inherit)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(tid), cpus)
            if nice is not None:
                os.setpriority(os.PRIO_PROCESS, int(tid), nice)


#: The target session's group niceness under autogroup (`starved`).
AUTOGROUP_NICE = 10


def _autogroup_nice(pid: int, nice: int) -> bool:
    """Set the niceness of `pid`'s session group if the kernel groups by session;
    whether it did (raising one's own niceness needs no privilege)."""
    try:
        with open("/proc/sys/kernel/sched_autogroup_enabled") as f:
            if f.read().strip() != "1":
                return False
        with open(f"/proc/{pid}/autogroup", "w") as f:
            f.write(str(nice))
    except OSError:
        return False
    return True


@contextlib.contextmanager
def starved(pid: int, seconds: float, *, hogs: int = 2, nice: int = 5) -> Iterator[int]:
    """Starve process `pid` of CPU for at most `seconds`: pin it to one core beside
    `hogs` busy loops pinned to the same core, itself `nice`r than them (so it gets
    about 1/(1 + 3 * hogs) of that core: niceness 5 weighs 335 against 1024).

    Where the kernel groups processes by session (autogroup, on in many kernels'
    defaults: /proc/sys/kernel/sched_autogroup_enabled), niceness weighs only inside a
    session's group, and the daemon runs in a session of its own, so its group got half
    the core against the busy loops' whatever its niceness (the target kept up, on a
    machine with autogroup on, in every run). Then its session's group gets niceness
    `AUTOGROUP_NICE` too: weight 110 against the loops' group's 1024, ≈ 1/10 of the core.

    This is the failure's condition made deterministic: a daemon that cannot keep
    up with a flood, whatever else the machine runs. Yields the core used. The busy
    loops end by themselves after `seconds`, and are killed on exit before that.
    """
    every = os.sched_getaffinity(pid)
    cpu = max(every)
    procs = [subprocess.Popen([sys.executable, "-c", _HOG, str(seconds)])
             for _ in range(hogs)]
    try:
        for p in procs:
            os.sched_setaffinity(p.pid, {cpu})
        _pin(pid, {cpu}, nice)
        _autogroup_nice(pid, AUTOGROUP_NICE)
        yield cpu
    finally:
        for p in procs:
            p.kill()
            p.wait()
        with contextlib.suppress(ProcessLookupError, FileNotFoundError):
            _pin(pid, every, None)  # all cores again (niceness cannot be lowered back)
