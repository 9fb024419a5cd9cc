"""User events: application messages gossiped to every member (serf-style).

Each event is signed by its sender and numbered by a per-sender sequence and a Lamport
time; receivers deliver per-sender in order after a hold-back of `holdback_s` and drop
duplicates with a 64-entry window (gossip/user_events.py, `EventOrderer`). Events ride
the oldest-first user queue, which has first claim on `user_share` of each message.
"""

from __future__ import annotations

from gossip.dissemination import Dissemination
from gossip.events import UserEventReceived
from gossip.messages import KIND_EVENT, MAX_USER_PAYLOAD_BYTES, UserEvent, check_event
from gossip.swim_state import LIVE
from overlay.core.effects import Effect, Emit
from overlay.core.errors import LocalProtocolError, WireError


class UserEventGossip(Dissemination):
    """Sending and receiving user events (see module docstring)."""

    def _send_event(self, name: str, payload: bytes, now: float) -> None:
        try:
            check_event(name, payload)
        except WireError as e:
            raise LocalProtocolError(str(e)) from None
        if not self.started or self.leaving:
            raise LocalProtocolError("send user events after Join and before Leave")
        ev = UserEvent.create(self.keys, name, payload, self._events.tick(), self._event_seq)
        self._event_seq += 1
        self._events.offer(ev, now)  # remember it, so echoes are duplicates
        self._uq.queue(("ev", self.me, ev.seq), ev)

    def _on_user_event(self, ev: UserEvent, now: float, out: list[Effect]) -> None:
        if len(ev.payload) > MAX_USER_PAYLOAD_BYTES:
            self._count("event_oversized")
            return
        if ev.sender == self.me:
            return  # our own event coming back
        m = self.members.get(ev.sender)
        if m is None or m.state not in LIVE:
            self._count("event_from_non_member")
            return
        if self._events.is_duplicate(ev):
            self._count("event_duplicate")
            return
        self.verifier.check(ev.env, KIND_EVENT)
        is_new, ready = self._events.offer(ev, now)
        if is_new:
            self._uq.queue(("ev", ev.sender, ev.seq), ev)
        for e in ready:
            out.append(Emit(UserEventReceived(e.sender, e.name, e.payload, e.lamport, e.seq)))
