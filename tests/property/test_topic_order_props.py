"""PublisherOrder under any arrival order: each message at most once, each publisher's
deliveries strictly increasing in (epoch, seq), every bound held; and the signed
payload decoder raises only WireError on any bytes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gossip.topic_order import MAX_SKIPPED, OrderConfig, PublisherOrder
from gossip.topic_signed import MAX_DATA_BYTES, open_payload, topic_id
from overlay.core.errors import WireError
from overlay.core.ids import PeerId

PUBS = [PeerId.from_ed25519(bytes([i]) * 32) for i in range(1, 5)]
CFG = OrderConfig(reorder_s=1.0, max_held=4, max_publishers=3, max_age_s=50.0, future_s=5.0)

# (publisher index, epoch, seq, time step); the time step makes holds expire too
ARRIVAL = st.tuples(st.integers(0, 2), st.integers(1, 2), st.integers(1, 12),
                    st.floats(0.0, 0.8))


@settings(max_examples=300, deadline=None)
@given(st.lists(ARRIVAL, max_size=60))
def test_at_most_once_in_order_and_bounded(arrivals: list[tuple[int, int, int, float]]) -> None:
    o: PublisherOrder[tuple[int, int, int]] = PublisherOrder(CFG)
    delivered: list[tuple[int, int, int]] = []
    deadlines: dict[int, float] = {}
    now = 0.0

    def take(items: list[tuple[tuple[int, int, int], int]]) -> None:
        for item, gap in items:
            assert gap >= 0
            delivered.append(item)

    for p, epoch, seq, dt in arrivals:
        now += dt
        for q, at in sorted(deadlines.items()):
            if at <= now:  # the hold timers that fell due, as a driver fires them
                del deadlines[q]
                take(o.expire(PUBS[q], now))
        if o.check(PUBS[p], epoch, seq, now, now) is None:
            ready, deadline = o.accept(PUBS[p], epoch, seq, (p, epoch, seq), now)
            take(ready)
            if deadline is not None:
                deadlines[p] = deadline
        assert len(o.pubs) <= CFG.max_publishers
        assert all(len(x.held) <= CFG.max_held and len(x.skipped) <= MAX_SKIPPED
                   for x in o.pubs.values())
    for q in list(deadlines):
        take(o.expire(PUBS[q], now + 10.0))
    # Three publishers, a table of three: no eviction (that loss of replay state is
    # counted, and tested in tests/unit/gossip/test_topic_order.py).
    assert o.counters["publishers_evicted"] == 0
    assert len(delivered) == len(set(delivered))  # at most once
    for q in range(3):
        mine = [(e, s) for p, e, s in delivered if p == q]
        assert mine == sorted(mine)  # each publisher's order, across epochs too


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_open_payload_raises_only_wire_errors(data: bytes) -> None:
    try:
        m = open_payload(data, topic_id("t"), None)
    except WireError as e:
        assert str(e)  # a reason, for the counters' logs
        return
    assert m.name == "t" and len(m.data) <= MAX_DATA_BYTES  # only a real signed message
