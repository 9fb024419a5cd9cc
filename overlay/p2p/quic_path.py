"""The socket side of QUIC path MTU discovery (the search is overlay/p2p/quic_pmtud.py):
the local route's MTU, which bounds the search, and the don't-fragment option without
which a too-large probe is fragmented by the kernel and "succeeds". Linux only (other
platforms: no route bound, kernel defaults; the search still probes)."""

from __future__ import annotations

import socket
import sys
from contextlib import suppress
from typing import Protocol

#: IPv4 (20) + UDP (8) and IPv6 (40) + UDP (8) headers.
IPV4_UDP_HEADER_BYTES = 28
IPV6_UDP_HEADER_BYTES = 48
#: Linux <linux/in.h> / <linux/in6.h> values (Python's socket module lacks them).
_LINUX = sys.platform == "linux"
_IP_MTU_DISCOVER = 10
_IP_MTU = 14
_IP_PMTUDISC_PROBE = 3
_IPV6_MTU_DISCOVER = 23
_IPV6_MTU = 24
_IPV6_PMTUDISC_PROBE = 3


def route_payload_limit(addr: tuple[str, int]) -> int | None:
    """The largest UDP payload the local route to `addr` carries without
    fragmentation: its MTU (Linux IP_MTU on a connected socket: the interface's, or
    a smaller path MTU the kernel learned) less the IP and UDP headers. None where
    the platform cannot tell; the search then finds the limit by probing alone."""
    if not _LINUX:
        return None
    v6 = ":" in addr[0]
    family = socket.AF_INET6 if v6 else socket.AF_INET
    with suppress(OSError), socket.socket(family, socket.SOCK_DGRAM) as s:
        s.connect(addr)  # no packet is sent: it only picks the route
        if v6:
            mtu = s.getsockopt(socket.IPPROTO_IPV6, _IPV6_MTU)
            return int(mtu) - IPV6_UDP_HEADER_BYTES
        return int(s.getsockopt(socket.IPPROTO_IP, _IP_MTU)) - IPV4_UDP_HEADER_BYTES
    return None


class _Socket(Protocol):
    @property
    def family(self) -> int: ...
    def setsockopt(self, level: int, opt: int, value: int, /) -> None: ...


def set_dont_fragment(sock: _Socket) -> None:
    """Set DF on the endpoint's datagrams and ignore the kernel's path MTU cache
    (IP_PMTUDISC_PROBE): a probe too large for a link must be lost, not fragmented
    (a fragmented probe would "succeed" and set a size the path does not carry,
    RFC 8899 §3 item 2). Best effort: platforms without the option keep defaults."""
    if not _LINUX:
        return
    with suppress(OSError):
        if sock.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_MTU_DISCOVER, _IPV6_PMTUDISC_PROBE)
        else:
            sock.setsockopt(socket.IPPROTO_IP, _IP_MTU_DISCOVER, _IP_PMTUDISC_PROBE)
