"""How the daemon reaches a peer: direct TCP → hole punch → WebRTC → relay.

`Dialer.connect(peer)` tries, in `[edge] dial_order` order:

* `direct`: the transport's own dial (TCP to the peer's known addresses);
* `holepunch`: a relay circuit (as `relay` below) that the peer, on the circuit's
  inbound side, upgrades to a direct TCP connection with DCUtR
  (overlay.runtime.edge.holepunch) in the background; the path is `relayed` until
  the punch succeeds, then `direct` with detail "holepunch" (or stays `relayed`
  with the punch's failure reason). Connected this way, WebRTC is not tried;
* `webrtc`: an offer through a member connected to both (`/colony/signal/1.0.0`,
  overlay.runtime.edge.signalling), an aiortc data channel with ICE (host, STUN-reflexive and
  TURN candidates), and the libp2p stack attached over it;
* `relay`: a circuit through a member that relays and where the peer holds a
  reservation (`/colony/relay/1.0.0`, overlay.runtime.edge.relay; a relay that does
  not speak it is asked in standard circuit relay v2, overlay.runtime.edge.relay_v2),
  the libp2p stack attached over it (end-to-end Noise).

Once attached, the peer is an ordinary connection of the transport: gossip, DHT,
Bitswap and capsules run over it without knowing. The dialer records for each peer
how it is connected (`direct`, `webrtc` with the ICE candidate pair, or `relayed`
with the relay) — `status()` is what `colony doctor` shows as "direct vs relayed
per peer" and "relays in use".

Intermediaries ("via" peers) are tried in order: configured relays/forwarders,
then other connected peers, at most `max_via` of them per method, so one dial
costs a bounded number of requests. Failed peers back off (1 s doubling to 60 s).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NotRequired, TypedDict

import structlog
import trio

from overlay.core.errors import ColonyError, ConfigError, WireError
from overlay.core.ids import PeerId
from overlay.runtime.edge.holepunch import HolePunchService, HolePunchStatus, PunchRecord
from overlay.runtime.edge.relay import RelayRefused, RelayService, RelayStatus
from overlay.runtime.edge.relay_v2 import RelayV2Service, RelayV2Status
from overlay.runtime.edge.signalling import SignalRefused, SignalService
from overlay.runtime.net.stream_attach import AttachError, attach_stream
from overlay.runtime.net.transport import DialError, Transport, TransportError
from overlay.runtime.process.config import Config

if TYPE_CHECKING:
    from overlay.runtime.edge.webrtc_bridge import DataChannelStream

log = structlog.get_logger("colony.dialer")

DIRECT = "direct"
WEBRTC = "webrtc"
RELAYED = "relayed"
METHODS = ("direct", "holepunch", "webrtc", "relay")
BACKOFF_MIN_S = 1.0
BACKOFF_MAX_S = 60.0
#: Peers whose failed dial (back-off, last error) we remember at most.
MAX_FAILED_PEERS = 4096
#: Longest wait for a direct TCP dial when WebRTC or a relay could follow.
DIRECT_TIMEOUT_S = 3.0
#: Reservations a node that reachability found NAT'd keeps when none are configured.
AUTO_RESERVATIONS = 2
RESERVATION_CHECK_S = 30.0


class DialFailed(DialError):
    """No method reached the peer; the message lists each method's reason."""


def plan(order: tuple[str, ...], theirs: str, ours: str, have_turn: bool) -> list[str]:
    """Which methods to try for a peer, from both sides' resource-ad reachability
    ("public", "nat", "nat/<mapping>", "" = unknown).

    * A public peer is dialled directly only (if that fails, it is down).
    * A NAT'd peer cannot be dialled directly (its dial-back checks failed).
    * Two NATs of which one maps symmetrically defeat ICE hole punching (the
      symmetric side's port toward the other is unknowable from STUN), so WebRTC is
      skipped unless TURN is configured (then ICE can use relayed candidates).
    Unknown reachability keeps the configured order.
    """
    out = list(order)
    if theirs == "public" and "direct" in out:
        # Public: members dialled it back. If TCP fails now it is down, and a
        # WebRTC offer (which would start aiortc, ~50 MiB) or a relay cannot help.
        return ["direct"]
    if theirs.startswith("nat") and "direct" in out and len(out) > 1:
        out.remove("direct")
    both_nat = theirs.startswith("nat") and ours.startswith("nat")
    symmetric = theirs.endswith("/symmetric") or ours.endswith("/symmetric")
    if both_nat and symmetric and not have_turn and "webrtc" in out and len(out) > 1:
        out.remove("webrtc")
    return out


class PathJson(TypedDict):
    kind: str
    via: str | None
    detail: str
    since: float
    #: ip:port of a direct connection, added by `colony doctor`.
    remote: NotRequired[str | None]


class DialCounts(TypedDict):
    attempts: dict[str, int]
    successes: dict[str, int]
    failures: dict[str, int]


class DialerStatus(TypedDict):
    """`Dialer.status()`: what `colony doctor` shows under "connections"."""

    peers: dict[str, PathJson]
    counts: dict[str, int]
    relays_in_use: list[str]
    relay: RelayStatus
    relay_v2: RelayV2Status | None
    dials: DialCounts
    signal_refusals: dict[str, int]
    holepunch: HolePunchStatus | None


@dataclass(frozen=True, slots=True)
class PeerPath:
    """How we are connected to one peer."""

    kind: str  # direct | webrtc | relayed
    via: PeerId | None = None  # the signalling forwarder or the relay
    detail: str = ""  # ICE candidate pair for webrtc, e.g. "srflx->host"
    since: float = 0.0  # wall clock

    def to_json(self) -> PathJson:
        return {
            "kind": self.kind,
            "via": str(self.via) if self.via else None,
            "detail": self.detail,
            "since": round(self.since, 3),
        }


@dataclass(frozen=True, slots=True)
class DialConfig:
    order: tuple[str, ...] = METHODS
    #: Peers tried first as signalling forwarders and relays (e.g. bootstrap members).
    preferred_via: tuple[PeerId, ...] = ()
    max_via: int = 3
    #: Relay reservations a NAT'd node keeps (0: none, the node is reachable).
    keep_reservations: int = 0
    #: Peers to reserve at (in order); empty: any connected peer that agrees.
    relays: tuple[PeerId, ...] = ()

    @classmethod
    def from_config(cls, cfg: Config) -> DialConfig:
        edge = cfg.get("edge", {})
        order = tuple(edge.get("dial_order", METHODS))
        bad = [m for m in order if m not in METHODS]
        if bad:
            raise ConfigError(f"[edge] dial_order: unknown method(s) {bad}; known: {list(METHODS)}")
        relays = []
        for text in edge.get("relays", ()):
            try:
                relays.append(PeerId.from_base58(text))
            except (ColonyError, ValueError) as e:
                raise ConfigError(f"[edge] relays: {text!r} is not a peer id ({e})") from None
        return cls(
            order=order,
            preferred_via=tuple(relays),
            keep_reservations=int(edge.get("keep_reservations", 0)),
            relays=tuple(relays),
        )


@dataclass
class DialStats:
    attempts: dict[str, int] = field(default_factory=dict)
    successes: dict[str, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)


class Dialer:
    def __init__(
        self,
        transport: Transport,
        *,
        signal: SignalService | None,
        relay: RelayService,
        config: DialConfig | None = None,
        nursery: trio.Nursery | None = None,
        is_nat: Callable[[], bool] | None = None,
        reachability_of: Callable[[PeerId | None], str] | None = None,
    ) -> None:
        self.t = transport
        #: Resource-ad reachability of a peer (None: ourselves); "" when unknown.
        self.reachability_of = reachability_of or (lambda p: "")
        #: True when reachability found us behind a NAT: then we keep reservations.
        self.is_nat = is_nat or (lambda: False)
        self.signal = signal
        self.relay = relay
        #: DCUtR over relayed connections (set by open_edge; None: no punching).
        self.holepunch: HolePunchService | None = None
        #: Standard circuit relay v2 (set by open_edge), tried where ours is not spoken.
        self.relay_v2: RelayV2Service | None = None
        self.config = config or DialConfig()
        self.nursery = nursery
        self.paths: dict[PeerId, PeerPath] = {}
        self.stats = DialStats()
        self._inflight: dict[PeerId, trio.Event] = {}
        #: peer → (until, delay, the transport's addresses of it when the dial failed)
        self._backoff: dict[PeerId, tuple[float, float, tuple[str, ...]]] = {}
        self.last_errors: dict[PeerId, str] = {}

    # ------------------------------------------------------------ dialling

    async def connect(self, peer: PeerId) -> PeerPath:
        """Reach `peer` by the first method that works; DialFailed lists every reason.

        Installed as the transport's `dial_hook`, so every dial of the daemon (a
        gossip frame, a Bitswap want, a DHT request) comes through here and waits
        for WebRTC or a relay when the peer is NAT'd, instead of failing.
        """
        if self.t.is_connected(peer):
            return self.paths.get(peer) or self._record(peer, PeerPath(DIRECT, since=time.time()))
        running = self._inflight.get(peer)
        if running is None:
            wait_s = self._backing_off(peer)
            if wait_s > 0:
                raise DialFailed(
                    f"backing off {peer.short()} for {wait_s:.1f} s more: "
                    + self.last_errors.get(peer, "")
                )
            running = self._inflight[peer] = trio.Event()
            if self.nursery is not None:
                # The dial runs in our own task: a caller that gives up (the
                # transport's stream-open timeout) does not cut the chain short, and
                # the next caller finds the connection made.
                self.nursery.start_soon(self._dial, peer, running)
            else:
                await self._dial(peer, running)
        await running.wait()
        if self.t.is_connected(peer) and peer in self.paths:
            return self.paths[peer]
        if self.t.is_connected(peer):
            return self._record(peer, PeerPath(DIRECT, since=time.time()))
        raise DialFailed(
            f"could not reach {peer.short()}: {self.last_errors.get(peer, 'dial failed')}"
        )

    async def _dial(self, peer: PeerId, done: trio.Event) -> None:
        errors: list[str] = []
        tried = self._addrs_of(peer)  # any address learned from now on lifts the back-off
        methods = plan(
            self.config.order,
            self.reachability_of(peer),
            self.reachability_of(None),
            bool(
                self.signal
                and self.signal.endpoint
                and getattr(self.signal.endpoint, "ice", None)
                and self.signal.endpoint.ice.turn
            ),
        )
        if not any(p != peer for p in self.t.connected_peers()):
            methods = ["direct"]  # alone (bootstrapping): nobody to signal or relay through
        elif (
            "direct" in methods
            and not self.t.known_addrs(peer)
            and not self.reachability_of(peer)
        ):
            # Unknown reachability and no address yet: gossip named the peer a moment
            # before its addresses and ad arrived. That is no evidence of a NAT, and a
            # WebRTC offer would start aiortc (+34 MiB) for nothing; the next dial,
            # once the ad says "nat", takes the WebRTC/relay path.
            methods = ["direct"]
        try:
            for method in methods:
                if self.t.is_connected(peer):
                    # The peer reached us meanwhile (both sides dial at once when each
                    # has something to send): use that connection, make no second one.
                    log.info("peer_reached_us_first", peer=str(peer), method_skipped=method)
                    return
                self.stats.attempts[method] = self.stats.attempts.get(method, 0) + 1
                started = time.monotonic()
                try:
                    path = await getattr(self, f"_via_{method}")(peer)
                except (Exception, trio.TooSlowError) as e:
                    self.stats.failures[method] = self.stats.failures.get(method, 0) + 1
                    errors.append(f"{method}: {type(e).__name__}: {e}"[:300])
                    log.info(
                        "dial_method_failed",
                        peer=str(peer),
                        method=method,
                        seconds=round(time.monotonic() - started, 2),
                        error=errors[-1],
                    )
                    continue
                self.stats.successes[method] = self.stats.successes.get(method, 0) + 1
                self._backoff.pop(peer, None)
                self.last_errors.pop(peer, None)
                log.info("peer_reached", peer=str(peer), **path.to_json())
                self._record(peer, path)
                return
            self.last_errors[peer] = "; ".join(errors) or "no dial method configured"
            _, last, _ = self._backoff.get(peer, (0.0, 0.0, ()))
            delay = min(max(last * 2, BACKOFF_MIN_S), BACKOFF_MAX_S)
            self._backoff[peer] = (time.monotonic() + delay, delay, tried)
            for table in (self._backoff, self.last_errors):  # bounded: oldest go first
                while len(table) > MAX_FAILED_PEERS:
                    del table[next(iter(table))]
            log.info(
                "peer_unreachable",
                peer=str(peer),
                error=self.last_errors[peer][:500],
                retry_s=delay,
            )
        finally:
            self._inflight.pop(peer, None)
            done.set()

    def ensure_soon(self, peer: PeerId) -> None:
        """Background dial after a failed send (deduplicated, with back-off)."""
        if self.nursery is None or peer in self._inflight or self.t.is_connected(peer):
            return
        if self._backing_off(peer) <= 0:
            self.nursery.start_soon(self._ensure, peer)

    def _addrs_of(self, peer: PeerId) -> tuple[str, ...]:
        return tuple(self.t.known_addrs(peer))

    def _backing_off(self, peer: PeerId) -> float:
        """Seconds `peer`'s back-off has left; 0 once the transport knows an address the
        failed dial did not (as the transport's own back-off: a peer first named
        without addresses, e.g. by a DHT answer, stays reachable once they arrive)."""
        until, _, tried = self._backoff.get(peer, (0.0, 0.0, ()))
        return until - time.monotonic() if self._addrs_of(peer) == tried else 0.0

    async def _ensure(self, peer: PeerId) -> None:
        with contextlib.suppress(DialFailed):
            await self.connect(peer)

    async def _via_direct(self, peer: PeerId) -> PeerPath:
        direct = getattr(self.t, "dial_direct", None)  # not t.connect: that calls us
        # Time-boxed when other methods follow: a TCP connect to a reachable peer takes
        # well under a second (3 s covers a lost SYN), while a dial into someone's NAT
        # (a private address, packets dropped) would wait out the full dial timeout.
        limit = DIRECT_TIMEOUT_S if len(self.config.order) > 1 else math.inf
        try:
            with trio.fail_after(limit):
                await (direct(peer) if direct is not None else self.t.connect(peer))
        except trio.TooSlowError:
            raise DialFailed(f"no TCP connection within {limit:.0f} s") from None
        return PeerPath(DIRECT, since=time.time())

    async def _via_webrtc(self, peer: PeerId) -> PeerPath:
        if self.signal is None or self.signal.endpoint is None:
            raise DialFailed("WebRTC is off")
        reasons = []
        for via in self._via_candidates(peer):
            try:
                stream = await self.signal.dial(peer, via)
            except SignalRefused as e:
                reasons.append(f"{via.short()}: {e}")
                continue
            await attach_stream(self.t, stream, initiator=True, peer=peer)
            return PeerPath(WEBRTC, via=via, detail=stream.path, since=time.time())
        raise DialFailed(
            "no forwarder passed the offer: " + ("; ".join(reasons) or "none connected")
        )

    async def _via_holepunch(self, peer: PeerId) -> PeerPath:
        if self.holepunch is None or not self.holepunch.enabled:
            raise DialFailed("hole punching is off (or needs the native stack)")
        path = await self._via_relay(peer)  # the peer punches from the inbound side
        return PeerPath(RELAYED, via=path.via, detail="holepunch pending", since=path.since)

    def punch_result(self, peer: PeerId, relay: PeerId | None, rec: PunchRecord) -> None:
        """HolePunchService's outcome: how `peer` is reached now (for `colony doctor`)."""
        old = self.paths.get(peer)
        via = relay or (old.via if old else None)
        if rec.ok:
            rtt = f", relay rtt {rec.rtt_s * 1000:.0f} ms" if rec.rtt_s is not None else ""
            over = f"{rec.transport}, " if rec.transport else ""
            detail = f"holepunch ({rec.role}, {over}{rec.attempts} attempt(s){rtt})"
            self._record(peer, PeerPath(DIRECT, via=via, detail=detail, since=time.time()))
        elif old is not None and (old.kind == RELAYED or old.detail.startswith("holepunch")):
            detail = f"holepunch failed: {rec.reason}"[:300]
            sym = [who for who, r in (("ours", self.reachability_of(None)),
                                      ("theirs", self.reachability_of(peer)))
                   if r.endswith("/symmetric")]
            if sym:  # the likely why, from the STUN mapping probes
                detail = (f"{' and '.join(sym)} NAT is symmetric: a new public port per "
                          f"connection, so the punched address cannot be predicted; "
                          f"{detail}")[:400]
            self._record(peer, PeerPath(RELAYED, via=via, detail=detail, since=time.time()))

    async def _via_relay(self, peer: PeerId) -> PeerPath:
        reasons = []
        for via in self._via_candidates(peer):
            try:
                circuit = await self._circuit(via, peer)
            except RelayRefused as e:
                reasons.append(f"{via.short()}: {e}")
                continue
            await attach_stream(self.t, circuit, initiator=True, peer=peer, relayed=True)
            return PeerPath(RELAYED, via=via, since=time.time())
        raise DialFailed("no relay connected us: " + ("; ".join(reasons) or "none connected"))

    async def _circuit(self, via: PeerId, peer: PeerId, v2_first: bool = False) -> trio.abc.Stream:
        """A circuit to `peer` through `via`: in our protocol, and where `via` does not
        speak it (a js-libp2p, go-libp2p or rust-libp2p relay) in circuit relay v2.
        RelayRefused with both reasons when neither worked."""
        ways: list[tuple[str, Callable[[PeerId, PeerId], Awaitable[trio.abc.Stream]]]] = [
            ("colony", self.relay.connect)
        ]
        if self.relay_v2 is not None:
            ways.insert(0 if v2_first else 1, ("v2", self.relay_v2.connect))
        reasons = []
        for name, connect in ways:
            try:
                return await connect(via, peer)
            except (RelayRefused, TransportError, WireError, trio.TooSlowError) as e:
                # Even when the relay speaks ours and said no, v2 may say yes: ours
                # admits members only, v2 any peer with `serve_non_members`.
                reasons.append(f"{name}: {e}"[:200])
        raise RelayRefused("relay_failed", "; ".join(reasons))

    async def connect_circuit(self, addr: str) -> PeerId:
        """Dial `…/p2p/<relay>/p2p-circuit/p2p/<peer>` (what libp2p nodes announce when
        they hold a reservation): reach the relay (dialling its address if given), ask
        it in circuit relay v2 (then ours), attach the libp2p stack over the circuit."""
        head, sep, tail = addr.partition("/p2p-circuit")
        if not sep or not tail.startswith("/p2p/") or "/p2p/" not in head:
            raise DialFailed(f"{addr!r} is not …/p2p/<relay>/p2p-circuit/p2p/<peer>")
        try:
            peer = PeerId.from_base58(tail[len("/p2p/"):])
            relay = PeerId.from_base58(head.rsplit("/p2p/", 1)[1])
        except (ColonyError, ValueError) as e:
            raise DialFailed(f"{addr!r}: {e}") from None
        if self.t.is_connected(peer):
            return peer
        if not self.t.is_connected(relay):
            await self.t.connect(head if head.startswith("/ip") or head.startswith("/dns")
                                 else relay)
        try:
            circuit = await self._circuit(relay, peer, v2_first=True)
        except RelayRefused as e:
            raise DialFailed(f"through {relay.short()}: {e}") from None
        await attach_stream(self.t, circuit, initiator=True, peer=peer, relayed=True)
        self._record(peer, PeerPath(RELAYED, via=relay, since=time.time()))
        return peer

    def _via_candidates(self, peer: PeerId) -> list[PeerId]:
        out: list[PeerId] = []
        connected = [
            p
            for p in self.t.connected_peers()
            if p not in self.paths or self.paths[p].kind == DIRECT
        ]
        for p in [*self.config.preferred_via, *sorted(connected, key=lambda p: p.raw)]:
            if p != peer and p not in out and self.t.is_connected(p):
                out.append(p)
        return out[: self.config.max_via]

    # ------------------------------------------------------------ inbound

    async def accept_webrtc(self, stream: DataChannelStream, src: PeerId) -> None:
        """SignalService hands us an answered, open channel from `src`."""
        await self._accept(stream, src, PeerPath(WEBRTC, detail=stream.path, since=time.time()))

    async def accept_circuit(self, relay: PeerId, src: PeerId, stream: trio.abc.Stream) -> None:
        """RelayService hands us a circuit from `src` through `relay`; we are the
        inbound side, so we start the DCUtR upgrade (the spec's B)."""
        await self._accept(
            stream, src, PeerPath(RELAYED, via=relay, since=time.time()), relayed=True
        )
        hp = self.holepunch
        if hp is not None and hp.enabled and self.nursery is not None and src in self.paths:
            self.nursery.start_soon(hp.initiate, src, relay)

    async def _accept(
        self, stream: trio.abc.Stream, src: PeerId, path: PeerPath, relayed: bool = False
    ) -> None:
        try:
            remote = await attach_stream(self.t, stream, initiator=False, relayed=relayed)
        except AttachError as e:
            log.info("inbound_attach_failed", peer=str(src), kind=path.kind, error=str(e)[:300])
            return
        if remote != src:
            # Noise proved another key than the one that signed the offer: drop it.
            log.warning("inbound_peer_mismatch", expected=str(src), got=str(remote))
            await self.t.disconnect(remote, "peer id does not match the offer")
            return
        log.info("peer_accepted", peer=str(src), **path.to_json())
        self._record(src, path)

    # ------------------------------------------------------------ reservations

    def reservations_wanted(self) -> int:
        """`[edge] keep_reservations`, or 2 when reachability says we are NAT'd."""
        return self.config.keep_reservations or (AUTO_RESERVATIONS if self.is_nat() else 0)

    async def keep_reservations(self, candidates: Callable[[], Iterable[PeerId]]) -> None:
        """Hold the wanted relay reservations: renew each at half its ttl, look for
        more relays every RESERVATION_CHECK_S (every 5 s while none is held)."""
        ttl_of: dict[PeerId, float] = {}
        while True:
            want = self.reservations_wanted()
            now = time.time()
            held = [
                r
                for r, until in self.relay.reservations.items()
                if until - now > ttl_of.get(r, 0.0) / 2
            ]
            tried: set[PeerId] = set(held)
            for relay in [*self.config.relays, *candidates()]:
                if len(held) >= want or relay in tried:
                    continue
                tried.add(relay)
                try:
                    ttl_of[relay] = await self._reserve(relay)
                except (Exception, trio.TooSlowError) as e:
                    self.relay.reservations.pop(relay, None)
                    log.debug("relay_reserve_failed", relay=str(relay), error=str(e)[:200])
                    continue
                held.append(relay)
            # Sleep until the first renewal is due, at most RESERVATION_CHECK_S.
            now = time.time()
            renew = [
                self.relay.reservations[r] - ttl_of.get(r, 0.0) / 2 - now
                for r in held
                if r in self.relay.reservations
            ]
            next_s = min([RESERVATION_CHECK_S, *renew])
            if want > 0 and not held:
                next_s = min(next_s, 5.0)  # no relay yet: look again soon
            elif want == 0:
                next_s = min(next_s, 5.0)  # reachability may find us NAT'd any moment
            await trio.sleep(max(1.0, next_s))

    async def _reserve(self, relay: PeerId) -> float:
        """Reserve at `relay` in our protocol or, where it is not spoken, in circuit
        relay v2; return the ttl. Both kinds are kept in `relay.reservations`."""
        try:
            return await self.relay.reserve(relay)
        except (TransportError, WireError, trio.TooSlowError):
            if self.relay_v2 is None:
                raise
        return await self.relay_v2.reserve(relay)

    # ------------------------------------------------------------ bookkeeping

    def _record(self, peer: PeerId, path: PeerPath) -> PeerPath:
        old = self.paths.get(peer)
        host = self.t.native_host()
        if (path.kind == RELAYED and old is not None and old.kind == DIRECT
                and old.detail.startswith("holepunch") and host is not None
                and host.punched_connection(peer) is not None):
            # A circuit of ours that completed after the punch (both sides dialled):
            # the punched path stands (the punch retires circuits after its grace).
            return old
        self.paths[peer] = path
        return path

    def forget(self, peer: PeerId) -> None:
        """The transport reported the peer disconnected."""
        self.paths.pop(peer, None)

    def status(self) -> DialerStatus:
        """For `colony doctor` and /v1 stats: how each connected peer is reached,
        which relays carry our circuits or hold our reservations, dial counters."""
        peers: dict[str, PathJson] = {}
        for p in self.t.connected_peers():
            path = self.paths.get(p) or PeerPath(DIRECT)
            peers[str(p)] = path.to_json()
        relays_in_use = sorted(
            {str(p.via) for p in self.paths.values() if p.kind == RELAYED and p.via}
            | {str(r) for r in self.relay.reservations}
        )
        counts = {DIRECT: 0, WEBRTC: 0, RELAYED: 0}
        for info in peers.values():
            counts[info["kind"]] = counts.get(info["kind"], 0) + 1
        return {
            "peers": peers,
            "counts": counts,
            "relays_in_use": relays_in_use,
            "relay": self.relay.status(),
            "relay_v2": self.relay_v2.status() if self.relay_v2 else None,
            "dials": {
                "attempts": dict(self.stats.attempts),
                "successes": dict(self.stats.successes),
                "failures": dict(self.stats.failures),
            },
            "signal_refusals": dict(self.signal.guard.refusals) if self.signal else {},
            "holepunch": self.holepunch.status() if self.holepunch else None,
        }
