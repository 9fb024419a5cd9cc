"""Network model: latency from node coordinates, jitter, loss, NAT, partitions, bandwidth.

Each node gets a point in a 2-D "milliseconds" plane: the centre of its region plus
a Gaussian spread, and an access-link delay (the last mile). The one-way delay of a
message is

    distance(src, dst) + access[src] + access[dst] + jitter,   jitter ~ Exp(mean)

where the jitter mean is `jitter_frac` of the base delay, drawn per message (so
messages can overtake each other, as on the real Internet). Region centres are placed
so that inter-region RTTs are roughly those between cloud regions (e.g. us-east ↔
eu-west ≈ 80 ms, eu ↔ asia ≈ 250 ms).

Loss: each message is lost with probability `loss` (plus a per-node extra loss for a
`lossy_fraction` of nodes). NAT: a NAT'd node can only dial out; a message to it is
delivered only if it sent to that peer within `nat_timeout_s` (the mapping idles out
like a NAT binding). Two NAT'd nodes cannot reach each other (no hole punching here).
Partitions cut every link between groups for a scheduled interval
(`schedule_partitions`).

Bandwidth is coarse and flow-level: a bulk transfer gets, when it starts, the fair
share `min(up[src] / (flows out + 1), down[dst] / (flows in + 1))` and keeps it to the
end; it is not re-rated when other flows come and go. Control messages are assumed
small and pay only latency.

Everything indexes nodes by small ints (the simulator's node slots) and keeps plain
lists, so a node costs a few dozen bytes here.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

#: Region centres in the latency plane (ms, one-way). Distances approximate
#: half the RTTs measured between public cloud regions.
DEFAULT_REGIONS: dict[str, tuple[float, float]] = {
    "na-east": (0.0, 0.0),
    "na-west": (32.0, 5.0),
    "south-america": (5.0, 60.0),
    "europe": (-40.0, -5.0),
    "asia": (110.0, 10.0),
    "oceania": (100.0, 70.0),
}


@dataclass(frozen=True, slots=True)
class Region:
    name: str
    x_ms: float
    y_ms: float
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    regions: tuple[Region, ...] = tuple(
        Region(n, x, y) for n, (x, y) in DEFAULT_REGIONS.items()
    )
    #: Std-dev of a node's offset from its region centre (ms, per axis).
    spread_ms: float = 5.0
    #: Access-link delay, uniform in [min, max] ms, per node.
    access_min_ms: float = 1.0
    access_max_ms: float = 10.0
    #: Mean of the exponential per-message jitter, as a fraction of the base delay.
    jitter_frac: float = 0.1
    loss: float = 0.0
    #: A fraction of nodes with extra loss on every message they send or receive.
    lossy_fraction: float = 0.0
    lossy_extra_loss: float = 0.0
    nat_fraction: float = 0.0
    nat_timeout_s: float = 120.0
    #: Per-node access bandwidth (bytes/s), uniform in [min, max].
    up_min_bps: float = 1.25e6
    up_max_bps: float = 12.5e6
    down_min_bps: float = 6.25e6
    down_max_bps: float = 62.5e6
    #: If > 0, a message that cannot be delivered because the destination is down,
    #: partitioned away or behind NAT makes the sender's driver report
    #: `PeerUnreachable` after this many seconds (a failed dial). 0: silent (UDP-like).
    unreachable_after_s: float = 0.0


@dataclass(slots=True)
class Partition:
    """Links between different groups are down from `start_s` to `end_s`."""

    start_s: float
    end_s: float
    #: Either region groups (names), or a fraction of nodes split off.
    groups: tuple[tuple[str, ...], ...] = ()
    fraction: float = 0.0
    #: Group of each region name, filled from `groups`.
    region_group: dict[str, int] = field(default_factory=dict)


class Network:
    """Per-node placement and per-message fate (delay or drop)."""

    __slots__ = (
        "_active",
                "_dialed",
        "access",
        "cfg",
        "cuts",
        "down_bps",
        "flows_in",
        "flows_out",
        "lossy",
        "nat",
        "region",
        "region_names",
        "rng",
        "stats",
        "u",
        "up_bps",
        "x",
        "y",
    )

    def __init__(self, cfg: NetworkConfig, rng: random.Random) -> None:
        self.cfg = cfg
        self.rng = rng
        self.region_names = [r.name for r in cfg.regions]
        self.x: list[float] = []
        self.y: list[float] = []
        self.access: list[float] = []
        self.region: list[int] = []
        self.nat: list[bool] = []
        self.lossy: list[bool] = []
        self.up_bps: list[float] = []
        self.down_bps: list[float] = []
        #: A uniform draw per node; fraction partitions split on it.
        self.u: list[float] = []
        self.flows_out: list[int] = []
        self.flows_in: list[int] = []
        #: NAT'd node -> {peer it dialled: last activity}. Insertion-ordered.
        self._dialed: dict[int, dict[int, float]] = {}
        self._active: list[Partition] = []
        #: Group of each node under each active partition (recomputed on change). The
        #: list is never replaced: the world reads it to skip `reachable` when no
        #: partition is active and neither end is NAT'd (then it is True, and records
        #: nothing).
        self.cuts: list[list[int]] = []
        self.stats: dict[str, int] = {
            "lost": 0,
            "partitioned": 0,
            "nat_blocked": 0,
        }

    # ------------------------------------------------------------ placement

    def place(self, region: str | None = None, *, nat: bool | None = None) -> int:
        """Give the next node slot a position; returns its index."""
        cfg, rng = self.cfg, self.rng
        if region is None:
            weights = [r.weight for r in cfg.regions]
            ri = rng.choices(range(len(cfg.regions)), weights=weights)[0]
        else:
            ri = self.region_names.index(region)
        r = cfg.regions[ri]
        idx = len(self.x)
        self.x.append(r.x_ms + rng.gauss(0.0, cfg.spread_ms))
        self.y.append(r.y_ms + rng.gauss(0.0, cfg.spread_ms))
        self.access.append(rng.uniform(cfg.access_min_ms, cfg.access_max_ms))
        self.region.append(ri)
        self.nat.append(rng.random() < cfg.nat_fraction if nat is None else nat)
        self.lossy.append(rng.random() < cfg.lossy_fraction)
        self.up_bps.append(rng.uniform(cfg.up_min_bps, cfg.up_max_bps))
        self.down_bps.append(rng.uniform(cfg.down_min_bps, cfg.down_max_bps))
        self.u.append(rng.random())
        self.flows_out.append(0)
        self.flows_in.append(0)
        for i, p in enumerate(self._active):
            self.cuts[i].append(self._group(p, idx))
        return idx

    def base_delay_s(self, src: int, dst: int) -> float:
        """One-way delay without jitter."""
        d = math.hypot(self.x[src] - self.x[dst], self.y[src] - self.y[dst])
        return (d + self.access[src] + self.access[dst]) / 1000.0

    # ------------------------------------------------------------ messages

    def reachable(self, src: int, dst: int, now: float) -> bool:
        """Can `src` open (or use) a path to `dst` right now? Records NAT mappings."""
        for cut in self.cuts:
            if cut[src] != cut[dst]:
                self.stats["partitioned"] += 1
                return False
        if self.nat[src]:
            dialed = self._dialed.get(src)
            if dialed is None:
                dialed = self._dialed[src] = {}
            dialed.pop(dst, None)  # re-insert: the dict stays ordered by last use
            dialed[dst] = now
            if len(dialed) > 256:
                self._prune(dialed, now)
        if self.nat[dst]:
            seen = self._dialed.get(dst)
            at = None if seen is None else seen.get(src)
            if at is None or now - at > self.cfg.nat_timeout_s:
                self.stats["nat_blocked"] += 1
                return False
            seen[src] = now  # type: ignore[index]  # inbound traffic keeps the binding
        return True

    def fresh_dial_ok(self, src: int, dst: int) -> bool:
        """Would a *new* connection from `src` to `dst`'s listen address get through (a
        dial-back, AutoNAT's test)? No NAT mapping helps it; nothing is recorded."""
        if any(cut[src] != cut[dst] for cut in self.cuts):
            return False
        return not self.nat[dst]

    def _prune(self, dialed: dict[int, float], now: float) -> None:
        limit = now - self.cfg.nat_timeout_s
        for peer in [p for p, t in dialed.items() if t < limit]:
            del dialed[peer]

    def delay(self, src: int, dst: int) -> float | None:
        """Delay of one message, or None if it is lost."""
        cfg, rng = self.cfg, self.rng
        loss = cfg.loss
        if cfg.lossy_extra_loss and (self.lossy[src] or self.lossy[dst]):
            loss = 1.0 - (1.0 - loss) * (1.0 - cfg.lossy_extra_loss)
        if loss and rng.random() < loss:
            self.stats["lost"] += 1
            return None
        # `base_delay_s` and `rng.expovariate(1 / mean)` inlined (once per message, two
        # calls fewer): the same expressions, so the same floats and the same draw
        # (CPython 3.11's expovariate is `-log(1.0 - random()) / lambd`).
        x, y, access = self.x, self.y, self.access
        base = (math.hypot(x[src] - x[dst], y[src] - y[dst]) + access[src] + access[dst]) / 1000.0
        if cfg.jitter_frac:
            base += -math.log(1.0 - rng.random()) / (1.0 / (cfg.jitter_frac * base))
        return base

    # ------------------------------------------------------------ partitions

    def _group(self, p: Partition, idx: int) -> int:
        if p.groups:
            # Regions not named in any group form one more group of their own.
            return p.region_group.get(self.region_names[self.region[idx]], len(p.groups))
        return 1 if self.u[idx] < p.fraction else 0

    def start_partition(self, p: Partition) -> None:
        p.region_group = {name: g for g, names in enumerate(p.groups) for name in names}
        self._active.append(p)
        self.cuts.append([self._group(p, i) for i in range(len(self.x))])

    def heal_partition(self, p: Partition) -> None:
        i = self._active.index(p)
        del self._active[i]
        del self.cuts[i]

    def partitioned(self) -> bool:
        return bool(self._active)

    # ------------------------------------------------------------ bulk transfers

    def transfer_time_s(self, src: int, dst: int, nbytes: int) -> float:
        """Duration of a bulk transfer starting now at its fair share (coarse)."""
        rate = min(
            self.up_bps[src] / (self.flows_out[src] + 1),
            self.down_bps[dst] / (self.flows_in[dst] + 1),
        )
        # One RTT for the request, then the bytes at the flow's share.
        return 2.0 * self.base_delay_s(src, dst) + nbytes / rate

    def start_flow(self, src: int, dst: int) -> None:
        self.flows_out[src] += 1
        self.flows_in[dst] += 1

    def end_flow(self, src: int, dst: int) -> None:
        self.flows_out[src] -= 1
        self.flows_in[dst] -= 1


def schedule_partitions(
    net: Network,
    parts: list[Partition],
    at: Callable[[float, Callable[[Partition], None], Partition], None],
) -> None:
    """Schedule start and heal of each partition with the engine's `at`."""
    for p in parts:
        at(p.start_s, net.start_partition, p)
        at(p.end_s, net.heal_partition, p)
