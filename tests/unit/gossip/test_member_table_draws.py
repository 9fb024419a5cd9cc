"""`member_table.randbelow` draws exactly what `random.Random` draws: seeded simulator
runs (the golden digests) depend on every probe slot and sample being the same."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from gossip.member_table import randbelow


def test_the_stdlib_draws_below_n_with_getrandbits() -> None:
    # The premise: CPython's Random (and SystemRandom) use this method for randrange.
    assert random.Random._randbelow is random.Random._randbelow_with_getrandbits  # type: ignore[attr-defined]
    assert random.SystemRandom._randbelow is random.Random._randbelow_with_getrandbits  # type: ignore[attr-defined]


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32), sizes=st.lists(st.integers(1, 2**70), min_size=1, max_size=50))
def test_randbelow_is_randrange(seed: int, sizes: list[int]) -> None:
    ours, theirs = random.Random(seed), random.Random(seed)
    for n in sizes:
        assert randbelow(ours, n) == theirs.randrange(n)
    assert ours.getstate() == theirs.getstate()


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32),
       spans=st.lists(st.tuples(st.integers(0, 5000), st.integers(0, 5000)), min_size=1,
                      max_size=50))
def test_start_plus_randbelow_is_randint(seed: int, spans: list[tuple[int, int]]) -> None:
    # MemberTable.add draws a probe slot in [start, len - 1] this way.
    ours, theirs = random.Random(seed), random.Random(seed)
    for a, w in spans:
        b = a + w
        assert a + randbelow(ours, b - a + 1) == theirs.randint(a, b)
    assert ours.getstate() == theirs.getstate()
