"""`Directory.closest` (trie walk over sorted keys) equals a brute-force XOR sort, under
random adds, removes and skip sets; `sample` draws distinct live members."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.capsule.members import Directory, Member, MemberView
from overlay.core.crypto import KeyPair

POOL = [KeyPair.from_rng_seed(random.Random(i).randbytes(32)).peer_id for i in range(300)]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, len(POOL) - 1), min_size=0, max_size=120),
    st.lists(st.integers(0, len(POOL) - 1), max_size=40),
    st.lists(st.integers(0, len(POOL) - 1), max_size=20),
    st.integers(0, 2**256 - 1),
    st.integers(1, 25),
)
def test_closest_matches_brute_force(
    add: list[int], remove: list[int], skip: list[int], target: int, k: int
) -> None:
    d = Directory()
    for i in add:
        d.put(Member(POOL[i]))
    for i in remove:
        d.remove(POOL[i])
    hidden = {POOL[i]: 0.0 for i in skip}
    live = [p for p in d.live if p not in hidden]
    want = sorted(live, key=lambda p: p.key ^ target)[:k]
    assert d.closest(target, k, hidden) == want
    # A peer's own key finds that peer first.
    for p in live[:3]:
        assert d.closest(p.key, 1, hidden) == [p]


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 299), st.integers(1, 50), st.integers(0, 2**32))
def test_sample_and_candidates_draw_distinct_live_members(n: int, d: int, seed: int) -> None:
    directory = Directory(Member(p) for p in POOL[:n])
    got = directory.sample(random.Random(seed), d)
    assert len(got) == min(n, d) and len({m.peer for m in got}) == len(got)
    view = MemberView(POOL[0], directory=directory)
    if n > 1:
        view.mark_unreachable(POOL[1], 0.0)
    cands = view.candidates(random.Random(seed), d)
    assert all(view.is_live(m.peer) for m in cands)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["add", "remove", "hide", "query"]),
                  st.integers(0, 59), st.integers(1, 6)),
        max_size=80,
    ),
    st.lists(st.integers(0, 2**256 - 1), min_size=1, max_size=4),
)  # fmt: skip
def test_cached_view_answers_track_directory_changes(
    ops: list[tuple[str, int, int]], targets: list[int]
) -> None:
    """A view's cached closest sets stay exact while the shared directory changes."""
    d = Directory(Member(p) for p in POOL[:30])
    view = MemberView(POOL[0], directory=d)
    now = 0.0
    for op, i, k in ops:
        now += 1.0
        if op == "add":
            d.put(Member(POOL[i]))
        elif op == "remove" and i != 0:
            d.remove(POOL[i])
        elif op == "hide":
            view.mark_unreachable(POOL[i], now)
        for t in targets if op == "query" else targets[:1]:
            live = [p for p in d.live if view.is_live(p)]
            want = sorted(live, key=lambda p: p.key ^ t)[:k]
            assert view.closest(t, k) == want
