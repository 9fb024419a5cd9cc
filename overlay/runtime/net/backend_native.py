"""The transport's native backend: overlay.p2p's host (our own libp2p wire).

Thin: maps the `Backend` calls onto overlay.p2p.host.Host and its errors onto the
adapter's (ListenError, DialError, TransportError, AttachError). No py-libp2p.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager, suppress

import trio

from overlay.core.crypto import KeyPair
from overlay.core.errors import WireError
from overlay.core.ids import PeerId
from overlay.p2p.errors import StreamError
from overlay.p2p.host import AnyStream, Host, HostDialError, HostListenError
from overlay.runtime.net.noise_choice import noise_suites
from overlay.runtime.net.transport_backend import BackendStream, PeerCallback, StreamHandler
from overlay.runtime.net.transport_types import (
    AttachError,
    DialError,
    ListenError,
    PeerInfo,
    TransportConfig,
    TransportError,
)

AGENT_VERSION = "colony/0.1.0"


def parse_ip_tcp(addr: str) -> tuple[str, int] | None:
    """"/ip4/1.2.3.4/tcp/5[/…]" → ("1.2.3.4", 5); anything else → None."""
    parts = addr.split("/")
    if len(parts) >= 5 and parts[1] in ("ip4", "ip6") and parts[3] == "tcp":
        try:
            return parts[2], int(parts[4])
        except ValueError:
            return None
    return None


class NativeBackend:
    def __init__(self, keypair: KeyPair, config: TransportConfig) -> None:
        self.config = config
        self.on_connected: PeerCallback | None = None
        self.on_disconnected: PeerCallback | None = None
        self.host = Host(
            keypair,
            agent_version=AGENT_VERSION,
            dial_timeout_s=config.dial_timeout_s,
            handshake_timeout_s=config.stream_open_timeout_s,
            on_connected=self._connected,
            on_disconnected=self._disconnected,
            quic_pmtud=config.quic_pmtud,
            quic_max_datagram_bytes=config.quic_max_datagram_bytes,
            noise_suites=noise_suites(config.noise_cipher),
        )

    def _connected(self, peer: PeerId) -> None:
        if self.on_connected is not None:
            self.on_connected(peer)

    def _disconnected(self, peer: PeerId) -> None:
        if self.on_disconnected is not None:
            self.on_disconnected(peer)

    @property
    def listen_addrs(self) -> list[str]:
        return self.host.listen_addrs

    @asynccontextmanager
    async def serve(self, listen_addrs: Iterable[str]) -> AsyncIterator[None]:
        try:
            async with self.host.serve(listen_addrs):
                yield
        except HostListenError as e:  # only ever raised while entering
            raise ListenError(str(e)) from None

    def set_stream_handler(self, protocol: str, handler: StreamHandler) -> None:
        async def on_stream(s: AnyStream) -> None:
            await handler(s, s.peer)

        self.host.set_stream_handler(protocol, on_stream)

    async def new_stream(self, peer: PeerId, protocol: str) -> BackendStream:
        try:
            return await self.host.new_stream(peer, [protocol])
        except (HostDialError, StreamError, WireError) as e:
            raise TransportError(f"stream to {peer.short()} on {protocol}: {e}") from None

    def is_connected(self, peer: PeerId) -> bool:
        return self.host.is_connected(peer)

    def connection_drops(self) -> dict[str, int]:
        # Failed inbound handshakes, and connections cut for a bad Noise tag or Yamux frame.
        return {"handshake_failed": self.host.handshakes_failed,
                "protocol_error": self.host.protocol_errors}

    def connected_peers(self) -> list[PeerId]:
        return self.host.connected_peers()

    def remote_addr(self, peer: PeerId) -> tuple[str, int] | None:
        # A peer may also have a WebRTC or relayed connection (attached streams have
        # no socket address): use its newest open TCP connection.
        for conn in reversed(self.host.connections(peer)):
            if not conn.closed:
                got = parse_ip_tcp(conn.remote_addr or "")
                if got is not None:
                    return got
        return None

    async def dial(self, peer: PeerId, addrs: list[str]) -> None:
        try:
            await self.host.dial(peer, addrs)
        except HostDialError as e:
            raise DialError(f"could not connect to {peer}: {e}") from None

    async def disconnect(self, peer: PeerId) -> None:
        await self.host.disconnect(peer)

    async def identify(self, peer: PeerId) -> PeerInfo:
        try:
            info = await self.host.identify(peer)
        except (HostDialError, StreamError, WireError) as e:
            raise TransportError(f"identify of {peer.short()} failed: {e}") from None
        return PeerInfo(
            peer, info.protocols, info.agent_version, info.listen_addrs, info.observed_addr
        )

    async def ping(self, peer: PeerId, count: int) -> list[float]:
        try:
            return await self.host.ping(peer, count)
        except (HostDialError, StreamError, WireError) as e:
            raise TransportError(f"ping of {peer.short()} failed: {e}") from None

    async def attach_stream(
        self, stream: trio.abc.Stream, *, initiator: bool, peer: PeerId | None
    ) -> PeerId:
        if initiator and peer is None:
            raise ValueError("the initiator must name the peer it expects")
        try:
            conn = await self.host.attach(stream, initiator=initiator, expected_peer=peer)
        except (WireError, trio.TooSlowError) as e:
            # The stream may be broken already; closing it is best effort.
            with trio.CancelScope(shield=True), trio.move_on_after(2.0), suppress(Exception):
                await stream.aclose()
            raise AttachError(f"libp2p upgrade over the stream failed: {e}") from None
        return conn.remote_peer
