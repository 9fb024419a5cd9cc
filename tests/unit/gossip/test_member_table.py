"""MemberTable keeps its books: live count, probe order, membership, under any sequence
of add / suspect / dead / left / refute / remove / reap / probe / sample."""

import math
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from gossip.member_table import MemberTable
from gossip.members import LIVE, MemberState
from gossip.messages import Alive
from overlay.core.crypto import KeyPair

KEYS = [KeyPair(bytes([i + 40]) * 32) for i in range(8)]
ALIVES = {k.peer_id: Alive.create(k, 0, ()) for k in KEYS}
PEERS = list(ALIVES)


def test_add_counts_live_and_places_in_probe_order() -> None:
    t = MemberTable()
    rng = random.Random(1)
    assert t.n_live == 1 and len(t) == 0
    for p in PEERS[:3]:
        t.add(ALIVES[p], 0.0, rng)
    assert t.n_live == 4
    assert sorted(t.probe_order, key=lambda p: p.raw) == sorted(PEERS[:3], key=lambda p: p.raw)
    with pytest.raises(ValueError):
        t.add(ALIVES[PEERS[0]], 1.0, rng)
    t.check_invariants()


def test_suspect_stays_live_dead_does_not_and_reap_drops_it() -> None:
    t = MemberTable()
    rng = random.Random(2)
    a, b = PEERS[:2]
    t.add(ALIVES[a], 0.0, rng)
    t.add(ALIVES[b], 0.0, rng)
    t.set_state(t[a], MemberState.SUSPECT, 1.0)
    assert t.n_live == 3
    t.set_state(t[a], MemberState.DEAD, 2.0)
    assert t.n_live == 2
    assert t.reap(1.9) == []  # dead since 2.0: not yet
    assert t.reap(2.0) == [a]
    assert a not in t and a not in t.probe_order and t.n_live == 2
    t.check_invariants()


def test_probe_pass_visits_every_live_member_once() -> None:
    t = MemberTable()
    rng = random.Random(3)
    for p in PEERS:
        t.add(ALIVES[p], 0.0, rng)
    t.set_state(t[PEERS[0]], MemberState.DEAD, 1.0)
    t.set_state(t[PEERS[1]], MemberState.SUSPECT, 1.0)
    seen = [t.next_probe_target(rng) for _ in range(len(PEERS) - 1)]
    assert set(seen) == set(PEERS[1:]) and len(set(seen)) == len(seen)


@pytest.mark.parametrize("seed", range(40))
def test_a_probe_call_finds_the_one_live_member_across_a_reshuffle(seed: int) -> None:
    # One live member among dead ones: every call must return it, also the calls
    # that reach the end of a pass and reshuffle (the live member may land anywhere
    # in the new order, after as many dead entries as the pass had left).
    t = MemberTable()
    rng = random.Random(seed)
    for p in PEERS:
        t.add(ALIVES[p], 0.0, rng)
    for p in PEERS[1:]:
        t.set_state(t[p], MemberState.DEAD, 1.0)
    for _ in range(3 * len(PEERS)):
        assert t.next_probe_target(rng) == PEERS[0]
        t.check_invariants()
    t.set_state(t[PEERS[0]], MemberState.LEFT, 2.0)
    assert t.next_probe_target(rng) is None


class TableMachine(RuleBasedStateMachine):
    """The table against a plain model: peer -> state."""

    def __init__(self) -> None:
        super().__init__()
        self.t = MemberTable()
        self.rng = random.Random(0)
        self.model: dict[Any, MemberState] = {}
        self.now = 0.0

    def _tick(self) -> float:
        self.now += 1.0
        return self.now

    @rule(p=st.sampled_from(PEERS))
    def add(self, p: Any) -> None:
        if p in self.model:
            with pytest.raises(ValueError):
                self.t.add(ALIVES[p], self._tick(), self.rng)
            return
        m = self.t.add(ALIVES[p], self._tick(), self.rng)
        assert m.state is MemberState.ALIVE
        self.model[p] = MemberState.ALIVE

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data(), state=st.sampled_from(list(MemberState)))
    def transition(self, data: Any, state: MemberState) -> None:
        """suspect / dead / left, or refute (back to ALIVE), from any state."""
        p = data.draw(st.sampled_from(sorted(self.model, key=lambda q: q.raw)))
        now = self._tick()
        self.t.set_state(self.t[p], state, now)
        assert self.t[p].since == now
        self.model[p] = state

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def remove(self, data: Any) -> None:
        p = data.draw(st.sampled_from(sorted(self.model, key=lambda q: q.raw)))
        self.t.remove(p)
        del self.model[p]

    @rule(back=st.floats(0.0, 10.0))
    def reap(self, back: float) -> None:
        horizon = self.now - back
        gone = self.t.reap(horizon)
        for p in gone:
            assert self.model.pop(p) in (MemberState.DEAD, MemberState.LEFT)
        for p in self.model:
            m = self.t[p]
            assert not (m.state in (MemberState.DEAD, MemberState.LEFT) and m.since <= horizon)

    @rule()
    def probe(self) -> None:
        target = self.t.next_probe_target(self.rng)
        live = {p for p, s in self.model.items() if s in LIVE}
        if live:
            assert target in live, "no target though a member is live"
        else:
            assert target is None

    @rule(k=st.integers(0, 5), alive_only=st.booleans())
    def sample(self, k: int, alive_only: bool) -> None:
        states = (MemberState.ALIVE,) if alive_only else LIVE
        got = self.t.sample(k, states, self.rng)
        assert len(got) == len(set(got)) <= k
        assert all(self.model[p] in states for p in got)

    @invariant()
    def books_agree(self) -> None:
        self.t.check_invariants()
        assert set(self.t) == set(self.model)
        assert self.t.n_live == 1 + sum(1 for s in self.model.values() if s in LIVE)
        assert all(self.t[p].state is s for p, s in self.model.items())


TestTableMachine = TableMachine.TestCase
TestTableMachine.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.mark.parametrize("seed", range(10))
def test_column_put_and_blend_match_the_in_len_set_sequence(seed: int) -> None:
    # `put` / `blend` (one slot lookup, the prober's hot path) against the sequence
    # they replace, on twin columns of one table, members coming and going (values of
    # peers outside the table live in the side dict), with a cap that bites.
    t = MemberTable()
    rng = random.Random(seed)
    ref2, new2, ref1, new1 = t.column(2), t.column(2), t.column(1), t.column(1)
    cap = 4
    for step in range(400):
        p = rng.choice(PEERS)
        op = rng.randrange(5)
        if op == 0:
            if p in t:
                t.remove(p)
            else:
                t.add(ALIVES[p], float(step), rng)
        elif op in (1, 2):  # a coordinate row; op 2: members only (on_ping)
            row = (rng.uniform(-1, 1), rng.uniform(0, 1))
            members_only = op == 2
            if (not members_only or p in t) and (p in ref2 or len(ref2) < cap):
                ref2.set(p, row)
                expected = True
            else:
                expected = False
            assert new2.put(p, row, cap, members_only=members_only) is expected
        else:  # an RTT sample (EWMA)
            sample = rng.uniform(0.001, 0.2)
            old = ref1.first(p)
            expected = not (old is None and len(ref1) >= cap)
            if expected:
                ref1.set(p, (sample if old is None else old + 0.2 * (sample - old),))
            assert new1.blend(p, sample, 0.2, cap) is expected
        assert len(ref2) == len(new2) and len(ref1) == len(new1)
        for q in PEERS:
            assert ref2.get(q) == new2.get(q) and ref1.get(q) == new1.get(q)
    t.check_invariants()
    fresh = MemberTable()
    fresh.add(ALIVES[PEERS[0]], 0.0, rng)
    with pytest.raises(ValueError):  # as `set`: the column's width, not NaN
        fresh.column(2).put(PEERS[0], (1.0,), cap)
    with pytest.raises(ValueError):
        fresh.column(1).put(PEERS[0], (math.nan,), cap)
