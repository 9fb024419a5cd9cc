"""The driver's fair inbox (overlay/runtime/inbox.py) under arbitrary sequences of
offers and takes from a few peers and local callers: bounded, FIFO per source, every
refusal counted, and above the high-water mark a peer's frame refused exactly when
that peer holds at least the mean share (never a peer with none queued)."""

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.core.crypto import KeyPair
from overlay.core.effects import Connected, Received
from overlay.runtime.inbox import LOCAL, FairInbox, source_of

PEERS = [KeyPair(bytes([i + 1]) * 32).peer_id for i in range(4)]


@dataclass(frozen=True)
class Cmd:
    n: int


# An op: ("take", _, _) or ("offer", who, kind) with who in 0..3 (peers) or 4
# (local); three offers for a take, so the inbox fills past its high-water mark.
OPS = st.lists(st.tuples(st.sampled_from(["take", "offer", "offer", "offer"]),
                         st.integers(0, 4), st.sampled_from(["frame", "frame", "conn"])),
               max_size=400)


@settings(max_examples=300, deadline=None)
@given(ops=OPS, capacity=st.integers(1, 24), high_water=st.integers(0, 30))
def test_bounded_fifo_per_source_counted_and_fair(
        ops: list[tuple[str, int, str]], capacity: int, high_water: int) -> None:
    box = FairInbox(capacity, high_water, max_tracked=2)
    queued: dict[object, list[object]] = {}  # the model: per source, in order
    refused = over_share = seq = 0
    for op, who, kind in ops:
        if op == "take":
            got = box.take()
            if got is None:
                assert not any(queued.values())
                continue
            src = source_of(got)
            assert queued[src][0] == got  # FIFO within a source
            queued[src].pop(0)
            continue
        seq += 1
        if who == 4:
            inp: object = Cmd(seq)
        elif kind == "frame":
            inp = Received(PEERS[who], seq)
        else:
            inp = Connected(PEERS[who]) if seq % 2 else Received(PEERS[who], seq)
        src = source_of(inp)
        total = sum(len(q) for q in queued.values())
        mine = len(queued.get(src, []))
        before = box.stats.over_share
        peers = {s: len(q) for s, q in queued.items() if q and s is not LOCAL}
        if box.offer(inp):
            queued.setdefault(src, []).append(inp)
            assert total < capacity
            if type(inp) is Received and total >= high_water and mine:
                assert mine * len(peers) < sum(peers.values())  # below the mean share
            continue
        refused += 1
        if box.stats.over_share > before:
            over_share += 1
            # Only a peer's frame, above the mark, from a peer at or above the mean.
            assert type(inp) is Received and src is not LOCAL
            assert total >= high_water and mine > 0
            assert mine * len(peers) >= sum(peers.values())
        else:
            assert total >= capacity  # otherwise refused only at the bound
        assert len(box) <= capacity
    assert len(box) == sum(len(q) for q in queued.values())
    assert box.stats.full + box.stats.over_share == refused
    assert box.stats.over_share == over_share
    tracked = sum(box.stats.by_peer.values()) + box.stats.untracked_drops
    assert len(box.stats.by_peer) <= 2
    assert tracked <= refused  # local refusals are not a peer's
