"""DCUtR over a relayed connection (trio driver of overlay/p2p/dcutr.py).

When a relay circuit to a NAT'd member is attached (overlay.runtime.edge.relay), the
member on the circuit's *inbound* side (B, the one holding the reservation) starts
`/libp2p/dcutr` on it: CONNECT with its addresses, the peer's CONNECT back, SYNC,
then both sides dial each other from their listen ports at the same moment
(overlay.p2p.host.Host.dial_punched: TCP simultaneous open) and, beside it, over
QUIC (Host.punch_quic, from the listening UDP endpoint: A dials, B sends punch
packets, as the spec has it; a retry from fresh UDP ports on both sides, see
`_readdress`). The first direct connection, TCP or QUIC, wins; it is
recorded with the punch (`transport`). On success the peer has a direct connection,
which the host prefers for every new stream (TCP over QUIC when both formed);
the relayed connection is closed after `grace_s` (the spec: "the relay connection
should be closed after a grace period"), so the transport's long-lived streams are
reopened on the direct one. On failure the relayed connection stays, and the reason
is kept for `colony doctor`.

Our addresses for CONNECT come from identify's observedAddr as seen by peers we
reach directly (the relay first), predicted onto our listen port
(dcutr.predicted_addrs), cached for `OBSERVED_TTL_S`.

Needs the native network stack (the py-libp2p backend has no Host to punch from);
off with `[edge] holepunch = false`. Every refusal is counted by reason (`status`).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypedDict

import structlog
import trio

from overlay.core.effects import Emit, SetTimer, TimerFired
from overlay.core.errors import MalformedFrame, TruncatedFrame, WireError
from overlay.core.ids import PeerId
from overlay.core.multiformats import decode_varint
from overlay.p2p import dcutr, multiaddr
from overlay.p2p.connection import Connection
from overlay.p2p.dcutr import (
    DcutrConfig,
    DcutrError,
    DialAt,
    DialResult,
    HolePunchMsg,
    MessageIn,
    OwnAddrs,
    Punch,
    PunchFinished,
    PunchGuard,
    Role,
    SendMsg,
    Start,
    StreamEnded,
)
from overlay.p2p.host import AnyConn, Host, HostDialError
from overlay.p2p.quic import QuicConn, QuicEndpoint
from overlay.runtime.net.transport import Transport, TransportError
from overlay.runtime.net.transport_stream import TransportStream

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = structlog.get_logger("colony.holepunch")

OBSERVED_TTL_S = 60.0
#: Peers whose last punch outcome we keep for `colony doctor`.
MAX_RESULTS = 256
#: Handshake time allowed after the TCP connect (the punched connection's Noise).
HANDSHAKE_MARGIN_S = 2.0


class PunchRecordJson(TypedDict):
    ok: bool
    reason: str
    role: str
    transport: str
    attempts: int
    rtt_ms: float | None
    seconds: float
    at: float


class HolePunchStatus(TypedDict):
    enabled: bool
    attempts: int
    successes: int
    #: Successes by the transport that punched first ("tcp", "quic").
    by_transport: dict[str, int]
    failures: dict[str, int]
    refusals: dict[str, int]
    peers: dict[str, PunchRecordJson]


@dataclass(frozen=True, slots=True)
class PunchRecord:
    ok: bool
    reason: str
    role: str
    attempts: int
    rtt_s: float | None
    seconds: float
    at: float  # wall clock
    transport: str = ""

    def to_json(self) -> PunchRecordJson:
        return {
            "ok": self.ok,
            "reason": self.reason,
            "role": self.role,
            "transport": self.transport,
            "attempts": self.attempts,
            "rtt_ms": None if self.rtt_s is None else round(self.rtt_s * 1000, 1),
            "seconds": round(self.seconds, 3),
            "at": round(self.at, 3),
        }


@dataclass
class HolePunchStats:
    attempts: int = 0
    successes: int = 0
    by_transport: dict[str, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)


OnResult = Callable[[PeerId, PeerId | None, PunchRecord], None]


class HolePunchService:
    """Both DCUtR roles on one node. `initiate(peer, relay)` runs B's side; the
    `/libp2p/dcutr` handler runs A's. `on_result(peer, relay, record)` tells the
    dialer how the peer is reached now."""

    def __init__(
        self,
        transport: Transport,
        config: DcutrConfig | None = None,
        *,
        enabled: bool = True,
        grace_s: float = 5.0,
        retry_s: float = 40.0,
        nursery: trio.Nursery | None = None,
        on_result: OnResult | None = None,
    ) -> None:
        self.t = transport
        self.nursery = nursery
        self.config = config or DcutrConfig()
        self.guard = PunchGuard(self.config)
        self.enabled = enabled and transport.native_host() is not None
        self.grace_s = grace_s
        #: A failed exchange is tried once more this much later while the peer is
        #: still relayed (0: never). Longer than Linux's 30 s UDP conntrack timeout: a
        #: NAT state that spoilt the first exchange is gone by then.
        self.retry_s = retry_s
        self.on_result = on_result
        self.stats = HolePunchStats()
        self.results: dict[PeerId, PunchRecord] = {}
        self._observed: tuple[float, list[str]] = (-math.inf, [])

    def register(self) -> None:
        if self.enabled:
            self.t.set_stream_handler(dcutr.PROTOCOL_ID, self._handle)

    # ------------------------------------------------------------ B: initiator

    async def initiate(self, peer: PeerId, relay: PeerId | None = None, *,
                       retry: bool = True) -> PunchRecord:
        """Upgrade our relayed connection to `peer` (we accepted its circuit); if the
        exchange fails, once more `retry_s` later (`retry`)."""
        host = self.t.native_host()
        if not self.enabled or host is None:
            return self._record(peer, relay, Role.INITIATOR, PunchFinished(
                False, "disabled", 0, None), 0.0)
        if (have := host.punched_connection(peer)) is not None:
            return self._record(peer, relay, Role.INITIATOR,
                                PunchFinished(True, "", 0, None, _transport_of(have)), 0.0)
        refused = self.guard.admit(peer, trio.current_time(), Role.INITIATOR.value)
        if refused is not None:
            return self._record(peer, relay, Role.INITIATOR,
                                PunchFinished(False, f"refused: {refused}", 0, None), 0.0)
        started = trio.current_time()
        try:
            own = await self._own_addrs(relay)
            try:
                s = await self.t.open_stream(peer, dcutr.PROTOCOL_ID)
            except (TransportError, trio.TooSlowError) as e:
                done = PunchFinished(False, f"no dcutr stream: {e}"[:200], 0, None)
            else:
                punch = Punch(Role.INITIATOR, own, self.config)
                done = await self._drive(peer, s, punch, host, Start())
        finally:
            self.guard.release(peer, Role.INITIATOR.value)
        rec = await self._finish(peer, relay, Role.INITIATOR, done, started, host)
        if not rec.ok and rec.attempts and retry and self.retry_s > 0 and self.nursery:
            self.nursery.start_soon(self._retry_later, peer, relay)
        return rec

    async def _retry_later(self, peer: PeerId, relay: PeerId | None) -> None:
        await trio.sleep(self.retry_s)
        host = self.t.native_host()
        if (host is not None and host.punched_connection(peer) is None
                and self.t.is_connected(peer)):
            log.info("holepunch_retry", peer=str(peer), after_s=self.retry_s)
            await self.initiate(peer, relay, retry=False)

    # ------------------------------------------------------------ A: responder

    async def _handle(self, peer: PeerId, s: TransportStream) -> None:
        host = self.t.native_host()
        refused = self.guard.admit(peer, trio.current_time(), Role.RESPONDER.value)
        if refused is not None or host is None:
            log.info("holepunch_refused", peer=str(peer), reason=refused)
            await s.reset()
            return
        started = trio.current_time()
        try:
            own = await self._own_addrs(None)
            punch = Punch(Role.RESPONDER, own, self.config)
            done = await self._drive(peer, s, punch, host, None)
        finally:
            self.guard.release(peer, Role.RESPONDER.value)
        await self._finish(peer, None, Role.RESPONDER, done, started, host)

    # ------------------------------------------------------------ the driver loop

    async def _drive(
        self, peer: PeerId, s: TransportStream, punch: Punch, host: Host,
        first: Start | None,
    ) -> PunchFinished:
        """Feed the core: messages from the stream, dial results, its timers."""
        tx, rx = trio.open_memory_channel[dcutr.Input](8)
        timers: dict[object, float] = {}
        result: PunchFinished | None = None
        #: Our QUIC endpoint per retried attempt (a fresh port: `_readdress`).
        via: dict[int, QuicEndpoint] = {}
        async with trio.open_nursery() as n:
            n.start_soon(self._reader, s, tx)
            pending = deque(punch.handle(first, trio.current_time()) if first else [])
            while result is None:
                if not pending:
                    inp: dcutr.Input | None = None
                    with trio.move_on_at(min(timers.values(), default=math.inf)):
                        inp = await rx.receive()
                    if inp is None:
                        timer = min(timers, key=lambda k: timers[k])
                        del timers[timer]
                        inp = TimerFired(timer)
                    if punch.readdress_before(inp):
                        pending.extend(await self._readdress(punch, host, via))
                    pending.extend(punch.handle(inp, trio.current_time()))
                    continue
                e = pending.popleft()
                if isinstance(e, SendMsg):
                    try:
                        await s.send_all(e.msg.frame())
                    except (trio.BrokenResourceError, trio.ClosedResourceError) as err:
                        pending.extend(punch.handle(StreamEnded(str(err)[:100]),
                                                    trio.current_time()))
                elif isinstance(e, DialAt):
                    n.start_soon(self._dial, peer, host, e, tx, via.get(e.attempt))
                elif isinstance(e, SetTimer):
                    timers[e.timer] = e.at
                elif isinstance(e, Emit) and isinstance(e.event, PunchFinished):
                    result = e.event
            n.cancel_scope.cancel()
        with trio.CancelScope(shield=True), trio.move_on_after(2.0):
            await s.aclose()
        return result

    async def _reader(self, s: TransportStream, tx: trio.MemorySendChannel[dcutr.Input]) -> None:
        buf = bytearray()
        try:
            while True:
                try:
                    length, start = decode_varint(buf)
                except TruncatedFrame:
                    length = -1
                except MalformedFrame as e:
                    raise DcutrError("malformed", f"length prefix: {e}") from None
                if length > dcutr.MAX_MESSAGE_BYTES:
                    raise DcutrError("message_too_large", f"{length} bytes")
                if length >= 0 and len(buf) >= start + length:
                    msg = HolePunchMsg.from_wire(bytes(buf[start:start + length]),
                                                 self.config.max_addrs)
                    del buf[:start + length]
                    await tx.send(MessageIn(msg))
                    continue
                chunk = await s.receive_some(dcutr.MAX_MESSAGE_BYTES + 16)
                if not chunk:
                    await tx.send(StreamEnded("eof"))
                    return
                buf += chunk
        except DcutrError as e:
            self.guard.refuse(e.reason)
            log.info("holepunch_bad_message", peer=str(s.peer), error=str(e)[:200])
            await tx.send(StreamEnded(f"refused: {e}"))
        except (trio.BrokenResourceError, trio.ClosedResourceError, WireError) as e:
            await tx.send(StreamEnded(str(e)[:100] or "reset"))

    async def _readdress(self, punch: Punch, host: Host,
                         via: dict[int, QuicEndpoint]) -> list[dcutr.Effect]:
        """A retry (B's after a failed dial, A's on B's next CONNECT): QUIC from a
        fresh UDP port, named in the CONNECT.

        Why: when the two sides' first UDP packets are further apart than the one-way
        delay, the early one reaches the other NAT before that NAT's own mapping
        exists; Linux conntrack records it as traffic to the router itself, and that
        entry takes the punch's 4-tuple: the late side's packets then leave with
        another public port, which the peer's NAT filters. Retransmits and punch
        trains refresh the entry (30 s timeout), and MASQUERADE keeps giving the
        late side's socket that other port for new destinations too (it reuses a
        socket's existing mapping), so every retry from the same sockets failed too
        (issue #21: 4-5 QUIC punches in 50, all 3 attempts each). Fresh sockets on
        both sides make each retry an independent try. TCP does not need it: a SYN
        answered by RST leaves a closing entry that the next SYN replaces."""
        if (self.nursery is None or host.quic_listen is None
                or "quic" not in self.config.transports):
            return []
        try:
            ep = await self.nursery.start(self._serve_endpoint, host,
                                          trio.current_time() + 2 * self.config.dial_timeout_s
                                          + self.config.exchange_timeout_s)
        except OSError as e:
            log.info("holepunch_fresh_port_failed", error=str(e)[:100])
            return []
        via[punch.attempt + 1] = ep
        own = await self._own_addrs(None, quic_port=ep.local_addr[1])
        return punch.handle(OwnAddrs(own), trio.current_time())

    @staticmethod
    async def _serve_endpoint(host: Host, until: float,
                              task_status: TaskStatus[QuicEndpoint]) -> None:
        """Run a retry's endpoint until `until`, then while it carries a connection."""
        async with trio.open_nursery() as n:
            ep = await host.punch_endpoint(n)
            task_status.started(ep)
            await trio.sleep_until(until)
            while ep.connections:
                await trio.sleep(1.0)
            n.cancel_scope.cancel()

    async def _dial(self, peer: PeerId, host: Host, d: DialAt,
                    tx: trio.MemorySendChannel[dcutr.Input],
                    via: QuicEndpoint | None = None) -> None:
        """At `d.at`, dial `d.targets` over TCP from our listen port and punch
        `d.quic` over QUIC from our UDP endpoint, while watching for the peer's
        connection reaching our listeners instead; report one DialResult, naming the
        transport of the first direct connection."""
        connect_by = d.at + max(0.2, self.config.dial_timeout_s - HANDSHAKE_MARGIN_S)
        give_up = d.at + self.config.dial_timeout_s - 0.05
        if d.client and d.targets:  # before we sleep: the peer's SYN may come first
            host.expect_punch(peer, d.targets, give_up)
        await trio.sleep_until(d.at)
        errors: dict[str, str] = {}
        won = ""
        with trio.move_on_at(give_up):
            async with trio.open_nursery() as n:

                def win(transport: str) -> None:
                    nonlocal won
                    won = won or transport
                    n.cancel_scope.cancel()

                async def tcp() -> None:
                    try:
                        await host.dial_punched(peer, list(d.targets), client=d.client,
                                                deadline=connect_by)
                    except HostDialError as e:
                        errors["tcp"] = str(e)[:300]
                        return
                    win("tcp")

                async def quic() -> None:
                    # A (not the handshake client) dials: it is QUIC's client; B sends
                    # punch packets until A's connection reaches its listener.
                    try:
                        c = await host.punch_quic(peer, list(d.quic), dial=not d.client,
                                                  deadline=give_up if d.client else connect_by,
                                                  via=via)
                    except HostDialError as e:
                        errors["quic"] = str(e)[:300]
                        return
                    if c is not None:
                        win("quic")

                async def watch() -> None:  # the accept paths (Host._accept_one, QUIC's)
                    while (c := host.punched_connection(peer)) is None:
                        await trio.sleep(0.02)
                    win(_transport_of(c))

                if d.targets:
                    n.start_soon(tcp)
                if d.quic and host.quic_listen is not None:
                    n.start_soon(quic)
                elif d.quic:
                    errors["quic"] = "no QUIC listener to punch from"
                if not d.targets and not d.quic:
                    errors["none"] = "no address to dial: waiting for the peer's SYN"
                n.start_soon(watch)
        if not won and (c := host.punched_connection(peer)) is not None:
            won = _transport_of(c)
        error = "; ".join(f"{k}: {v}" if k != "none" else v for k, v in errors.items())
        await tx.send(DialResult(bool(won), "" if won else error or "no connection", won))

    # ------------------------------------------------------------ outcome

    async def _finish(self, peer: PeerId, relay: PeerId | None, role: Role,
                      done: PunchFinished, started: float, host: Host) -> PunchRecord:
        direct = host.punched_connection(peer)
        if not done.ok and done.attempts > 0 and direct is not None:
            # The other side's dial won after our last attempt timed out, or B closed
            # the stream on its success before our own dial reported: it worked.
            done = PunchFinished(True, "", done.attempts, done.rtt_s, _transport_of(direct))
        rec = self._record(peer, relay, role, done, trio.current_time() - started)
        if done.ok and direct is not None:
            log.info("holepunch_direct", peer=str(peer), remote=direct.remote_addr)
        if done.ok and direct is not None and self.nursery is not None:
            self.nursery.start_soon(self._retire_relayed, peer, relay, role, rec, host, direct)
        return rec

    def _record(self, peer: PeerId, relay: PeerId | None, role: Role, done: PunchFinished,
                seconds: float) -> PunchRecord:
        rec = PunchRecord(done.ok, done.reason, role.value, done.attempts, done.rtt_s,
                          seconds, time.time(), done.transport)
        if done.attempts or done.reason.startswith("refused"):
            self.stats.attempts += 1
            if done.ok:
                self.stats.successes += 1
                by = self.stats.by_transport
                by[done.transport or "?"] = by.get(done.transport or "?", 0) + 1
            else:
                key = done.reason.split(":", 1)[0].split(" ", 1)[0]
                self.stats.failures[key] = self.stats.failures.get(key, 0) + 1
        self.results.pop(peer, None)
        self.results[peer] = rec
        while len(self.results) > MAX_RESULTS:
            del self.results[next(iter(self.results))]
        log.info("holepunch_finished", peer=str(peer), **rec.to_json())
        if self.on_result is not None:
            self.on_result(peer, relay, rec)
        return rec

    async def _retire_relayed(self, peer: PeerId, relay: PeerId | None, role: Role,
                              rec: PunchRecord, host: Host, direct: AnyConn) -> None:
        """After the grace period, close the peer's non-TCP connections (the circuit),
        so long-lived streams are reopened on the direct connection. If the punched
        connection died meanwhile, the punch is recorded as failed, with its reason,
        and the circuit stays."""
        await trio.sleep(max(0.0, self.grace_s))
        if direct.closed:
            why = f"direct_lost: the punched connection closed ({direct.close_reason})"
            log.warning("holepunch_direct_lost", peer=str(peer), reason=direct.close_reason)
            self.stats.successes -= 1  # counted again below, as a failure
            self.stats.attempts -= 1
            key = rec.transport or "?"
            self.stats.by_transport[key] = self.stats.by_transport.get(key, 1) - 1
            self._record(peer, relay, role, PunchFinished(False, why[:300], rec.attempts,
                                                          rec.rtt_s), rec.seconds)
            return
        for conn in host.connections(peer):
            if isinstance(conn, Connection) and not isinstance(conn.stream, trio.SocketStream):
                await conn.close("upgraded to a direct connection (DCUtR)")

    async def _own_addrs(self, prefer: PeerId | None, *,
                         quic_port: int = 0) -> tuple[bytes, ...]:
        """Our addresses as directly connected peers observe them (identify), mapped
        onto our listen port (QUIC: onto `quic_port` when given, a retry's fresh
        port); at most two identify round trips per OBSERVED_TTL_S."""
        host = self.t.native_host()
        at, observed = self._observed
        if host is not None and trio.current_time() - at > OBSERVED_TTL_S:
            seen: list[str] = []
            peers = [p for p in self.t.connected_peers() if host.punched_connection(p)]
            peers.sort(key=lambda p: (p != prefer, p.raw))
            for p in peers[:2]:
                try:
                    info = await self.t.identify(p, timeout=5.0)
                except (TransportError, WireError, trio.TooSlowError):
                    continue
                if info.observed_addr and info.observed_addr not in seen:
                    seen.append(info.observed_addr)
            observed = seen
            self._observed = (trio.current_time(), seen)
        kinds = self.config.transports
        port = host.tcp_listen[0][1] if host is not None and host.tcp_listen else 0
        quic = host.quic_listen[1] if host is not None and host.quic_listen else 0
        if quic_port:  # an observed /quic-v1 address is the listen port's mapping
            quic = quic_port
            observed = [a for a in observed if "/quic-v1" not in a]
        out = []
        for a in dcutr.predicted_addrs(observed, port if "tcp" in kinds else 0,
                                       quic_port=quic if "quic" in kinds else 0):
            try:
                out.append(multiaddr.to_bytes(a))
            except MalformedFrame:
                continue
        return tuple(out)

    def status(self) -> HolePunchStatus:
        return {
            "enabled": self.enabled,
            "attempts": self.stats.attempts,
            "successes": self.stats.successes,
            "by_transport": dict(self.stats.by_transport),
            "failures": dict(self.stats.failures),
            "refusals": dict(self.guard.refusals),
            "peers": {str(p): r.to_json() for p, r in self.results.items()},
        }


def _transport_of(conn: AnyConn) -> str:
    return "quic" if isinstance(conn, QuicConn) else "tcp"
