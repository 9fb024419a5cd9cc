"""libp2p circuit relay v2 (`/libp2p/circuit/relay/0.2.0/hop` and `/stop`), trio side.

The wire is overlay/p2p/circuit_v2.py; this is the standard protocol beside our own
`/colony/relay/1.0.0` (overlay/runtime/edge/relay.py), so js-libp2p, go-libp2p
(kubo) and rust-libp2p nodes can reserve on our relay, reach our daemons through
it, and run DCUtR with us over the relayed connection; and our daemons can use
their relays.

Relay side (registered only with `[relay] enabled`): hop RESERVE and CONNECT go
through the same `RelayBook` as our protocol — one set of reservations, circuits
and limits (`max_reservations`, `max_circuits`, `max_circuits_per_peer`,
`max_bytes`, `max_duration_s`, `max_rate`), one set of counters — and the circuit
is spliced by the same `RelayService.splice`. A circuit is stopped in the protocol
its target reserved with, whichever one the source asked in, so a colony daemon
reaches a js node through our relay and the other way round. Only colony members
may reserve and connect unless `[relay] serve_non_members = true` (then anyone
may, within the limits: what a public libp2p relay does). A reservation or CONNECT
must come over a direct connection (no relay chains: the spec's and go-libp2p's
rule), and each peer gets at most `RESERVE_PER_WINDOW` RESERVEs per
`RESERVE_WINDOW_S` (a reservation flood costs refusals, not voucher signatures).

End side: `reserve(relay)` (the answer's voucher is verified: signed by the relay,
naming us), `connect(relay, dst)` (a byte stream; the caller attaches the libp2p
stack over it as Noise initiator), and the stop handler, which accepts a circuit
only through a relay where we hold a reservation (either protocol's: our relays
stop a non-member's circuit in v2, since our own stop admits members only), from
any peer (as a TCP
listener accepts anyone: Noise proves who it is, the overlay decides what it may
do), and hands it to `on_inbound_circuit` — the dialer, which attaches it and
starts DCUtR exactly as for our own protocol's circuits.

Every refusal answers the spec's status code and is counted by reason: relay-side
ones in the RelayBook's refusals (prefixed `v2_` where only v2 has them), end-side
ones in `stop_refusals`. Bad bytes never raise past the stream handler.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, TypedDict

import structlog
import trio

from overlay.core.crypto import KeyPair
from overlay.core.errors import MalformedFrame, WireError
from overlay.core.ids import PeerId
from overlay.p2p import multiaddr
from overlay.p2p.circuit_v2 import (
    HOP_PROTOCOL,
    MAX_MESSAGE_BYTES,
    STOP_PROTOCOL,
    CircuitV2Error,
    HopMessage,
    HopType,
    Limit,
    Peer,
    Reservation,
    Status,
    StopMessage,
    StopType,
    make_voucher,
    open_voucher,
)
from overlay.runtime.edge.relay import (
    HANDSHAKE_TIMEOUT_S,
    RelayRefused,
    RelayService,
    _read_exactly,
)
from overlay.runtime.net.transport_stream import TransportStream

if TYPE_CHECKING:
    from overlay.runtime.net.transport import Transport

log = structlog.get_logger("colony.relay_v2")

#: RESERVEs one peer may send per window (js-libp2p refreshes every ≥ 30 s).
RESERVE_PER_WINDOW = 10
RESERVE_WINDOW_S = 60.0
#: Addresses of ours put in a reservation (the spec: the relay's public addresses).
MAX_RESERVATION_ADDRS = 8

#: RelayBook refusal reason → the status code a v2 peer gets.
_STATUS_OF = {
    "relay_disabled": Status.PERMISSION_DENIED,
    "not_a_member": Status.PERMISSION_DENIED,
    "unknown_peer": Status.PERMISSION_DENIED,
    "v2_relayed_connection": Status.PERMISSION_DENIED,
    "too_many_reservations": Status.RESERVATION_REFUSED,
    "v2_reservation_rate": Status.RESERVATION_REFUSED,
    "no_reservation": Status.NO_RESERVATION,
    "too_many_circuits": Status.RESOURCE_LIMIT_EXCEEDED,
    "too_many_circuits_for_peer": Status.RESOURCE_LIMIT_EXCEEDED,
    "target_not_connected": Status.CONNECTION_FAILED,
    "target_failed": Status.CONNECTION_FAILED,
    "target_refused": Status.CONNECTION_FAILED,
    "bad_request": Status.MALFORMED_MESSAGE,
}


async def read_message(stream: trio.abc.Stream) -> bytes:
    """One varint-length-delimited message, read byte-exactly (the circuit's bytes
    follow it on the same stream). CircuitV2Error for an oversized or cut message."""
    length = shift = 0
    for _ in range(2):  # MAX_MESSAGE_BYTES (4096) fits in two varint bytes
        try:
            b = await _read_exactly(stream, 1)
        except WireError as e:
            raise CircuitV2Error(Status.MALFORMED_MESSAGE, "malformed", str(e)) from None
        length |= (b[0] & 0x7F) << shift
        shift += 7
        if not b[0] & 0x80:
            break
    else:
        raise CircuitV2Error(Status.MALFORMED_MESSAGE, "message_too_large", "length prefix")
    if length > MAX_MESSAGE_BYTES:
        raise CircuitV2Error(Status.MALFORMED_MESSAGE, "message_too_large", f"{length} bytes")
    try:
        return await _read_exactly(stream, length)
    except WireError as e:
        raise CircuitV2Error(Status.MALFORMED_MESSAGE, "malformed", str(e)) from None


class RelayV2Status(TypedDict):
    reservations_held: dict[str, float]
    stop_refusals: dict[str, int]


class RelayV2Service:
    """Circuit relay v2, both roles, sharing `relay`'s book, limits and splice."""

    def __init__(
        self,
        transport: Transport,
        keypair: KeyPair,
        relay: RelayService,
        *,
        serve_non_members: bool = False,
    ) -> None:
        self.t = transport
        self.keypair = keypair
        self.relay = relay
        self.book = relay.book
        self.serve_non_members = serve_non_members
        #: v2 relays where we hold a reservation → its expiry (wall clock, unix s).
        self.reservations: dict[PeerId, float] = {}
        self.stop_refusals: dict[str, int] = {}
        self._reserve_log: dict[PeerId, deque[float]] = {}

    def register(self) -> None:
        if self.book.limits.enabled:
            self.t.set_stream_handler(HOP_PROTOCOL, self._handle_hop)
            self.relay.stop_v2 = self.open_stop
        self.t.set_stream_handler(STOP_PROTOCOL, self._handle_stop)

    def _allowed(self, peer: PeerId) -> bool:
        return self.serve_non_members or self.relay.is_member(peer)

    # ------------------------------------------------------------ end side: client

    async def reserve(self, relay: PeerId) -> float:
        """Reserve (or renew) a slot at a v2 `relay`; return the seconds it lasts."""
        s = await self.t.open_stream(relay, HOP_PROTOCOL)
        try:
            with trio.fail_after(HANDSHAKE_TIMEOUT_S):
                await s.send_all(HopMessage(HopType.RESERVE).frame())
                resp = HopMessage.from_wire(await read_message(s))
        finally:
            await s.aclose()
        if resp.type != HopType.STATUS or resp.status != Status.OK or resp.reservation is None:
            raise RelayRefused(_status_name(resp.status), "reservation refused")
        expire = resp.reservation.expire
        if resp.reservation.voucher is not None:
            voucher_expire = open_voucher(resp.reservation.voucher, relay, self.t.peer_id)
            expire = min(expire, voucher_expire)
        ttl = expire - time.time()
        if not 0 < ttl < 1e9:
            raise RelayRefused("bad_answer", f"reservation expires at {expire}")
        self.reservations[relay] = float(expire)
        # One table of the reservations we hold, whichever protocol made them: the
        # dialer's keeper renews from it and either stop handler accepts on it.
        self.relay.reservations[relay] = float(expire)
        return ttl

    async def connect(self, relay: PeerId, dst: PeerId) -> TransportStream:
        """A circuit to `dst` through a v2 `relay`: a byte stream, not yet secured."""
        s = await self.t.open_stream(relay, HOP_PROTOCOL)
        try:
            with trio.fail_after(HANDSHAKE_TIMEOUT_S * 2):
                await s.send_all(HopMessage(HopType.CONNECT, peer=Peer(dst)).frame())
                resp = HopMessage.from_wire(await read_message(s))
        except BaseException:
            await s.reset()
            raise
        if resp.type != HopType.STATUS or resp.status != Status.OK:
            await s.reset()
            raise RelayRefused(_status_name(resp.status), f"v2 connect to {dst.short()}")
        return s

    # ------------------------------------------------------------ relay side: hop

    async def _handle_hop(self, peer: PeerId, s: TransportStream) -> None:
        try:
            with trio.fail_after(HANDSHAKE_TIMEOUT_S):
                req = HopMessage.from_wire(await read_message(s))
        except (CircuitV2Error, trio.TooSlowError) as e:
            reason = e.reason if isinstance(e, CircuitV2Error) else "malformed"
            self.book.refuse(reason)
            log.info("relay_v2_refused", peer=str(peer), reason=reason, error=str(e)[:200])
            await _hop_status(s, Status.MALFORMED_MESSAGE)
            return
        try:
            if req.type == HopType.RESERVE:
                await self._reserve(peer, s)
            elif req.type == HopType.CONNECT:
                if req.peer is None:
                    raise self.book.refuse("bad_request", "CONNECT names no peer")
                await self._connect(peer, req.peer.id, s)
            else:
                self.book.refuse("v2_unexpected_message")
                await _hop_status(s, Status.UNEXPECTED_MESSAGE)
        except RelayRefused as e:
            log.info("relay_v2_refused", peer=str(peer), op=req.type.name, reason=e.reason)
            await _hop_status(s, _STATUS_OF.get(e.reason, Status.PERMISSION_DENIED))

    def _check_direct(self, peer: PeerId) -> None:
        host = self.t.native_host()
        if host is not None and host.direct_connection(peer) is None:
            # No relay chains: the spec refuses hop over a relayed connection.
            raise self.book.refuse("v2_relayed_connection", "hop over a relayed connection")

    def _check_rate(self, peer: PeerId, now: float) -> None:
        seen = self._reserve_log.pop(peer, None) or deque()
        while seen and seen[0] <= now - RESERVE_WINDOW_S:
            seen.popleft()
        self._reserve_log[peer] = seen  # re-inserted: the dict stays in last-use order
        while len(self._reserve_log) > 4 * self.book.limits.max_reservations + 16:
            del self._reserve_log[next(iter(self._reserve_log))]
        if len(seen) >= RESERVE_PER_WINDOW:
            raise self.book.refuse("v2_reservation_rate", f"> {RESERVE_PER_WINDOW} a minute")
        seen.append(now)

    async def _reserve(self, peer: PeerId, s: TransportStream) -> None:
        now = trio.current_time()
        if not self.book.limits.enabled:
            raise self.book.refuse("relay_disabled")
        self._check_direct(peer)
        self._check_rate(peer, now)
        until = self.book.reserve(peer, now, self._allowed, kind="v2")
        expire = int(time.time() + (until - now))
        addrs: list[bytes] = []
        for a in self.t.addrs[:MAX_RESERVATION_ADDRS]:
            try:
                addrs.append(multiaddr.to_bytes(a))
            except MalformedFrame:
                continue
        voucher = make_voucher(self.keypair.seed, self.t.peer_id, peer, expire)
        msg = HopMessage(
            HopType.STATUS,
            reservation=Reservation(expire, tuple(addrs), voucher),
            limit=self._limit(),
            status=Status.OK,
        )
        with trio.move_on_after(HANDSHAKE_TIMEOUT_S):
            await s.send_all(msg.frame())
        await s.aclose()
        log.info("relay_v2_reservation", peer=str(peer), expire=expire)

    def _limit(self) -> Limit:
        lim = self.book.limits
        return Limit(int(lim.max_duration_s), lim.max_bytes)

    async def _connect(self, src: PeerId, dst: PeerId, a: TransportStream) -> None:
        self._check_direct(src)
        circuit = self.book.open_circuit(src, dst, trio.current_time(), self._allowed)
        reason = "closed"
        try:
            b = await self.relay.open_stop(src, dst)
            try:
                with trio.fail_after(HANDSHAKE_TIMEOUT_S):
                    await a.send_all(
                        HopMessage(HopType.STATUS, limit=self._limit(), status=Status.OK).frame()
                    )
            except (trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError):
                await b.reset()
                reason = "source_gone"
                await a.reset()
                return
            log.info("relay_circuit_opened", id=circuit.id, src=str(src), dst=str(dst), v2=True)
            reason = await self.relay.splice(circuit, a, b)
        except RelayRefused:
            reason = "refused"
            raise
        finally:
            self.book.close_circuit(circuit, reason)
            if reason != "refused":
                log.info("relay_circuit_closed", id=circuit.id, reason=reason, bytes=circuit.bytes)

    async def open_stop(self, src: PeerId, dst: PeerId) -> TransportStream:
        """Stop CONNECT to `dst` (it reserved with v2) for a circuit from `src`;
        the accepted stream, or RelayRefused (counted) with the reason."""
        b: TransportStream | None = None
        try:
            b = await self.t.open_stream(dst, STOP_PROTOCOL)
            with trio.fail_after(HANDSHAKE_TIMEOUT_S):
                await b.send_all(
                    StopMessage(StopType.CONNECT, peer=Peer(src), limit=self._limit()).frame()
                )
                resp = StopMessage.from_wire(await read_message(b))
        except (Exception, trio.TooSlowError) as e:
            if b is not None:
                await b.reset()
            raise self.book.refuse("target_failed", f"{type(e).__name__}: {e}") from None
        if resp.type != StopType.STATUS or resp.status != Status.OK:
            await b.reset()
            raise self.book.refuse("target_refused", _status_name(resp.status))
        return b

    # ------------------------------------------------------------ end side: stop

    async def _handle_stop(self, relay: PeerId, s: TransportStream) -> None:
        try:
            with trio.fail_after(HANDSHAKE_TIMEOUT_S):
                req = StopMessage.from_wire(await read_message(s))
        except (CircuitV2Error, trio.TooSlowError) as e:
            await self._refuse_stop(s, relay, e.reason if isinstance(e, CircuitV2Error)
                                    else "malformed", Status.MALFORMED_MESSAGE)
            return
        if req.type != StopType.CONNECT:
            await self._refuse_stop(s, relay, "unexpected_message", Status.UNEXPECTED_MESSAGE)
            return
        if req.peer is None:
            await self._refuse_stop(s, relay, "malformed", Status.MALFORMED_MESSAGE)
            return
        if self.relay.reservations.get(relay, 0.0) <= time.time():
            await self._refuse_stop(s, relay, "no_reservation", Status.PERMISSION_DENIED)
            return
        handler = self.relay.on_inbound_circuit
        if handler is None:
            await self._refuse_stop(s, relay, "not_accepting", Status.CONNECTION_FAILED)
            return
        with trio.move_on_after(HANDSHAKE_TIMEOUT_S):
            await s.send_all(StopMessage(StopType.STATUS, status=Status.OK).frame())
        log.info("relay_v2_circuit_accepted", relay=str(relay), src=str(req.peer.id))
        await handler(relay, req.peer.id, s)

    async def _refuse_stop(
        self, s: TransportStream, relay: PeerId, reason: str, status: Status
    ) -> None:
        self.stop_refusals[reason] = self.stop_refusals.get(reason, 0) + 1
        log.info("relay_v2_stop_refused", relay=str(relay), reason=reason)
        try:
            with trio.move_on_after(HANDSHAKE_TIMEOUT_S):
                await s.send_all(StopMessage(StopType.STATUS, status=status).frame())
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        await s.aclose()

    def status(self) -> RelayV2Status:
        now = time.time()
        return {
            "reservations_held": {
                str(p): round(until - now, 1) for p, until in self.reservations.items()
            },
            "stop_refusals": dict(self.stop_refusals),
        }


def _status_name(status: Status | None) -> str:
    return status.name.lower() if status is not None else "no_status"


async def _hop_status(s: TransportStream, status: Status) -> None:
    try:
        with trio.move_on_after(HANDSHAKE_TIMEOUT_S):
            await s.send_all(HopMessage(HopType.STATUS, status=status).frame())
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    await s.aclose()  # not reset: that could discard the answer before it is read


