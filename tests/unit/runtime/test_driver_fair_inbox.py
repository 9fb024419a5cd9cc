"""The driver's fair inbox (runtime/inbox.py) on virtual time: a flooding peer's
inputs are dropped and counted against it, a good peer's and our own all get through.

Starvation is modelled by the readers out-running the loop: each round the flooder
and the good peer submit a burst without yielding (as transport readers do when the
loop gets no CPU), then the loop runs.
"""

from dataclasses import dataclass
from typing import Any

import trio
import trio.testing

from overlay.core.crypto import KeyPair
from overlay.core.effects import Connected, Effect, Received
from overlay.runtime.driver import Driver
from overlay.runtime.inbox import LOCAL, FairInbox, source_of

FLOODER = KeyPair(b"\x0f" * 32).peer_id
GOOD = KeyPair(b"\x06" * 32).peer_id
OTHER = KeyPair(b"\x07" * 32).peer_id


@dataclass(frozen=True)
class Cmd:
    """A local command (names no peer)."""

    n: int


class Recorder:
    def __init__(self) -> None:
        self.seen: list[Any] = []

    def handle(self, inp: Any, now: float) -> list[Effect]:
        self.seen.append(inp)
        return []


def _burst(d: Driver, first_ack: int, size: int, every: int) -> int:
    """One burst of `size` flood inputs with a good peer's ack every `every`; the
    number of acks submitted (numbered from `first_ack`)."""
    acks = 0
    for i in range(size):
        d.submit(Received(FLOODER, ("junk", i)))
        if i % every == 0:
            assert d.submit(Received(GOOD, ("ack", first_ack + acks))), "good input refused"
            acks += 1
    return acks


def test_flooder_is_dropped_and_counted_good_peer_and_local_get_through() -> None:
    async def main() -> None:
        core = Recorder()
        d = Driver(core, send=lambda p, m: None, inbox_size=512, wall_offset=0.0)
        good = flood = 0
        async with trio.open_nursery() as n:
            await n.start(d.run)
            for r in range(20):
                good += _burst(d, good, 2_000, every=50)
                flood += 2_000
                await d.submit_wait(Cmd(r))  # our own command: never dropped
                await trio.sleep(0.01)  # the loop gets its turn (starved meanwhile)
            await trio.sleep(1)
            n.cancel_scope.cancel()
        acks = [i.msg[1] for i in core.seen if isinstance(i, Received) and i.peer == GOOD]
        assert acks == list(range(good))  # every one, in order
        assert [i.n for i in core.seen if isinstance(i, Cmd)] == list(range(20))
        junk = sum(1 for i in core.seen if isinstance(i, Received) and i.peer == FLOODER)
        drops = d.inbox.stats.dropped_by_peer
        assert junk + drops[FLOODER] == flood
        assert drops[FLOODER] > flood // 2  # the flood was well above what fits
        assert GOOD not in drops
        assert d.stats.inputs_dropped == d.stats.inputs_over_share == drops[FLOODER]
        assert d.top_droppers() == [(FLOODER, drops[FLOODER])]

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_without_fairness_the_good_peer_loses_inputs() -> None:
    """The same flood with the high-water mark at the bound (a plain FIFO bound):
    what the fair inbox prevents does happen."""

    async def main() -> None:
        core = Recorder()
        d = Driver(core, send=lambda p, m: None, inbox_size=512, inbox_high_water=512,
                   wall_offset=0.0)
        refused = 0
        async with trio.open_nursery() as n:
            await n.start(d.run)
            for _ in range(5):
                for i in range(2_000):
                    d.submit(Received(FLOODER, i))
                    if i % 50 == 0:
                        refused += not d.submit(Received(GOOD, i))
                await trio.sleep(0.01)
            n.cancel_scope.cancel()
        assert refused > 0
        assert d.inbox.stats.dropped_by_peer[GOOD] == refused

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_round_robin_serves_a_good_peer_within_one_turn() -> None:
    box = FairInbox(4096)
    for i in range(2_000):
        assert box.offer(Received(FLOODER, i))
    box.offer(Received(GOOD, "ack"))
    box.offer(Cmd(1))
    firsts = [box.take() for _ in range(3)]
    assert Received(GOOD, "ack") in firsts and Cmd(1) in firsts
    assert len(box) == 1_999


def test_share_is_the_mean_of_active_peers_above_high_water() -> None:
    box = FairInbox(100, high_water=10)
    for i in range(10):
        assert box.offer(Received(FLOODER, i))
    assert not box.offer(Received(FLOODER, 10))  # alone above high water: over share
    for i in range(5):  # below the mean (10 + k) / 2 until it holds as many
        assert box.offer(Received(GOOD, i))
    assert box.offer(Received(OTHER, 0))
    assert box.stats.over_share == 1
    # Inputs that are not frames are never refused for fairness, only at the bound.
    assert box.offer(Connected(FLOODER))
    assert box.offer(Cmd(0))


def test_hard_bound_and_waiting_local_callers_come_first() -> None:
    async def main() -> None:
        core = Recorder()
        d = Driver(core, send=lambda p, m: None, inbox_size=4, inbox_high_water=4,
                   wall_offset=0.0)
        for i in range(4):
            assert d.submit(Received(GOOD, i))
        assert not d.submit(Cmd(0))  # full: even our own non-waiting input
        async with trio.open_nursery() as n:
            n.start_soon(d.submit_wait, Cmd(1))
            await trio.testing.wait_all_tasks_blocked()
            assert d.inbox.local_waiting == 1
            assert not d.submit(Received(OTHER, 0))  # the room goes to the waiter
            await n.start(d.run)
            await trio.sleep(1)
            n.cancel_scope.cancel()
        assert Cmd(1) in core.seen
        assert d.inbox.stats.full == 2
        assert d.inbox.stats.dropped_by_peer == {OTHER: 1}

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_per_peer_drop_counts_are_bounded() -> None:
    box = FairInbox(1, max_tracked=2)
    box.offer(Cmd(0))
    peers = [KeyPair(bytes([i]) * 32).peer_id for i in range(1, 5)]
    for p in peers:
        assert not box.offer(Received(p, 0))
    assert len(box.stats.dropped_by_peer) == 2
    assert box.stats.untracked_drops == 2
    assert box.stats.full == 4


def test_sources() -> None:
    assert source_of(Received(GOOD, 1)) == GOOD.raw
    assert source_of(Connected(GOOD)) == GOOD.raw
    assert source_of(Cmd(1)) is LOCAL
