"""`/colony/dialback/1.0.0` and the daemon's reachability service (issue 10).

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
with the real clock: asks connected members, runs STUN probes against
`[edge] stun`, puts the result into the node's resource ad, and keeps
what `colony doctor` shows (observed addresses, clock offsets, last errors).
"""

from __future__ import annotations

import random
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import structlog
import trio

from gossip.events import UpdateAd
from overlay.core.errors import MalformedFrame, RemoteProtocolError
from overlay.core.ids import PeerId
from overlay.p2p.reachability import (
    PROTO_DIALBACK,
    AskDialback,
    DialbackGuard,
    Effect,
    ProbeStun,
    ReachabilityConfig,
    ReachabilityCore,
    StatusChanged,
    plan_dialback,
)
from overlay.runtime.edge import stun_probe

if TYPE_CHECKING:
    from overlay.runtime.daemon import Daemon

log = structlog.get_logger("colony.reachability")

MSS_HEADER = b"\x13/multistream/1.0.0\n"
MAX_REQUEST_ADDRS = 8
MAX_ADDR_CHARS = 256
DIAL_TIMEOUT_S = 4.0
REQUEST_TIMEOUT_S = 15.0


def decode_request(obj: Any) -> tuple[list[str], int]:
    if not isinstance(obj, dict):
        raise MalformedFrame("dial-back request must be a map")
    addrs, t_ms = obj.get("addrs"), obj.get("t_ms", 0)
    if (not isinstance(addrs, list) or len(addrs) > MAX_REQUEST_ADDRS
            or not all(isinstance(a, str) and len(a) <= MAX_ADDR_CHARS for a in addrs)):
        raise MalformedFrame(f"dial-back addrs must be ≤ {MAX_REQUEST_ADDRS} short strings")
    if type(t_ms) is not int:
        raise MalformedFrame("dial-back t_ms must be an integer")
    return addrs, t_ms


def decode_response(obj: Any) -> tuple[str | None, list[dict[str, Any]], int | None]:
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


def observed_remote(t: Any, peer: PeerId) -> tuple[str, int] | None:
    """(ip, port) of `peer`'s end of our live connection: where we observe it.

    Asks the transport (`remote_addr(peer)`) when it offers that; otherwise reads it
    from the backend's connection (native stack: `host.connection(peer).remote_addr`,
    a multiaddr; py-libp2p: the swarm connection's `get_remote_address()`).
    """
    fn = getattr(t, "remote_addr", None)
    if fn is not None:
        ra: tuple[str, int] | None = fn(peer)
        return ra
    backend = getattr(t, "_backend", None)
    host = getattr(backend, "host", None)
    if host is not None and hasattr(host, "connection"):
        # A peer may also have a WebRTC or relayed connection (attached streams have no
        # socket address): use its newest open TCP connection.
        conns = list(getattr(host, "_conns", {}).get(peer, ())) or [host.connection(peer)]
        for conn in reversed(conns):
            if conn is not None and not getattr(conn, "closed", False):
                got = parse_ip_tcp(getattr(conn, "remote_addr", None) or "")
                if got is not None:
                    return got
        return None
    network = getattr(backend, "_network", None)
    if network is not None:
        from contextlib import suppress

        for conn in network.connections.get(_libp2p_id(peer), ()):
            with suppress(Exception):
                got = conn.muxed_conn.get_remote_address()
                if got:
                    return str(got[0]), int(got[1])
    return None


def _libp2p_id(peer: PeerId) -> Any:
    from libp2p.peer.id import ID

    return ID(peer.raw)


def parse_ip_tcp(addr: str) -> tuple[str, int] | None:
    """"/ip4/1.2.3.4/tcp/5[/…]" → ("1.2.3.4", 5); anything else → None."""
    parts = addr.split("/")
    if len(parts) >= 5 and parts[1] in ("ip4", "ip6") and parts[3] == "tcp":
        try:
            return parts[2], int(parts[4])
        except ValueError:
            return None
    return None


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


class ReachabilityService:
    def __init__(self, d: Daemon, config: ReachabilityConfig | None = None) -> None:
        self.d = d
        # The same STUN servers WebRTC's ICE uses (`[edge] stun`, "stun:host:port").
        self.stun_servers: list[str] = [str(u) for u in d.conf.get("edge", {}).get("stun", [])]
        self.core = ReachabilityCore(config or ReachabilityConfig(), random.Random(),
                                     trio.current_time())
        self.guard = DialbackGuard()
        self.stun: stun_probe.StunResult | None = None
        self.errors: dict[str, str] = {}  # peer → why the last request got no answer
        self.served = 0
        self._wake = trio.Event()

    def register(self) -> None:
        from overlay.runtime.net.transport import Codec

        self.d.t.set_handler(PROTO_DIALBACK, on_request=self._serve, codec=Codec.CBOR)

    # ------------------------------------------------------------ server

    async def _serve(self, peer: PeerId, obj: Any) -> Any:
        received = time.time()
        addrs, _ = decode_request(obj)  # MalformedFrame → refusal with the reason
        seen = observed_remote(self.d.t, peer)
        if seen is None:
            raise RemoteProtocolError("dial-back: cannot tell which address you connect from")
        ip, port = seen
        if not self.guard.allow(ip, trio.current_time()):
            raise RemoteProtocolError("dial-back: rate limit for your address; try later")
        targets = plan_dialback(ip, addrs, self.guard.config.max_dial_addrs)
        results: list[dict[str, Any]] = [{} for _ in targets]

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
                self.core.set_candidates(self._candidates())
                self._apply(self.core.handle_timer(trio.current_time()), wake=False)
                with trio.move_on_at(self.core.next_deadline()):
                    await self._wake.wait()
                self._wake = trio.Event()

    def _candidates(self) -> list[PeerId]:
        return [p for p in self.d.t.connected_peers() if p != self.d.me]

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
                self._nursery.start_soon(self._publish, e.ad_value)
        if wake:
            self._wake.set()

    async def _ask(self, peer: PeerId) -> None:
        from overlay.runtime.net.transport import TransportError

        await self._identify(peer)
        sent_wall, sent = time.time(), trio.current_time()
        try:
            raw = await self.d.t.request(
                peer, PROTO_DIALBACK,
                {"addrs": self.d.t.listen_addrs[:MAX_REQUEST_ADDRS],
                 "t_ms": int(sent_wall * 1000)},
                timeout=REQUEST_TIMEOUT_S)
            observed, results, t_ms = decode_response(raw)
            proc_ms = raw.get("proc_ms", 0) if isinstance(raw, dict) else 0
            proc_s = proc_ms / 1000 if type(proc_ms) is int and proc_ms >= 0 else 0.0
        except (TransportError, RemoteProtocolError) as e:
            self._error(peer, str(e)[:200])
            self._apply(self.core.on_no_answer(peer, trio.current_time()))
            return
        now = trio.current_time()
        self.errors.pop(str(peer), None)
        offset = None
        rtt = max(0.0, now - sent - proc_s)  # network time (and stream set-up) only
        if t_ms is not None:  # their clock on arrival vs ours half a round trip later
            offset = t_ms / 1000 - (sent_wall + rtt / 2)
        if not results:
            self._error(peer, "nothing to dial (no TCP listen address)")
            self._apply(self.core.on_no_answer(peer, now))
            return
        ok = any(r["ok"] for r in results)
        self._apply(self.core.on_answer(peer, ok, now, observed=observed,
                                        clock_offset_s=offset, rtt_s=rtt))

    def _error(self, peer: PeerId, why: str) -> None:
        self.errors.pop(str(peer), None)
        self.errors[str(peer)] = why
        while len(self.errors) > self.core.config.max_peers:  # oldest first out
            del self.errors[next(iter(self.errors))]

    async def _identify(self, peer: PeerId) -> None:
        """identify's observedAddr, when the transport reports it (native stack)."""
        from overlay.runtime.net.transport import TransportError

        try:
            info = await self.d.t.identify(peer, timeout=REQUEST_TIMEOUT_S)
        except (TransportError, RemoteProtocolError, trio.TooSlowError):
            return
        observed = getattr(info, "observed_addr", None)
        self.core.on_identify(peer, observed if isinstance(observed, str) else None)

    async def _probe_stun(self) -> None:
        if not self.stun_servers:
            self._apply(self.core.on_stun("unknown", trio.current_time(),
                                          "no STUN servers configured ([edge] stun)"))
            return
        self.stun = await stun_probe.probe(self.stun_servers)
        self._apply(self.core.on_stun(self.stun.nat_type, trio.current_time(), self.stun.error))

    async def _publish(self, value: str) -> None:
        ad = self.d.swim.ad
        if ad is not None and ad.reachability != value:
            # Atomic read-modify-write (no checkpoint), like the capsule ad refresh.
            self.d.driver.handle_now(UpdateAd(replace(ad, reachability=value)))

    # ------------------------------------------------------------ for the API

    def snapshot(self) -> dict[str, Any]:
        out = self.core.snapshot()
        out["stun_servers"] = self.stun_servers
        out["stun"] = self.stun.as_dict() if self.stun else None
        out["stun_error"] = self.core.stun_error
        clocks = self.core.clock_offsets()
        out["clock_offsets_s"] = {str(p): round(o, 4) for p, (o, _) in clocks.items()}
        out["clock_uncertainty_s"] = {str(p): round(u, 4) for p, (_, u) in clocks.items()}
        out["errors"] = dict(self.errors)
        out["served"] = self.served
        out["refused"] = self.guard.refused
        return out
