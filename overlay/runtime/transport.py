"""The libp2p adapter: the only module in Colony that imports py-libp2p (DESIGN §3).

One `Transport` per daemon: a py-libp2p 0.8.1 host (TCP, Noise, Yamux, identify,
ping) keyed by the node's Ed25519 identity, plus Colony's stream discipline on top:

* one long-lived outbound stream per (peer, protocol), opened on first use and
  reused for every later frame; requests on it carry request ids
  (overlay.runtime.framing), so a request costs one round trip, not a
  multistream-select negotiation as well;
* frames are `unsigned-varint length ‖ body` with a hard size limit; the body is
  canonical CBOR in an envelope (Colony protocols) or opaque bytes (raw mode: the
  libp2p Kademlia and Bitswap protobuf wires, whose responses match by order);
* every outbound (peer, protocol) queue is bounded in frames, and `post` also
  bounds queued bytes per peer, so a slow peer costs dropped frames, not memory;
* a bad peer costs a stream, never the daemon: every libp2p stream handler
  (ours and py-libp2p's identify/ping) runs inside a guard, and an oversize,
  malformed or non-canonical frame resets that stream with a logged reason.

py-libp2p 0.8.1 traits handled here on purpose (docs/transport.md has figures):
plaintext is offered by default (we offer Noise only); dialling waits a 250 ms
happy-eyeballs delay unless `max_connections_per_peer=1`; an exception escaping a
stream handler tears the host down (guarded); a failed dial black-lists the peer
for 60 s (we evict that cache and keep our own, shorter back-off); `host.connect`
gives a peer's addresses a 120 s TTL (we keep our own address book and dial through
the swarm); the auto-connector dials stored peers by itself (disabled: the DHT
decides whom to talk to); a failed listen is only logged (we raise ListenError).
"""

from __future__ import annotations

import itertools
import os
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

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
from libp2p.network.stream.exceptions import StreamEOF, StreamError, StreamReset
from libp2p.peer.id import ID
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.utils.varint import read_length_prefixed_protobuf

from overlay.core.crypto import KeyPair
from overlay.core.errors import (
    ColonyError,
    FrameTooLarge,
    LocalProtocolError,
    NonCanonical,
    RemoteProtocolError,
    WireError,
)
from overlay.core.ids import PeerId
from overlay.core.wire import DEFAULT_MAX_FRAME_BYTES, FrameDecoder, cbor_decode
from overlay.runtime.framing import Kind, decode_envelope, encode_envelope, encode_raw_frame

log = structlog.get_logger("colony.transport")

READ_CHUNK_BYTES = 256 * 1024
#: Queued frames are coalesced into one stream write up to this size: fewer Yamux
#: and Noise frames per byte (both cost a Python-level header and copy each).
WRITE_BATCH_BYTES = 256 * 1024
PING_PAYLOAD_BYTES = 32


# ---------------------------------------------------------------- public types


class Codec(Enum):
    CBOR = "cbor"  # Colony protocols: envelope + canonical CBOR, request ids
    RAW = "raw"  # libp2p protobuf protocols: opaque bodies, responses in order


class TransportError(ColonyError):
    """Base of the adapter's errors; the daemon catches this one class."""


class ListenError(TransportError):
    """A configured listen address could not be bound."""


class DialError(TransportError):
    """No connection to the peer could be made (no address, refused, timeout)."""


class SendError(TransportError):
    """A frame could not be delivered to the peer's stream."""


class RequestTimeout(TransportError):
    """No response arrived in time."""


class RemoteError(TransportError):
    """The peer answered a request with a refusal (its reason is the message)."""


@dataclass(frozen=True, slots=True)
class PeerConnected:
    peer: PeerId


@dataclass(frozen=True, slots=True)
class PeerDisconnected:
    peer: PeerId


@dataclass(frozen=True, slots=True)
class SendFailed:
    """Frames posted to `peer` were dropped (dial or stream failure)."""

    peer: PeerId
    protocol: str
    reason: str
    frames_dropped: int


TransportEvent = PeerConnected | PeerDisconnected | SendFailed

OnMessage = Callable[[PeerId, Any], None]
OnRequest = Callable[[PeerId, Any], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """What identify told us about a peer."""

    peer: PeerId
    protocols: tuple[str, ...]
    agent_version: str | None
    addrs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TransportConfig:
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    #: Frames waiting per outbound (peer, protocol) stream.
    queue_frames: int = 256
    #: Bytes that `post` may leave queued for one peer across its protocols.
    queue_bytes_per_peer: int = 16 * 1024 * 1024
    dial_timeout_s: float = 10.0
    stream_open_timeout_s: float = 10.0
    send_timeout_s: float = 30.0
    request_timeout_s: float = 30.0
    #: Requests served at once per inbound stream; the reader waits beyond this.
    max_inflight_requests_per_stream: int = 64
    #: Concurrent inbound streams per (peer, protocol); more are reset.
    max_inbound_streams_per_peer_protocol: int = 4
    dial_backoff_s: float = 1.0
    dial_backoff_max_s: float = 30.0
    max_addrs_per_peer: int = 16
    max_known_peers: int = 100_000
    event_queue: int = 4096

    @classmethod
    def from_config(cls, cfg: Mapping[str, Mapping[str, Any]], **overrides: Any) -> TransportConfig:
        """From the node configuration (`[network] max_frame_bytes`)."""
        return cls(max_frame_bytes=int(cfg["network"]["max_frame_bytes"]), **overrides)


@dataclass
class TransportStats:
    """Plain counters; overlay.runtime.metrics exports them at scrape time."""

    bytes_in: int = 0
    bytes_out: int = 0
    frames_in: int = 0
    frames_out: int = 0
    streams_opened: int = 0
    streams_accepted: int = 0
    dials: int = 0
    dial_failures: int = 0
    requests_sent: int = 0
    requests_served: int = 0
    request_timeouts: int = 0
    frames_dropped_queue_full: int = 0
    frames_dropped_send_failed: int = 0
    unmatched_responses: int = 0
    handler_errors: int = 0
    events_dropped: int = 0
    #: Streams closed by us because of the peer or a handler, by reason.
    streams_dropped: dict[str, int] = field(default_factory=dict)


# ---------------------------------------------------------------- internals


@dataclass(slots=True)
class _Registration:
    protocol: str
    codec: Codec
    on_message: OnMessage | None
    on_request: OnRequest | None


class _Item:
    """A frame waiting in an outbound queue; `done` is set for `send` callers."""

    __slots__ = ("done", "error", "frame")

    def __init__(self, frame: bytes, done: trio.Event | None = None) -> None:
        self.frame = frame
        self.done = done
        self.error: str | None = None


class _Pending:
    __slots__ = ("done", "error", "peer", "protocol", "remote_error", "result")

    def __init__(self, peer: PeerId, protocol: str) -> None:
        self.peer = peer
        self.protocol = protocol
        self.done = trio.Event()
        self.result: Any = None
        self.error: str | None = None  # our side failed (stream dropped)
        self.remote_error: str | None = None  # the peer refused


class _Stream:
    """A libp2p stream with our framing state; writes are serialised by `lock`."""

    __slots__ = ("codec", "lock", "net", "outbound", "peer", "protocol")

    def __init__(
        self, net: INetStream, peer: PeerId, protocol: str, codec: Codec, outbound: bool
    ) -> None:
        self.net = net
        self.peer = peer
        self.protocol = protocol
        self.codec = codec
        self.outbound = outbound
        self.lock = trio.Lock()


class _Outbound:
    """Our long-lived stream to (peer, protocol) with its bounded queue."""

    def __init__(self, peer: PeerId, protocol: str, codec: Codec, queue_frames: int) -> None:
        self.peer = peer
        self.protocol = protocol
        self.codec = codec
        self.tx, self.rx = trio.open_memory_channel[_Item](queue_frames)
        self.closed = False
        self.stream: _Stream | None = None  # set once the stream is negotiated
        self.busy = False  # the writer task holds frames it has not written yet
        self.pending: set[int] = set()  # CBOR request ids awaiting a response
        self.raw_waiters: deque[_Pending] = deque()  # RAW: responses come in order


class _Drop(Exception):
    """Raised inside a read loop: reset this stream for `reason`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _sole_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one exception inside nested single-member groups, if that is the shape."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        if len(exc.exceptions) != 1:
            return None
        exc = exc.exceptions[0]
    return exc


def _peer_of(net: INetStream | INetConn) -> PeerId:
    return PeerId(net.muxed_conn.peer_id.to_bytes())


def _wire_reason(e: WireError) -> str:
    if isinstance(e, FrameTooLarge):
        return "frame_too_large"
    if isinstance(e, NonCanonical):
        return "non_canonical"
    return "malformed_frame"


def split_p2p_addr(addr: str) -> tuple[PeerId, str]:
    """`/ip4/…/tcp/N/p2p/12D3…` → (peer id, `/ip4/…/tcp/N`)."""
    try:
        ma = multiaddr.Multiaddr(addr)
        peer_text = ma.value_for_protocol("p2p")
    except Exception as e:
        raise LocalProtocolError(f"not a multiaddr: {addr!r} ({e})") from None
    if not peer_text:
        raise LocalProtocolError(f"multiaddr {addr!r} has no /p2p/<peer id> part")
    peer = PeerId.from_base58(str(peer_text))
    base = str(ma.decapsulate(multiaddr.Multiaddr(f"/p2p/{peer_text}")))
    return peer, base


class _Notifee(INotifee):
    """Turns swarm callbacks into PeerConnected/PeerDisconnected (first/last conn)."""

    def __init__(self, transport: Transport) -> None:
        self._t = transport

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        self._t._on_connected(_peer_of(conn))

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        self._t._on_disconnected(_peer_of(conn))

    async def listen(self, network: INetwork, multiaddr: Any) -> None:
        return None

    async def listen_close(self, network: INetwork, multiaddr: Any) -> None:
        return None


# ---------------------------------------------------------------- the adapter


class Transport:
    """A libp2p host with Colony framing. Create with `Transport.open(...)`."""

    def __init__(self, keypair: KeyPair, config: TransportConfig | None = None) -> None:
        self.config = config or TransportConfig()
        self.peer_id = keypair.peer_id
        self.stats = TransportStats()
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
            dial_timeout=self.config.dial_timeout_s,
        )
        self._host = new_host(
            key_pair=lkp,
            sec_opt=security,  # type: ignore[arg-type]
            muxer_opt={YAMUX_PROTOCOL: Yamux},
            connection_config=conn_cfg,
            listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")],  # selects TCP
        )
        self._network: Any = self._host.get_network()
        # Our own back-off replaces the swarm's retries and 60 s negative cache.
        self._network.retry_config = RetryConfig(max_retries=0)
        if ID(self.peer_id.raw) != self._host.get_id():
            raise LocalProtocolError("libp2p derived a different peer id from our key")
        self._handlers: dict[str, _Registration] = {}
        self._outbound: dict[tuple[PeerId, str], _Outbound] = {}
        self._inbound_count: dict[tuple[PeerId, str], int] = {}
        self._queued_bytes: dict[PeerId, int] = {}
        self._pending: dict[int, _Pending] = {}
        self._rids = itertools.count(1)
        self._addrs: dict[PeerId, list[str]] = {}
        self._backoff: dict[PeerId, tuple[float, float]] = {}  # peer → (until, last delay)
        self._connected: set[PeerId] = set()
        self._events_tx, self.events = trio.open_memory_channel[TransportEvent](
            self.config.event_queue
        )
        self._nursery: trio.Nursery | None = None
        self._listen_addrs: list[str] = []
        # py-libp2p's own handlers (identify, identify/push, ping) get the guard too.
        mux = self._host.get_mux()
        for proto, handler in list(mux.handlers.items()):
            if proto is not None and handler is not None:
                mux.handlers[proto] = self._guard(str(proto), handler)
        self._network.register_notifee(_Notifee(self))

    # ------------------------------------------------------------ lifecycle

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        keypair: KeyPair,
        listen_addrs: Iterable[str],
        config: TransportConfig | None = None,
    ) -> AsyncIterator[Transport]:
        """Start the host, listen, and yield the transport; closes everything on exit.

        Raises ListenError if any address cannot be bound. An exception raised in
        the body comes out as itself, not wrapped in the ExceptionGroups of the
        nurseries py-libp2p runs the host in.
        """
        t = cls(keypair, config)
        try:
            wanted = [multiaddr.Multiaddr(a) for a in listen_addrs]
        except Exception as e:
            raise ListenError(f"bad listen address: {e}") from None
        failed: list[str] = []
        try:
            async with t._host.run(wanted):
                # No auto-connector: whom to talk to is the DHT's and gossip's
                # choice. (Watermarks cannot switch it off: it aims at their midpoint.)
                await t._network.auto_connector.stop()
                failed = [str(m) for m in wanted if str(m) not in t._network.listeners]
                if not failed:
                    async with trio.open_nursery() as nursery:
                        t._nursery = nursery
                        t._listen_addrs = [str(a) for a in t._host.get_transport_addrs()]
                        log.info("transport_started", peer=str(t.peer_id), addrs=t._listen_addrs)
                        try:
                            yield t
                        finally:
                            nursery.cancel_scope.cancel()
                            t._nursery = None
        except BaseExceptionGroup as group:
            leaf = _sole_leaf(group)
            if leaf is None:
                raise
            raise leaf from None
        if failed:
            # py-libp2p only logs a failed listen; a daemon must not run deaf.
            raise ListenError(f"could not listen on {', '.join(failed)}")

    @property
    def listen_addrs(self) -> list[str]:
        """Bound addresses (port 0 resolved), without the /p2p/ part."""
        return list(self._listen_addrs)

    @property
    def addrs(self) -> list[str]:
        """Bound addresses as others dial them: `…/p2p/<our peer id>`."""
        return [f"{a}/p2p/{self.peer_id}" for a in self._listen_addrs]

    # ------------------------------------------------------------ handlers

    def set_handler(
        self,
        protocol: str,
        *,
        on_message: OnMessage | None = None,
        on_request: OnRequest | None = None,
        codec: Codec = Codec.CBOR,
    ) -> None:
        """Accept streams for `protocol`.

        `on_message(peer, obj)` gets each one-way frame; it must not block (hand
        the input to the driver). `await on_request(peer, obj)` answers a request:
        its return value is the response; a RemoteProtocolError it raises becomes a
        refusal. In RAW mode obj is bytes, every inbound frame is a request when
        `on_request` is set, and a None result sends no response.
        """
        reg = _Registration(protocol, codec, on_message, on_request)
        self._handlers[protocol] = reg

        async def handler(net: INetStream) -> None:
            await self._on_inbound_stream(net, reg)

        self._host.set_stream_handler(protocol, self._guard(protocol, handler))  # type: ignore[arg-type]

    def _guard(
        self, protocol: str, handler: Callable[[INetStream], Awaitable[None]]
    ) -> Callable[[INetStream], Awaitable[None]]:
        """An exception escaping a py-libp2p stream handler stops the whole host;
        here it costs the stream only."""

        async def guarded(net: INetStream) -> None:
            try:
                await handler(net)
            except Exception as e:
                self._count_drop("handler_error")
                log.warning(
                    "stream_handler_failed", protocol=protocol, error=repr(e)[:300]
                )
                await self._reset(net)

        return guarded

    # ------------------------------------------------------------ peers and dialling

    def add_addrs(self, peer: PeerId, addrs: Iterable[str]) -> None:
        """Remember dialable addresses (`/ip4/…/tcp/N`, with or without /p2p/)."""
        known = self._addrs.get(peer)
        if known is None:
            if len(self._addrs) >= self.config.max_known_peers:
                self._addrs.pop(next(iter(self._addrs)))  # forget the oldest entry
            known = self._addrs[peer] = []
        for a in addrs:
            if "/p2p/" in a:
                pid, a = split_p2p_addr(a)
                if pid != peer:
                    raise LocalProtocolError(f"address {a!r} names another peer {pid}")
            if a not in known:
                known.insert(0, a)  # newest first
        del known[self.config.max_addrs_per_peer :]
        self._backoff.pop(peer, None)  # new addresses deserve a prompt try

    def known_addrs(self, peer: PeerId) -> list[str]:
        return list(self._addrs.get(peer, ()))

    async def connect(self, addr_or_peer: str | PeerId) -> PeerId:
        """Dial `…/p2p/12D3…` (or a peer whose addresses we know); return its id."""
        if isinstance(addr_or_peer, str):
            peer, base = split_p2p_addr(addr_or_peer)
            self.add_addrs(peer, [base])
        else:
            peer = addr_or_peer
            self._backoff.pop(peer, None)
        await self._ensure_connected(peer)
        return peer

    def connected_peers(self) -> list[PeerId]:
        return [PeerId(p.to_bytes()) for p in self._host.get_connected_peers()]

    def is_connected(self, peer: PeerId) -> bool:
        return bool(self._network.get_connections(ID(peer.raw)))

    async def disconnect(self, peer: PeerId, reason: str = "") -> None:
        log.info("peer_disconnect", peer=str(peer), reason=reason)
        for (p, _), ch in list(self._outbound.items()):
            if p == peer:
                ch.closed = True
                ch.tx.close()
        await self._host.disconnect(ID(peer.raw))

    def disconnect_soon(self, peer: PeerId, reason: str) -> None:
        """Sync form for the driver's Disconnect effect."""
        self._spawn(self.disconnect, peer, reason)

    async def _ensure_connected(self, peer: PeerId) -> None:
        pid = ID(peer.raw)
        if self._network.get_connections(pid):
            return
        if peer == self.peer_id:
            raise DialError("refusing to dial ourselves")
        now = trio.current_time()
        until, _ = self._backoff.get(peer, (0.0, 0.0))
        if now < until:
            raise DialError(f"backing off {peer.short()} for {until - now:.1f} s more")
        addrs = self._addrs.get(peer)
        if not addrs:
            raise DialError(f"no known address for {peer}")
        self._host.get_peerstore().add_addrs(pid, [multiaddr.Multiaddr(a) for a in addrs], 0)
        cache = getattr(self._network, "_negative_peer_cache", None)
        if cache is not None:
            cache.evict(str(pid))  # our back-off is shorter and reset by new addresses
        self.stats.dials += 1
        try:
            with trio.fail_after(self.config.dial_timeout_s):
                conns = await self._network.dial_peer(pid)
                for conn in conns:
                    started = getattr(conn, "event_started", None)
                    if started is not None:
                        await started.wait()
        except (Exception, trio.TooSlowError) as e:
            self.stats.dial_failures += 1
            _, last = self._backoff.get(peer, (0.0, 0.0))
            delay = min(max(last * 2, self.config.dial_backoff_s), self.config.dial_backoff_max_s)
            self._backoff[peer] = (trio.current_time() + delay, delay)
            raise DialError(f"could not connect to {peer}: {type(e).__name__}: {e}") from None
        self._backoff.pop(peer, None)

    def _on_connected(self, peer: PeerId) -> None:
        self._backoff.pop(peer, None)
        if peer not in self._connected:
            self._connected.add(peer)
            self._emit(PeerConnected(peer))

    def _on_disconnected(self, peer: PeerId) -> None:
        if peer in self._connected and not self._network.get_connections(ID(peer.raw)):
            self._connected.discard(peer)
            self._emit(PeerDisconnected(peer))

    def _emit(self, event: TransportEvent) -> None:
        try:
            self._events_tx.send_nowait(event)
        except trio.WouldBlock:
            self.stats.events_dropped += 1

    # ------------------------------------------------------------ identify and ping

    async def identify(self, peer: PeerId, timeout: float = 10.0) -> PeerInfo:
        """Ask the peer's /ipfs/id/1.0.0 now and report its answer.

        We read the identify message ourselves: py-libp2p's background identify
        stores protocols and addresses but drops the agent version.
        """
        pid = ID(peer.raw)
        with trio.fail_after(timeout):
            await self._ensure_connected(peer)
            net = await self._host.new_stream(pid, [IDENTIFY_PROTOCOL])
            try:
                data = await read_length_prefixed_protobuf(
                    net, use_varint_format=True, max_length=self.config.max_frame_bytes
                )
                msg = IdentifyMsg()
                msg.ParseFromString(data)
            except Exception as e:
                await self._reset(net)
                raise TransportError(f"identify of {peer.short()} failed: {e}") from None
            with suppress(Exception):
                await net.close()
        with suppress(Exception):
            await update_peerstore_from_identify(self._host.get_peerstore(), pid, msg)
        addrs = []
        for raw in msg.listen_addrs:
            with suppress(Exception):
                addrs.append(str(multiaddr.Multiaddr(raw)))
        return PeerInfo(
            peer,
            tuple(msg.protocols),
            msg.agent_version if msg.HasField("agent_version") else None,
            tuple(addrs),
        )

    async def ping(self, peer: PeerId, count: int = 1, timeout: float = 10.0) -> list[float]:
        """Round-trip times (s) of `count` /ipfs/ping/1.0.0 exchanges on one stream."""
        rtts: list[float] = []
        with trio.fail_after(timeout):
            await self._ensure_connected(peer)
            net = await self._host.new_stream(ID(peer.raw), [PING_PROTOCOL])
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
                await self._reset(net)
                raise
        return rtts

    # ------------------------------------------------------------ sending

    def post(self, peer: PeerId, protocol: str, obj: Any) -> bool:
        """Queue a one-way frame without waiting (the driver's Send effect).

        False when this peer's queue is full (counted): a slow or dead peer loses
        frames instead of growing our memory. Later failures arrive as SendFailed.
        """
        ch = self._outbound_for(peer, protocol)
        frame = self._encode_message(ch.codec, obj)
        queued = self._queued_bytes.get(peer, 0)
        if queued + len(frame) > self.config.queue_bytes_per_peer:
            self.stats.frames_dropped_queue_full += 1
            return False
        try:
            ch.tx.send_nowait(_Item(frame))
        except (trio.WouldBlock, trio.ClosedResourceError):
            self.stats.frames_dropped_queue_full += 1
            return False
        self._queued_bytes[peer] = queued + len(frame)
        return True

    async def send(
        self, peer: PeerId, protocol: str, obj: Any, timeout: float | None = None
    ) -> None:
        """Write one frame on our stream to the peer, dialling if needed.

        Waits for queue room (back-pressure) and for the write; raises DialError,
        SendError, or SendError on timeout.
        """
        ch = self._outbound_for(peer, protocol)
        item = _Item(self._encode_message(ch.codec, obj), trio.Event())
        try:
            with trio.fail_after(timeout or self.config.send_timeout_s):
                await self._enqueue(ch, item)
                assert item.done is not None
                await item.done.wait()
        except trio.TooSlowError:
            raise SendError(f"send to {peer.short()} on {protocol} timed out") from None
        if item.error is not None:
            raise SendError(f"send to {peer.short()} on {protocol} failed: {item.error}")

    async def request(
        self, peer: PeerId, protocol: str, obj: Any, timeout: float | None = None
    ) -> Any:
        """Send a request on the long-lived stream and wait for its response.

        CBOR: matched by request id, many in flight at once. RAW: the next frame
        on the stream is the response (libp2p Kademlia); a timeout then resets the
        stream, because a late answer would be taken for the next request's.
        """
        ch = self._outbound_for(peer, protocol)
        pending = _Pending(peer, protocol)
        self.stats.requests_sent += 1
        rid = 0
        if ch.codec is Codec.CBOR:
            rid = next(self._rids)
            item = _Item(encode_envelope(Kind.REQUEST, obj, rid, self.config.max_frame_bytes))
            self._pending[rid] = pending
            ch.pending.add(rid)
        else:
            item = _Item(encode_raw_frame(self._raw_body(obj), self.config.max_frame_bytes))
            ch.raw_waiters.append(pending)
        enqueued = False
        try:
            with trio.fail_after(timeout or self.config.request_timeout_s):
                await self._enqueue(ch, item)
                enqueued = True
                await pending.done.wait()
        except trio.TooSlowError:
            self.stats.request_timeouts += 1
            raise RequestTimeout(f"no response from {peer.short()} on {protocol}") from None
        finally:
            if ch.codec is Codec.CBOR:
                self._pending.pop(rid, None)
                ch.pending.discard(rid)
            elif not pending.done.is_set():
                if enqueued:
                    self._fail_outbound(ch, "request_abandoned")  # order is now unknown
                elif pending in ch.raw_waiters:
                    ch.raw_waiters.remove(pending)
        if pending.error is not None:
            raise SendError(f"request to {peer.short()} on {protocol} failed: {pending.error}")
        if pending.remote_error is not None:
            raise RemoteError(pending.remote_error)
        return pending.result

    def _encode_message(self, codec: Codec, obj: Any) -> bytes:
        if codec is Codec.CBOR:
            return encode_envelope(Kind.MESSAGE, obj, 0, self.config.max_frame_bytes)
        return encode_raw_frame(self._raw_body(obj), self.config.max_frame_bytes)

    @staticmethod
    def _raw_body(obj: Any) -> bytes:
        if not isinstance(obj, (bytes, bytearray, memoryview)):
            raise LocalProtocolError(f"raw protocols send bytes, not {type(obj).__name__}")
        return bytes(obj)

    async def _enqueue(self, ch: _Outbound, item: _Item) -> None:
        s = ch.stream
        if (
            s is not None
            and not ch.busy
            and ch.rx.statistics().current_buffer_used == 0
            and not s.lock.locked()
        ):
            # Fast path: nothing queued and the writer idle, so writing here keeps
            # frame order and saves a task switch per request (a round trip on
            # loopback is only ~0.5 ms).
            s.lock.acquire_nowait()
            try:
                await s.net.write(item.frame)
                self.stats.bytes_out += len(item.frame)
                self.stats.frames_out += 1
            except StreamError as e:
                item.error = f"{type(e).__name__}: {e}"
                self._spawn(self._reset, s.net)  # the reader then ends the channel
            finally:
                s.lock.release()
                if item.done is not None:
                    item.done.set()
            if item.error is not None and item.done is None:
                raise SendError(f"stream to {ch.peer.short()} on {ch.protocol} failed")
            return
        try:
            await ch.tx.send(item)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise SendError(f"stream to {ch.peer.short()} on {ch.protocol} closed") from None
        self._queued_bytes[ch.peer] = self._queued_bytes.get(ch.peer, 0) + len(item.frame)

    def _outbound_for(self, peer: PeerId, protocol: str) -> _Outbound:
        if peer == self.peer_id:
            raise LocalProtocolError("cannot send to ourselves")
        key = (peer, protocol)
        ch = self._outbound.get(key)
        if ch is None or ch.closed:
            reg = self._handlers.get(protocol)
            codec = reg.codec if reg is not None else Codec.CBOR
            ch = _Outbound(peer, protocol, codec, self.config.queue_frames)
            self._outbound[key] = ch
            self._spawn(self._run_outbound, ch)
        return ch

    def codec_for(self, protocol: str, codec: Codec) -> None:
        """Declare the codec of a protocol we only dial (no handler of our own)."""
        if protocol not in self._handlers:
            self._handlers[protocol] = _Registration(protocol, codec, None, None)

    def _spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        if self._nursery is None:
            raise LocalProtocolError("transport is not running (use Transport.open)")
        self._nursery.start_soon(fn, *args)

    async def _run_outbound(self, ch: _Outbound) -> None:
        reason = "closed"
        s: _Stream | None = None
        try:
            with trio.fail_after(self.config.dial_timeout_s + self.config.stream_open_timeout_s):
                await self._ensure_connected(ch.peer)
                net = await self._host.new_stream(ID(ch.peer.raw), [ch.protocol])  # type: ignore[list-item]
            s = _Stream(net, ch.peer, ch.protocol, ch.codec, outbound=True)
            ch.stream = s
            self.stats.streams_opened += 1
            async with trio.open_nursery() as n:

                async def read_then_stop() -> None:
                    nonlocal reason
                    assert s is not None
                    reason = await self._read_loop(s, ch)
                    if reason == "eof" and not ch.pending and not ch.raw_waiters:
                        # The peer closed only its half: helia's Bitswap does so on
                        # every inbound stream at once (it answers on a stream of its
                        # own) and still reads ours. Keep writing; a peer that is
                        # really gone fails the next write.
                        return
                    n.cancel_scope.cancel()

                n.start_soon(read_then_stop)
                await self._write_loop(ch, s)
                n.cancel_scope.cancel()
        except DialError as e:
            reason = f"dial_failed: {e}"
        except trio.TooSlowError:
            reason = "stream_open_timeout"
        except Exception as e:
            reason = f"stream_failed: {type(e).__name__}: {e}"
        finally:
            dropped = self._fail_outbound(ch, reason)
            if s is not None:
                await self._finish_stream(s, reason)
            if dropped:
                self._emit(SendFailed(ch.peer, ch.protocol, reason, dropped))

    async def _write_loop(self, ch: _Outbound, s: _Stream) -> None:
        async for item in ch.rx:
            ch.busy = True
            batch = [item]
            size = len(item.frame)
            while size < WRITE_BATCH_BYTES:
                try:
                    more = ch.rx.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                batch.append(more)
                size += len(more.frame)
            try:
                await self._write(s, b"".join(i.frame for i in batch), len(batch))
            except StreamError as e:
                for i in batch:
                    i.error = f"{type(e).__name__}: {e}"
                raise
            finally:
                ch.busy = False
                self._queued_bytes[ch.peer] = max(0, self._queued_bytes.get(ch.peer, 0) - size)
                for i in batch:
                    if i.done is not None:
                        i.done.set()

    async def _write(self, s: _Stream, data: bytes, frames: int = 1) -> None:
        async with s.lock:
            await s.net.write(data)
        self.stats.bytes_out += len(data)
        self.stats.frames_out += frames

    def _fail_outbound(self, ch: _Outbound, reason: str) -> int:
        """Close the queue, fail everything waiting on it; return frames dropped."""
        if self._outbound.get((ch.peer, ch.protocol)) is ch:
            del self._outbound[(ch.peer, ch.protocol)]
        ch.closed = True
        ch.tx.close()
        dropped = 0
        while True:
            try:
                item = ch.rx.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
            dropped += 1
            left = self._queued_bytes.get(ch.peer, 0) - len(item.frame)
            self._queued_bytes[ch.peer] = max(0, left)
            item.error = reason
            if item.done is not None:
                item.done.set()
        for rid in ch.pending:
            p = self._pending.get(rid)
            if p is not None and not p.done.is_set():
                p.error = reason
                p.done.set()
        for p in ch.raw_waiters:
            p.error = reason
            p.done.set()
        ch.raw_waiters.clear()
        if not self._queued_bytes.get(ch.peer):
            self._queued_bytes.pop(ch.peer, None)
        self.stats.frames_dropped_send_failed += dropped
        return dropped

    # ------------------------------------------------------------ receiving

    async def _on_inbound_stream(self, net: INetStream, reg: _Registration) -> None:
        peer = _peer_of(net)
        key = (peer, reg.protocol)
        if self._inbound_count.get(key, 0) >= self.config.max_inbound_streams_per_peer_protocol:
            self._count_drop("too_many_streams")
            log.info("stream_dropped", peer=str(peer), protocol=reg.protocol,
                     reason="too_many_streams")
            await self._reset(net)
            return
        self._inbound_count[key] = self._inbound_count.get(key, 0) + 1
        self.stats.streams_accepted += 1
        s = _Stream(net, peer, reg.protocol, reg.codec, outbound=False)
        reason = "closed"
        try:
            reason = await self._read_loop(s, None)
        finally:
            left = self._inbound_count.get(key, 1) - 1
            if left > 0:
                self._inbound_count[key] = left
            else:
                self._inbound_count.pop(key, None)
            with trio.CancelScope(shield=True):
                await self._finish_stream(s, reason)

    async def _read_loop(self, s: _Stream, ch: _Outbound | None) -> str:
        """Read frames until EOF or a fault; return why the stream ended."""
        decoder = FrameDecoder(self.config.max_frame_bytes)
        inflight = trio.Semaphore(self.config.max_inflight_requests_per_stream)
        reason = "eof"
        async with trio.open_nursery() as serving:
            try:
                while True:
                    try:
                        data = await s.net.read(READ_CHUNK_BYTES)
                    except StreamEOF:
                        data = b""
                    if not data:
                        reason = "eof" if decoder.at_frame_boundary() else "truncated_frame"
                        break
                    self.stats.bytes_in += len(data)
                    decoder.feed(data)
                    while (body := decoder.next_raw()) is not None:
                        self.stats.frames_in += 1
                        await self._dispatch(s, ch, body, serving, inflight)
            except StreamReset:
                reason = "reset"
            except StreamError as e:
                reason = f"stream_error: {e}"
            except WireError as e:
                reason = _wire_reason(e)
                log.info("stream_dropped", peer=str(s.peer), protocol=s.protocol,
                         reason=reason, detail=str(e)[:200])
                serving.cancel_scope.cancel()
            except _Drop as e:
                reason = e.reason
                serving.cancel_scope.cancel()
        return reason

    async def _dispatch(
        self,
        s: _Stream,
        ch: _Outbound | None,
        body: bytes,
        serving: trio.Nursery,
        inflight: trio.Semaphore,
    ) -> None:
        reg = self._handlers.get(s.protocol)
        if s.codec is Codec.RAW:
            if ch is not None and ch.raw_waiters:
                p = ch.raw_waiters.popleft()
                p.result = body
                p.done.set()
            elif reg is not None and reg.on_request is not None and not s.outbound:
                await self._serve(s, reg, 0, body)  # in order: responses match by position
            else:
                self._deliver(s, reg, body)
            return
        env = decode_envelope(cbor_decode(body))
        if env.kind is Kind.MESSAGE:
            self._deliver(s, reg, env.body)
        elif env.kind is Kind.REQUEST:
            if reg is None or reg.on_request is None:
                await self._write(s, encode_envelope(Kind.ERROR, "no request handler", env.rid))
                return
            await inflight.acquire()  # back-pressure: stop reading while saturated
            serving.start_soon(self._serve_and_release, s, reg, env.rid, env.body, inflight)
        else:
            p = self._pending.get(env.rid)
            if p is None or p.peer != s.peer or p.protocol != s.protocol:
                self.stats.unmatched_responses += 1  # late (timed out) or bogus
                return
            if env.kind is Kind.RESPONSE:
                p.result = env.body
            else:
                p.remote_error = str(env.body)
            p.done.set()

    def _deliver(self, s: _Stream, reg: _Registration | None, obj: Any) -> None:
        if reg is None or reg.on_message is None:
            raise _Drop("unexpected_message")
        try:
            reg.on_message(s.peer, obj)
        except RemoteProtocolError as e:
            log.info("stream_dropped", peer=str(s.peer), protocol=s.protocol,
                     reason="bad_message", detail=str(e)[:200])
            raise _Drop("bad_message") from None
        except LocalProtocolError:
            raise  # our bug: crash loudly, as the driver does
        except Exception:
            self.stats.handler_errors += 1
            log.exception("message_handler_failed", peer=str(s.peer), protocol=s.protocol)
            raise _Drop("handler_error") from None

    async def _serve_and_release(
        self, s: _Stream, reg: _Registration, rid: int, obj: Any, inflight: trio.Semaphore
    ) -> None:
        try:
            await self._serve(s, reg, rid, obj)
        finally:
            inflight.release()

    async def _serve(self, s: _Stream, reg: _Registration, rid: int, obj: Any) -> None:
        assert reg.on_request is not None
        self.stats.requests_served += 1
        frame: bytes | None
        try:
            with trio.fail_after(self.config.request_timeout_s):
                result = await reg.on_request(s.peer, obj)
            if s.codec is Codec.RAW:
                frame = None if result is None else encode_raw_frame(
                    self._raw_body(result), self.config.max_frame_bytes
                )
            else:
                frame = encode_envelope(Kind.RESPONSE, result, rid, self.config.max_frame_bytes)
        except RemoteProtocolError as e:
            if s.codec is Codec.RAW:
                raise _Drop("bad_request") from None
            frame = encode_envelope(Kind.ERROR, f"refused: {e}", rid)
        except LocalProtocolError:
            raise
        except Exception as e:
            self.stats.handler_errors += 1
            log.exception("request_handler_failed", peer=str(s.peer), protocol=s.protocol)
            if s.codec is Codec.RAW:
                raise _Drop("handler_error") from None
            frame = encode_envelope(Kind.ERROR, f"internal error: {type(e).__name__}", rid)
        if frame is not None:
            try:
                await self._write(s, frame)
            except StreamError:
                return  # the peer went away; the read loop reports why

    # ------------------------------------------------------------ stream teardown

    def _count_drop(self, reason: str) -> None:
        key = reason.split(":", 1)[0]
        self.stats.streams_dropped[key] = self.stats.streams_dropped.get(key, 0) + 1

    async def _finish_stream(self, s: _Stream, reason: str) -> None:
        if reason in ("eof", "closed"):
            with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                try:
                    await s.net.close()
                except Exception:
                    await self._reset(s.net)
            return
        if reason not in ("reset",) and not reason.startswith("stream_error"):
            self._count_drop(reason)
        await self._reset(s.net)

    @staticmethod
    async def _reset(net: INetStream) -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(1.0), suppress(Exception):
            await net.reset()


__all__ = [
    "Codec",
    "DialError",
    "ListenError",
    "PeerConnected",
    "PeerDisconnected",
    "PeerInfo",
    "RemoteError",
    "RequestTimeout",
    "SendError",
    "SendFailed",
    "Transport",
    "TransportConfig",
    "TransportError",
    "TransportEvent",
    "TransportStats",
    "split_p2p_addr",
]
