"""services/events.EventBus: subscribers in order, a bounded log, watchers that never
stall the node."""

from __future__ import annotations

from dataclasses import dataclass

import trio
import trio.testing

from dht.api import PeerAddressesLearned
from overlay.core.crypto import KeyPair
from overlay.runtime.services.events import EventBus

A = KeyPair(b"\x01" * 32).peer_id


@dataclass(frozen=True)
class Happened:
    n: int


def test_subscribers_see_every_event_in_order_before_the_log() -> None:
    bus = EventBus(lambda: 5.0, max_events=10)
    seen: list[tuple[str, object]] = []
    bus.subscribe(lambda ev: seen.append(("first", ev)))
    bus.subscribe(lambda ev: seen.append(("second", ev)))
    bus.publish(Happened(1))
    quiet = PeerAddressesLearned(A, ())
    bus.publish(quiet)
    assert seen == [("first", Happened(1)), ("second", Happened(1)),
                    ("first", quiet), ("second", quiet)]
    # Frequent address updates reach subscribers but not the log.
    assert bus.recent() == [(5.0, Happened(1))]


def test_the_log_keeps_only_the_last_max_events() -> None:
    now = [0.0]
    bus = EventBus(lambda: now[0], max_events=3)
    for i in range(5):
        now[0] = float(i)
        bus.publish(Happened(i))
    assert bus.recent() == [(2.0, Happened(2)), (3.0, Happened(3)), (4.0, Happened(4))]


def test_a_slow_watcher_misses_events_and_a_closed_one_is_dropped() -> None:
    async def main() -> None:
        bus = EventBus(trio.current_time, max_events=100)
        slow = bus.watch(max_buffer=2)
        fast = bus.watch(max_buffer=10)
        for i in range(5):
            bus.publish(Happened(i))  # never blocks, whatever the watchers do
        assert [ev for _, ev in [slow.receive_nowait(), slow.receive_nowait()]] == [
            Happened(0), Happened(1)]
        assert [fast.receive_nowait()[1] for _ in range(5)] == [Happened(i) for i in range(5)]
        await slow.aclose()
        bus.publish(Happened(5))
        assert bus.watchers == 1
        assert fast.receive_nowait()[1] == Happened(5)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
