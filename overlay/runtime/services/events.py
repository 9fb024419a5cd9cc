"""The node's event bus: fan-out of the cores' `Emit` effects (context.EventBus).

Every event the composed node emits is handed, in order and on the driver's task, to
each subscriber (the services that act on events: capsules, trust, the peer book, the
DHT client, the block service, the daemon's leave). Then, unless it is one of the
frequent, uninteresting `UNLOGGED` kinds, it is stamped with the driver's clock,
appended to the bounded recent-events log and offered to every watcher (the API's
`/v1/events/watch` streams).

Bounds: the log keeps the last `max_events` (`[node] event_log`); a watcher's channel
holds `max_buffer` events and a slow watcher misses events rather than stalling the
node (the driver must never block on a reader); a watcher whose reader is gone is
dropped at the next event.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import trio

from dht.api import PeerAddressesLearned
from overlay.exchange.engine import BlockReceived

#: Events not logged nor watched: one per block or address update, of no use to a reader.
UNLOGGED: tuple[type, ...] = (PeerAddressesLearned, BlockReceived)
#: Events a watcher's channel holds before it starts missing them.
WATCH_BUFFER = 256

Stamped = tuple[float, object]


class EventBus:
    """Subscribers, the recent-events log and watchers of the node's events."""

    def __init__(self, clock: Callable[[], float], max_events: int) -> None:
        self._clock = clock
        self._handlers: list[Callable[[object], None]] = []
        self._log: deque[Stamped] = deque(maxlen=max_events)
        self._watchers: list[trio.MemorySendChannel[Stamped]] = []
        #: Events a slow watcher missed (its channel was full).
        self.watcher_drops = 0

    def subscribe(self, handler: Callable[[object], None]) -> None:
        """Call `handler(event)` for every event, in subscription order."""
        self._handlers.append(handler)

    def watch(self, max_buffer: int = WATCH_BUFFER) -> trio.MemoryReceiveChannel[Stamped]:
        """A channel of (time, event); closing it ends the watch."""
        send, recv = trio.open_memory_channel[Stamped](max_buffer)
        self._watchers.append(send)
        return recv

    def recent(self) -> list[Stamped]:
        return list(self._log)

    @property
    def watchers(self) -> int:
        return len(self._watchers)

    def publish(self, ev: object) -> None:
        """The driver's `emit`: hand `ev` to subscribers, then log and watchers."""
        for handler in self._handlers:
            handler(ev)
        if isinstance(ev, UNLOGGED):
            return
        stamped = (self._clock(), ev)
        self._log.append(stamped)
        for ch in list(self._watchers):
            try:
                ch.send_nowait(stamped)
            except trio.WouldBlock:
                self.watcher_drops += 1  # a slow watcher misses events, the node goes on
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._watchers.remove(ch)  # its reader is gone
                ch.close()
