"""`/colony/dialback/1.0.0` and the daemon's reachability service.

Wire (canonical CBOR request/response on the transport's request stream):

    request  {"addrs": [multiaddr, …] (≤ 8), "t_ms": sender unix ms}
    response {"observed": "/ip4/IP/tcp/PORT", "results": [{"addr", "ok", "error"}],
              "t_ms": server unix ms when the request arrived,
              "proc_ms": time the server spent dialling before it answered}

The server dials the *observed* IP of the requesting connection at the requested
TCP ports only (see `plan_dialback`), rate-limited per IP and overall
(`DialbackGuard`); a refusal (malformed request, limit reached, address unknown)
comes back as the transport's request refusal with a reason. The check itself is a
fresh TCP connection that must answer multistream-select's header
(`/multistream/1.0.0`): it proves a libp2p listener is reachable there, through
whatever NAT or firewall is in between, without reusing our existing connection.
It does not prove the listener's identity (no Noise handshake); the IP is the
requester's own, so only its own network could fake a success.

`ReachabilityService` drives `ReachabilityCore` (overlay/p2p/reachability.py)
with the real clock, feeding it inputs through `handle(input, now)`: asks connected
members, runs STUN probes against `[edge] stun`, puts the result into the node's
resource ad, and keeps what `colony doctor` shows (observed addresses, clock
offsets, last errors). It uses the network (`DialbackNetwork`), the membership's
own ad and the cores (`handle_now`), never the daemon.
"""

from __future__ import annotations

import random
import time
from dataclasses import replace
from typing import Protocol

import structlog
import trio

from dht import ReachabilityLearned
from gossip.events import UpdateAd
from overlay.core.effects import TimerFired
from overlay.core.errors import MalformedFrame, RemoteProtocolError
from overlay.core.ids import PeerId
from overlay.p2p.reachability import (
    PROTO_DIALBACK,
    TIMER,
    AskDialback,
    CandidatesChanged,
    CoreSnapshot,
    DialbackAnswered,
    DialbackFailed,
    DialbackGuard,
    Effect,
    IdentifyObserved,
    ProbeStun,
    ReachabilityConfig,
    ReachabilityCore,
    Status,
    StatusChanged,
    StunProbed,
    plan_dialback,
)
from overlay.runtime.context import Cores, Membership, Network
from overlay.runtime.edge import stun_probe
from overlay.runtime.jsontypes import JsonObject
from overlay.runtime.net.transport import Codec, PeerInfo, TransportError

log = structlog.get_logger("colony.reachability")

MSS_HEADER = b"\x13/multistream/1.0.0\n"
MAX_REQUEST_ADDRS = 8
MAX_ADDR_CHARS = 256
DIAL_TIMEOUT_S = 4.0
REQUEST_TIMEOUT_S = 15.0


def decode_request(obj: object) -> tuple[list[str], int]:
    if not isinstance(obj, dict):
        raise MalformedFrame("dial-back request must be a map")
    addrs, t_ms = obj.get("addrs"), obj.get("t_ms", 0)
    if (not isinstance(addrs, list) or len(addrs) > MAX_REQUEST_ADDRS
            or not all(isinstance(a, str) and len(a) <= MAX_ADDR_CHARS for a in addrs)):
        raise MalformedFrame(f"dial-back addrs must be ≤ {MAX_REQUEST_ADDRS} short strings")
    if type(t_ms) is not int:
        raise MalformedFrame("dial-back t_ms must be an integer")
    return addrs, t_ms


def decode_response(obj: object) -> tuple[str | None, list[JsonObject], int | None]:
    if not isinstance(obj, dict) or not isinstance(obj.get("results", []), list):
        raise MalformedFrame("dial-back response must be a map with a results list")
    observed = obj.get("observed")
    results = [r for r in obj.get("results", [])[:MAX_REQUEST_ADDRS]
               if isinstance(r, dict) and isinstance(r.get("ok"), bool)]
    t_ms = obj.get("t_ms")
    return (observed if isinstance(observed, str) and len(observed) <= MAX_ADDR_CHARS
            else None, results, t_ms if type(t_ms) is int else None)


def _multiaddr(ip: str, port: int) -> str:
    return f"/{'ip6' if ':' in ip else 'ip4'}/{ip}/tcp/{port}"


class DialbackNetwork(Network, Protocol):
    """`context.Network` plus what dial-back needs of the transport besides."""

    @property
    def listen_addrs(self) -> list[str]: ...

    def remote_addr(self, peer: PeerId) -> tuple[str, int] | None:
        """(ip, port) of `peer`'s end of our newest open TCP connection, if any."""
        ...

    async def identify(self, peer: PeerId, timeout: float = ...) -> PeerInfo: ...


async def check_listener(ip: str, port: int, timeout_s: float = DIAL_TIMEOUT_S) -> str:
    """"" when a libp2p listener answers at ip:port, else why not."""
    try:
        with trio.fail_after(timeout_s):
            stream = await trio.open_tcp_stream(ip, port)
            async with stream:
                await stream.send_all(MSS_HEADER)
                got = b""
                while len(got) < len(MSS_HEADER):
                    chunk = await stream.receive_some(64)
                    if not chunk:
                        break
                    got += chunk
    except trio.TooSlowError:
        return f"no answer within {timeout_s:.0f} s"
    except OSError as e:
        return e.strerror or str(e)
    if not got.startswith(MSS_HEADER):
        return "something answered, but not libp2p multistream-select"
    return ""


class ReachabilitySnapshot(CoreSnapshot):
    """What `colony doctor` shows under "reachability"."""

    stun_servers: list[str]
    stun: dict[str, object] | None
    stun_error: str
    clock_offsets_s: dict[str, float]
    clock_uncertainty_s: dict[str, float]
    errors: dict[str, str]
    served: int
    refused: int


class ReachabilityService:
    def __init__(
        self,
        network: DialbackNetwork,
        membership: Membership,
        cores: Cores,
        *,
        me: PeerId,
        stun_servers: list[str],
        config: ReachabilityConfig | None = None,
    ) -> None:
        self.network = network
        self.membership = membership
        self.cores = cores
        self.me = me
        # The same STUN servers WebRTC's ICE uses (`[edge] stun`, "stun:host:port").
        self.stun_servers = list(stun_servers)
        self.core = ReachabilityCore(config or ReachabilityConfig(), random.Random(),
                                     trio.current_time())
        self.guard = DialbackGuard()
        self.stun: stun_probe.StunResult | None = None
        self.errors: dict[str, str] = {}  # peer → why the last request got no answer
        self.served = 0
        self._wake = trio.Event()

    def register(self) -> None:
        self.network.set_handler(PROTO_DIALBACK, on_request=self._serve, codec=Codec.CBOR)

    # ------------------------------------------------------------ server

    async def _serve(self, peer: PeerId, obj: object) -> object:
        received = time.time()
        addrs, _ = decode_request(obj)  # MalformedFrame → refusal with the reason
        seen = self.network.remote_addr(peer)
        if seen is None:
            raise RemoteProtocolError("dial-back: cannot tell which address you connect from")
        ip, port = seen
        if not self.guard.allow(ip, trio.current_time()):
            raise RemoteProtocolError("dial-back: rate limit for your address; try later")
        targets = plan_dialback(ip, addrs, self.guard.config.max_dial_addrs)
        results: list[JsonObject] = [{} for _ in targets]

        async def one(i: int, tip: str, tport: int) -> None:
            err = await check_listener(tip, tport)
            results[i] = {"addr": _multiaddr(tip, tport), "ok": not err, "error": err}

        async with trio.open_nursery() as n:
            for i, (tip, tport) in enumerate(targets):
                n.start_soon(one, i, tip, tport)
        self.served += 1
        return {"observed": _multiaddr(ip, port), "results": results,
                "t_ms": int(received * 1000), "proc_ms": int((time.time() - received) * 1000)}

    # ------------------------------------------------------------ client

    async def run(self) -> None:
        async with trio.open_nursery() as n:
            self._nursery = n
            while True:
                now = trio.current_time()
                self.core.handle(CandidatesChanged(tuple(self._candidates())), now)
                self._apply(self.core.handle(TimerFired(TIMER), now), wake=False)
                with trio.move_on_at(self.core.next_deadline()):
                    await self._wake.wait()
                self._wake = trio.Event()

    def _candidates(self) -> list[PeerId]:
        return [p for p in self.network.connected_peers() if p != self.me]

    def _apply(self, effects: list[Effect], wake: bool = True) -> None:
        """Carry out effects; `wake`: an answer came in from outside the loop, so the
        loop re-reads the core's deadline (never from the loop itself: it would spin)."""
        for e in effects:
            if isinstance(e, AskDialback):
                self._nursery.start_soon(self._ask, e.peer)
            elif isinstance(e, ProbeStun):
                self._nursery.start_soon(self._probe_stun)
            elif isinstance(e, StatusChanged):
                log.info("reachability_changed", status=e.status.value, nat_type=e.nat_type)
                if e.status is not Status.UNKNOWN:  # DHT mode "auto" follows the verdict
                    self.cores.submit(ReachabilityLearned(e.status is Status.PUBLIC))
                self._nursery.start_soon(self._publish, e.ad_value)
        if wake:
            self._wake.set()

    async def _ask(self, peer: PeerId) -> None:
        await self._identify(peer)
        sent_wall, sent = time.time(), trio.current_time()
        try:
            raw = await self.network.request(
                peer, PROTO_DIALBACK,
                {"addrs": self.network.listen_addrs[:MAX_REQUEST_ADDRS],
                 "t_ms": int(sent_wall * 1000)},
                timeout=REQUEST_TIMEOUT_S)
            observed, results, t_ms = decode_response(raw)
            proc_ms = raw.get("proc_ms", 0) if isinstance(raw, dict) else 0
            proc_s = proc_ms / 1000 if type(proc_ms) is int and proc_ms >= 0 else 0.0
        except (TransportError, RemoteProtocolError) as e:
            self._error(peer, str(e)[:200])
            self._apply(self.core.handle(DialbackFailed(peer), trio.current_time()))
            return
        now = trio.current_time()
        self.errors.pop(str(peer), None)
        offset = None
        rtt = max(0.0, now - sent - proc_s)  # network time (and stream set-up) only
        if t_ms is not None:  # their clock on arrival vs ours half a round trip later
            offset = t_ms / 1000 - (sent_wall + rtt / 2)
        if not results:
            self._error(peer, "nothing to dial (no TCP listen address)")
            self._apply(self.core.handle(DialbackFailed(peer), now))
            return
        ok = any(r["ok"] for r in results)
        self._apply(self.core.handle(DialbackAnswered(peer, ok, observed, offset, rtt), now))

    def _error(self, peer: PeerId, why: str) -> None:
        self.errors.pop(str(peer), None)
        self.errors[str(peer)] = why
        while len(self.errors) > self.core.config.max_peers:  # oldest first out
            del self.errors[next(iter(self.errors))]

    async def _identify(self, peer: PeerId) -> None:
        """identify's observedAddr, when the transport reports it (native stack)."""
        try:
            info = await self.network.identify(peer, timeout=REQUEST_TIMEOUT_S)
        except (TransportError, RemoteProtocolError, trio.TooSlowError):
            return
        observed = getattr(info, "observed_addr", None)
        observed = observed if isinstance(observed, str) else None
        self.core.handle(IdentifyObserved(peer, observed), trio.current_time())

    async def _probe_stun(self) -> None:
        if not self.stun_servers:
            self._apply(self.core.handle(
                StunProbed("unknown", "no STUN servers configured ([edge] stun)"),
                trio.current_time()))
            return
        self.stun = await stun_probe.probe(self.stun_servers)
        self._apply(self.core.handle(StunProbed(self.stun.nat_type, self.stun.error),
                                     trio.current_time()))  # fmt: skip

    async def _publish(self, value: str) -> None:
        ad = self.membership.own_ad()
        if ad is not None and ad.reachability != value:
            # Atomic read-modify-write (no checkpoint), like the capsule ad refresh.
            self.cores.handle_now(UpdateAd(replace(ad, reachability=value)))

    # ------------------------------------------------------------ for the API

    def snapshot(self) -> ReachabilitySnapshot:
        clocks = self.core.clock_offsets()
        return {
            **self.core.snapshot(),
            "stun_servers": self.stun_servers,
            "stun": self.stun.as_dict() if self.stun else None,
            "stun_error": self.core.stun_error,
            "clock_offsets_s": {str(p): round(o, 4) for p, (o, _) in clocks.items()},
            "clock_uncertainty_s": {str(p): round(u, 4) for p, (_, u) in clocks.items()},
            "errors": dict(self.errors),
            "served": self.served,
            "refused": self.guard.refused,
        }
