"""Vivaldi steps: the four-dimension fast path gives the general step's floats, bit for bit.

`coordinates.update` runs `_step_4d` (written out for speed, docs/simulation.md) and
falls back to `_step` for coincident points; the simulator's byte-identical output
depends on the two agreeing exactly, so compare their floats' hex forms.
"""

from __future__ import annotations

import random

from gossip import coordinates
from gossip.coordinates import DIMENSIONS, MAX_ERROR, MIN_HEIGHT_S, Coord


def bits(c: Coord) -> list[str]:
    return [x.hex() for x in (*c.vec, c.height, c.error)]


def random_coord(rng: random.Random, scale: float) -> Coord:
    vec = tuple(rng.uniform(-scale, scale) for _ in range(DIMENSIONS))
    return Coord(vec, rng.uniform(MIN_HEIGHT_S, 0.02), rng.uniform(1e-3, MAX_ERROR))


def test_fast_step_matches_general_step_bit_for_bit() -> None:
    rng = random.Random(7)
    assert DIMENSIONS == 4  # what `_step_4d` is written for
    for i in range(20_000):
        scale = (1e-6, 1e-3, 0.05, 2.0)[i % 4]
        me, other = random_coord(rng, scale), random_coord(rng, scale)
        rtt = rng.uniform(1e-5, 0.5)
        fast = coordinates.update(me, other, rtt, random.Random(i))
        general = coordinates._step(me, other, rtt, random.Random(i))
        assert bits(fast) == bits(general), (me, other, rtt)


def test_fast_step_edges() -> None:
    origin = Coord()
    # Coincident points: the random push (same rng draws as the general step).
    a = coordinates.update(origin, Coord(), 0.01, random.Random(3))
    b = coordinates._step(origin, Coord(), 0.01, random.Random(3))
    assert bits(a) == bits(b) and a.vec != origin.vec
    # Out of range RTTs leave the coordinate alone.
    assert coordinates.update(origin, Coord(), 0.0, random.Random(3)) is origin
    assert coordinates.update(origin, Coord(), 11.0, random.Random(3)) is origin
    # Negative zeros and a point one unit away along one axis.
    me = Coord((-0.0, 0.0, -0.0, 0.0), MIN_HEIGHT_S, MAX_ERROR)
    other = Coord((1.0, -0.0, 0.0, 0.0), MIN_HEIGHT_S, 1e-3)
    for rtt in (1e-5, 0.5, 1.0, 10.0):
        fast = coordinates.update(me, other, rtt, random.Random(1))
        assert bits(fast) == bits(coordinates._step(me, other, rtt, random.Random(1)))
        assert fast.height >= MIN_HEIGHT_S and 0 < fast.error <= MAX_ERROR
