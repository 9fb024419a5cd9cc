"""Running triggers: the node holding a trigger's lease fires its derived capsules.

A trigger is a capsule (overlay/capsule/trigger_def.py) placed like any other on one
node of kind `trigger`, under a fencing-token lease. `RunRequested` for it starts a
`_Active` here instead of an executor process; it lives until `KillRequested` (the
trigger was removed, or custody re-leased it elsewhere) and then reports an ordinary
exit, so the lease ends as every capsule's does.

While active it fires:

- `user` triggers: every matching user event the node sees (`UserEventReceived`, and
  `UserEventSent` for the node's own) becomes `Capsule.derive(trigger, Origin(event))`;
  a generator collects events into a batch and fires when it holds `count` events,
  `within_s` after its first, or when the next event would exceed the byte budget.
- `topic` triggers: every matching message of the topic, which the node subscribes to
  (services/topics.py, through the narrow `TopicFeed`) for as long as it holds the
  lease; generators batch them as they batch user events.
- `cron` triggers: each tick of the schedule, at the tick.

Exactly once: the derived capsule's id is fixed by (trigger, origin), so firing the
same event twice — the old and the new lease holder after a re-placement, or a
catch-up — submits the same capsule, and custody keeps one record per id. So a new
lease holder re-fires what it cannot know was fired: the user events in the node's
recent-events log since the trigger was created, and for crons the ticks of the last
`RECENT_TICKS_S` (`catchup = "skip"`) or since creation, at most `MAX_CATCHUP` ticks
(`catchup = "all"`). A generator's partial batch is rebuilt from the same log. Topic
messages are not in that log: those published while no node held the lease (a
re-placement's gap, or before the new holder's subscription joined the swarm) are
not fired (docs/triggers.md, known limits).

Submission goes through the local capsule core (`SubmitCapsule`), which retries until
custody acknowledges; the creator's certificate chain travels in the trigger's `chain`
kwarg (colony mode). Counters: `fired`, `fire_failed`, `events_matched`, `catchup`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import structlog
import trio

from gossip.events import UserEventReceived, UserEventSent
from gossip.messages import UserEvent
from overlay.capsule import events as cev
from overlay.capsule.core import SubmitCapsule
from overlay.capsule.executor import CapsuleExited
from overlay.capsule.spec import Capsule
from overlay.capsule.trigger_def import (
    MAX_BATCH_BYTES,
    Event,
    Origin,
    TriggerDef,
    TriggerError,
    payload_of,
)
from overlay.core.certs import Certificate, chain_from_wire
from overlay.core.errors import ColonyError, WireError
from overlay.core.wire import cbor_decode
from overlay.runtime.context import Cores, Spawn, TopicFeed

log = structlog.get_logger("colony.triggers")

#: Exit status a trigger's lease ends with when it is removed (executors' EXIT_CANCELLED).
EXIT_CANCELLED = -3
EXIT_SETUP_FAILED = -1
#: `catchup = "skip"`: ticks this recent are re-fired by a new lease holder (the gap
#: of a re-placement); older missed ticks are skipped.
RECENT_TICKS_S = 120.0
#: `catchup = "all"`: at most this many missed ticks are fired.
MAX_CATCHUP = 100

Recent = Callable[[], list[tuple[float, object]]]


def _user_event(ev: object) -> UserEvent | None:
    """The signed event behind a delivery (None when it carries no envelope)."""
    if isinstance(ev, UserEventReceived | UserEventSent) and ev.env is not None:
        return UserEvent(ev.env, ev.sender, ev.name, ev.payload, ev.lamport, ev.seq)
    return None


def creator_chain(trigger: Capsule) -> tuple[Certificate, ...]:
    """The creator's chain from the trigger's `chain` kwarg (hex CBOR), or ()."""
    text = dict(trigger.spec.kwargs).get("chain")
    if not isinstance(text, str) or not text:
        return ()
    try:
        return tuple(chain_from_wire(cbor_decode(bytes.fromhex(text))))
    except (ValueError, WireError) as e:
        raise TriggerError(f"chain: {e}") from None


@dataclass
class _Active:
    trigger: Capsule
    token: int
    tdef: TriggerDef
    chain: tuple[Certificate, ...]
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    batch: list[Event] = field(default_factory=list)
    batch_due: float = 0.0
    wake: trio.Event = field(default_factory=trio.Event)


class TriggerRuns:
    """The triggers leased to this node, fired on events and ticks."""

    def __init__(self, cores: Cores, spawn: Spawn, recent: Recent,
                 clock: Callable[[], float] | None = None) -> None:
        self.cores = cores
        self.spawn = spawn
        self.recent = recent
        self.clock = clock or cores.now
        self.active: dict[str, _Active] = {}
        self.stats: dict[str, int] = {"fired": 0, "fire_failed": 0, "events_matched": 0,
                                      "catchup": 0, "topic_failed": 0}  # fmt: skip
        #: Topic messages for `topic` triggers (the daemon sets it; None: not offered).
        self.topics: TopicFeed | None = None
        #: Derived capsules submitted here, per trigger (bounded by the triggers known).
        self.fired_by: dict[str, int] = {}

    # ------------------------------------------------------------ lease side

    def start(self, ev: cev.RunRequested) -> None:
        trigger = ev.capsule
        try:
            tdef = trigger.trigger_def
            assert tdef is not None
            chain = creator_chain(trigger)
        except TriggerError as e:  # signed but unusable: end the lease with the reason
            self._exit(trigger.id, ev.token, EXIT_SETUP_FAILED, f"bad trigger: {e}")
            return
        old = self.active.pop(trigger.id, None)
        if old is not None:
            old.scope.cancel()
        act = _Active(trigger, ev.token, tdef, chain)
        self.active[trigger.id] = act
        self.spawn(self._run, act)
        log.info("trigger_started", trigger=trigger.id, token=ev.token, on=tdef.on,
                 name=trigger.spec.name)

    def kill(self, ev: cev.KillRequested) -> bool:
        """Stop a trigger's lease; False when `ev` is not about an active trigger."""
        act = self.active.get(ev.capsule_id)
        if act is None or act.token != ev.token:
            return False
        del self.active[ev.capsule_id]
        act.scope.cancel()
        self._exit(ev.capsule_id, ev.token, EXIT_CANCELLED, ev.reason or "trigger removed")
        return True

    def _exit(self, cid: str, token: int, status: int, reason: str) -> None:
        now = self.clock()
        self.cores.submit(CapsuleExited(cid, token, status, started=now, finished=now,
                                        reason=reason))  # fmt: skip

    # ------------------------------------------------------------ events

    def on_event(self, ev: object) -> None:
        """EventBus subscriber: offer user events to every active user trigger."""
        if not self.active:
            return
        uev = _user_event(ev)
        if uev is None:
            return
        for act in list(self.active.values()):
            self._offer(act, uev)

    def _offer(self, act: _Active, uev: Event) -> None:
        if not act.tdef.matches(uev):
            return
        self.stats["events_matched"] += 1
        if not act.tdef.is_generator:
            self.spawn(self._fire, act, Origin.of((uev,)))
            return
        size = sum(len(payload_of(e)) for e in act.batch)
        if act.batch and size + len(payload_of(uev)) > MAX_BATCH_BYTES:
            self._flush(act)  # the budget is full: fire what we have, start anew
        if not act.batch:
            act.batch_due = self.clock() + act.tdef.within_s if act.tdef.within_s else 0.0
            act.wake.set()
        act.batch.append(uev)
        if len(act.batch) >= act.tdef.count:
            self._flush(act)

    def _flush(self, act: _Active) -> None:
        if act.batch:
            batch, act.batch = tuple(act.batch), []
            self.spawn(self._fire, act, Origin.of(batch))

    # ------------------------------------------------------------ running

    async def _run(self, act: _Active) -> None:
        with act.scope:
            self._catch_up(act)
            if act.tdef.schedule is not None:
                await self._tick_loop(act)
                return
            async with trio.open_nursery() as nursery:
                if act.tdef.on == "topic":
                    nursery.start_soon(self._follow_topic, act)
                if act.tdef.within_s:
                    nursery.start_soon(self._batch_timer, act)
                nursery.start_soon(trio.sleep_forever)  # the lease lasts until killed

    async def _follow_topic(self, act: _Active) -> None:
        """Offer the topic's messages while the lease lasts. A subscription refused (this
        node lacks the topic's subscribe role) ends the lease with the reason, so
        custody places the trigger on a node that can follow the topic."""
        if self.topics is None:
            self._topic_failed(act, "this node runs no topic service")
            return
        try:
            async with self.topics.subscription(act.tdef.event_name) as rx:
                async for msg in rx:
                    if msg.signed is not None:
                        self._offer(act, msg.signed)
        except ColonyError as e:
            self._topic_failed(act, str(e))

    def _topic_failed(self, act: _Active, reason: str) -> None:
        self.stats["topic_failed"] += 1
        log.warning("trigger_topic_failed", trigger=act.trigger.id, error=reason)
        if self.active.get(act.trigger.id) is act:
            del self.active[act.trigger.id]
            self._exit(act.trigger.id, act.token, EXIT_SETUP_FAILED, f"topic: {reason}")
        act.scope.cancel()

    def _catch_up(self, act: _Active) -> None:
        """Re-fire what a previous lease holder may have missed (duplicates collapse)."""
        created = act.trigger.submitted_at
        if act.tdef.schedule is not None:
            now = self.clock()
            since = created if act.tdef.catchup == "all" else max(created, now - RECENT_TICKS_S)
            ticks = act.tdef.schedule.ticks_between(since, now, created, limit=MAX_CATCHUP)
            for tick in ticks:
                self.stats["catchup"] += 1
                self.spawn(self._fire, act, Origin(tick=tick))
            return
        for stamp, ev in self.recent():
            uev = _user_event(ev)
            if uev is not None and stamp >= created:
                self.stats["catchup"] += 1
                self._offer(act, uev)

    async def _tick_loop(self, act: _Active) -> None:
        schedule, created = act.tdef.schedule, act.trigger.submitted_at
        assert schedule is not None
        last = self.clock()
        while True:
            tick = schedule.next_after(last, created)
            if tick is None:
                log.warning("trigger_schedule_never_fires", trigger=act.trigger.id)
                await trio.sleep_forever()
                return
            await trio.sleep(max(0.0, tick - self.clock()))
            self.spawn(self._fire, act, Origin(tick=tick))
            last = tick

    async def _batch_timer(self, act: _Active) -> None:
        while True:
            await act.wake.wait()
            act.wake = trio.Event()
            while act.batch:
                await trio.sleep(max(0.0, act.batch_due - self.clock()))
                if act.batch and self.clock() >= act.batch_due:
                    self._flush(act)

    async def _fire(self, act: _Active, origin: Origin) -> None:
        """Derive and submit the capsule (or a workflow's capsules, parents first)."""
        try:
            members = act.tdef.members(act.trigger.id, act.trigger.spec.name, origin)
            caps = [Capsule.derive(act.trigger, origin, m) for m in members]
        except (ColonyError, TriggerError) as e:
            self.stats["fire_failed"] += 1
            log.warning("trigger_fire_failed", trigger=act.trigger.id, error=str(e))
            return
        for cap in caps:
            await self.cores.submit_wait(SubmitCapsule(cap, act.chain))
        self.stats["fired"] += 1
        tid = act.trigger.id
        if tid in self.fired_by or len(self.fired_by) < 4096:
            self.fired_by[tid] = self.fired_by.get(tid, 0) + 1
        log.info("trigger_fired", trigger=act.trigger.id, capsule=caps[-1].id,
                 capsules=len(caps), tick=origin.tick, events=len(origin.items))
