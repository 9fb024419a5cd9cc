"""Hypothesis: routing-table invariants under random seen/fail/remove sequences."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from dht.routing_table import RoutingTable
from overlay.core.ids import KEY_BITS, PeerId, common_prefix_len

ME = PeerId.from_ed25519(bytes(32))
# A small pool so that buckets fill, collide and evict.
POOL = [PeerId.from_ed25519(bytes([i]) * 32) for i in range(1, 120)] + [ME]


class TableMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.t = RoutingTable(ME, k=4, replacement_size=3, max_fails=2, probe_after_s=5.0)
        self.now = 0.0
        self.probed: list[PeerId] = []

    @rule(i=st.integers(0, len(POOL) - 1), dt=st.floats(0, 10))
    def seen(self, i: int, dt: float) -> None:
        self.now += dt
        probe = self.t.seen(POOL[i], self.now)
        if probe is not None:
            assert probe in self.t
            assert probe != POOL[i]
            self.probed.append(probe)

    @rule(i=st.integers(0, len(POOL) - 1))
    def failed(self, i: int) -> None:
        p = POOL[i]
        was_in = p in self.t
        evicted = self.t.failed(p)
        assert not evicted or was_in
        if evicted:
            assert p not in self.t

    @rule(data=st.data())
    def probe_fails(self, data: st.DataObject) -> None:
        probing = self.t.lrs_probing()
        if probing:
            p = data.draw(st.sampled_from(probing))
            assert self.t.failed(p) is True
            assert p not in self.t

    @rule(i=st.integers(0, len(POOL) - 1))
    def remove(self, i: int) -> None:
        self.t.remove(POOL[i])
        assert POOL[i] not in self.t

    # Not named `invariants`: RuleBasedStateMachine keeps its list of invariants there.
    @invariant()
    def table_holds(self) -> None:
        self.t.check_invariants()
        assert ME not in self.t
        assert len(self.t) <= self.t.k * (KEY_BITS + 1)


TestTableMachine = TableMachine.TestCase
TestTableMachine.settings = settings(max_examples=60, stateful_step_count=60, deadline=None)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**256 - 1), st.integers(0, 2**256 - 1))
def test_distance_and_bucket_index_agree(a: int, b: int) -> None:
    """CPL = 256 - bit_length(a ^ b): a smaller bucket index means a larger distance."""
    c = common_prefix_len(a, b)
    d = a ^ b
    if d == 0:
        assert c == KEY_BITS
    else:
        assert 2 ** (KEY_BITS - c - 1) <= d < 2 ** (KEY_BITS - c)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, len(POOL) - 1), max_size=200), st.integers(0, 2**256 - 1))
def test_closest_is_sorted_by_xor_and_complete(seq: list[int], key: int) -> None:
    t = RoutingTable(ME, k=4, replacement_size=2)
    for i in seq:
        t.seen(POOL[i], 0.0)
    got = t.closest(key, 6)
    assert got == sorted(t.peers(), key=lambda p: p.key ^ key)[:6]
    t.check_invariants()
