"""The transport's py-libp2p 0.8.1 backend: the only module in Colony that imports
libp2p (DESIGN §3). Chosen with `[network] stack = "py-libp2p"`; imported lazily by
overlay.runtime.net.transport.make_backend, so the native stack never pays its
~50 MiB of imports.

py-libp2p traits handled here on purpose (docs/transport.md has figures):
plaintext is offered by default (we offer Noise only); dialling waits a 250 ms
happy-eyeballs delay unless `max_connections_per_peer=1`; an exception escaping a
stream handler tears the host down (guarded); a failed dial black-lists the peer
for 60 s (we evict that cache; the adapter keeps its own, shorter back-off);
`host.connect` gives a peer's addresses a 120 s TTL (the adapter keeps its own
address book and we dial through the swarm); the auto-connector dials stored
peers by itself (disabled: the DHT decides whom to talk to); a failed listen is
only logged (we raise ListenError); identify's agent version is not stored (we
read the identify message ourselves); remote close is `StreamEOF` (we return b"").
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager, suppress
from typing import Any, cast

import multiaddr
import structlog
import trio
from libp2p import new_host
from libp2p.abc import INetConn, INetStream, INetwork, INotifee
from libp2p.crypto.ed25519 import Ed25519PrivateKey
from libp2p.crypto.keys import KeyPair as Libp2pKeyPair
from libp2p.crypto.x25519 import create_new_key_pair as new_x25519_key_pair
from libp2p.host.ping import ID as PING_PROTOCOL
from libp2p.identity.identify.identify import ID as IDENTIFY_PROTOCOL
from libp2p.identity.identify.pb.identify_pb2 import Identify as IdentifyMsg
from libp2p.identity.update import update_peerstore_from_identify
from libp2p.network.config import ConnectionConfig, RetryConfig
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.network.stream.exceptions import StreamError as Libp2pStreamError
from libp2p.network.stream.exceptions import StreamReset as Libp2pStreamReset
from libp2p.network.swarm import Swarm
from libp2p.peer.id import ID
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.utils.varint import read_length_prefixed_protobuf

from overlay.core.crypto import KeyPair
from overlay.core.errors import LocalProtocolError
from overlay.core.ids import PeerId
from overlay.p2p.errors import StreamError, StreamResetError
from overlay.runtime.net.transport_backend import BackendStream, PeerCallback, StreamHandler
from overlay.runtime.net.transport_types import (
    AttachError,
    DialError,
    ListenError,
    PeerInfo,
    TransportConfig,
    TransportError,
)

log = structlog.get_logger("colony.transport")

PING_PAYLOAD_BYTES = 32


def _peer_of(net: INetStream | INetConn) -> PeerId:
    return PeerId(net.muxed_conn.peer_id.to_bytes())


class Libp2pStream:
    """A py-libp2p stream behind the `BackendStream` interface."""

    __slots__ = ("net",)

    def __init__(self, net: INetStream) -> None:
        self.net = net

    async def read(self, max_bytes: int) -> bytes:
        try:
            return bytes(await self.net.read(max_bytes))
        except StreamEOF:
            return b""
        except Libp2pStreamReset as e:
            raise StreamResetError(str(e)) from None
        except Libp2pStreamError as e:
            raise StreamError(f"{type(e).__name__}: {e}") from None

    async def write(self, data: bytes) -> None:
        try:
            await self.net.write(data)
        except Libp2pStreamReset as e:
            raise StreamResetError(str(e)) from None
        except Libp2pStreamError as e:
            raise StreamError(f"{type(e).__name__}: {e}") from None

    @property
    def gone(self) -> bool:
        # py-libp2p does not say before a write; a write to a dead stream then fails.
        return False

    async def close(self) -> None:
        await self.net.close()

    async def reset(self) -> None:
        await _reset(self.net)


async def _reset(net: INetStream) -> None:
    with trio.CancelScope(shield=True), trio.move_on_after(1.0), suppress(Exception):
        await net.reset()


class _Notifee(INotifee):
    """Turns swarm callbacks into on_connected/on_disconnected (first/last conn)."""

    def __init__(self, backend: PyLibp2pBackend) -> None:
        self._b = backend

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        if self._b.on_connected is not None:
            self._b.on_connected(_peer_of(conn))

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        peer = _peer_of(conn)
        if self._b.on_disconnected is not None and not self._b.is_connected(peer):
            self._b.on_disconnected(peer)

    async def listen(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        return None

    async def listen_close(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        return None


class PyLibp2pBackend:
    def __init__(self, keypair: KeyPair, config: TransportConfig) -> None:
        self.config = config
        self.on_connected: PeerCallback | None = None
        self.on_disconnected: PeerCallback | None = None
        self.listen_addrs: list[str] = []
        sk = Ed25519PrivateKey.new(keypair.seed)
        lkp = Libp2pKeyPair(sk, sk.get_public_key())
        # Noise only: py-libp2p's default also offers TLS, SECIO and *plaintext*.
        security = {
            NOISE_PROTOCOL: NoiseTransport(lkp, noise_privkey=new_x25519_key_pair().private_key)
        }
        conn_cfg = ConnectionConfig(
            # One connection per peer: the dialler then stops after the first
            # success instead of waiting out the 250 ms happy-eyeballs delay.
            max_connections_per_peer=1,
            min_connections=0,
            low_watermark=0,
            dial_timeout=config.dial_timeout_s,
        )
        self._host = new_host(
            key_pair=lkp,
            sec_opt=security,
            muxer_opt={YAMUX_PROTOCOL: Yamux},  # type: ignore[dict-item]
            connection_config=conn_cfg,
            listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")],  # selects TCP
        )
        # The swarm, not just INetwork: upgrader, retry_config and add_conn are used below.
        self._network = cast(Swarm, self._host.get_network())
        # The adapter's back-off replaces the swarm's retries and 60 s negative cache.
        self._network.retry_config = RetryConfig(max_retries=0)
        if ID(keypair.peer_id.raw) != self._host.get_id():
            raise LocalProtocolError("libp2p derived a different peer id from our key")
        # py-libp2p's own handlers (identify, identify/push, ping) get the guard too.
        mux = self._host.get_mux()
        for proto, handler in list(mux.handlers.items()):
            if proto is not None and handler is not None:
                mux.handlers[proto] = self._guard(str(proto), handler)
        self._network.register_notifee(_Notifee(self))

    @asynccontextmanager
    async def serve(self, listen_addrs: Iterable[str]) -> AsyncIterator[None]:
        listen_addrs = list(listen_addrs)
        quic = [a for a in listen_addrs if "/quic" in a]
        if quic:
            # The default listen list has a QUIC address; this stack serves TCP only
            # (its QUIC transport is not wired here), so it skips them and says so.
            log.warning("pylibp2p_quic_listen_skipped", addrs=quic)
        try:
            wanted = [multiaddr.Multiaddr(a) for a in listen_addrs if a not in quic]
        except Exception as e:
            raise ListenError(f"bad listen address: {e}") from None
        failed: list[str] = []
        async with self._host.run(wanted):
            # No auto-connector: whom to talk to is the DHT's and gossip's
            # choice. (Watermarks cannot switch it off: it aims at their midpoint.)
            await self._network.auto_connector.stop()
            failed = [str(m) for m in wanted if str(m) not in self._network.listeners]
            if not failed:
                self.listen_addrs = [str(a) for a in self._host.get_transport_addrs()]
                yield
        if failed:
            # py-libp2p only logs a failed listen; a daemon must not run deaf.
            raise ListenError(f"could not listen on {', '.join(failed)}")

    def _guard(
        self, protocol: str, handler: Callable[[INetStream], Awaitable[None]]
    ) -> Callable[[INetStream], Awaitable[None]]:
        """An exception escaping a py-libp2p stream handler stops the whole host;
        here it costs the stream only."""

        async def guarded(net: INetStream) -> None:
            try:
                await handler(net)
            except Exception as e:
                log.warning("stream_handler_failed", protocol=protocol, error=repr(e)[:300])
                await _reset(net)

        return guarded

    def set_stream_handler(self, protocol: str, handler: StreamHandler) -> None:
        async def on_stream(net: INetStream) -> None:
            await handler(Libp2pStream(net), _peer_of(net))

        self._host.set_stream_handler(protocol, self._guard(protocol, on_stream))  # type: ignore[arg-type]

    async def new_stream(self, peer: PeerId, protocol: str) -> BackendStream:
        return Libp2pStream(await self._open(peer, protocol))

    async def _open(self, peer: PeerId, protocol: str) -> INetStream:
        """py-libp2p's new_stream, its failures as our TransportError (as the native
        backend does): its StreamFailure escaped the dial-back service's identify and
        stopped a daemon once (test_bitswap_js_interop, py-libp2p backend)."""
        try:
            return await self._host.new_stream(ID(peer.raw), [protocol])  # type: ignore[list-item]
        except TransportError:
            raise
        except Exception as e:  # py-libp2p raises many kinds; cancellation passes through
            raise TransportError(
                f"stream to {peer.short()} on {protocol}: {type(e).__name__}: {e}") from None

    def connection_drops(self) -> dict[str, int]:
        return {}  # py-libp2p keeps no such counts

    def is_connected(self, peer: PeerId) -> bool:
        return bool(self._network.get_connections(ID(peer.raw)))

    def connected_peers(self) -> list[PeerId]:
        return [PeerId(p.to_bytes()) for p in self._host.get_connected_peers()]

    def remote_addr(self, peer: PeerId) -> tuple[str, int] | None:
        for conn in self._network.connections.get(ID(peer.raw), ()):
            muxed: Any = conn.muxed_conn  # yamux/mplex connections have it; the stub lacks it
            with suppress(Exception):
                got = muxed.get_remote_address()
                if got:
                    return str(got[0]), int(got[1])
        return None

    async def dial(self, peer: PeerId, addrs: list[str]) -> None:
        pid = ID(peer.raw)
        self._host.get_peerstore().add_addrs(pid, [multiaddr.Multiaddr(a) for a in addrs], 0)
        cache = getattr(self._network, "_negative_peer_cache", None)
        if cache is not None:
            cache.evict(str(pid))  # our back-off is shorter and reset by new addresses
        try:
            conns = await self._network.dial_peer(pid)
            for conn in conns:
                started = getattr(conn, "event_started", None)
                if started is not None:
                    await started.wait()
        except Exception as e:
            raise DialError(f"could not connect to {peer}: {type(e).__name__}: {e}") from None

    async def disconnect(self, peer: PeerId) -> None:
        await self._host.disconnect(ID(peer.raw))

    async def identify(self, peer: PeerId) -> PeerInfo:
        """Ask the peer's /ipfs/id/1.0.0 now and report its answer.

        We read the identify message ourselves: py-libp2p's background identify
        stores protocols and addresses but drops the agent version.
        """
        pid = ID(peer.raw)
        net = await self._open(peer, IDENTIFY_PROTOCOL)
        try:
            data = await read_length_prefixed_protobuf(
                net, use_varint_format=True, max_length=self.config.max_frame_bytes
            )
            msg = IdentifyMsg()
            msg.ParseFromString(data)
        except Exception as e:
            await _reset(net)
            raise TransportError(f"identify of {peer.short()} failed: {e}") from None
        with suppress(Exception):
            await net.close()
        with suppress(Exception):
            await update_peerstore_from_identify(self._host.get_peerstore(), pid, msg)
        addrs = []
        for raw in msg.listen_addrs:
            with suppress(Exception):
                addrs.append(str(multiaddr.Multiaddr(raw)))
        observed: str | None = None
        if msg.HasField("observed_addr"):
            with suppress(Exception):
                observed = str(multiaddr.Multiaddr(msg.observed_addr))
        return PeerInfo(
            peer,
            tuple(msg.protocols),
            msg.agent_version if msg.HasField("agent_version") else None,
            tuple(addrs),
            observed,
        )

    async def ping(self, peer: PeerId, count: int) -> list[float]:
        rtts: list[float] = []
        net = await self._open(peer, PING_PROTOCOL)
        try:
            for _ in range(count):
                payload = os.urandom(PING_PAYLOAD_BYTES)
                started = trio.current_time()
                await net.write(payload)
                echo = b""
                while len(echo) < PING_PAYLOAD_BYTES:
                    echo += await net.read(PING_PAYLOAD_BYTES - len(echo))
                if echo != payload:
                    raise TransportError(f"ping to {peer.short()} returned other bytes")
                rtts.append(trio.current_time() - started)
            await net.close()
        except BaseException:
            await _reset(net)
            raise
        return rtts

    async def attach_stream(
        self, stream: trio.abc.Stream, *, initiator: bool, peer: PeerId | None
    ) -> PeerId:
        """py-libp2p's own upgrader over a foreign stream, as its relay transport does."""
        if initiator and peer is None:
            raise ValueError("the initiator must name the peer it expects")
        from libp2p.connection_types import ConnectionType
        from libp2p.network.connection.raw_connection import RawConnection

        raw = RawConnection(_TrioStreamIO(stream), initiator, ConnectionType.DIRECT)  # type: ignore[arg-type]
        try:
            with trio.fail_after(self.config.stream_open_timeout_s):
                secured = await self._network.upgrader.upgrade_security(
                    raw, initiator, ID(peer.raw) if peer is not None else None
                )
                remote = secured.get_remote_peer()
                muxed = await self._network.upgrader.upgrade_connection(secured, remote)
                await self._network.add_conn(
                    muxed, direction="outbound" if initiator else "inbound"
                )
        except (Exception, trio.TooSlowError) as e:
            with trio.CancelScope(shield=True), trio.move_on_after(2.0), suppress(Exception):
                await stream.aclose()
            raise AttachError(f"libp2p upgrade over the stream failed: {e}") from None
        return PeerId(remote.to_bytes())


class _TrioStreamIO:
    """py-libp2p's ReadWriteCloser over a trio Stream."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self._read_lock = trio.Lock()
        self._write_lock = trio.Lock()

    async def write(self, data: bytes) -> None:
        from libp2p.io.exceptions import ConnectionClosedError

        async with self._write_lock:
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as e:
                raise ConnectionClosedError(f"stream closed: {e}", transport="colony") from e

    async def read(self, n: int | None = None) -> bytes:
        from libp2p.io.exceptions import ConnectionClosedError

        async with self._read_lock:
            if n == 0:
                return b""
            try:
                return await self.stream.receive_some(n)
            except trio.ClosedResourceError:
                return b""
            except trio.BrokenResourceError as e:
                raise ConnectionClosedError(f"stream broken: {e}", transport="colony") from e

    async def close(self) -> None:
        await self.stream.aclose()

    def get_remote_address(self) -> tuple[str, int] | None:
        return None
