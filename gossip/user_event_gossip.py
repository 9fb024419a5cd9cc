"""User events: application messages gossiped to every member (serf-style).

Each event is signed by its sender and numbered by a per-sender sequence and a Lamport
time; receivers deliver per-sender in order after a hold-back of `holdback_s` and drop
duplicates with a 64-entry window (gossip/user_events.py, `EventOrderer`). Events ride
the oldest-first user queue, which has first claim on `user_share` of each message.

An event whose Lamport time is ≥ 2^62 or more than 2^32 ahead of our clock is
dropped and counted (`event_lamport_out_of_range`): witnessing it would push our next
event's time out of the wire's range.

Invariants: our own sequence numbers are 0, 1, … with no gap (`next_seq` is the next);
only events from live members are verified, queued or delivered.
"""

from __future__ import annotations

from gossip.broadcast_queue import BroadcastQueue
from gossip.claim_verifier import Verifier
from gossip.counters import count
from gossip.events import UserEventReceived
from gossip.local_node import LocalNode
from gossip.member_table import MemberTable
from gossip.members import LIVE
from gossip.messages import KIND_EVENT, MAX_USER_PAYLOAD_BYTES, UserEvent, check_event
from gossip.profiles import SwimConfig
from gossip.user_events import EventOrderer
from overlay.core.effects import Effect, Emit
from overlay.core.errors import LocalProtocolError, WireError
from overlay.core.validate import counter_step_ok


class UserEventGossip:
    """Sending, receiving and ordered delivery of user events."""

    __slots__ = ("local", "next_seq", "orderer", "stats", "table", "uq", "verifier")

    def __init__(
        self,
        local: LocalNode,
        table: MemberTable,
        uq: BroadcastQueue,
        config: SwimConfig,
        verifier: Verifier,
        stats: dict[str, int],
    ) -> None:
        self.local = local
        self.table = table
        self.uq = uq
        self.verifier = verifier
        self.stats = stats
        self.orderer = EventOrderer(
            config.max_event_senders, config.max_holdback_per_sender, config.holdback_s
        )
        #: Sequence number of our next event.
        self.next_seq = 0

    def send(self, name: str, payload: bytes, now: float) -> UserEvent:
        """The `SendUserEvent` command; misuse raises `LocalProtocolError`."""
        try:
            check_event(name, payload)
        except WireError as e:
            raise LocalProtocolError(str(e)) from None
        me = self.local
        if not me.started or me.leaving:
            raise LocalProtocolError("send user events after Join and before Leave")
        ev = UserEvent.create(me.keys, name, payload, self.orderer.tick(), self.next_seq)
        self.next_seq += 1
        self.orderer.offer(ev, now)  # remember it, so echoes are duplicates
        self.uq.queue(("ev", me.me, ev.seq), ev)
        return ev

    def on_event(self, ev: UserEvent, now: float, out: list[Effect]) -> None:
        if len(ev.payload) > MAX_USER_PAYLOAD_BYTES:
            count(self.stats, "event_oversized")
            return
        if ev.sender == self.local.me:
            return  # our own event coming back
        m = self.table.get(ev.sender)
        if m is None or m.state not in LIVE:
            count(self.stats, "event_from_non_member")
            return
        if self.orderer.is_duplicate(ev):
            count(self.stats, "event_duplicate")
            return
        if not counter_step_ok(ev.lamport, self.orderer.lamport):
            count(self.stats, "event_lamport_out_of_range")
            return
        self.verifier.check(ev.env, KIND_EVENT)
        is_new, ready = self.orderer.offer(ev, now)
        if is_new:
            self.uq.queue(("ev", ev.sender, ev.seq), ev)
        for e in ready:
            out.append(Emit(UserEventReceived(e.sender, e.name, e.payload, e.lamport, e.seq,
                                                e.env)))

    def expire(self, now: float, out: list[Effect]) -> None:
        """Deliver held events whose hold-back has passed (gaps skipped)."""
        for ev in self.orderer.expire(now):
            out.append(Emit(UserEventReceived(ev.sender, ev.name, ev.payload, ev.lamport,
                                                ev.seq, ev.env)))
