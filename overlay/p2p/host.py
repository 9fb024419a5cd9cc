"""A libp2p host on our own wire: TCP listeners, dialling, protocol handlers,
identify and ping (trio).

    host = Host(keypair, agent_version="colony/0.1.0")
    host.set_stream_handler("/colony/swim/1.0.0", handler)   # async (P2PStream) -> None
    async with host.serve(["/ip4/0.0.0.0/tcp/4001"]):
        conn = await host.dial(peer, ["/ip4/10.0.0.7/tcp/4001"])
        s = await host.new_stream(peer, ["/colony/swim/1.0.0"])

Every connection is `upgrade`d (overlay.p2p.connection) and run in the host's
nursery; `attach` does the same for a stream that did not come from TCP (a WebRTC
data channel, a relay circuit). Inbound streams are negotiated with
multistream-select against the registered protocols; a handler's exception
resets its stream and is logged (py-libp2p let it stop the whole host). At most
`max_pending_handshakes` inbound handshakes run at once; more connections are
closed at once, so a flood of half-open TCP connections costs sockets, not memory.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager, suppress
from typing import Any

import structlog
import trio

from overlay.core.crypto import KeyPair
from overlay.core.errors import MalformedFrame, WireError
from overlay.core.ids import PeerId
from overlay.core.multiformats import decode_varint, encode_varint
from overlay.p2p import identify, multiaddr, multistream, noise_cipher, punch_socket, yamux
from overlay.p2p.connection import Connection, P2PStream, upgrade
from overlay.p2p.errors import NegotiationError, ProtobufError, StreamError
from overlay.p2p.quic import QuicConn, QuicEndpoint
from overlay.p2p.quic_stream import QuicStream

log = structlog.get_logger("colony.p2p")

PING_PROTOCOL = "/ipfs/ping/1.0.0"
PING_PAYLOAD_BYTES = 32
DEFAULT_AGENT = "colony/0.1.0"
#: QUIC punch packets (DCUtR's initiator): first gap, doubling up to the cap.
PUNCH_FIRST_GAP_S = 0.05
PUNCH_MAX_GAP_S = 0.5

AnyStream = P2PStream | QuicStream
AnyConn = Connection | QuicConn
StreamHandler = Callable[[AnyStream], Awaitable[None]]
PeerCallback = Callable[[PeerId], None]


class HostError(Exception):
    """Base of the host's own errors (dial and listen failures)."""


class HostListenError(HostError):
    pass


class HostDialError(HostError):
    pass


class Host:
    def __init__(
        self,
        keypair: KeyPair,
        *,
        agent_version: str = DEFAULT_AGENT,
        dial_timeout_s: float = 10.0,
        handshake_timeout_s: float = 10.0,
        max_window: int = yamux.DEFAULT_MAX_WINDOW,
        max_pending_handshakes: int = 64,
        on_connected: PeerCallback | None = None,
        on_disconnected: PeerCallback | None = None,
        quic_pmtud: bool = True,
        quic_max_datagram_bytes: int = 65527,
        noise_suites: tuple[noise_cipher.NoiseSuite, ...] = (noise_cipher.CHACHA,),
    ) -> None:
        self.keypair = keypair
        self.quic_pmtud, self.quic_max_datagram_bytes = quic_pmtud, quic_max_datagram_bytes
        self.peer_id = keypair.peer_id
        self.agent_version = agent_version
        self.dial_timeout_s = dial_timeout_s
        self.handshake_timeout_s = handshake_timeout_s
        #: Noise suites offered first to last as dialer, accepted as listener.
        self.max_window, self.noise_suites = max_window, noise_suites
        self._handshakes = trio.Semaphore(max_pending_handshakes)
        self.on_connected = on_connected
        self.on_disconnected = on_disconnected
        self._handlers: dict[str, StreamHandler] = {
            identify.PROTOCOL_ID: self._serve_identify,
            PING_PROTOCOL: self._serve_ping,
        }
        self._conns: dict[PeerId, list[AnyConn]] = {}
        self._quic: QuicEndpoint | None = None
        self._nursery: trio.Nursery | None = None
        self.listen_addrs: list[str] = []
        #: (ip, port) of each TCP listener: hole-punch dials leave from one of them.
        self.tcp_listen: list[tuple[str, int]] = []
        #: (ip, port) of the listening QUIC endpoint: QUIC dials and punches leave from it.
        self.quic_listen: tuple[str, int] | None = None
        #: Hole punches in progress (overlay.runtime.edge.holepunch): a connection
        #: accepted from one of these (ip, port) until the deadline is the punch, and
        #: we run its handshake as the client (the DCUtR initiator's role).
        self._punch_expected: dict[tuple[str, int], tuple[PeerId, float]] = {}
        #: Inbound handshakes that failed; connections dropped for a peer's protocol
        #: error after it (a bad Noise tag, a bad Yamux frame).
        self.handshakes_failed = self.protocol_errors = 0

    # ------------------------------------------------------------ lifecycle

    @asynccontextmanager
    async def serve(self, listen_addrs: Iterable[str]) -> AsyncIterator[Host]:
        """Listen on every address (HostListenError if one fails) and run.
        `/ip4/…/udp/…/quic-v1` addresses get a QUIC endpoint, the rest TCP."""
        listeners: list[trio.SocketListener] = []
        endpoints: list[QuicEndpoint] = []
        try:
            for addr in listen_addrs:
                try:
                    if multiaddr.is_quic(addr):
                        ep = self._new_quic_endpoint()
                        await ep.bind(multiaddr.quic_host_port(addr))
                        endpoints.append(ep)
                        self.listen_addrs.append(ep.multiaddr)
                        self.quic_listen = self.quic_listen or ep.local_addr
                        continue
                    host, port = multiaddr.tcp_host_port(addr)
                    bound = await punch_socket.open_tcp_listeners(host, port)
                except (OSError, MalformedFrame) as e:
                    raise HostListenError(f"could not listen on {addr}: {e}") from None
                listeners.extend(bound)
                for sl in bound:
                    name = sl.socket.getsockname()
                    self.listen_addrs.append(multiaddr.from_sockaddr(name[0], name[1]))
                    self.tcp_listen.append((name[0], name[1]))
            async with trio.open_nursery() as n:
                self._nursery = n
                for sl in listeners:
                    n.start_soon(self._accept_loop, sl)
                for ep in endpoints:
                    await n.start(ep.run)
                self._quic = endpoints[0] if endpoints else None
                try:
                    yield self
                finally:
                    n.cancel_scope.cancel()
                    self._nursery = None
                    self._quic = None
        finally:
            for sl in listeners:
                with suppress(Exception):
                    await sl.aclose()
            for ep in endpoints:
                if ep.sock is not None:
                    ep.sock.close()

    def _new_quic_endpoint(self) -> QuicEndpoint:
        return QuicEndpoint(self.keypair, on_stream=self._on_stream,
                            on_connection=self._adopt_quic, pmtud=self.quic_pmtud,
                            pmtud_max_bytes=self.quic_max_datagram_bytes)

    async def punch_endpoint(self, nursery: trio.Nursery) -> QuicEndpoint:
        """A running QUIC endpoint on a fresh UDP port of our QUIC listen address, in
        `nursery` (the caller ends it), for a punch retry to dial from."""
        ep = self._new_quic_endpoint()
        await ep.bind((self.quic_listen[0] if self.quic_listen else "0.0.0.0", 0))
        await nursery.start(ep.run)
        return ep

    def _adopt_quic(self, conn: QuicConn) -> None:
        """An inbound QUIC connection whose peer is verified: serve it like TCP's."""
        if self._nursery is not None:
            self._nursery.start_soon(self._run_connection, conn)

    async def _quic_endpoint(self) -> QuicEndpoint:
        """The endpoint to dial from: the listening one (same port, as libp2p does,
        so a NAT mapping serves both ways), else one on an ephemeral port."""
        if self._quic is None:
            ep = self._new_quic_endpoint()
            await self._spawn_connection().start(ep.run, ("0.0.0.0", 0))
            self._quic = ep
        return self._quic

    async def _accept_loop(self, listener: trio.SocketListener) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as e:  # EMFILE and friends: back off, keep listening
                log.warning("accept_failed", error=str(e))
                await trio.sleep(0.1)
                continue
            assert self._nursery is not None
            self._nursery.start_soon(self._accept_one, stream)

    async def _accept_one(self, stream: trio.SocketStream) -> None:
        try:
            self._handshakes.acquire_nowait()
        except trio.WouldBlock:
            await stream.aclose()
            return
        try:
            peername = stream.socket.getpeername()
            remote = multiaddr.from_sockaddr(peername[0], peername[1])
        except (OSError, ValueError):
            remote = None
        punch = self._punch_for(peername) if remote is not None else None
        try:
            try:
                conn = await upgrade(
                    stream, self.keypair, initiator=punch is not None, expected_peer=punch,
                    remote_addr=remote, max_window=self.max_window,
                    timeout_s=self.handshake_timeout_s, suites=self.noise_suites,
                )
            finally:
                self._handshakes.release()
        except (WireError, trio.TooSlowError) as e:
            self.handshakes_failed += 1
            log.info("inbound_handshake_failed", remote=remote, error=str(e)[:200])
            with trio.CancelScope(shield=True), suppress(Exception):
                await stream.aclose()
            return
        await self._run_connection(conn)

    def _punch_for(self, peername: Any) -> PeerId | None:
        """The peer whose hole punch this inbound connection is, if any."""
        hit = self._punch_expected.get((str(peername[0]), int(peername[1])))
        if hit is None or hit[1] < trio.current_time():
            return None
        return hit[0]

    def expect_punch(self, peer: PeerId, targets: Iterable[tuple[str, int]],
                     until: float) -> None:
        """While we punch to `peer` as the client: its SYN may reach our listener
        instead of our dialling socket; accept that as the punch (we stay client)."""
        now = trio.current_time()
        for key in [k for k, (_, t) in self._punch_expected.items() if t < now]:
            del self._punch_expected[key]
        for t in list(targets)[:16]:
            if len(self._punch_expected) < 256:
                self._punch_expected[t] = (peer, until)

    def direct_connection(self, peer: PeerId) -> Connection | None:
        """An open TCP connection to `peer` (not a relay circuit or data channel)."""
        for conn in reversed(self._conns.get(peer, ())):
            if (isinstance(conn, Connection) and not conn.closed
                    and isinstance(conn.stream, trio.SocketStream)):
                return conn
        return None

    def punched_connection(self, peer: PeerId) -> AnyConn | None:
        """A direct connection to `peer`: TCP (as `direct_connection`), else QUIC."""
        tcp = self.direct_connection(peer)
        if tcp is not None:
            return tcp
        for conn in reversed(self._conns.get(peer, ())):
            if isinstance(conn, QuicConn) and not conn.closed:
                return conn
        return None

    async def punch_quic(self, peer: PeerId, targets: list[tuple[str, int]], *,
                         dial: bool, deadline: float,
                         via: QuicEndpoint | None = None) -> QuicConn | None:
        """QUIC's half of a hole punch, from the listening endpoint (the port the peer
        was told). `dial` (DCUtR's A, the QUIC client): dial every target at once and
        keep the first verified connection. Otherwise (B): send punch packets to every
        target, at growing gaps, until the deadline or cancellation (the caller
        watches for A's connection arriving at our listener); returns None.
        `via`: dial from that endpoint instead (a retry's fresh port, `punch_endpoint`).
        HostDialError when there is no QUIC listener or nothing connected."""
        ep = via or (self._quic if self.quic_listen is not None else None)
        if ep is None or not targets:
            raise HostDialError("no QUIC listener to punch from" if ep is None
                                else "no QUIC address to punch to")
        if not dial:
            gap = PUNCH_FIRST_GAP_S
            while trio.current_time() < deadline:
                for t in targets:
                    ep.send_punch(t)
                await trio.sleep(min(gap, max(0.0, deadline - trio.current_time())))
                gap = min(PUNCH_MAX_GAP_S, gap * 2)
            raise HostDialError("QUIC: no connection from the peer in time")
        for t in targets:  # open our NAT's mapping now, before aioquic builds its Initial
            ep.send_punch(t)
        won: QuicConn | None = None
        errors: list[str] = []

        async def one(target: tuple[str, int], n: trio.Nursery) -> None:
            nonlocal won
            try:
                c = await ep.dial(target, peer, timeout_s=max(0.1, deadline - trio.current_time()))
            except (OSError, WireError) as e:
                errors.append(f"quic {target[0]}:{target[1]}: {e}"[:160])
                return
            with trio.CancelScope(shield=True):  # established: run it (see `attach`)
                if won is None:
                    won = c
                    await self._spawn_connection().start(self._run_connection, c)
                    n.cancel_scope.cancel()
                else:
                    await c.close("a second punched QUIC connection")

        async with trio.open_nursery() as n:
            for t in targets:
                n.start_soon(one, t, n)
        if won is None:
            raise HostDialError("; ".join(errors) or "QUIC: no connection in time")
        return won

    async def dial_punched(self, peer: PeerId, targets: list[tuple[str, int]], *,
                           client: bool, deadline: float) -> Connection:
        """Dial every target at once from our listen port (TCP simultaneous open);
        the first socket that connects is secured, with us as the handshake's client
        when `client` (the DCUtR initiator) and its server otherwise. HostDialError
        when none connects by `deadline` or the handshake fails."""
        local = next((a for a in self.tcp_listen if ":" not in a[0]), None)
        if local is None or not targets:
            raise HostDialError("no IPv4 TCP listener to punch from" if local is None
                                else "no address to punch to")
        won: trio.MemorySendChannel[trio.SocketStream]
        won, first = trio.open_memory_channel[trio.SocketStream](len(targets))
        errors: list[str] = []

        async def one(target: tuple[str, int]) -> None:
            try:
                won.send_nowait(await punch_socket.connect_from(local, target, deadline))
            except (OSError, trio.TooSlowError) as e:
                errors.append(f"{target[0]}:{target[1]}: {type(e).__name__}: {e}"[:160])

        stream: trio.SocketStream | None = None
        async with trio.open_nursery() as n:
            for t in targets:
                n.start_soon(one, t)

            async def take() -> None:
                nonlocal stream
                with trio.move_on_at(deadline):
                    stream = await first.receive()
                n.cancel_scope.cancel()

            n.start_soon(take)
        while True:  # connects that won after the first: not needed
            try:
                extra = first.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
            with trio.CancelScope(shield=True), suppress(Exception):
                await extra.aclose()
        if stream is None:
            raise HostDialError("; ".join(errors) or "no TCP connection in time")
        peername = stream.socket.getpeername()
        try:
            # Shielded (the handshake has its own timeout): the caller may be cancelled
            # the moment this connection joins the host (its watcher sees it), and a
            # cancel inside `attach`'s nursery.start would tear the new connection down.
            with trio.CancelScope(shield=True):
                conn = await self.attach(stream, initiator=client, expected_peer=peer,
                                         remote_addr=multiaddr.from_sockaddr(peername[0],
                                                                             peername[1]))
        except (WireError, trio.TooSlowError) as e:
            with trio.CancelScope(shield=True), suppress(Exception):
                await stream.aclose()
            raise HostDialError(f"handshake on the punched connection: {e}") from None
        if conn.remote_peer != peer:
            await conn.close("punched connection reached another peer")
            raise HostDialError(f"punched connection reached {conn.remote_peer}, not {peer}")
        return conn

    async def _run_connection(
        self, conn: AnyConn, task_status: Any = trio.TASK_STATUS_IGNORED
    ) -> None:
        peer = conn.remote_peer
        conns = self._conns.setdefault(peer, [])
        conns.append(conn)
        first = len(conns) == 1
        try:
            if isinstance(conn, QuicConn):  # its endpoint runs it; wait for its end
                task_status.started()
                if first and self.on_connected is not None:
                    self.on_connected(peer)
                await conn.wait_closed()
                return
            async with trio.open_nursery() as n:
                await n.start(conn.run, self._on_stream)
                task_status.started()
                if first and self.on_connected is not None:
                    self.on_connected(peer)
        finally:
            self.protocol_errors += isinstance(conn, Connection) and bool(conn.protocol_error)
            conns = self._conns.get(peer, [])
            if conn in conns:
                conns.remove(conn)
            if not conns:
                self._conns.pop(peer, None)
                if self.on_disconnected is not None:
                    self.on_disconnected(peer)

    def _spawn_connection(self) -> trio.Nursery:
        if self._nursery is None:
            raise HostError("host is not running (use Host.serve)")
        return self._nursery

    # ------------------------------------------------------------ handlers

    def set_stream_handler(self, protocol: str, handler: StreamHandler) -> None:
        self._handlers[protocol] = handler

    @property
    def protocols(self) -> list[str]:
        return list(self._handlers)

    async def _on_stream(self, s: AnyStream) -> None:
        try:
            with trio.fail_after(self.handshake_timeout_s):
                s.protocol = await multistream.select_listener(s, self._handlers)
        except (NegotiationError, StreamError, trio.TooSlowError):
            await s.reset()
            return
        await self._handlers[s.protocol](s)

    # ------------------------------------------------------------ connections

    def connection(self, peer: PeerId) -> AnyConn | None:
        """The connection new streams to `peer` use: a TCP one if there is one
        (a WebRTC data channel or relay circuit attached later is much slower:
        the edge dialer may attach one while a direct connection exists), then a
        QUIC one (our pure-Python QUIC is slower than our TCP), else the newest."""
        best: AnyConn | None = None
        quic: QuicConn | None = None
        for conn in reversed(self._conns.get(peer, ())):
            if conn.closed:
                continue
            if isinstance(conn, QuicConn):
                quic = quic or conn
                continue
            if conn.session.go_away_received:
                continue  # a peer going away takes no new streams: dial afresh
            if isinstance(conn.stream, trio.SocketStream):
                return conn
            if best is None:
                best = conn
        return quic or best

    def is_connected(self, peer: PeerId) -> bool:
        return self.connection(peer) is not None

    def connections(self, peer: PeerId) -> list[AnyConn]:
        """Every connection to `peer`, oldest first (a closing one until it is gone)."""
        return list(self._conns.get(peer, ()))

    def connected_peers(self) -> list[PeerId]:
        return [p for p in self._conns if self.connection(p) is not None]

    async def dial(self, peer: PeerId, addrs: Iterable[str]) -> AnyConn:
        """Connect to `peer` at the first address that answers (each tried in turn)."""
        errors: list[str] = []
        for addr in addrs:
            if multiaddr.is_quic(addr):
                try:
                    return await self._dial_quic(peer, addr)
                except (OSError, WireError, MalformedFrame, HostError) as e:
                    errors.append(f"{addr}: {type(e).__name__}: {e}")
                continue
            try:
                host, port = multiaddr.tcp_host_port(addr)
            except MalformedFrame as e:
                errors.append(str(e))
                continue
            stream: trio.SocketStream | None = None
            try:
                with trio.fail_after(self.dial_timeout_s):
                    stream = await trio.open_tcp_stream(host, port)
                return await self.attach(stream, initiator=True, expected_peer=peer,
                                         remote_addr=addr)
            except (OSError, WireError, trio.TooSlowError, HostError) as e:
                errors.append(f"{addr}: {type(e).__name__}: {e}")
                if stream is not None:
                    with trio.CancelScope(shield=True), suppress(Exception):
                        await stream.aclose()
        raise HostDialError("; ".join(errors) or "no address to dial")

    async def _dial_quic(self, peer: PeerId, addr: str) -> QuicConn:
        target = multiaddr.quic_host_port(addr)
        ep = await self._quic_endpoint()
        conn = await ep.dial(target, peer, timeout_s=self.dial_timeout_s)
        with trio.CancelScope(shield=True):  # established: run it (see `attach`)
            await self._spawn_connection().start(self._run_connection, conn)
        return conn

    async def attach(
        self,
        stream: trio.abc.Stream,
        *,
        initiator: bool,
        expected_peer: PeerId | None = None,
        remote_addr: str | None = None,
    ) -> Connection:
        """Secure and multiplex any byte stream and serve it like a TCP connection.

        The initiator side must name `expected_peer` (Noise checks it). Raises
        WireError subclasses or trio.TooSlowError when the handshake fails; the
        caller then owns (and should close) `stream`.
        """
        nursery = self._spawn_connection()
        conn = await upgrade(
            stream, self.keypair, initiator=initiator, expected_peer=expected_peer,
            remote_addr=remote_addr, max_window=self.max_window,
            timeout_s=self.handshake_timeout_s, suites=self.noise_suites,
        )
        # The handshake is done and the peer holds a connection: it must run, even if
        # our caller is being cancelled (which then lands at its next checkpoint).
        # Cancelled here, it would be neither served nor closed. Bounded: the start
        # reaches `started()` without blocking.
        with trio.CancelScope(shield=True):
            await nursery.start(self._run_connection, conn)
        return conn

    async def new_stream(self, peer: PeerId, protocols: Iterable[str]) -> AnyStream:
        conn = self.connection(peer)
        if conn is None:
            raise HostDialError(f"not connected to {peer}")
        return await conn.open_stream(protocols)

    async def disconnect(self, peer: PeerId) -> None:
        for conn in list(self._conns.get(peer, ())):
            await conn.close("disconnect")
        with trio.move_on_after(2.0):
            while peer in self._conns:
                await trio.sleep(0.005)  # let the connection tasks finish

    # ------------------------------------------------------------ identify and ping

    def _identify_message(self, observed: str | None) -> bytes:
        body = identify.encode(
            self.keypair.public.raw, self.listen_addrs, self.protocols, observed,
            self.agent_version,
        )
        return encode_varint(len(body)) + body

    async def _serve_identify(self, s: AnyStream) -> None:
        await s.write(self._identify_message(s.conn.remote_addr))
        await s.close()

    async def _serve_ping(self, s: AnyStream) -> None:
        while True:
            try:
                payload = await s.read_exact(PING_PAYLOAD_BYTES)
            except NegotiationError:  # EOF between pings: done
                break
            await s.write(payload)
        await s.close()

    async def identify(self, peer: PeerId) -> identify.IdentifyInfo:
        s = await self.new_stream(peer, [identify.PROTOCOL_ID])
        try:
            data = bytearray()
            while len(data) <= identify.MAX_MESSAGE_BYTES + 8:
                chunk = await s.read()
                if not chunk:
                    break
                data += chunk
            try:
                length, start = decode_varint(data)
            except WireError as e:
                raise ProtobufError(f"identify message: {e}") from None
            if length > identify.MAX_MESSAGE_BYTES or len(data) < start + length:
                raise ProtobufError(f"identify message of {length} bytes is bad or cut")
            info = identify.decode(bytes(data[start : start + length]))
        finally:
            await s.close()
        if info.peer is not None and info.peer != peer:
            raise ProtobufError(f"identify of {peer} carries the key of {info.peer}")
        return info

    async def ping(self, peer: PeerId, count: int = 1) -> list[float]:
        s = await self.new_stream(peer, [PING_PROTOCOL])
        rtts: list[float] = []
        try:
            for _ in range(count):
                payload = os.urandom(PING_PAYLOAD_BYTES)
                started = trio.current_time()
                await s.write(payload)
                if await s.read_exact(PING_PAYLOAD_BYTES) != payload:
                    raise ProtobufError("ping answer differs from what we sent")
                rtts.append(trio.current_time() - started)
        except BaseException:
            with trio.CancelScope(shield=True):
                await s.reset()
            raise
        await s.close()
        return rtts
