"""TCP sockets for hole punching (trio): listeners and dials that share one port.

A TCP hole punch (DCUtR, overlay/p2p/dcutr.py) needs our outbound SYN to leave from
the port we listen on: the NAT then maps it to the public port the peer was told,
and the peer's SYN to that port matches our connection (simultaneous open) instead
of being refused. Linux allows a connecting socket on a listening socket's port only
when both set SO_REUSEPORT (same user), so the host's listeners are opened here.

SO_REUSEPORT on a listener would also let a second process of the same user bind the
same port and share its connections silently. `open_listeners` therefore first binds
a plain socket to the address: if the port is taken by anyone, that fails with the
usual EADDRINUSE and we do not listen (port 0 is resolved by the plain bind too).

`connect_from` retries a refused connect until its deadline: an early SYN that
reaches the peer's NAT before the peer's own SYN opened the mapping is answered by a
RST there (or dropped); the next try, a few tens of ms later, finds the mapping.
"""

from __future__ import annotations

import errno
import ipaddress
import socket as stdsocket

import trio

#: Between two connects of one punch (a refused SYN comes back within one RTT).
RETRY_S = 0.05
_RETRYABLE = {errno.ECONNREFUSED, errno.ECONNRESET, errno.ETIMEDOUT, errno.EHOSTUNREACH,
              errno.ENETUNREACH, errno.ECONNABORTED}  # fmt: skip


def reuseport_supported() -> bool:
    return hasattr(stdsocket, "SO_REUSEPORT")


def _family(host: str) -> stdsocket.AddressFamily:
    return stdsocket.AF_INET6 if ":" in host else stdsocket.AF_INET


async def open_listeners(host: str, port: int, backlog: int = 128) -> list[trio.SocketListener]:
    """Listen on (host, port) with SO_REUSEADDR and SO_REUSEPORT; OSError if the port
    is in use. `host` is an IP literal ("0.0.0.0", "::", "10.0.1.2")."""
    if not reuseport_supported():
        return list(await trio.open_tcp_listeners(port, host=host, backlog=backlog))
    fam = _family(host)
    probe = stdsocket.socket(fam, stdsocket.SOCK_STREAM)
    try:
        # A plain bind fails when anyone holds the port (with or without REUSEPORT),
        # and resolves port 0; it is closed before the real bind.
        # SO_REUSEADDR: a restart must not fail on our own TIME_WAIT connections, and
        # Linux still refuses the bind while any socket listens on the port.
        probe.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_REUSEADDR, 1)
        if fam == stdsocket.AF_INET6:
            probe.setsockopt(stdsocket.IPPROTO_IPV6, stdsocket.IPV6_V6ONLY, 1)
        probe.bind((host, port))
        port = probe.getsockname()[1]
    finally:
        probe.close()
    sock = trio.socket.socket(fam, stdsocket.SOCK_STREAM)
    try:
        sock.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_REUSEADDR, 1)
        sock.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_REUSEPORT, 1)
        if fam == stdsocket.AF_INET6:
            sock.setsockopt(stdsocket.IPPROTO_IPV6, stdsocket.IPV6_V6ONLY, 1)
        await sock.bind((host, port))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return [trio.SocketListener(sock)]


async def open_tcp_listeners(host: str, port: int) -> list[trio.SocketListener]:
    """The host's TCP listeners: IP literals get SO_REUSEPORT listeners (hole punching
    dials from their port); names are resolved and bound by trio as before."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return list(await trio.open_tcp_listeners(port, host=host))
    return await open_listeners(host, port)


async def connect_from(
    local: tuple[str, int], target: tuple[str, int], deadline: float
) -> trio.SocketStream:
    """Connect to `target` from `local` (our listen address), retrying refused or
    reset attempts every RETRY_S until `deadline` (trio clock). OSError (the last
    one) or trio.TooSlowError when it never connects."""
    last: OSError | None = None
    with trio.move_on_at(deadline):
        while True:
            sock = trio.socket.socket(_family(target[0]), stdsocket.SOCK_STREAM)
            try:
                sock.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_REUSEADDR, 1)
                if reuseport_supported():
                    sock.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_REUSEPORT, 1)
                await sock.bind(local)
                await sock.connect(target)
            except OSError as e:
                sock.close()
                last = e
                if e.errno not in _RETRYABLE:
                    raise
                await trio.sleep(RETRY_S)
                continue
            except BaseException:
                sock.close()
                raise
            return trio.SocketStream(sock)
    if last is not None:
        raise last
    raise trio.TooSlowError(f"no TCP connection to {target[0]}:{target[1]} in time")
