"""`/colony/relay/1.0.0`: a circuit relay for members with no direct path.

Modelled on libp2p circuit relay v2 (reservation + hop/stop), Colony-sized:

1. A NAT'd member B **reserves** a slot at a public member R that agreed to relay
   (`[relay] enabled = true`): `{"op": "reserve"}` on a new stream to R, answered
   `{"ok": true, "ttl_s", "limits"}` or `{"ok": false, "reason"}`. B renews it before
   `ttl_s` runs out (overlay.runtime.edge.dialer keeps it).
2. A member A **connects** through R: `{"op": "connect", "dst": B}`. R checks its
   limits, opens a stream to B on its existing connection (`{"op": "stop", "src":
   A, "limits"}`), and when B says ok it answers A ok and **splices** the two
   streams, counting bytes and time.
3. A and B then run the libp2p secure + muxed stack over the spliced stream
   (overlay.runtime.net.stream_attach, A as Noise initiator): R sees only Noise
   ciphertext and cannot impersonate either end (Noise proves both peer ids).

Limits (`RelayLimits`, from `[relay]`): reservations, concurrent circuits (total
and per peer), bytes per circuit (both directions), duration per circuit, rate per
circuit (token bucket, bytes/s: the splice waits, so back-pressure reaches the
senders through Yamux windows). Refusals before the splice are answered with a
reason; a circuit that reaches its byte or time limit is closed (both streams
reset) and the reason is logged and counted at R (`relay_circuit_closed`), since
the ends speak Noise over it and cannot be told in-band.

`RelayBook` holds every rule and is pure (`now` passed in), so the limits have
virtual-time unit tests; `RelayService` is the trio part.

Handshake frames: unsigned-varint length + canonical CBOR, ≤ `HANDSHAKE_MAX_BYTES`,
read byte-exactly so nothing of the circuit's payload is consumed with them.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypedDict

import structlog
import trio

from overlay.core.errors import RemoteProtocolError, WireError
from overlay.core.ids import PeerId
from overlay.core.multiformats import encode_varint
from overlay.core.wire import cbor_decode, cbor_encode
from overlay.p2p.diagnose import describe_stream
from overlay.runtime.net.transport_stream import TransportStream
from overlay.runtime.process.config import Config

if TYPE_CHECKING:
    from overlay.runtime.net.transport import Transport

log = structlog.get_logger("colony.relay")

PROTO_RELAY = "/colony/relay/1.0.0"
HANDSHAKE_MAX_BYTES = 4096
HANDSHAKE_TIMEOUT_S = 10.0
SPLICE_CHUNK_BYTES = 64 * 1024
#: A splice direction blocked this long in one send is logged (once) with its state.
SPLICE_BLOCKED_LOG_S = 10.0


class RelayRefused(RemoteProtocolError):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason if not detail else f"{reason}: {detail}")
        self.reason = reason


class CircuitTerminated(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# ---------------------------------------------------------------- limits (pure)


@dataclass(frozen=True, slots=True)
class RelayLimits:
    """`[relay]` configuration. Sizes in bytes, durations in seconds, rate in bytes/s."""

    enabled: bool = False
    max_reservations: int = 64
    max_circuits: int = 16
    max_circuits_per_peer: int = 4
    max_bytes: int = 256 * 1024 * 1024
    max_duration_s: float = 600.0
    max_rate: int = 4 * 1024 * 1024
    reservation_ttl_s: float = 300.0

    @classmethod
    def from_config(cls, cfg: Config) -> RelayLimits:
        r = cfg.get("relay", {})
        d = cls()
        return cls(
            enabled=bool(r.get("enabled", d.enabled)),
            max_reservations=int(r.get("max_reservations", d.max_reservations)),
            max_circuits=int(r.get("max_circuits", d.max_circuits)),
            max_circuits_per_peer=int(r.get("max_circuits_per_peer", d.max_circuits_per_peer)),
            max_bytes=int(r.get("max_bytes", d.max_bytes)),
            max_duration_s=float(r.get("max_duration_s", d.max_duration_s)),
            max_rate=int(r.get("max_rate", d.max_rate)),
            reservation_ttl_s=float(r.get("reservation_ttl_s", d.reservation_ttl_s)),
        )

    def advertised(self) -> dict[str, int | float]:
        return {
            "max_bytes": self.max_bytes,
            "max_duration_s": float(self.max_duration_s),
            "max_rate": self.max_rate,
        }


@dataclass(slots=True)
class Circuit:
    """One spliced circuit and its accounting (a token bucket for the rate)."""

    id: int
    src: PeerId
    dst: PeerId
    started: float
    deadline: float
    max_bytes: int
    rate: float
    bytes: int = 0
    tokens: float = 0.0
    last: float = 0.0

    def account(self, n: int, now: float) -> float:
        """Charge `n` bytes at `now`; return how long to wait before passing them on.

        Raises CircuitTerminated("max_bytes"/"max_duration") when a limit is hit.
        """
        if now >= self.deadline:
            raise CircuitTerminated("max_duration")
        self.bytes += n
        if self.bytes > self.max_bytes:
            raise CircuitTerminated("max_bytes")
        if self.rate <= 0:
            return 0.0
        # Bucket holds at most one second's worth; refill since the last charge.
        self.tokens = min(self.rate, self.tokens + (now - self.last) * self.rate)
        self.last = now
        self.tokens -= n
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


@dataclass
class RelayStats:
    reservations_granted: int = 0
    circuits_opened: int = 0
    circuits_closed: dict[str, int] = field(default_factory=dict)
    refusals: dict[str, int] = field(default_factory=dict)
    bytes_relayed: int = 0


class RelayBook:
    """Reservations and circuits at a relay; every admission rule, pure."""

    def __init__(self, limits: RelayLimits) -> None:
        self.limits = limits
        self.reservations: dict[PeerId, float] = {}  # peer → expiry
        #: peer → the protocol it reserved with ("colony" or "v2": circuit relay v2),
        #: so a circuit to it is stopped in the protocol it speaks.
        self.kinds: dict[PeerId, str] = {}
        self.circuits: dict[int, Circuit] = {}
        self._ids = itertools.count(1)
        self.stats = RelayStats()

    def refuse(self, reason: str, detail: str = "") -> RelayRefused:
        self.stats.refusals[reason] = self.stats.refusals.get(reason, 0) + 1
        return RelayRefused(reason, detail)

    def _expire(self, now: float) -> None:
        for peer in [p for p, until in self.reservations.items() if until <= now]:
            del self.reservations[peer]
            self.kinds.pop(peer, None)

    def reserve(
        self, peer: PeerId, now: float, is_member: Callable[[PeerId], bool], kind: str = "colony"
    ) -> float:
        """Grant or renew `peer`'s reservation; return its expiry."""
        if not self.limits.enabled:
            raise self.refuse("relay_disabled", "this node does not relay")
        if not is_member(peer):
            raise self.refuse("not_a_member", "reservations are for colony members")
        self._expire(now)
        if peer not in self.reservations and len(self.reservations) >= self.limits.max_reservations:
            raise self.refuse("too_many_reservations", f"limit {self.limits.max_reservations}")
        until = now + self.limits.reservation_ttl_s
        self.reservations[peer] = until
        self.kinds[peer] = kind
        self.stats.reservations_granted += 1
        return until

    def open_circuit(
        self, src: PeerId, dst: PeerId, now: float, is_member: Callable[[PeerId], bool]
    ) -> Circuit:
        if not self.limits.enabled:
            raise self.refuse("relay_disabled", "this node does not relay")
        if not is_member(src):
            raise self.refuse("not_a_member", f"{src.short()} is not a member")
        if src == dst:
            raise self.refuse("bad_request", "a circuit to oneself")
        self._expire(now)
        if dst not in self.reservations:
            raise self.refuse("no_reservation", f"{dst.short()} has no reservation here")
        if not is_member(dst):
            raise self.refuse("unknown_peer", f"{dst.short()} is not a member")
        if len(self.circuits) >= self.limits.max_circuits:
            raise self.refuse("too_many_circuits", f"limit {self.limits.max_circuits}")
        per_peer = sum(
            1 for c in self.circuits.values() if src in (c.src, c.dst) or dst in (c.src, c.dst)
        )
        if per_peer >= self.limits.max_circuits_per_peer:
            raise self.refuse(
                "too_many_circuits_for_peer", f"limit {self.limits.max_circuits_per_peer}"
            )
        c = Circuit(
            next(self._ids),
            src,
            dst,
            now,
            now + self.limits.max_duration_s,
            self.limits.max_bytes,
            float(self.limits.max_rate),
            tokens=float(self.limits.max_rate),
            last=now,
        )
        self.circuits[c.id] = c
        self.stats.circuits_opened += 1
        return c

    def close_circuit(self, c: Circuit, reason: str) -> None:
        if self.circuits.pop(c.id, None) is not None:
            self.stats.circuits_closed[reason] = self.stats.circuits_closed.get(reason, 0) + 1
            self.stats.bytes_relayed += c.bytes


# ---------------------------------------------------------------- handshake frames


def encode_handshake(obj: dict[str, object]) -> bytes:
    body = cbor_encode(obj)
    if len(body) > HANDSHAKE_MAX_BYTES:
        raise ValueError("relay handshake frame too large")
    return encode_varint(len(body)) + body


async def read_handshake(stream: trio.abc.Stream) -> dict[str, object]:
    """Read one frame byte-exactly (nothing past it is consumed). WireError on faults."""
    length = 0
    shift = 0
    for _ in range(3):  # HANDSHAKE_MAX_BYTES fits in 2 varint bytes
        b = await _read_exactly(stream, 1)
        length |= (b[0] & 0x7F) << shift
        shift += 7
        if not b[0] & 0x80:
            break
    else:
        raise WireError("relay handshake length prefix too long")
    if length > HANDSHAKE_MAX_BYTES:
        raise WireError(f"relay handshake frame of {length} bytes > {HANDSHAKE_MAX_BYTES}")
    obj = cbor_decode(await _read_exactly(stream, length))
    if not isinstance(obj, dict) or not isinstance(obj.get("op", obj.get("ok")), (str, bool)):
        raise WireError("relay handshake must be a map with op or ok")
    return obj


async def _read_exactly(stream: trio.abc.Stream, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = await stream.receive_some(n - len(buf))
        if not chunk:
            raise WireError("relay stream closed during the handshake")
        buf += chunk
    return buf


def _peer_field(obj: dict[str, object], key: str) -> PeerId:
    raw = obj.get(key)
    if not isinstance(raw, bytes):
        raise RelayRefused("bad_request", f"{key} must be peer id bytes")
    try:
        return PeerId.from_bytes(raw)
    except WireError as e:
        raise RelayRefused("bad_request", f"bad {key}: {e}") from None


# ---------------------------------------------------------------- libp2p streams


async def open_raw_stream(transport: Transport, peer: PeerId, protocol: str) -> TransportStream:
    """A new negotiated byte stream to `peer` (Transport.open_stream)."""
    return await transport.open_stream(peer, protocol)


def set_raw_handler(
    transport: Transport,
    protocol: str,
    handler: Callable[[PeerId, TransportStream], Awaitable[None]],
) -> None:
    """Accept raw streams on `protocol` (Transport.set_stream_handler: an exception
    in the handler resets that stream only)."""
    transport.set_stream_handler(protocol, handler)


# ---------------------------------------------------------------- the service


OnCircuit = Callable[[PeerId, PeerId, trio.abc.Stream], Awaitable[None]]


class RelayService:
    """Both roles on one node: relay (if enabled) and circuit end (reserve/connect/stop).

    `on_inbound_circuit(relay, src, stream)` gets circuits arriving through a relay
    we hold a reservation at; the dialer attaches the libp2p stack to them.
    """

    def __init__(
        self,
        transport: Transport,
        limits: RelayLimits,
        is_member: Callable[[PeerId], bool],
        on_inbound_circuit: OnCircuit | None = None,
    ) -> None:
        self.t = transport
        self.book = RelayBook(limits)
        self.is_member = is_member
        self.on_inbound_circuit = on_inbound_circuit
        #: relays where we hold a reservation → its expiry (wall clock).
        self.reservations: dict[PeerId, float] = {}
        #: Stop in circuit relay v2 (src, dst) → the accepted stop stream; set by
        #: overlay.runtime.edge.relay_v2 so both protocols' circuits reach either end.
        self.stop_v2: Callable[[PeerId, PeerId], Awaitable[TransportStream]] | None = None

    def register(self) -> None:
        set_raw_handler(self.t, PROTO_RELAY, self._handle)

    # -- client side ------------------------------------------------------------

    async def reserve(self, relay: PeerId) -> float:
        """Reserve (or renew) a slot at `relay`; return the reservation's ttl in s."""
        s = await open_raw_stream(self.t, relay, PROTO_RELAY)
        try:
            with trio.fail_after(HANDSHAKE_TIMEOUT_S):
                await s.send_all(encode_handshake({"op": "reserve"}))
                resp = await read_handshake(s)
        finally:
            await s.aclose()
        if resp.get("ok") is not True:
            raise RelayRefused(str(resp.get("reason", "refused")), str(resp.get("detail", "")))
        ttl = resp.get("ttl_s", 0.0)
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not 0 <= ttl < 1e9:
            raise RelayRefused("bad_answer", f"reservation ttl_s {ttl!r} is not a duration")
        self.reservations[relay] = time.time() + ttl
        return ttl

    async def connect(self, relay: PeerId, dst: PeerId) -> TransportStream:
        """A circuit to `dst` through `relay`: a byte stream, not yet secured."""
        s = await open_raw_stream(self.t, relay, PROTO_RELAY)
        try:
            with trio.fail_after(HANDSHAKE_TIMEOUT_S * 2):
                await s.send_all(encode_handshake({"op": "connect", "dst": dst.raw}))
                resp = await read_handshake(s)
        except BaseException:
            await s.reset()
            raise
        if resp.get("ok") is not True:
            await s.reset()
            raise RelayRefused(str(resp.get("reason", "refused")), str(resp.get("detail", "")))
        return s

    # -- server side ------------------------------------------------------------

    async def _handle(self, peer: PeerId, s: TransportStream) -> None:
        try:
            with trio.fail_after(HANDSHAKE_TIMEOUT_S):
                req = await read_handshake(s)
        except (WireError, trio.TooSlowError) as e:
            self.book.stats.refusals["malformed"] = self.book.stats.refusals.get("malformed", 0) + 1
            await _answer(s, False, "malformed", str(e))
            await s.aclose()  # not reset: that could discard the answer before it is read
            return
        op = req.get("op")
        try:
            if op == "reserve":
                until = self.book.reserve(peer, trio.current_time(), self.is_member)
                await _answer(
                    s,
                    True,
                    ttl_s=float(until - trio.current_time()),
                    limits=self.book.limits.advertised(),
                )
                await s.aclose()
                log.info("relay_reservation", peer=str(peer))
            elif op == "connect":
                await self._hop(peer, _peer_field(req, "dst"), s)
            elif op == "stop":
                await self._stop(peer, _peer_field(req, "src"), s)
            else:
                raise RelayRefused("bad_request", f"unknown op {op!r}")
        except RelayRefused as e:
            log.info("relay_refused", peer=str(peer), op=str(op), reason=e.reason)
            await _answer(s, False, e.reason, str(e))
            await s.aclose()

    async def _hop(self, src: PeerId, dst: PeerId, a: TransportStream) -> None:
        circuit = self.book.open_circuit(src, dst, trio.current_time(), self.is_member)
        reason = "closed"
        b: TransportStream | None = None
        try:
            b = await self.open_stop(src, dst)
            await _answer(a, True, limits=self.book.limits.advertised())
            log.info("relay_circuit_opened", id=circuit.id, src=str(src), dst=str(dst))
            reason = await self.splice(circuit, a, b)
        except RelayRefused:
            reason = "refused"
            if b is not None:
                await b.reset()
            raise
        finally:
            self.book.close_circuit(circuit, reason)
            if reason != "refused":
                log.info("relay_circuit_closed", id=circuit.id, reason=reason, bytes=circuit.bytes)

    async def open_stop(self, src: PeerId, dst: PeerId) -> TransportStream:
        """The relay's stop stream to `dst`, accepted, for a circuit from `src`: in our
        protocol, or in circuit relay v2 when `dst` reserved with it (a js-libp2p or
        go-libp2p node) or `src` is not a member, whichever protocol `src` used to
        ask. RelayRefused (counted) if not."""
        if not self.t.is_connected(dst):
            raise self.book.refuse("target_not_connected", f"{dst.short()} is not connected")
        if self.stop_v2 is not None and (
            self.book.kinds.get(dst) == "v2" or not self.is_member(src)
        ):
            # Our stop would refuse a non-member source; v2's accepts any peer (as a
            # TCP listener does: Noise proves who it is), and every daemon speaks it.
            return await self.stop_v2(src, dst)
        b: TransportStream | None = None
        try:
            b = await open_raw_stream(self.t, dst, PROTO_RELAY)
            with trio.fail_after(HANDSHAKE_TIMEOUT_S):
                await b.send_all(
                    encode_handshake(
                        {"op": "stop", "src": src.raw, "limits": self.book.limits.advertised()}
                    )
                )
                resp = await read_handshake(b)
        except (WireError, trio.TooSlowError, Exception) as e:
            if b is not None:
                await b.reset()
            raise self.book.refuse("target_failed", f"{type(e).__name__}: {e}") from None
        if resp.get("ok") is not True:
            await b.reset()
            raise self.book.refuse("target_refused", str(resp.get("reason", "")))
        return b

    async def splice(self, c: Circuit, a: TransportStream, b: TransportStream) -> str:
        """Pass bytes both ways between `a` and `b` within `c`'s limits; return why it
        ended. Both protocols' circuits run through here."""
        reason = "closed"

        # When each direction started a send that has not returned (diagnostics: a
        # splice blocked on its far side for long is logged once with both streams'
        # flow-control state).
        sending: dict[int, float] = {}

        async def pump(
            src: TransportStream, dst: TransportStream, cancel: trio.CancelScope
        ) -> None:
            nonlocal reason
            try:
                while True:
                    data = await src.receive_some(SPLICE_CHUNK_BYTES)
                    if not data:
                        reason = "eof"
                        break
                    wait = c.account(len(data), trio.current_time())
                    if wait > 0:
                        await trio.sleep(wait)
                    sending[id(dst)] = trio.current_time()
                    await dst.send_all(data)
                    del sending[id(dst)]
            except CircuitTerminated as e:
                reason = e.reason
            except (trio.BrokenResourceError, trio.ClosedResourceError) as e:
                reason = f"stream_error: {e}"[:100]
            cancel.cancel()

        async def watch() -> None:
            logged: set[int] = set()
            while True:
                await trio.sleep(SPLICE_BLOCKED_LOG_S / 2)
                now = trio.current_time()
                for src, dst in ((a, b), (b, a)):
                    since = sending.get(id(dst))
                    if since is not None and now - since > SPLICE_BLOCKED_LOG_S \
                            and id(dst) not in logged:
                        logged.add(id(dst))
                        log.info("relay_splice_blocked", id=c.id, bytes=c.bytes,
                                 seconds=round(now - since, 1), to=dst.peer.short(),
                                 dst=describe_stream(dst.net), src=describe_stream(src.net))

        with trio.move_on_at(c.deadline) as timer:
            async with trio.open_nursery() as n:
                n.start_soon(pump, a, b, n.cancel_scope)
                n.start_soon(pump, b, a, n.cancel_scope)
                n.start_soon(watch)
        if timer.cancelled_caught:
            reason = "max_duration"
        if reason == "eof":
            await a.aclose()
            await b.aclose()
        else:
            await a.reset()
            await b.reset()
        return reason

    async def _stop(self, relay: PeerId, src: PeerId, s: TransportStream) -> None:
        """A circuit from `src` arrives through `relay`: accept if we reserved there."""
        if relay not in self.reservations:
            raise RelayRefused("no_reservation", f"no reservation at {relay.short()}")
        if not self.is_member(src):
            raise RelayRefused("not_a_member", f"{src.short()} is not a member")
        if self.on_inbound_circuit is None:
            raise RelayRefused("not_accepting", "no circuit handler")
        await _answer(s, True)
        await self.on_inbound_circuit(relay, src, s)

    def status(self) -> RelayStatus:
        """For `colony doctor`: our reservations and, as a relay, circuits and counters."""
        now = time.time()
        st = self.book.stats
        return {
            "reservations_held": {
                str(p): round(until - now, 1) for p, until in self.reservations.items()
            },
            "relaying": {
                "enabled": self.book.limits.enabled,
                "reservations": len(self.book.reservations),
                "circuits": len(self.book.circuits),
                "circuits_opened": st.circuits_opened,
                "circuits_closed": dict(st.circuits_closed),
                "refusals": dict(st.refusals),
                "bytes_relayed": st.bytes_relayed
                + sum(c.bytes for c in self.book.circuits.values()),
            },
        }


class RelayingStatus(TypedDict):
    enabled: bool
    reservations: int
    circuits: int
    circuits_opened: int
    circuits_closed: dict[str, int]
    refusals: dict[str, int]
    bytes_relayed: int


class RelayStatus(TypedDict):
    """`RelayService.status()`: reservations we hold (seconds left) and our relaying."""

    reservations_held: dict[str, float]
    relaying: RelayingStatus


async def _answer(
    s: trio.abc.Stream, ok: bool, reason: str = "", detail: str = "", **extra: object
) -> None:
    msg: dict[str, object] = {"ok": ok, **extra}
    if not ok:
        msg["reason"] = reason
        msg["detail"] = detail[:200]
    try:
        with trio.move_on_after(HANDSHAKE_TIMEOUT_S):
            await s.send_all(encode_handshake(msg))
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
