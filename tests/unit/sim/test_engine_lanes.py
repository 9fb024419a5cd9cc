"""Engine lanes (sim/engine.py): entries pushed through lanes run in exactly the order,
at exactly the times and with exactly the `seq` one heap gives them, whatever the mix
of lanes, out-of-order pushes (which fall back to the heap), ties and pauses."""

import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sim.engine import Engine, Lane


def _run(ops: list[tuple[int, float, int]], use_lanes: bool, seed: int) -> list[Any]:
    """Run a script of pushes; each event may push more (from `ops`, in order), as a
    simulation's callbacks arm timers while they run. Returns what ran, when, with
    which seq, and the engine's pending counts and event totals at each pause."""
    e = Engine()
    lanes: list[Lane] = [e.lane() for _ in range(3)]
    rng = random.Random(seed)
    todo = list(ops)
    seen: list[Any] = []

    def push() -> None:
        kind, delay, tag = todo.pop(0)
        # Delays from a few fixed values make ties and in-order lane entries common;
        # the fourth kind is any time (out of order for a lane, or the plain heap).
        when = e.now + delay
        if use_lanes and kind < 3:
            e.push_lane(lanes[kind], when, fire, tag)
        else:
            e.at(when, fire, tag)

    def fire(tag: int) -> None:
        seen.append((tag, e.now, e.seq_now))
        for _ in range(rng.randrange(3)):
            if todo:
                push()

    for _ in range(min(5, len(todo))):
        push()
    until = 0.0
    while e.pending():
        until += 0.7
        e.run_until(until, max_events=rng.choice([None, 1, 3]))
        seen.append(("pause", e.now, e.pending(), e.events_run))
    return seen


_OPS = st.lists(
    st.tuples(st.integers(0, 3), st.sampled_from([0.0, 0.5, 1.0, 1.0, 2.0, 0.25]),
              st.integers(0, 10**6)),
    min_size=1, max_size=120,
)


@settings(max_examples=200, deadline=None)
@given(ops=_OPS, seed=st.integers(0, 2**32 - 1))
def test_lanes_run_entries_as_one_heap_would(ops: list[tuple[int, float, int]],
                                             seed: int) -> None:
    assert _run(ops, True, seed) == _run(ops, False, seed)


def test_out_of_order_push_goes_to_the_heap_and_still_runs_in_order() -> None:
    e = Engine()
    lane = e.lane()
    seen: list[str] = []
    e.push_lane(lane, 2.0, seen.append, "b")
    e.push_lane(lane, 3.0, seen.append, "d")
    e.push_lane(lane, 1.0, seen.append, "a")  # before the lane's last: heap
    e.at(2.5, seen.append, "c")
    e.push_lane(lane, 3.0, seen.append, "e")  # a tie: after "d" by seq
    assert len(lane) == 3 and e.pending() == 5
    assert e.run_until(10.0) == 5
    assert seen == ["a", "b", "c", "d", "e"]
    assert e.pending() == 0 and len(lane) == 0
