"""`/colony/signal/1.0.0`: WebRTC offers and answers relayed through a member.

A NAT'd node keeps outbound connections to a few public members. A peer that wants
to reach it signs an offer and asks one of those members to forward it:

    dialer ──forward(offer)──► forwarder ──deliver(offer)──► target
    dialer ◄──── answer ────── forwarder ◄──── answer ────── target

Both are CBOR requests on the protocol (`{"op": "forward"|"deliver", "env": …}`), and
the answer is the response, so one round trip each way carries the whole exchange
(candidates are gathered before the SDP is sent; no trickle ICE).

A signal is an `Envelope` of kind `signal` (domain-separated Ed25519, DESIGN §3)
over `{type, src, dst, nonce, expires, sdp}`: signed by `src`, bound to both peer
ids, a 16-byte nonce and an absolute expiry. An answer carries the offer's nonce.

Rules (all in `SignalGuard`, pure: `now` is passed in; each refusal has a reason
string that the peer gets back as `refused: <reason>`):

| rule | reason |
|---|---|
| encoded envelope ≤ `max_signal_bytes` | `oversized` |
| well-formed envelope and body | `malformed` |
| signature verifies, signer == `src` | `bad_signature` |
| `src` is the stream's peer (forward) / `dst` is us (deliver) | `wrong_sender` / `not_for_me` |
| `src` is a colony member (forward and deliver) | `not_a_member` |
| `dst` is a member the forwarder knows | `unknown_peer` |
| the forwarder is connected to `dst` (it never dials for others) | `target_not_connected` |
| `now < expires ≤ now + max_ttl_s` | `expired` / `expiry_too_far` |
| nonce not seen before (kept until expiry; bounded) | `replayed` / `replay_cache_full` |
| ≤ `max_forwards_per_min` per sender | `rate_limited` |
| target: ≤ `MAX_PENDING_ANSWERS` answers awaiting their channel | `busy` |

Nothing here dials, so a forwarder cannot be used to reach non-members or to
amplify traffic; nothing crosses colonies because membership is checked at both
the forwarder and the target.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

import structlog

from overlay.core.crypto import Envelope, KeyPair
from overlay.core.errors import BadSignature, RemoteProtocolError, WireError
from overlay.core.ids import PeerId
from overlay.core.wire import cbor_encode

if TYPE_CHECKING:  # both imported lazily at run time (aiortc is heavy)
    import trio

    from overlay.runtime.edge.webrtc_bridge import (
        DataChannelStream,
        LazyEndpoint,
        WebRtcEndpoint,
    )
    from overlay.runtime.net.transport import Transport

log = structlog.get_logger("colony.signal")

PROTO_SIGNAL = "/colony/signal/1.0.0"
SIGNAL_KIND = "signal"
NONCE_BYTES = 16
DEFAULT_MAX_SIGNAL_BYTES = 16 * 1024
DEFAULT_MAX_TTL_S = 60.0
DEFAULT_REPLAY_CAPACITY = 4096
DEFAULT_MAX_FORWARDS_PER_MIN = 60
#: WebRTC answers awaiting their channel at once on a target; more are refused "busy".
MAX_PENDING_ANSWERS = 16
#: Senders tracked for rate limiting at most (oldest forgotten first).
MAX_RATE_SENDERS = 4096

OFFER = "offer"
ANSWER = "answer"


class SignalRefused(RemoteProtocolError):
    """A signal was refused; `reason` is one of the table's reason strings."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason if not detail else f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Signal:
    """An offer or answer, before signing / after verification."""

    type: str
    src: PeerId
    dst: PeerId
    nonce: bytes
    expires: float
    sdp: str

    def body(self) -> dict[str, object]:
        return {
            "type": self.type,
            "src": self.src.raw,
            "dst": self.dst.raw,
            "nonce": self.nonce,
            "expires": float(self.expires),
            "sdp": self.sdp,
        }

    @classmethod
    def from_body(cls, obj: object) -> Signal:
        """Validate a decoded body; raise SignalRefused("malformed") on any fault."""
        if not isinstance(obj, dict) or set(obj) != {
            "type",
            "src",
            "dst",
            "nonce",
            "expires",
            "sdp",
        }:
            raise SignalRefused("malformed", "body must be a map of type/src/dst/nonce/expires/sdp")
        kind, src, dst, nonce, expires, sdp = (
            obj["type"],
            obj["src"],
            obj["dst"],
            obj["nonce"],
            obj["expires"],
            obj["sdp"],
        )
        if kind not in (OFFER, ANSWER):
            raise SignalRefused("malformed", f"type must be offer or answer, not {kind!r}")
        if not isinstance(nonce, bytes) or len(nonce) != NONCE_BYTES:
            raise SignalRefused("malformed", f"nonce must be {NONCE_BYTES} bytes")
        if not isinstance(expires, float) or expires != expires:  # NaN
            raise SignalRefused("malformed", "expires must be a float")
        if not isinstance(sdp, str):
            raise SignalRefused("malformed", "sdp must be text")
        if not isinstance(src, bytes) or not isinstance(dst, bytes):
            raise SignalRefused("malformed", "src and dst must be peer id bytes")
        try:
            src_id, dst_id = PeerId.from_bytes(src), PeerId.from_bytes(dst)
        except WireError as e:
            raise SignalRefused("malformed", str(e)) from None
        return cls(kind, src_id, dst_id, nonce, expires, sdp)


def seal(keypair: KeyPair, signal: Signal) -> Envelope:
    if signal.src != keypair.peer_id:
        raise ValueError("a signal is signed by its source")
    return keypair.seal(SIGNAL_KIND, signal.body())


def encode(env: Envelope) -> list[object]:
    return env.to_wire()


def open_envelope(wire: object, max_signal_bytes: int) -> tuple[Envelope, Signal]:
    """Size check, decode, verify, decode the body; SignalRefused on any fault."""
    try:
        size = len(cbor_encode(wire))
    except Exception:
        raise SignalRefused("malformed", "not encodable") from None
    if size > max_signal_bytes:
        raise SignalRefused("oversized", f"{size} bytes > {max_signal_bytes}")
    try:
        env = Envelope.from_wire(wire)
        body = env.open(SIGNAL_KIND)
    except BadSignature as e:
        raise SignalRefused("bad_signature", str(e)) from None
    except WireError as e:
        raise SignalRefused("malformed", str(e)) from None
    sig = Signal.from_body(body)
    if env.signer_id != sig.src:
        raise SignalRefused("bad_signature", "signer is not the signal's source")
    return env, sig


@dataclass(frozen=True, slots=True)
class SignalConfig:
    max_signal_bytes: int = DEFAULT_MAX_SIGNAL_BYTES
    max_ttl_s: float = DEFAULT_MAX_TTL_S
    replay_capacity: int = DEFAULT_REPLAY_CAPACITY
    max_forwards_per_min: int = DEFAULT_MAX_FORWARDS_PER_MIN


class SignalGuard:
    """Every acceptance rule for signals (see the module table); pure, `now` injected."""

    def __init__(self, me: PeerId, config: SignalConfig | None = None) -> None:
        self.me = me
        self.config = config or SignalConfig()
        #: nonce → expiry, oldest first; entries leave when expired.
        self._seen: OrderedDict[bytes, float] = OrderedDict()
        #: sender → (window start, count) for the per-minute forward budget.
        self._rate: OrderedDict[PeerId, tuple[float, int]] = OrderedDict()
        self.refusals: dict[str, int] = {}

    # -- checks -------------------------------------------------------------

    def check_forward(
        self,
        sender: PeerId,
        wire: object,
        now: float,
        is_member: Callable[[PeerId], bool],
        is_connected: Callable[[PeerId], bool],
    ) -> Signal:
        """A `forward` request from `sender`: may we pass it to its target?"""
        self._prune(now)
        with self._counting():
            if not is_member(sender):
                raise SignalRefused("not_a_member", "forwarding is for colony members only")
            self._charge(sender, now)
            _, sig = open_envelope(wire, self.config.max_signal_bytes)
            if sig.type != OFFER:
                raise SignalRefused("malformed", "only offers are forwarded")
            if sig.src != sender:
                raise SignalRefused("wrong_sender", "the offer's source is not the sender")
            self._check_time(sig, now)
            if not is_member(sig.dst) or sig.dst == self.me:
                raise SignalRefused("unknown_peer", f"{sig.dst.short()} is not a member known here")
            if not is_connected(sig.dst):
                raise SignalRefused("target_not_connected", f"no connection to {sig.dst.short()}")
            self._check_nonce(sig, now)
            return sig

    def check_deliver(
        self, wire: object, now: float, is_member: Callable[[PeerId], bool]
    ) -> Signal:
        """A `deliver` request (an offer for us, via a forwarder)."""
        self._prune(now)
        with self._counting():
            _, sig = open_envelope(wire, self.config.max_signal_bytes)
            if sig.type != OFFER:
                raise SignalRefused("malformed", "only offers are delivered")
            if sig.dst != self.me:
                raise SignalRefused("not_for_me", f"offer is for {sig.dst.short()}")
            if not is_member(sig.src):
                raise SignalRefused("not_a_member", f"{sig.src.short()} is not a member")
            self._check_time(sig, now)
            self._check_nonce(sig, now)
            return sig

    def check_answer(self, offer: Signal, wire: object, now: float) -> Signal:
        """The answer to our `offer`: from its target, to us, same nonce."""
        with self._counting():
            _, sig = open_envelope(wire, self.config.max_signal_bytes)
            if sig.type != ANSWER or sig.src != offer.dst or sig.dst != offer.src:
                raise SignalRefused("wrong_sender", "answer does not match the offer's peers")
            if sig.nonce != offer.nonce:
                raise SignalRefused("replayed", "answer carries another nonce")
            self._check_time(sig, now)
            return sig

    # -- pieces -------------------------------------------------------------

    def _check_time(self, sig: Signal, now: float) -> None:
        if sig.expires <= now:
            raise SignalRefused("expired", f"expired {now - sig.expires:.1f} s ago")
        if sig.expires > now + self.config.max_ttl_s:
            raise SignalRefused(
                "expiry_too_far", f"expiry more than {self.config.max_ttl_s:.0f} s ahead"
            )

    def _prune(self, now: float) -> None:
        """Forget nonces whose signals have expired (they are refused as expired)."""
        while self._seen:
            nonce, until = next(iter(self._seen.items()))
            if until > now:
                break
            del self._seen[nonce]

    def _check_nonce(self, sig: Signal, now: float) -> None:
        # Keyed by (nonce, src) digest-free: a nonce is 16 random bytes.
        if sig.nonce in self._seen:
            raise SignalRefused("replayed", "nonce already seen")
        if len(self._seen) >= self.config.replay_capacity:
            raise SignalRefused("replay_cache_full", "too many signals in flight; retry later")
        self._seen[sig.nonce] = sig.expires
        # Keep insertion order ≈ expiry order: expiries are ≤ now + max_ttl_s.
        self._seen.move_to_end(sig.nonce)

    def _charge(self, sender: PeerId, now: float) -> None:
        start, count = self._rate.pop(sender, (now, 0))
        if now - start >= 60.0:
            start, count = now, 0
        self._rate[sender] = (start, count + 1)
        while len(self._rate) > MAX_RATE_SENDERS:
            self._rate.popitem(last=False)
        if count + 1 > self.config.max_forwards_per_min:
            raise SignalRefused(
                "rate_limited", f"more than {self.config.max_forwards_per_min} per minute"
            )

    def _counting(self) -> _RefusalCounter:
        return _RefusalCounter(self.refusals)

    @property
    def nonces_held(self) -> int:
        return len(self._seen)


class _RefusalCounter:
    """Counts refusals by reason (plain counters for metrics and `colony doctor`)."""

    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = counts

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        tp: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if isinstance(exc, SignalRefused):
            self.counts[exc.reason] = self.counts.get(exc.reason, 0) + 1


def make_offer(
    keypair: KeyPair, dst: PeerId, sdp: str, now: float, nonce: bytes, ttl_s: float
) -> tuple[Signal, Envelope]:
    sig = Signal(OFFER, keypair.peer_id, dst, nonce, float(now + ttl_s), sdp)
    return sig, seal(keypair, sig)


def make_answer(keypair: KeyPair, offer: Signal, sdp: str, now: float, ttl_s: float) -> Envelope:
    sig = Signal(ANSWER, keypair.peer_id, offer.src, offer.nonce, float(now + ttl_s), sdp)
    return seal(keypair, sig)


# ---------------------------------------------------------------- the trio service


class SignalService:
    """The protocol handler (forwarder and target roles) and the dialling side.

    `endpoint` is None when WebRTC is off on this node: it still forwards for
    others, and refuses offers for itself with `webrtc_disabled`.
    `on_inbound(stream, src)` attaches the libp2p stack to an answered channel.
    """

    def __init__(
        self,
        transport: Transport,
        keypair: KeyPair,
        endpoint: WebRtcEndpoint | LazyEndpoint | None,
        is_member: Callable[[PeerId], bool],
        nursery: trio.Nursery,
        on_inbound: Callable[[DataChannelStream, PeerId], Awaitable[None]],
        config: SignalConfig | None = None,
        ttl_s: float = 30.0,
        open_timeout_s: float = 8.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.t = transport
        self.keypair = keypair
        self.endpoint = endpoint
        self.is_member = is_member
        self.nursery = nursery
        self.on_inbound = on_inbound
        self.guard = SignalGuard(keypair.peer_id, config)
        self.ttl_s = ttl_s
        self.open_timeout_s = open_timeout_s
        # Signals cross machines, so their expiry is wall-clock time.
        self.clock = clock or time.time
        self.forwarded = 0
        self.answered = 0
        #: Answers whose channel has not opened yet (≤ MAX_PENDING_ANSWERS).
        self.pending_answers = 0

    def register(self) -> None:
        self.t.set_handler(PROTO_SIGNAL, on_request=self._serve)

    async def _serve(self, peer: PeerId, obj: object) -> object:
        if (
            not isinstance(obj, dict)
            or obj.get("op") not in ("forward", "deliver")
            or "env" not in obj
        ):
            self.guard.refusals["malformed"] = self.guard.refusals.get("malformed", 0) + 1
            raise SignalRefused("malformed", "request must be {op: forward|deliver, env}")
        if obj["op"] == "forward":
            return await self._forward(peer, obj["env"])
        return await self._deliver(peer, obj["env"])

    async def _forward(self, sender: PeerId, wire: object) -> object:
        from overlay.runtime.net.transport import RemoteError, TransportError

        sig = self.guard.check_forward(
            sender, wire, self.clock(), self.is_member, self.t.is_connected
        )
        try:
            resp = await self.t.request(
                sig.dst, PROTO_SIGNAL, {"op": "deliver", "env": wire}, timeout=self.open_timeout_s
            )
        except RemoteError as e:
            raise SignalRefused("target_refused", str(e)) from None
        except TransportError as e:
            raise SignalRefused("target_unreachable", str(e)) from None
        self.forwarded += 1
        return resp

    async def _deliver(self, forwarder: PeerId, wire: object) -> dict[str, object]:
        if self.endpoint is None:
            raise SignalRefused("webrtc_disabled", "this node does not accept WebRTC")
        sig = self.guard.check_deliver(wire, self.clock(), self.is_member)
        if self.pending_answers >= MAX_PENDING_ANSWERS:
            # Each answer holds a peer connection (sockets, ICE, DTLS) until it opens
            # or times out: a member spamming offers gets refused, not our memory.
            self.guard.refusals["busy"] = self.guard.refusals.get("busy", 0) + 1
            raise SignalRefused("busy", f"{MAX_PENDING_ANSWERS} WebRTC answers pending")
        from overlay.runtime.edge.webrtc_bridge import WebRtcError

        self.pending_answers += 1
        try:
            answer_sdp, session = await self.endpoint.answer(sig.sdp)
        except WebRtcError as e:
            self.pending_answers -= 1
            self.guard.refusals["bad_sdp"] = self.guard.refusals.get("bad_sdp", 0) + 1
            raise SignalRefused("bad_sdp", str(e)) from None
        except BaseException:
            self.pending_answers -= 1
            raise
        env = make_answer(self.keypair, sig, answer_sdp, self.clock(), self.ttl_s)

        async def accept() -> None:
            try:
                stream = await session.wait_open(self.open_timeout_s)
            except Exception as e:
                log.info("webrtc_accept_failed", peer=str(sig.src), error=str(e))
                return
            finally:
                self.pending_answers -= 1
            await self.on_inbound(stream, sig.src)

        self.nursery.start_soon(accept)
        self.answered += 1
        return {"env": env.to_wire()}

    async def dial(self, peer: PeerId, via: PeerId) -> DataChannelStream:
        """Offer through `via`, apply the answer, return the open DataChannelStream.

        Raises SignalRefused (the forwarder's or target's reason), TransportError, or
        WebRtcError; the half-made session is closed on every failure.
        """
        from overlay.runtime.net.transport import RemoteError

        if self.endpoint is None:
            raise SignalRefused("webrtc_disabled", "WebRTC is off on this node")
        offer_sdp, session = await self.endpoint.offer()
        try:
            sig, env = make_offer(
                self.keypair, peer, offer_sdp, self.clock(), os.urandom(NONCE_BYTES), self.ttl_s
            )
            try:
                resp = await self.t.request(
                    via,
                    PROTO_SIGNAL,
                    {"op": "forward", "env": env.to_wire()},
                    # the forwarder waits up to open_timeout_s for the target
                    timeout=self.open_timeout_s * 1.5,
                )
            except RemoteError as e:
                raise SignalRefused(_reason_of(str(e)), str(e)) from None
            if not isinstance(resp, dict) or "env" not in resp:
                raise SignalRefused("malformed", "answer must be {env}")
            ans = self.guard.check_answer(sig, resp["env"], self.clock())
            await self.endpoint.complete(session, ans.sdp)
        except BaseException:
            await session.close()
            raise
        return await session.wait_open(self.open_timeout_s)


def _reason_of(remote_error: str) -> str:
    """`refused: target_not_connected: no connection…` → `target_not_connected`."""
    text = remote_error.removeprefix("refused: ")
    return text.split(":", 1)[0].strip() or "refused"
