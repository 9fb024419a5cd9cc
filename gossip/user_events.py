"""User events: Lamport clock, per-sender ordering and duplicate suppression.

Each sender stamps its events with a per-sender sequence number (contiguous: 0, 1, …)
and a Lamport time (serf's LamportClock: `witness` moves past every time seen). A
receiver delivers one sender's events in sequence order, holding back an early
arrival until the gap fills or `holdback_s` passes (then the gap is skipped and
counted). A 64-bit window of recently delivered sequence numbers suppresses
duplicates; the first event seen from a sender starts its sequence (events older
than that, arriving later, are delivered once as `late` if still in the window).

The Lamport clock only moves by witnessing times `UserEventGossip` accepted: below
2^62 and at most 2^32 ahead of ours (overlay/core/validate.py, `counter_step_ok`), so
our own next time always fits the wire's 63 bits.

Bounded: at most `max_senders` senders (oldest forgotten) and `max_held` held events
per sender (on overflow the gap is skipped).
"""

from __future__ import annotations

from gossip.messages import UserEvent
from overlay.core.ids import PeerId

WINDOW = 64


class _Sender:
    __slots__ = ("held", "next", "window")

    def __init__(self, first: int) -> None:
        self.next = first
        #: bit i set ⇔ sequence next-1-i was delivered.
        self.window = 0
        self.held: dict[int, tuple[UserEvent, float]] = {}

    def mark(self, seq: int) -> None:
        """Record `seq` (≥ next) as delivered and advance."""
        shift = seq + 1 - self.next
        self.window = ((self.window << shift) | (1 << 0)) & ((1 << WINDOW) - 1)
        self.next = seq + 1

    def seen(self, seq: int) -> bool:
        if seq >= self.next:
            return seq in self.held
        back = self.next - 1 - seq
        return back >= WINDOW or bool(self.window >> back & 1)


class EventOrderer:
    __slots__ = (
        "_senders",
        "duplicates",
        "gaps",
        "holdback_s",
        "lamport",
        "late",
        "max_held",
        "max_senders",
    )

    def __init__(self, max_senders: int, max_held: int, holdback_s: float) -> None:
        self.max_senders = max(1, max_senders)
        self.max_held = max(1, max_held)
        self.holdback_s = holdback_s
        self.lamport = 0
        self._senders: dict[PeerId, _Sender] = {}
        self.duplicates = 0
        self.gaps = 0
        self.late = 0

    def tick(self) -> int:
        """Lamport time for a new local event."""
        self.lamport += 1
        return self.lamport

    def witness(self, t: int) -> None:
        if t >= self.lamport:
            self.lamport = t + 1

    def is_duplicate(self, ev: UserEvent) -> bool:
        s = self._senders.get(ev.sender)
        return s is not None and s.seen(ev.seq)

    def offer(self, ev: UserEvent, now: float) -> tuple[bool, list[UserEvent]]:
        """(is new, events now deliverable in order). Duplicates return (False, [])."""
        s = self._senders.get(ev.sender)
        if s is None:
            if len(self._senders) >= self.max_senders:
                del self._senders[next(iter(self._senders))]
            s = self._senders[ev.sender] = _Sender(ev.seq)
        if s.seen(ev.seq):
            self.duplicates += 1
            return False, []
        self.witness(ev.lamport)
        if ev.seq < s.next:  # older than our first contact but inside the window
            s.window |= 1 << (s.next - 1 - ev.seq)
            self.late += 1
            return True, [ev]
        if ev.seq > s.next:
            s.held[ev.seq] = (ev, now)
            if len(s.held) > self.max_held:
                return True, self._skip_gap(s)
            return True, []
        s.mark(ev.seq)
        out = [ev]
        self._drain(s, out)
        return True, out

    def _drain(self, s: _Sender, out: list[UserEvent]) -> None:
        while s.next in s.held:
            ev, _ = s.held.pop(s.next)
            s.mark(ev.seq)
            out.append(ev)

    def _skip_gap(self, s: _Sender) -> list[UserEvent]:
        first = min(s.held)
        self.gaps += first - s.next
        s.next = first
        s.window = 0
        out: list[UserEvent] = []
        self._drain(s, out)
        return out

    def expire(self, now: float) -> list[UserEvent]:
        """Skip gaps whose held events have waited `holdback_s`; deliver what follows."""
        out: list[UserEvent] = []
        for s in self._senders.values():
            if s.held and any(now - at >= self.holdback_s for _, at in s.held.values()):
                out.extend(self._skip_gap(s))
        return out

    def has_held(self) -> bool:
        """Is any event held back (so that `expire` may deliver something)?"""
        # Asked after every input to a node whose gossip tick is parked (sim/world.py):
        # no generator when there is no sender at all (no user events yet).
        senders = self._senders
        return bool(senders) and any(s.held for s in senders.values())

    def held_count(self) -> int:
        return sum(len(s.held) for s in self._senders.values())

    def __len__(self) -> int:
        return len(self._senders)
