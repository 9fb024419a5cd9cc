"""DCUtR, Direct Connection Upgrade through Relay (`/libp2p/dcutr`), sans-IO.

Spec: libp2p/specs relay/DCUtR.md (r0). Two peers joined by a relayed connection
exchange their observed addresses and dial each other at the same moment, so that
each NAT sees an outbound SYN before the other side's SYN arrives (TCP simultaneous
open through two NATs; Ford & Srisuresh, "Peer-to-Peer Communication Across NATs").

Roles, as the spec names them: A dialled B through a relay; B (the *inbound* side of
the relayed connection) is the **initiator** here:

1. B opens a `/libp2p/dcutr` stream and sends CONNECT with its addresses, starting an
   RTT clock;
2. A answers CONNECT with its addresses;
3. B sends SYNC and dials A's addresses RTT/2 later; A dials B's at once on SYNC
   (so both SYNs leave at about the same moment);
4. on failure B retries from step 1 on the same stream, at most `max_attempts`
   times (the spec: 3 in total).

Over QUIC (`/udp/…/quic-v1` addresses in the CONNECTs; `DialAt.quic`), as the spec
says: A dials B's QUIC addresses (A is QUIC's client) while B sends UDP packets of
random bytes to A's, opening B's NAT mapping for A's Initial; both from the
listening UDP endpoint (a retry: from fresh ports, `OwnAddrs`). This runs beside
the TCP punch; the first direct connection wins (`DialResult.transport`,
`PunchFinished.transport`).

Who runs the security handshake as initiator on the punched TCP connection: B (it
dials as the client), A acts as server although it dialled too. That is go-libp2p's
rule (`WithSimultaneousConnect(isClient)`: the DCUtR initiator is the client) and
rust-libp2p's (the A side dials with `override_role()`); a TCP simultaneous open has
no dialler, so the role must come from the protocol.

Wire: unsigned-varint length + protobuf `HolePunch { Type type = 1 (CONNECT = 100,
SYNC = 300); repeated bytes ObsAddrs = 2 }`, each address a binary multiaddr.

Bounds (refused with a reason and counted, never an exception out of the core):
messages ≤ 4 KiB (the spec's SHOULD), ≤ `max_addrs` addresses of ≤ `MAX_ADDR_BYTES`
each, ≤ `max_attempts` CONNECTs per stream, and per peer at most `per_peer` punches
per `window_s` and `max_concurrent` punches at once (`PunchGuard`). A "punch storm"
from one peer costs it refusals, not our dials: every dial a CONNECT can cause is
behind these limits, so the protocol cannot be used to aim our SYNs at third parties
faster than `per_peer / window_s`.

Everything here takes `now`; the trio part is overlay/runtime/edge/holepunch.py.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from dataclasses import dataclass, field
from enum import Enum, IntEnum

from overlay.core.effects import Emit, SetTimer, TimerFired
from overlay.core.errors import LocalProtocolError, MalformedFrame, WireError
from overlay.core.ids import PeerId
from overlay.core.multiformats import encode_varint
from overlay.p2p import multiaddr, pb
from overlay.p2p.errors import ProtobufError

PROTOCOL_ID = "/libp2p/dcutr"
#: The spec: "Implementations SHOULD refuse encoded RPC messages … larger than 4 KiB".
MAX_MESSAGE_BYTES = 4096
#: A binary multiaddr of ip6 + tcp is 20 bytes; dns names make them longer.
MAX_ADDR_BYTES = 128


class MsgType(IntEnum):
    CONNECT = 100
    SYNC = 300


class DcutrError(WireError):
    """A peer's DCUtR message or behaviour is refused; `reason` is the counter key."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class HolePunchMsg:
    type: MsgType
    addrs: tuple[bytes, ...] = ()

    def to_wire(self) -> bytes:
        addrs = b"".join(pb.field_bytes(2, a) for a in self.addrs)
        body = pb.field_varint(1, int(self.type)) + addrs
        if len(body) > MAX_MESSAGE_BYTES:
            raise LocalProtocolError(f"HolePunch of {len(body)} bytes > {MAX_MESSAGE_BYTES}")
        return body

    def frame(self) -> bytes:
        body = self.to_wire()
        return encode_varint(len(body)) + body

    @classmethod
    def from_wire(cls, data: bytes, max_addrs: int = 16) -> HolePunchMsg:
        if len(data) > MAX_MESSAGE_BYTES:
            raise DcutrError("message_too_large", f"{len(data)} bytes > {MAX_MESSAGE_BYTES}")
        try:
            fields = pb.decode(data)
            kind = pb.get_int(fields, 1)
            addrs = pb.get_all_bytes(fields, 2)
        except ProtobufError as e:
            raise DcutrError("malformed", str(e)) from None
        if kind not in (MsgType.CONNECT, MsgType.SYNC):
            raise DcutrError("malformed", f"type {kind!r} is neither CONNECT nor SYNC")
        if len(addrs) > max_addrs:
            raise DcutrError("too_many_addrs", f"{len(addrs)} > {max_addrs}")
        if any(len(a) > MAX_ADDR_BYTES for a in addrs):
            raise DcutrError("addr_too_large", f"an address of > {MAX_ADDR_BYTES} bytes")
        return cls(MsgType(kind), tuple(addrs))


def _targets(addrs: tuple[bytes, ...], transport: str) -> tuple[tuple[str, int], ...]:
    out: list[tuple[str, int]] = []
    for raw in addrs:
        try:
            text = multiaddr.from_bytes(raw)
        except (MalformedFrame, WireError):
            continue
        parts = text.split("/")
        if len(parts) < 5 or parts[1] not in ("ip4", "ip6") or "p2p-circuit" in parts:
            continue
        if transport == "tcp":
            if parts[3] != "tcp" or (len(parts) > 5 and parts[5] != "p2p"):
                continue
        elif (parts[3] != "udp" or len(parts) < 6 or parts[5] != "quic-v1"
              or (len(parts) > 6 and parts[6] != "p2p")):
            continue
        try:
            ip, port = ipaddress.ip_address(parts[2]), int(parts[4])
        except ValueError:
            continue
        if ip.is_unspecified or ip.is_multicast or not 0 < port < 65536:
            continue
        if (str(ip), port) not in out:
            out.append((str(ip), port))
    return tuple(out)


def tcp_targets(addrs: tuple[bytes, ...]) -> tuple[tuple[str, int], ...]:
    """The (ip, port) pairs worth a TCP dial among binary multiaddrs, in order, without
    duplicates: `/ip4|ip6/X/tcp/P[/p2p/…]`. Relayed (`/p2p-circuit`), unparseable,
    unspecified (0.0.0.0), multicast and port-0 addresses are skipped: a peer's list
    must not make us dial something that cannot be it."""
    return _targets(addrs, "tcp")


def quic_targets(addrs: tuple[bytes, ...]) -> tuple[tuple[str, int], ...]:
    """Likewise for QUIC: `/ip4|ip6/X/udp/P/quic-v1[/p2p/…]` (the same filters)."""
    return _targets(addrs, "quic")


def predicted_addrs(observed: list[str], listen_port: int, limit: int = 8, *,
                    quic_port: int = 0) -> list[str]:
    """Our addresses to send in CONNECT, from what other peers observed (identify).

    An observed address carries the NAT's port for that one outbound connection, which
    came from an ephemeral port. The punch dials from our *listen* port (SO_REUSEPORT),
    and a NAT that preserves ports when it can (Linux MASQUERADE, most home routers)
    maps it to the same public port: so `observed ip : listen port` comes first, then
    the observed address itself (right for a NAT that keeps one mapping per host).

    QUIC (`quic_port` > 0, our listening UDP endpoint, which is also where our QUIC
    dials and punch packets leave from): `observed ip : quic port /quic-v1` for each
    observed ip, and an observed `/udp/…/quic-v1` address itself. TCP and QUIC
    candidates are interleaved so `limit` keeps some of each. `listen_port` 0: no TCP."""
    tcp: list[str] = []
    quic: list[str] = []
    for addr in observed:
        parts = addr.split("/")
        if len(parts) < 5 or parts[1] not in ("ip4", "ip6"):
            continue
        cands: list[str] = []
        if parts[3] == "tcp" and listen_port:
            cands = [f"/{parts[1]}/{parts[2]}/tcp/{listen_port}", "/".join(parts[:5])]
        for cand in cands:
            if cand not in tcp:
                tcp.append(cand)
        qc: list[str] = [f"/{parts[1]}/{parts[2]}/udp/{quic_port}/quic-v1"] if quic_port else []
        if quic_port and parts[3] == "udp" and parts[5:6] == ["quic-v1"]:
            qc.append("/".join(parts[:6]))
        for cand in qc:
            if cand not in quic:
                quic.append(cand)
    out: list[str] = []
    for i in range(max(len(tcp), len(quic))):
        out += tcp[i:i + 1] + quic[i:i + 1]
    return out[:limit]


@dataclass(frozen=True, slots=True)
class DcutrConfig:
    max_attempts: int = 3
    #: Wait for the CONNECT answer / the SYNC (relay round trips can be slow).
    exchange_timeout_s: float = 10.0
    #: How long one simultaneous dial may take before the attempt counts as failed.
    dial_timeout_s: float = 5.0
    max_addrs: int = 16
    #: Punches per peer (both roles) per window, and at once over all peers.
    per_peer: int = 3
    window_s: float = 60.0
    max_concurrent: int = 16
    #: Peers whose recent punches we remember (the oldest is forgotten first).
    max_tracked_peers: int = 4096
    #: Transports we punch on ("tcp", "quic"): the peer's addresses of any other are
    #: ignored, and we send none of ours (`[edge] holepunch_transports`).
    transports: tuple[str, ...] = ("tcp", "quic")
    #: QUIC targets per attempt: the initiator sends each a train of punch packets,
    #: so a peer's address list must not aim more than a few at third parties.
    max_quic_targets: int = 4


# ---------------------------------------------------------------- admission


@dataclass
class PunchGuard:
    """Admission of punches, both roles: per-peer rate and a global concurrency cap.
    `refusals` counts each reason; `admit` returns the reason or None.

    One punch per (peer, role) at a time: when both ends dial at once, each is the
    inbound side of one circuit and initiates; refusing the other's exchange while
    ours runs would make both fail, so the two run side by side (their dials meet
    on the same 4-tuple, and the first connection wins)."""

    config: DcutrConfig = field(default_factory=DcutrConfig)
    recent: dict[PeerId, deque[float]] = field(default_factory=dict)
    active: dict[tuple[PeerId, str], int] = field(default_factory=dict)
    refusals: dict[str, int] = field(default_factory=dict)

    def refuse(self, reason: str) -> str:
        self.refusals[reason] = self.refusals.get(reason, 0) + 1
        return reason

    def admit(self, peer: PeerId, now: float, role: str = "responder") -> str | None:
        c = self.config
        if sum(self.active.values()) >= c.max_concurrent:
            return self.refuse("too_many_punches")
        if self.active.get((peer, role), 0) > 0:
            return self.refuse("punch_in_progress")
        times = self.recent.get(peer)
        if times is None:
            while len(self.recent) >= c.max_tracked_peers:
                del self.recent[next(iter(self.recent))]
            times = self.recent[peer] = deque(maxlen=max(1, c.per_peer))
        while times and times[0] <= now - c.window_s:
            times.popleft()
        if len(times) >= c.per_peer:
            return self.refuse("rate_limited")
        times.append(now)
        self.active[peer, role] = self.active.get((peer, role), 0) + 1
        return None

    def release(self, peer: PeerId, role: str = "responder") -> None:
        n = self.active.get((peer, role), 0) - 1
        if n > 0:
            self.active[peer, role] = n
        else:
            self.active.pop((peer, role), None)


# ---------------------------------------------------------------- one punch


class Role(Enum):
    INITIATOR = "initiator"  # B: inbound side of the relayed connection; TLS/Noise client
    RESPONDER = "responder"  # A: dialled through the relay; acts as server when punched


class Phase(Enum):
    IDLE = "idle"
    AWAIT_CONNECT = "await_connect"
    AWAIT_SYNC = "await_sync"
    DIALLING = "dialling"
    DONE = "done"


@dataclass(frozen=True, slots=True)
class Start:
    """Initiator only: begin (send the first CONNECT)."""


@dataclass(frozen=True, slots=True)
class MessageIn:
    msg: HolePunchMsg


@dataclass(frozen=True, slots=True)
class OwnAddrs:
    """Our addresses for the CONNECTs we send from now on (the driver gives a retry
    a fresh QUIC port: see `Punch`); capped at `max_addrs` like the first ones."""

    addrs: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class DialResult:
    """The simultaneous dial ended (ok: a direct, authenticated connection exists)."""

    ok: bool
    error: str = ""
    #: Which transport's connection won ("tcp" or "quic"), when ok.
    transport: str = ""


@dataclass(frozen=True, slots=True)
class StreamEnded:
    reason: str


Input = Start | MessageIn | OwnAddrs | DialResult | StreamEnded | TimerFired


@dataclass(frozen=True, slots=True)
class SendMsg:
    msg: HolePunchMsg


@dataclass(frozen=True, slots=True)
class DialAt:
    """Dial `targets` (TCP) from our listen port at absolute time `at`; report
    DialResult. `client`: run the security handshake as its initiator (the DCUtR
    initiator). `quic`: the peer's QUIC (ip, port)s; per the spec the responder (A)
    dials them (it is the QUIC client) while the initiator (B) sends them random UDP
    packets from its listening endpoint, opening its NAT's mapping for A's Initial."""

    targets: tuple[tuple[str, int], ...]
    at: float
    attempt: int
    client: bool
    quic: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class PunchFinished:
    ok: bool
    reason: str  # "" on success
    attempts: int
    rtt_s: float | None
    #: The transport that punched ("tcp", "quic"; "" when it failed or is unknown).
    transport: str = ""


Effect = SendMsg | DialAt | SetTimer | Emit


class Punch:
    """One DCUtR exchange on one stream, either role. `handle(inp, now)` → effects.

    Invariants: at most `max_attempts` CONNECTs are sent or accepted; exactly one
    `PunchFinished` is emitted, after which every input is ignored; at most one
    `DialAt` per attempt.

    `OwnAddrs` replaces the addresses our next CONNECT carries. The driver uses it
    for retries (`readdress_before`): a UDP punch that lost the race leaves NAT
    state behind (Linux conntrack, 30 s) that spoils every later punch from the same
    sockets, so each side's retry punches QUIC from a fresh port and says so in its
    CONNECT."""

    def __init__(self, role: Role, own_addrs: tuple[bytes, ...], config: DcutrConfig) -> None:
        self.role = role
        self.own = own_addrs[: config.max_addrs]
        self.config = config
        self.phase = Phase.IDLE if role is Role.INITIATOR else Phase.AWAIT_CONNECT
        self.attempt = 0
        self.sent_at = 0.0
        self.rtt_s: float | None = None
        self.targets: tuple[tuple[str, int], ...] = ()
        self.quic: tuple[tuple[str, int], ...] = ()
        self.last_error = ""
        #: Why the stream ended while our dial was in flight (then no retry).
        self.stream_ended = ""

    @property
    def done(self) -> bool:
        return self.phase is Phase.DONE

    def readdress_before(self, inp: Input) -> bool:
        """Whether `inp` makes us send a retry's CONNECT (B: its dial failed; A: B's
        next CONNECT came): the driver gives that attempt a fresh QUIC port first."""
        if self.role is Role.RESPONDER:
            return (isinstance(inp, MessageIn) and inp.msg.type is MsgType.CONNECT
                    and self.attempt >= 1 and self.attempt < self.config.max_attempts
                    and self.phase in (Phase.AWAIT_CONNECT, Phase.DIALLING))
        failed = (isinstance(inp, DialResult) and not inp.ok) or (
            isinstance(inp, TimerFired) and inp.timer == ("deadline", self.attempt))
        return (failed and self.phase is Phase.DIALLING and not self.stream_ended
                and self.attempt < self.config.max_attempts)

    def handle(self, inp: Input, now: float) -> list[Effect]:
        if self.done:
            return []
        if isinstance(inp, Start):
            if self.role is not Role.INITIATOR or self.phase is not Phase.IDLE:
                raise LocalProtocolError("Start is for a fresh initiator only")
            return self._send_connect(now)
        if isinstance(inp, OwnAddrs):
            self.own = inp.addrs[: self.config.max_addrs]
            return []
        if isinstance(inp, MessageIn):
            if self.role is Role.INITIATOR:
                return self._initiator_msg(inp.msg, now)
            return self._responder_msg(inp.msg, now)
        if isinstance(inp, DialResult):
            if self.phase is not Phase.DIALLING:
                return []  # late result of an attempt already given up
            if inp.ok:
                return self._finish(True, "", inp.transport)
            return self._dial_failed(inp.error or "dial_failed", now)
        if isinstance(inp, StreamEnded):
            if self.phase is Phase.DIALLING and not self.stream_ended:
                # The other side closes the stream as soon as *its* dial succeeded,
                # which may be before ours reports: our dial is the same connection
                # (mid-handshake), so let it finish instead of abandoning it.
                self.stream_ended = inp.reason[:100] or "ended"
                return []
            last = f"; last dial: {self.last_error}" if self.last_error else ""
            return self._finish(False, f"stream_ended: {inp.reason}{last}"[:300])
        if isinstance(inp, TimerFired):
            if inp.timer != ("deadline", self.attempt):
                return []  # stale
            if self.phase is Phase.DIALLING:
                return self._dial_failed("dial_timeout", now)
            waiting = "CONNECT" if self.phase is Phase.AWAIT_CONNECT else "SYNC"
            return self._finish(False, f"timeout: no {waiting} from the peer")
        raise LocalProtocolError(f"unknown input {inp!r}")

    # -- initiator (B) -----------------------------------------------------------

    def _send_connect(self, now: float) -> list[Effect]:
        self.attempt += 1
        self.sent_at = now
        self.phase = Phase.AWAIT_CONNECT
        return [
            SendMsg(HolePunchMsg(MsgType.CONNECT, self.own)),
            SetTimer(("deadline", self.attempt), now + self.config.exchange_timeout_s),
        ]

    def _initiator_msg(self, msg: HolePunchMsg, now: float) -> list[Effect]:
        if self.phase is not Phase.AWAIT_CONNECT or msg.type is not MsgType.CONNECT:
            return self._finish(False, f"unexpected_message: {msg.type.name} in {self.phase.value}")
        self._take_targets(msg.addrs)
        if not self.targets and not self.quic:
            return self._finish(False, "no_usable_addrs: the peer sent no dialable "
                                f"address ({' or '.join(self.config.transports)})")
        self.rtt_s = max(0.0, now - self.sent_at)
        at = now + self.rtt_s / 2
        self.phase = Phase.DIALLING
        return [
            SendMsg(HolePunchMsg(MsgType.SYNC)),
            DialAt(self.targets, at, self.attempt, client=True, quic=self.quic),
            SetTimer(("deadline", self.attempt), at + self.config.dial_timeout_s),
        ]

    def _dial_failed(self, error: str, now: float) -> list[Effect]:
        self.last_error = error
        if self.stream_ended:
            return self._finish(False, f"stream_ended: {self.stream_ended}; last dial: {error}"
                                [:300])
        if self.role is Role.INITIATOR and self.attempt < self.config.max_attempts:
            return self._send_connect(now)  # the spec: retry on the same stream
        if self.role is Role.RESPONDER:
            # B decides about retries; we wait for its next CONNECT (or the stream end).
            self.phase = Phase.AWAIT_CONNECT
            return [SetTimer(("deadline", self.attempt), now + self.config.exchange_timeout_s)]
        return self._finish(False, f"dial_failed after {self.attempt} attempts: {error}"[:300])

    # -- responder (A) -----------------------------------------------------------

    def _responder_msg(self, msg: HolePunchMsg, now: float) -> list[Effect]:
        if msg.type is MsgType.CONNECT and self.phase in (Phase.AWAIT_CONNECT, Phase.DIALLING):
            if self.attempt >= self.config.max_attempts:
                return self._finish(False, "too_many_attempts")
            self.attempt += 1
            self._take_targets(msg.addrs)
            self.phase = Phase.AWAIT_SYNC
            return [
                SendMsg(HolePunchMsg(MsgType.CONNECT, self.own)),
                SetTimer(("deadline", self.attempt), now + self.config.exchange_timeout_s),
            ]
        if msg.type is MsgType.SYNC and self.phase is Phase.AWAIT_SYNC:
            if not self.targets and not self.quic:
                # Nothing to dial, but B may still reach us: wait for its dial.
                self.last_error = "no_usable_addrs"
            self.phase = Phase.DIALLING
            return [
                DialAt(self.targets, now, self.attempt, client=False, quic=self.quic),
                SetTimer(("deadline", self.attempt), now + self.config.dial_timeout_s),
            ]
        return self._finish(False, f"unexpected_message: {msg.type.name} in {self.phase.value}")

    def _take_targets(self, addrs: tuple[bytes, ...]) -> None:
        t = self.config.transports
        self.targets = tcp_targets(addrs) if "tcp" in t else ()
        self.quic = quic_targets(addrs)[: self.config.max_quic_targets] if "quic" in t else ()

    def _finish(self, ok: bool, reason: str, transport: str = "") -> list[Effect]:
        self.phase = Phase.DONE
        return [Emit(PunchFinished(ok, reason, self.attempt, self.rtt_s, transport))]
