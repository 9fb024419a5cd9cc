"""Vivaldi network coordinates (Dabek et al., SIGCOMM 2004; serf's coordinate package).

Each node keeps a point in a low-dimensional Euclidean space plus a height (the
access-link delay) and an error estimate. After every measured round trip to a peer
whose coordinate it knows, it moves its own point along the force of the prediction
error, weighted by the two error estimates. Distance between coordinates predicts the
RTT between any two members, measured or not — placement uses that later.

Pure maths on frozen values; invariants: every component finite, height ≥ min_height,
0 < error ≤ max_error.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from overlay.core.effects import quick_init
from overlay.core.errors import MalformedFrame
from overlay.core.validate import finite

DIMENSIONS = 4
MAX_ERROR = 1.5
MIN_HEIGHT_S = 1e-5
CE = 0.25  # error-estimate gain (serf VivaldiCE)
CC = 0.25  # coordinate gain (serf VivaldiCC)
MAX_RTT_S = 10.0


@quick_init  # built on every probe ack (Vivaldi step)
@dataclass(frozen=True, slots=True)
class Coord:
    vec: tuple[float, ...] = (0.0,) * DIMENSIONS
    height: float = MIN_HEIGHT_S
    error: float = MAX_ERROR

    def distance_s(self, other: Coord) -> float:
        # sum() over a list, not a generator: the same additions in the same order
        # (identical floats), without a generator frame per call (every probe ack).
        d = math.sqrt(sum([(a - b) ** 2 for a, b in zip(self.vec, other.vec, strict=True)]))
        return d + self.height + other.height

    def to_wire(self) -> list[Any]:
        return [list(self.vec), self.height, self.error]

    @classmethod
    def from_wire(cls, obj: Any) -> Coord:
        if not (isinstance(obj, list) and len(obj) == 3 and isinstance(obj[0], list)):
            raise MalformedFrame("coordinate must be [vec, height, error]")
        vec, h, e = obj
        if len(vec) != DIMENSIONS:
            raise MalformedFrame(f"coordinate must have {DIMENSIONS} dimensions")
        vals = [*vec, h, e]
        if not all(type(v) in (int, float) and finite(v) for v in vals):
            raise MalformedFrame("coordinate components must be finite numbers")
        if abs(max(vals, key=abs)) > 1e6 or h < 0 or not 0 < e <= MAX_ERROR:
            raise MalformedFrame("coordinate out of range")
        return cls(tuple(float(v) for v in vec), max(MIN_HEIGHT_S, float(h)), float(e))


def update(me: Coord, other: Coord, rtt_s: float, rng: random.Random) -> Coord:
    """Vivaldi step: `me` after observing `rtt_s` to a node at `other`."""
    if not (0.0 < rtt_s <= MAX_RTT_S):
        return me
    if len(me.vec) == 4 and len(other.vec) == 4:
        moved = _step_4d(me, other, rtt_s)
        if moved is not None:
            return moved
    return _step(me, other, rtt_s, rng)


def _step(me: Coord, other: Coord, rtt_s: float, rng: random.Random) -> Coord:
    """The Vivaldi step in any dimension (`update` after its range check)."""
    dist = me.distance_s(other)
    total_err = max(me.error + other.error, 1e-9)
    weight = me.error / total_err
    rel_err = abs(dist - rtt_s) / rtt_s
    error = min(MAX_ERROR, max(1e-3, rel_err * CE * weight + me.error * (1.0 - CE * weight)))
    force = CC * weight * (rtt_s - dist)
    diff = [a - b for a, b in zip(me.vec, other.vec, strict=True)]
    mag = math.sqrt(sum([d * d for d in diff]))
    if mag < 1e-9:  # coincident points: push in a random direction
        unit = [rng.uniform(-1.0, 1.0) for _ in diff]
        norm = math.sqrt(sum(u * u for u in unit)) or 1.0
        unit = [u / norm for u in unit]
        mag = 0.0
    else:
        unit = [d / mag for d in diff]
    vec = tuple([a + force * u for a, u in zip(me.vec, unit, strict=True)])
    height = me.height
    if mag > 0:
        height = max(
            MIN_HEIGHT_S,
            (me.height + other.height) * force / (mag + me.height + other.height) + me.height,
        )
    return Coord(vec, height, error)


def _step_4d(me: Coord, other: Coord, rtt_s: float) -> Coord | None:
    """`_step` written out for four dimensions (DIMENSIONS), None for coincident points
    (the random push needs `_step`). Every probe ack runs a step, and the list
    comprehensions of the general form cost about three times as much. The very same
    float operations in the same order, so the very same floats: each `sum([...])`
    there is `0 + x0 + x1 + x2 + x3` from the left (CPython 3.11 adds a list of floats
    left to right from its start value 0); tests/unit/gossip/test_coordinates.py
    compares the two bit for bit."""
    a0, a1, a2, a3 = me.vec
    d0, d1, d2, d3 = a0 - other.vec[0], a1 - other.vec[1], a2 - other.vec[2], a3 - other.vec[3]
    mh, oh, err = me.height, other.height, me.error
    dist = math.sqrt(0 + d0**2 + d1**2 + d2**2 + d3**2) + mh + oh  # Coord.distance_s
    weight = err / max(err + other.error, 1e-9)
    rel_err = abs(dist - rtt_s) / rtt_s
    error = min(MAX_ERROR, max(1e-3, rel_err * CE * weight + err * (1.0 - CE * weight)))
    force = CC * weight * (rtt_s - dist)
    mag = math.sqrt(0 + d0 * d0 + d1 * d1 + d2 * d2 + d3 * d3)
    if mag < 1e-9:
        return None
    vec = (a0 + force * (d0 / mag), a1 + force * (d1 / mag), a2 + force * (d2 / mag),
           a3 + force * (d3 / mag))
    return Coord(vec, max(MIN_HEIGHT_S, (mh + oh) * force / (mag + mh + oh) + mh), error)
