"""The transport adapter: Colony's stream discipline over a libp2p network stack.

One `Transport` per daemon. Underneath is a `Backend` (overlay/runtime/
transport_backend.py): our own libp2p wire (overlay/p2p: multistream-select, Noise
XX, Yamux, identify, ping; `[network] stack = "native"`, the default) or
py-libp2p 0.8.1 (`stack = "py-libp2p"`, imported only then). Other libp2p
implementations see the same TCP + Noise + Yamux peer either way. On top:

* one long-lived outbound stream per (peer, protocol), opened on first use and
  reused for every later frame; requests on it carry request ids
  (overlay.runtime.net.framing), so a request costs one round trip, not a
  multistream-select negotiation as well;
* frames are `unsigned-varint length ‖ body` with a hard size limit; the body is
  canonical CBOR in an envelope (Colony protocols) or opaque bytes (raw mode: the
  libp2p Kademlia and Bitswap protobuf wires, whose responses match by order);
* every outbound (peer, protocol) queue is bounded in frames, and `post` also
  bounds queued bytes per peer, so a slow peer costs dropped frames, not memory;
* an optional send-rate limit per peer (`[network] max_send_rate`, token bucket);
* a bad peer costs a stream, never the daemon: an oversize, malformed or
  non-canonical frame resets that stream with a logged reason, and a handler's
  exception costs its stream only.

Public types live in overlay/runtime/net/transport_types.py and are re-exported here.
`Transport` composes three collaborators, each given only what it uses: a
`FrameWriter` (stream lock, send-rate limit; net/transport_channels.py), a `Sender`
(outbound queues and streams, write loop; net/transport_outbound.py) and a
`Receiver` (read loop, dispatch, teardown; net/transport_inbound.py). The transport
itself keeps the handlers, pending requests, addresses and dialling, and events.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import TypeVarTuple

import structlog
import trio

from overlay.core.crypto import KeyPair
from overlay.core.errors import ConfigError, LocalProtocolError
from overlay.core.ids import PeerId
from overlay.p2p.host import Host
from overlay.runtime.net.addr_book import AddrBook
from overlay.runtime.net.framing import (
    Kind,
    encode_envelope,
    encode_raw_frame,
)
from overlay.runtime.net.noise_choice import noise_suites
from overlay.runtime.net.transport_backend import Backend, BackendStream
from overlay.runtime.net.transport_channels import (
    FrameWriter,
    Item,
    Outbound,
    Pending,
    Registration,
    raw_body,
    sole_leaf,
)
from overlay.runtime.net.transport_inbound import Receiver
from overlay.runtime.net.transport_outbound import Sender
from overlay.runtime.net.transport_stream import TransportStream
from overlay.runtime.net.transport_types import (
    STACK_NATIVE,
    STACK_PYLIBP2P,
    Admit,
    AttachError,
    Codec,
    DialError,
    ListenError,
    OnMessage,
    OnRequest,
    PeerConnected,
    PeerDisconnected,
    PeerInfo,
    RemoteError,
    RequestTimeout,
    SendError,
    SendFailed,
    TransportConfig,
    TransportError,
    TransportEvent,
    TransportStats,
    split_p2p_addr,
)

log = structlog.get_logger("colony.transport")

RawStreamHandler = Callable[[PeerId, TransportStream], Awaitable[None]]

_Args = TypeVarTuple("_Args")


#: How long a dial waits for an address of a peer we were told about a moment ago.
ADDR_GRACE_S = 1.0


def make_backend(keypair: KeyPair, config: TransportConfig) -> Backend:
    """The backend `config.stack` names; py-libp2p is imported only here, on demand."""
    if config.stack == STACK_NATIVE:
        from overlay.runtime.net.backend_native import NativeBackend

        return NativeBackend(keypair, config)
    try:
        from overlay.runtime.net.backend_pylibp2p import PyLibp2pBackend
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] not in ("libp2p", "multiaddr"):
            raise
        raise ConfigError(
            '[network] stack = "py-libp2p" needs the pylibp2p extra: '
            "pip install 'colony[pylibp2p]' (or use the default stack = \"native\")"
        ) from e
    return PyLibp2pBackend(keypair, config)


class Transport:
    """A libp2p host with Colony framing. Create with `Transport.open(...)`."""

    def __init__(self, keypair: KeyPair, config: TransportConfig | None = None) -> None:
        self.config = config or TransportConfig()
        self.peer_id = keypair.peer_id
        self.stats = TransportStats()
        self._backend: Backend = make_backend(keypair, self.config)
        self._backend.on_connected = self._on_connected
        self._backend.on_disconnected = self._on_disconnected
        self._handlers: dict[str, Registration] = {}
        self._pending: dict[int, Pending] = {}
        self._rids = itertools.count(1)
        self._drop_logged_at = float("-inf")
        self._book = AddrBook(max_peers=self.config.max_known_peers,
                              max_per_peer=self.config.max_addrs_per_peer,
                              hearsay_ttl_s=self.config.hearsay_addr_ttl_s)  # fmt: skip
        self._backoff: dict[PeerId, tuple[float, float]] = {}  # peer → (until, last delay)
        self._connected: set[PeerId] = set()
        self._events_tx, self.events = trio.open_memory_channel[TransportEvent](
            self.config.event_queue
        )
        self._nursery: trio.Nursery | None = None
        #: When set (overlay/runtime/edge/dialer.py), every dial goes through it: it may
        #: connect by WebRTC or a relay instead of TCP; it raises DialError on failure.
        self.dial_hook: Callable[[PeerId], Awaitable[object]] | None = None
        #: Dials a `…/p2p/<relay>/p2p-circuit/p2p/<peer>` address (the edge dialer).
        self.circuit_hook: Callable[[str], Awaitable[PeerId]] | None = None
        self._writer = FrameWriter(self.config, self.stats)
        self._receiver = Receiver(self.config, self.stats, self._handlers, self._pending,
                                  self._writer)  # fmt: skip
        self._sender = Sender(
            self.config, self.stats, self._writer, self._receiver, self._pending,
            connect=self._ensure_connected, new_stream=self._backend.new_stream,
            emit=self._emit, spawn=self._spawn,
        )

    @property
    def stack(self) -> str:
        return self.config.stack

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
        nurseries the stack runs in.
        """
        t = cls(keypair, config)
        try:
            async with t._backend.serve(list(listen_addrs)), trio.open_nursery() as nursery:
                t._nursery = nursery
                log.info("transport_started", peer=str(t.peer_id), addrs=t.listen_addrs,
                         network_stack=t.stack, noise=[s.protocol_id for s in (  # offer order
                             noise_suites(t.config.noise_cipher) if t.stack == "native" else ())]
                         or ["/noise"])
                try:
                    yield t
                finally:
                    nursery.cancel_scope.cancel()
                    t._nursery = None
        except BaseExceptionGroup as group:
            leaf = sole_leaf(group)
            if leaf is None:
                raise
            raise leaf from None

    @property
    def listen_addrs(self) -> list[str]:
        """Bound addresses (port 0 resolved), without the /p2p/ part."""
        return list(self._backend.listen_addrs)

    @property
    def addrs(self) -> list[str]:
        """Bound addresses as others dial them: `…/p2p/<our peer id>`."""
        return [f"{a}/p2p/{self.peer_id}" for a in self._backend.listen_addrs]

    # ------------------------------------------------------------ handlers

    def set_handler(
        self,
        protocol: str,
        *,
        on_message: OnMessage | None = None,
        on_request: OnRequest | None = None,
        codec: Codec = Codec.CBOR,
        admit: Admit | None = None,
    ) -> None:
        """Accept streams for `protocol`.

        `on_message(peer, obj)` gets each one-way frame; it must not block (hand
        the input to the driver). `await on_request(peer, obj)` answers a request:
        its return value is the response; a RemoteProtocolError it raises becomes a
        refusal. In RAW mode obj is bytes, every inbound frame is a request when
        `on_request` is set, and a None result sends no response. `await admit(n)`,
        if given, runs before a RAW one-way frame of n ≥ ADMIT_MIN_BYTES bytes is
        handed to `on_message`; the stream is not read meanwhile, so the sender is
        held by its flow-control window (Bitswap's blocks wait for the commit thread).
        """
        reg = Registration(protocol, codec, on_message, on_request, admit)
        self._handlers[protocol] = reg

        async def handler(net: BackendStream, peer: PeerId) -> None:
            await self._receiver.on_stream(net, peer, reg)

        self._backend.set_stream_handler(protocol, handler)

    def codec_for(self, protocol: str, codec: Codec) -> None:
        """Declare the codec of a protocol we only dial (no handler of our own)."""
        if protocol not in self._handlers:
            self._handlers[protocol] = Registration(protocol, codec, None, None)

    # ------------------------------------------------------------ raw streams

    def set_stream_handler(self, protocol: str, handler: RawStreamHandler) -> None:
        """Accept plain byte streams on `protocol` (no Colony framing): relays,
        splicing. An exception in `handler` resets that stream only."""

        async def on_stream(net: BackendStream, peer: PeerId) -> None:
            s = TransportStream(net, peer, protocol)
            try:
                await handler(peer, s)
            except Exception as e:
                self._receiver.count_drop("handler_error")
                log.info("stream_handler_failed", peer=str(peer), protocol=protocol,
                         error=repr(e)[:300])
                await s.reset()

        self._backend.set_stream_handler(protocol, on_stream)

    async def open_stream(
        self, peer: PeerId, protocol: str, timeout: float | None = None
    ) -> TransportStream:
        """A new negotiated byte stream to `peer` (dialling if needed)."""
        with trio.fail_after(timeout or self.config.stream_open_timeout_s):
            await self._ensure_connected(peer)
            net = await self._backend.new_stream(peer, protocol)
        self.stats.streams_opened += 1
        return TransportStream(net, peer, protocol)

    async def pace(self, peer: PeerId, nbytes: int) -> None:
        """Before sending `nbytes` on a raw stream to `peer`: honour `[network]
        max_send_rate` (the same per-peer token bucket as framed sends)."""
        await self._writer.pace(peer, nbytes)

    async def attach_stream(
        self, stream: trio.abc.Stream, *, initiator: bool, peer: PeerId | None = None
    ) -> PeerId:
        """Run libp2p's secure + muxed stack (Noise XX, Yamux) over any trio byte
        stream — a WebRTC data channel, a relay circuit — and make it a connection
        of this transport; return the remote peer id.

        The initiator names the `peer` it expects (Noise proves it; AttachError
        otherwise). Afterwards post/send/request to that peer use this connection
        exactly as a TCP one. On failure the stream is closed.
        """
        remote = await self._backend.attach_stream(stream, initiator=initiator, peer=peer)
        if not isinstance(remote, PeerId):
            raise AttachError("backend returned no peer id")
        return remote

    # ------------------------------------------------------------ peers and dialling

    def add_addrs(self, peer: PeerId, addrs: Iterable[str], *, hearsay: bool = False) -> None:
        """Remember dialable addresses (`/ip4/…/tcp/N`, with or without /p2p/).

        Addresses mostly come from other peers (gossip, DHT answers and provider
        records), so one that names another peer or is no multiaddr is skipped and
        counted (`addrs_refused`), never raised: this runs on the driver's task, where
        an exception would stop the daemon. First-hand addresses (the peer's signed
        gossip, its identify, our config) go first; `hearsay` ones (a third party's DHT
        answer or provider record) go after those already known, so the trim to
        `max_addrs_per_peer` drops hearsay first and a hostile answer cannot push a
        peer's real addresses out or ahead; hearsay expires `hearsay_addr_ttl_s` after
        it was last heard, unless the peer is connected (addr_book.py)."""
        ok: list[str] = []
        for a in addrs:
            if "/p2p/" in a:
                try:
                    pid, a = split_p2p_addr(a)
                except LocalProtocolError:
                    pid = None
                if pid != peer:
                    self.stats.addrs_refused += 1
                    log.debug("peer_addr_refused", peer=str(peer), addr=a[:200])
                    continue
            ok.append(a)
        if self._book.add(peer, ok, trio.current_time(), hearsay=hearsay):
            # New addresses deserve a prompt try; the same ones again (every DHT answer
            # that names the peer repeats them) are no reason to dial a dead peer again.
            self._backoff.pop(peer, None)

    def known_addrs(self, peer: PeerId) -> list[str]:
        return self._book.addrs(peer, trio.current_time())

    def connection_drops(self) -> dict[str, int]:
        """Connections refused or dropped for their peer's fault, by reason (backend's)."""
        return self._backend.connection_drops()

    @property
    def addrs_expired(self) -> int:
        """Hearsay addresses the address book dropped as expired."""
        return self._book.expired

    async def connect(self, addr_or_peer: str | PeerId) -> PeerId:
        """Dial `…/p2p/12D3…` (or a peer whose addresses we know); return its id."""
        if isinstance(addr_or_peer, str) and "/p2p-circuit" in addr_or_peer:
            if self.circuit_hook is None:
                raise DialError(f"{addr_or_peer}: relayed addresses need the edge dialer")
            return await self.circuit_hook(addr_or_peer)
        if isinstance(addr_or_peer, str):
            peer, base = split_p2p_addr(addr_or_peer)
            self.add_addrs(peer, [base])
        else:
            peer = addr_or_peer
        self._backoff.pop(peer, None)  # asked for explicitly: try now
        await self._ensure_connected(peer)
        return peer

    def connected_peers(self) -> list[PeerId]:
        return self._backend.connected_peers()

    def native_host(self) -> Host | None:
        """The overlay.p2p Host under the native stack (None under py-libp2p): hole
        punching (overlay.runtime.edge.holepunch) needs its sockets."""
        host = getattr(self._backend, "host", None)
        return host if isinstance(host, Host) else None

    def is_connected(self, peer: PeerId) -> bool:
        return self._backend.is_connected(peer)

    def remote_addr(self, peer: PeerId) -> tuple[str, int] | None:
        """(ip, port) of `peer`'s end of our newest open TCP connection: where we
        observe it (None when there is none, e.g. only WebRTC or a relay)."""
        return self._backend.remote_addr(peer)

    def remote_ip(self, peer: PeerId) -> str | None:
        """The IP of `peer`'s end of our newest open TCP or QUIC connection (None when
        there is none: only WebRTC or a relay). Which addresses the DHT gives the peer
        and takes from it depends on it (services/dht_addrs.py)."""
        host = self.native_host()
        if host is None:  # py-libp2p: TCP only
            got = self._backend.remote_addr(peer)
            return got[0] if got is not None else None
        for conn in reversed(host.connections(peer)):
            parts = (conn.remote_addr or "").split("/")
            if not conn.closed and len(parts) >= 5 and parts[1] in ("ip4", "ip6"):
                return parts[2]
        return None

    async def disconnect(self, peer: PeerId, reason: str = "") -> None:
        log.info("peer_disconnect", peer=str(peer), reason=reason)
        self._sender.close_peer(peer)
        await self._backend.disconnect(peer)

    def disconnect_soon(self, peer: PeerId, reason: str) -> None:
        """Sync form for the driver's Disconnect effect."""
        self._spawn(self.disconnect, peer, reason)

    def _spawn(self, fn: Callable[[*_Args], Awaitable[object]], *args: *_Args) -> None:
        if self._nursery is None:
            raise LocalProtocolError("transport is not running (use Transport.open)")
        self._nursery.start_soon(fn, *args)

    async def _ensure_connected(self, peer: PeerId) -> None:
        if self._backend.is_connected(peer):
            return
        if self.dial_hook is not None:
            # The edge dialer chooses: direct (dial_direct), WebRTC or a relay.
            await self.dial_hook(peer)
            return
        await self.dial_direct(peer)

    async def dial_direct(self, peer: PeerId) -> None:
        """Dial the peer's known addresses (TCP), with our back-off."""
        if self._backend.is_connected(peer):
            return
        if peer == self.peer_id:
            raise DialError("refusing to dial ourselves")
        now = trio.current_time()
        until, _ = self._backoff.get(peer, (0.0, 0.0))
        if now < until:
            raise DialError(f"backing off {peer.short()} for {until - now:.1f} s more")
        addrs = self.known_addrs(peer)
        if not addrs:
            # Gossip's MemberJoined is wired to a DHT PING, whose send can start a
            # moment before the same event hands us the member's addresses: wait
            # briefly rather than fail (a failed PING keeps the peer out of the
            # routing table until the next refresh). The peer may also dial us
            # meanwhile: then there is nothing left to dial.
            with trio.move_on_after(ADDR_GRACE_S):
                while not self.known_addrs(peer) and not self._backend.is_connected(peer):
                    await trio.sleep(0.02)
            if self._backend.is_connected(peer):
                return
            addrs = self.known_addrs(peer)
            if not addrs:
                raise DialError(f"no known address for {peer}")
        self.stats.dials += 1
        try:
            with trio.fail_after(self.config.dial_timeout_s):
                await self._backend.dial(peer, list(addrs))
        except (Exception, trio.TooSlowError) as e:
            self.stats.dial_failures += 1
            _, last = self._backoff.get(peer, (0.0, 0.0))
            delay = min(max(last * 2, self.config.dial_backoff_s), self.config.dial_backoff_max_s)
            self._backoff[peer] = (trio.current_time() + delay, delay)
            if isinstance(e, DialError):
                raise
            raise DialError(f"could not connect to {peer}: {type(e).__name__}: {e}") from None
        self._backoff.pop(peer, None)

    def _on_connected(self, peer: PeerId) -> None:
        self._backoff.pop(peer, None)
        if peer not in self._connected:
            self._connected.add(peer)
            self._book.connected(peer)
            self._emit(PeerConnected(peer))

    def _on_disconnected(self, peer: PeerId) -> None:
        if peer in self._connected and not self._backend.is_connected(peer):
            self._connected.discard(peer)
            self._book.disconnected(peer, trio.current_time())
            self._writer.forget(peer)
            self._emit(PeerDisconnected(peer))

    def _emit(self, event: TransportEvent) -> None:
        try:
            self._events_tx.send_nowait(event)
        except trio.WouldBlock:
            self.stats.events_dropped += 1

    # ------------------------------------------------------------ identify and ping

    async def identify(self, peer: PeerId, timeout: float = 10.0) -> PeerInfo:
        """Ask the peer's /ipfs/id/1.0.0 now and report its answer."""
        with trio.fail_after(timeout):
            await self._ensure_connected(peer)
            return await self._backend.identify(peer)

    async def ping(self, peer: PeerId, count: int = 1, timeout: float = 10.0) -> list[float]:
        """Round-trip times (s) of `count` /ipfs/ping/1.0.0 exchanges on one stream."""
        with trio.fail_after(timeout):
            await self._ensure_connected(peer)
            return await self._backend.ping(peer, count)

    # ------------------------------------------------------------ sending

    def post(self, peer: PeerId, protocol: str, obj: object) -> bool:
        """Queue a one-way frame without waiting (the driver's Send effect).

        False when this peer's queue is full (counted): a slow or dead peer loses
        frames instead of growing our memory. Later failures arrive as SendFailed.
        """
        ch = self._outbound_for(peer, protocol)
        frame = self._encode_message(ch.codec, obj)
        if not self._sender.offer(ch, frame):
            self._queue_full(peer, protocol, self._sender.queued_bytes.get(peer, 0))
            return False
        return True

    def _queue_full(self, peer: PeerId, protocol: str, queued: int) -> None:
        """Count a frame `post` dropped; log it at debug, at most once a second."""
        st = self.stats
        st.frames_dropped_queue_full += 1
        by = st.queue_full_by_protocol
        by[protocol] = by.get(protocol, 0) + 1
        now = trio.current_time()
        if now - self._drop_logged_at >= 1.0:
            self._drop_logged_at = now
            log.debug("frame_dropped_queue_full", peer=str(peer), protocol=protocol,
                      queued_bytes=queued, total=st.frames_dropped_queue_full)

    async def send(
        self, peer: PeerId, protocol: str, obj: object, timeout: float | None = None
    ) -> None:
        """Write one frame on our stream to the peer, dialling if needed.

        Waits for queue room (back-pressure) and for the write; raises DialError,
        SendError, or SendError on timeout.
        """
        ch = self._outbound_for(peer, protocol)
        item = Item(self._encode_message(ch.codec, obj), trio.Event())
        try:
            with trio.fail_after(timeout or self.config.send_timeout_s):
                await self._sender.enqueue(ch, item)
                assert item.done is not None
                await item.done.wait()
        except trio.TooSlowError:
            raise SendError(f"send to {peer.short()} on {protocol} timed out") from None
        if item.error is not None:
            raise SendError(f"send to {peer.short()} on {protocol} failed: {item.error}")

    async def request(
        self, peer: PeerId, protocol: str, obj: object, timeout: float | None = None
    ) -> object:
        """Send a request on the long-lived stream and wait for its response.

        CBOR: matched by request id, many in flight at once. RAW: the next frame
        on the stream is the response (libp2p Kademlia); a timeout then resets the
        stream, because a late answer would be taken for the next request's.
        """
        ch = self._outbound_for(peer, protocol)
        pending = Pending(peer, protocol)
        self.stats.requests_sent += 1
        rid = 0
        if ch.codec is Codec.CBOR:
            rid = next(self._rids)
            item = Item(encode_envelope(Kind.REQUEST, obj, rid, self.config.max_frame_bytes))
            self._pending[rid] = pending
            ch.pending.add(rid)
        else:
            item = Item(encode_raw_frame(raw_body(obj), self.config.max_frame_bytes))
            ch.raw_waiters.append(pending)
        enqueued = False
        try:
            with trio.fail_after(timeout or self.config.request_timeout_s):
                await self._sender.enqueue(ch, item)
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
                    self._sender.fail(ch, "request_abandoned")  # order is now unknown
                elif pending in ch.raw_waiters:
                    ch.raw_waiters.remove(pending)
        if pending.error is not None:
            raise SendError(f"request to {peer.short()} on {protocol} failed: {pending.error}")
        if pending.remote_error is not None:
            raise RemoteError(pending.remote_error)
        return pending.result

    def _encode_message(self, codec: Codec, obj: object) -> bytes:
        if codec is Codec.CBOR:
            return encode_envelope(Kind.MESSAGE, obj, 0, self.config.max_frame_bytes)
        return encode_raw_frame(raw_body(obj), self.config.max_frame_bytes)

    def _outbound_for(self, peer: PeerId, protocol: str) -> Outbound:
        if peer == self.peer_id:
            raise LocalProtocolError("cannot send to ourselves")
        reg = self._handlers.get(protocol)
        return self._sender.channel(peer, protocol, reg.codec if reg is not None else Codec.CBOR)


__all__ = [
    "STACK_NATIVE",
    "STACK_PYLIBP2P",
    "AttachError",
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
    "TransportStream",
    "split_p2p_addr",
]
