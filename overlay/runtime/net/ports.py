"""Free TCP ports for local colonies (demo, tests, benchmarks).

Binding port 0 and releasing it hands out a port from the kernel's *ephemeral* range,
the same range outgoing connections draw from; with many daemons dialling each other,
one of them could take the port before our daemon binds it ("Address already in use",
seen in the 20-daemon test). So pick below the ephemeral range, bind-test each pick,
and never hand the same port out twice in one process.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_given: set[int] = set()
_rng = random.Random()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux default


def free_port(host: str = "127.0.0.1") -> int:
    low, high = 10000, _ephemeral_low()
    for _ in range(1000):
        port = _rng.randrange(low, high)
        if port in _given:
            continue
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        _given.add(port)
        return port
    raise OSError(f"no free TCP port on {host} in {low}-{high}")
