"""Is this node publicly reachable? The sans-IO decision logic.

Modelled on libp2p AutoNAT v1 (specs/autonat): a node asks a few connected members
to *dial it back* at its listen addresses (`/colony/dialback/1.0.0`, see
overlay/runtime/edge/dialback.py) and counts the answers. Each answer also tells it the
address the member observed it at, and the member's clock (for skew). A STUN probe
of two server addresses gives the NAT's mapping behaviour (overlay/runtime/stun_probe).

Rules (every one of them lives in this file):
* status from the latest answer of each peer still within `result_ttl_s`:
  `public` when ≥ `need` peers reached us and they outnumber the failures, `nat`
  when ≥ `need` failed and outnumber the successes, else `unknown`;
  `need = min(confirmations, peers we could ask)`, so a two-node colony decides too;
* refusals (rate-limited, no address to try, a peer that reaches us only over
  WebRTC or a relay and so sees no IP of ours) and unanswered requests are no
  evidence, and such a peer does not count among those we could ask (for
  `result_ttl_s`), so a colony where one peer can answer still decides;
* a round asks up to `peers_per_round` peers, preferring those not asked for
  longest; rounds repeat every `interval_unknown_s` while unknown and every
  `interval_settled_s` once decided;
* the dial-back *server* side (`DialbackGuard`, `plan_dialback`) only dials the IP
  it observed the request come from (no amplification towards third parties), at
  most `max_dial_addrs` ports, under a token bucket per requester IP and a global one.

`ReachabilityCore` follows the core contract (DESIGN §2): `handle(input, now)` returns
effects (`AskDialback`, `ProbeStun`, `StatusChanged`); its inputs are the frozen
dataclasses below (`TimerFired`, `CandidatesChanged`, `DialbackAnswered`,
`DialbackFailed`, `IdentifyObserved`, `StunProbed`). Like aioquic's `get_timer()`,
`next_deadline()` tells the driver when to deliver the next `TimerFired(TIMER)`; an
early or repeated one is harmless (nothing is due yet). Cores take `now`; nothing
here reads a clock, sleeps or opens a socket.
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypedDict

from overlay.core.effects import TimerFired
from overlay.core.errors import LocalProtocolError

PROTO_DIALBACK = "/colony/dialback/1.0.0"


class Status(Enum):
    PUBLIC = "public"
    NAT = "nat"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class ReachabilityConfig:
    first_check_s: float = 2.0
    interval_unknown_s: float = 15.0
    interval_settled_s: float = 600.0
    peers_per_round: int = 3
    confirmations: int = 2
    result_ttl_s: float = 1800.0
    #: Peers whose latest answer (and clock offset) is kept; oldest dropped beyond.
    max_peers: int = 64
    #: STUN re-probe period (mapping behaviour rarely changes).
    stun_interval_s: float = 900.0

    def __post_init__(self) -> None:
        if self.peers_per_round < 1 or self.confirmations < 1 or self.max_peers < 1:
            raise LocalProtocolError("reachability: counts must be ≥ 1")


# ---------------------------------------------------------------- inputs

#: The core's one timer: deliver `TimerFired(TIMER)` at `next_deadline()`.
TIMER = "reachability"


@dataclass(frozen=True, slots=True)
class CandidatesChanged:
    """Peers we may ask now (connected members), in a stable order."""

    peers: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class DialbackAnswered:
    """`peer` tried to dial us back (`ok`: some address of ours answered); `observed`
    is where it sees us, `clock_offset_s` its clock minus ours over `rtt_s`."""

    peer: Any
    ok: bool
    observed: str | None = None
    clock_offset_s: float | None = None
    rtt_s: float | None = None


@dataclass(frozen=True, slots=True)
class DialbackFailed:
    """The request to `peer` failed or was refused (no evidence either way)."""

    peer: Any


@dataclass(frozen=True, slots=True)
class IdentifyObserved:
    """identify's observedAddr from `peer` (None: it sent none)."""

    peer: Any
    observed: str | None


@dataclass(frozen=True, slots=True)
class StunProbed:
    """A STUN mapping probe ended: the NAT's mapping behaviour, or why not."""

    nat_type: str
    error: str = ""


Input = TimerFired | CandidatesChanged | DialbackAnswered | DialbackFailed | IdentifyObserved \
    | StunProbed


class AnswerJson(TypedDict):
    ok: bool
    observed: str | None


class CoreSnapshot(TypedDict):
    """`ReachabilityCore.snapshot()`: the status and the evidence behind it."""

    status: str
    nat_type: str
    ad_value: str
    answers: dict[str, AnswerJson]
    observed_addrs: dict[str, int]
    rounds: int


# ---------------------------------------------------------------- effects


@dataclass(frozen=True, slots=True)
class AskDialback:
    """Ask `peer` to dial us back at our listen addresses."""

    peer: Any


@dataclass(frozen=True, slots=True)
class ProbeStun:
    """Run a STUN mapping probe."""


@dataclass(frozen=True, slots=True)
class StatusChanged:
    status: Status
    nat_type: str

    @property
    def ad_value(self) -> str:
        return ad_value(self.status, self.nat_type)


Effect = AskDialback | ProbeStun | StatusChanged


def ad_value(status: Status, nat_type: str) -> str:
    """The resource-ad `reachability` string: "public", "nat", "nat/<mapping>", ""."""
    if status is Status.UNKNOWN:
        return ""
    if status is Status.NAT and nat_type not in ("", "unknown", "none"):
        return f"nat/{nat_type}"
    return str(status.value)


def decide(results: list[bool], need: int) -> Status:
    """Status from one latest answer per peer (True: it reached us)."""
    ok = sum(results)
    failed = len(results) - ok
    if ok >= need and ok > failed:
        return Status.PUBLIC
    if failed >= need and failed > ok:
        return Status.NAT
    return Status.UNKNOWN


@dataclass(slots=True)
class _Answer:
    ok: bool
    at: float
    observed: str | None
    clock_offset_s: float | None


class ReachabilityCore:
    """Schedules dial-back rounds and STUN probes; turns answers into a status."""

    def __init__(self, config: ReachabilityConfig, rng: random.Random, now: float) -> None:
        self.config = config
        self.rng = rng
        self.status = Status.UNKNOWN
        self.nat_type = "unknown"
        self.answers: dict[Any, _Answer] = {}
        self._asked_at: dict[Any, float] = {}
        self._unable: dict[Any, float] = {}  # peer → when it last could not answer
        #: peer → (clock offset, round trip, when): the sample with the shortest round
        #: trip is kept (its error is at most half of it, NTP's rule).
        self._clock: dict[Any, tuple[float, float, float]] = {}
        #: peer → the address identify's observedAddr says it sees us at.
        self._identified: dict[Any, str] = {}
        self._candidates: list[Any] = []
        self._next_round = now + config.first_check_s
        self._next_stun: float | None = now + config.first_check_s
        self.rounds = 0
        self.stun_error = ""

    # ------------------------------------------------------------ inputs

    def handle(self, inp: Input, now: float) -> list[Effect]:
        """The one entry point: an input at time `now` → effects to carry out."""
        if isinstance(inp, TimerFired):
            return self._on_timer(now) if inp.timer == TIMER else []
        if isinstance(inp, CandidatesChanged):
            self._candidates = list(dict.fromkeys(inp.peers))
            return []
        if isinstance(inp, DialbackAnswered):
            return self._on_answer(inp, now)
        if isinstance(inp, DialbackFailed):
            return self._on_no_answer(inp.peer, now)
        if isinstance(inp, IdentifyObserved):
            self._on_identify(inp.peer, inp.observed)
            return []
        if isinstance(inp, StunProbed):
            return self._on_stun(inp.nat_type, now, inp.error)
        raise LocalProtocolError(f"reachability: unknown input {type(inp).__name__}")

    def next_deadline(self) -> float:
        return self._next_round if self._next_stun is None else min(self._next_round,
                                                                     self._next_stun)

    def _on_timer(self, now: float) -> list[Effect]:
        out: list[Effect] = []
        if self._next_stun is not None and now >= self._next_stun:
            self._next_stun = None  # re-armed when the result arrives
            out.append(ProbeStun())
        if now >= self._next_round:
            out.extend(self._round(now))
            self._expire(now, out)
        return out

    def _on_answer(self, a: DialbackAnswered, now: float) -> list[Effect]:
        peer, clock_offset_s, rtt_s = a.peer, a.clock_offset_s, a.rtt_s
        self.answers.pop(peer, None)
        self._unable.pop(peer, None)
        self.answers[peer] = _Answer(a.ok, now, a.observed, clock_offset_s)
        if clock_offset_s is not None:
            rtt = rtt_s if rtt_s is not None else float("inf")
            old = self._clock.get(peer)
            if old is None or rtt <= old[1] or now - old[2] > self.config.result_ttl_s:
                self._clock.pop(peer, None)
                self._clock[peer] = (clock_offset_s, rtt, now)
            while len(self._clock) > self.config.max_peers:
                del self._clock[next(iter(self._clock))]
        while len(self.answers) > self.config.max_peers:
            del self.answers[next(iter(self.answers))]
        out: list[Effect] = []
        self._reconsider(now, out)
        return out

    def _on_identify(self, peer: Any, observed: str | None) -> None:
        self._identified.pop(peer, None)
        if observed:
            self._identified[peer] = observed
            while len(self._identified) > self.config.max_peers:
                del self._identified[next(iter(self._identified))]

    def _on_no_answer(self, peer: Any, now: float) -> list[Effect]:
        """The request failed or was refused: no evidence either way, and the peer
        is left out of `need` until it answers again (or `result_ttl_s` passes)."""
        self._unable.pop(peer, None)
        self._unable[peer] = now
        while len(self._unable) > self.config.max_peers:
            del self._unable[next(iter(self._unable))]
        out: list[Effect] = []
        self._reconsider(now, out)
        return out

    def _on_stun(self, nat_type: str, now: float, error: str) -> list[Effect]:
        self.stun_error = error
        if nat_type != "unknown" or self.nat_type == "unknown":
            self.nat_type = nat_type
        self._next_stun = now + self.config.stun_interval_s
        out: list[Effect] = []
        if self.status is not Status.UNKNOWN:
            out.append(StatusChanged(self.status, self.nat_type))  # the ad carries the type
        return out

    # ------------------------------------------------------------ queries

    def observed_addrs(self) -> dict[str, int]:
        """Addresses peers saw us at (dial-back answers and identify) → how many peers
        report each (most seen first)."""
        seen: dict[str, set[Any]] = {}
        for p, a in self.answers.items():
            if a.observed:
                seen.setdefault(a.observed, set()).add(p)
        for p, addr in self._identified.items():
            seen.setdefault(addr, set()).add(p)
        counts = {addr: len(peers) for addr, peers in seen.items()}
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def clock_offsets(self) -> dict[Any, tuple[float, float]]:
        """peer → (offset of its clock from ours, uncertainty = half the round trip)."""
        return {p: (off, rtt / 2) for p, (off, rtt, _) in self._clock.items()}

    def snapshot(self) -> CoreSnapshot:
        return {
            "status": self.status.value,
            "nat_type": self.nat_type,
            "ad_value": ad_value(self.status, self.nat_type),
            "answers": {str(p): {"ok": a.ok, "observed": a.observed}
                        for p, a in self.answers.items()},
            "observed_addrs": self.observed_addrs(),
            "rounds": self.rounds,
        }

    # ------------------------------------------------------------ internals

    def _round(self, now: float) -> list[Effect]:
        self.rounds += 1
        self._next_round = now + self._interval()
        # Least recently asked first; ties broken randomly (seeded) so that every
        # member shares the load of answering.
        pool = list(self._candidates)
        self.rng.shuffle(pool)
        # Peers that could not answer lately go last.
        pool.sort(key=lambda p: (self._is_unable(p, now), self._asked_at.get(p, float("-inf"))))
        chosen = pool[: self.config.peers_per_round]
        for p in chosen:
            self._asked_at.pop(p, None)
            self._asked_at[p] = now
        while len(self._asked_at) > self.config.max_peers:
            del self._asked_at[next(iter(self._asked_at))]
        if not chosen:  # nobody to ask yet (still joining): look again soon
            self._next_round = now + self.config.first_check_s
        return [AskDialback(p) for p in chosen]

    def _is_unable(self, peer: Any, now: float) -> bool:
        at = self._unable.get(peer)
        return at is not None and now - at <= self.config.result_ttl_s

    def _interval(self) -> float:
        """Settled (a status backed by `confirmations` answers): re-check rarely."""
        if self.status is Status.UNKNOWN or len(self.answers) < self.config.confirmations:
            return self.config.interval_unknown_s
        return self.config.interval_settled_s

    def _expire(self, now: float, out: list[Effect]) -> None:
        stale = [p for p, a in self.answers.items() if now - a.at > self.config.result_ttl_s]
        for p in stale:
            del self.answers[p]
        if stale:
            self._reconsider(now, out)

    def _reconsider(self, now: float, out: list[Effect]) -> None:
        fresh = [a.ok for a in self.answers.values() if now - a.at <= self.config.result_ttl_s]
        askable = len({p for p in self._candidates if not self._is_unable(p, now)}
                      | set(self.answers))
        need = max(1, min(self.config.confirmations, askable))
        status = decide(fresh, need)
        if status is not self.status:
            self.status = status
            out.append(StatusChanged(status, self.nat_type))
        # Settled → the next round is a re-check, far off; unsettled → soon.
        if self._interval() == self.config.interval_settled_s:
            self._next_round = max(self._next_round, now + self.config.interval_settled_s)
        else:
            self._next_round = min(self._next_round, now + self.config.interval_unknown_s)


# ---------------------------------------------------------------- server side


@dataclass(frozen=True, slots=True)
class GuardConfig:
    # We dial only the requester's own IP, so the per-IP bucket protects that IP's
    # hosts (several nodes may share one NAT, or loopback) from being dialled in a
    # loop; the global bucket protects us.
    per_ip_burst: int = 8
    per_ip_refill_s: float = 5.0
    global_burst: int = 20
    global_refill_s: float = 2.0
    max_dial_addrs: int = 4
    max_tracked_ips: int = 4096


class DialbackGuard:
    """Token buckets limiting dial-backs per requester IP and overall."""

    def __init__(self, config: GuardConfig | None = None) -> None:
        self.config = config or GuardConfig()
        self._ips: dict[str, tuple[float, float]] = {}  # ip → (tokens, at)
        self._global: tuple[float, float] | None = None
        self.refused = 0

    @staticmethod
    def _take(bucket: tuple[float, float] | None, burst: int, refill_s: float,
              now: float) -> tuple[bool, tuple[float, float]]:
        tokens, at = bucket if bucket is not None else (float(burst), now)
        tokens = min(float(burst), tokens + max(0.0, now - at) / refill_s)
        if tokens < 1.0:
            return False, (tokens, now)
        return True, (tokens - 1.0, now)

    def allow(self, ip: str, now: float) -> bool:
        c = self.config
        ok_ip, ip_bucket = self._take(self._ips.get(ip), c.per_ip_burst, c.per_ip_refill_s, now)
        if not ok_ip:
            self._ips[ip] = ip_bucket
            self.refused += 1
            return False
        ok_all, g_bucket = self._take(self._global, c.global_burst, c.global_refill_s, now)
        if not ok_all:
            self.refused += 1
            return False
        self._global = g_bucket
        self._ips.pop(ip, None)
        self._ips[ip] = ip_bucket
        while len(self._ips) > c.max_tracked_ips:
            del self._ips[next(iter(self._ips))]
        return True


def plan_dialback(observed_ip: str, requested: list[str], max_addrs: int) -> list[tuple[str, int]]:
    """(ip, port) pairs to dial: the *observed* IP with each requested TCP port.

    A requester names ports, never a target: whatever IPs its addresses carry, we
    dial only the IP its request came from (AutoNAT's anti-amplification rule).
    Ports are taken from `/ip4|ip6/…/tcp/PORT…` addresses; others are ignored.
    """
    try:
        ipaddress.ip_address(observed_ip)
    except ValueError:
        return []
    ports: list[int] = []
    for a in requested:
        parts = a.split("/")
        if len(parts) >= 5 and parts[1] in ("ip4", "ip6") and parts[3] == "tcp":
            try:
                port = int(parts[4])
            except ValueError:
                continue
            if 0 < port < 65536 and port not in ports:
                ports.append(port)
    return [(observed_ip, p) for p in ports[:max_addrs]]
