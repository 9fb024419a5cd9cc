"""Seeded random fault schedules for the simulated fault campaign (sim/campaign.py).

A schedule is a list of faults, each a frozen dataclass with its start time `at` and
its parameters, drawn from one `random.Random(seed)` so that a seed names exactly one
schedule (VOPR / FoundationDB style: many seeds, each a different random world). The
kinds:

- `Partition`: the nodes of `side` are cut from the others from `at` to `until`;
  symmetric (no message crosses) or asymmetric (only messages *from* `side` are lost,
  the other direction works: one-way reachability, as with a broken NAT or firewall).
- `Flapping`: a symmetric partition switching on and off every `period_s`.
- `Crash`: a node stops at once (kill -9) and restarts `down_s` later with a fresh
  process; with `disk_loss` its custody records are gone too (a new disk).
- `Leave`: a graceful leave (announced through gossip), back after `down_s` (churn).
- `Loss`, `Duplicate`, `Reorder`: from `at` to `until`, every message is lost with
  probability `rate` (0–30 %), delivered twice, or held back by up to `delay_s`.
- `ClockSkew`: from `at` on, a node's clock reads `offset_s` off the true time.

Invariants of a generated schedule (what the campaign relies on):
- every fault ends (and every crashed or departed node is back) by `quiet_at`;
  after it, the network is clean and everyone is up: liveness and convergence are
  measured from there;
- at most `max_down` nodes are down at any moment, and at most one of them lost its
  disk (the fault model: fewer than k_c custodians of a capsule lose their records at
  once; all of them losing their disks together loses the capsule by design);
- clock skew stays in place after `quiet_at` (clocks do not heal).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, fields


@dataclass(frozen=True, slots=True)
class Partition:
    at: float
    until: float
    side: tuple[int, ...]
    symmetric: bool = True


@dataclass(frozen=True, slots=True)
class Flapping:
    at: float
    until: float
    side: tuple[int, ...]
    period_s: float


@dataclass(frozen=True, slots=True)
class Crash:
    at: float
    node: int
    down_s: float
    disk_loss: bool = False


@dataclass(frozen=True, slots=True)
class Leave:
    at: float
    node: int
    down_s: float


@dataclass(frozen=True, slots=True)
class Loss:
    at: float
    until: float
    rate: float


@dataclass(frozen=True, slots=True)
class Duplicate:
    at: float
    until: float
    rate: float


@dataclass(frozen=True, slots=True)
class Reorder:
    at: float
    until: float
    rate: float
    delay_s: float


@dataclass(frozen=True, slots=True)
class ClockSkew:
    at: float
    node: int
    offset_s: float


Fault = Partition | Flapping | Crash | Leave | Loss | Duplicate | Reorder | ClockSkew
KINDS: tuple[type, ...] = (Partition, Flapping, Crash, Leave, Loss, Duplicate, Reorder,
                           ClockSkew)  # fmt: skip
#: Relative weights of the kinds when drawing a fault.
WEIGHTS: tuple[float, ...] = (3.0, 1.0, 4.0, 1.5, 1.0, 1.0, 1.0, 0.7)


@dataclass(frozen=True, slots=True)
class ScheduleConfig:
    nodes: int
    #: Faults start at or after `start_s` and are all over by `quiet_at`.
    start_s: float = 20.0
    quiet_at: float = 150.0
    #: Faults drawn per schedule: uniform in [min_faults, max_faults].
    min_faults: int = 4
    max_faults: int = 12
    max_down: int = 3
    max_loss: float = 0.30
    max_skew_s: float = 10.0
    #: Only these kinds (class names, e.g. ("Crash", "Partition")); empty: all of them.
    kinds: tuple[str, ...] = ()


def describe(f: Fault) -> str:
    """One line: the kind and its parameters."""
    parts = []
    for fl in fields(f):
        v = getattr(f, fl.name)
        if isinstance(v, float):
            v = round(v, 3)
        parts.append(f"{fl.name}={v}")
    return f"{type(f).__name__}({', '.join(parts)})"


def printable(schedule: list[Fault]) -> str:
    return "\n".join(describe(f) for f in schedule)


class _Downtime:
    """Intervals during which nodes are down, to keep at most `max_down` at a time."""

    def __init__(self) -> None:
        self.spans: list[tuple[float, float, int, bool]] = []

    def fits(self, a: float, b: float, node: int, disk: bool, max_down: int) -> bool:
        over = [s for s in self.spans if s[0] < b and a < s[1]]
        if any(s[2] == node for s in over) or len(over) + 1 > max_down:
            return False
        # Disk losses apart by a margin, so custody can re-replicate in between.
        return not (disk and any(s[3] and s[0] < b + 20.0 and a < s[1] + 20.0
                                 for s in self.spans))  # fmt: skip


def generate(seed: int, cfg: ScheduleConfig) -> list[Fault]:
    """The schedule of `seed` (sorted by start time; same seed, same schedule)."""
    rng = random.Random(seed)
    down = _Downtime()
    out: list[Fault] = []
    pick = [(k, w) for k, w in zip(KINDS, WEIGHTS, strict=True)
            if not cfg.kinds or k.__name__ in cfg.kinds]
    unknown = set(cfg.kinds) - {k.__name__ for k in KINDS}
    if unknown:
        raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: "
                         f"{', '.join(k.__name__ for k in KINDS)}")
    for _ in range(rng.randint(cfg.min_faults, cfg.max_faults)):
        kind = rng.choices([k for k, _ in pick], weights=[w for _, w in pick])[0]
        f = _draw(kind, rng, cfg, down)
        if f is not None:
            out.append(f)
    out.sort(key=lambda f: (f.at, describe(f)))
    return out


def _window(rng: random.Random, cfg: ScheduleConfig, min_s: float, max_s: float
            ) -> tuple[float, float]:  # fmt: skip
    length = rng.uniform(min_s, max_s)
    a = rng.uniform(cfg.start_s, max(cfg.start_s, cfg.quiet_at - length))
    return a, min(a + length, cfg.quiet_at)


def _side(rng: random.Random, n: int) -> tuple[int, ...]:
    k = rng.randint(1, max(1, n // 2))
    return tuple(sorted(rng.sample(range(n), k)))


def _draw(kind: type, rng: random.Random, cfg: ScheduleConfig, down: _Downtime
          ) -> Fault | None:  # fmt: skip
    n = cfg.nodes
    if kind is Partition:
        a, b = _window(rng, cfg, 5.0, 60.0)
        return Partition(a, b, _side(rng, n), symmetric=rng.random() < 0.6)
    if kind is Flapping:
        a, b = _window(rng, cfg, 20.0, 60.0)
        return Flapping(a, b, _side(rng, n), period_s=rng.uniform(1.0, 8.0))
    if kind is Crash or kind is Leave:
        node = rng.randrange(n)
        a, b = _window(rng, cfg, 2.0, 40.0)
        disk = kind is Crash and rng.random() < 0.3
        if not down.fits(a, b, node, disk, cfg.max_down):
            return None
        down.spans.append((a, b, node, disk))
        return Crash(a, node, b - a, disk) if kind is Crash else Leave(a, node, b - a)
    if kind is Loss:
        a, b = _window(rng, cfg, 5.0, 60.0)
        return Loss(a, b, rng.uniform(0.0, cfg.max_loss))
    if kind is Duplicate:
        a, b = _window(rng, cfg, 5.0, 60.0)
        return Duplicate(a, b, rng.uniform(0.01, 0.3))
    if kind is Reorder:
        a, b = _window(rng, cfg, 5.0, 60.0)
        return Reorder(a, b, rng.uniform(0.05, 0.5), rng.uniform(0.05, 2.0))
    node = rng.randrange(n)
    at = rng.uniform(cfg.start_s, cfg.quiet_at)
    return ClockSkew(at, node, rng.uniform(-cfg.max_skew_s, cfg.max_skew_s))
