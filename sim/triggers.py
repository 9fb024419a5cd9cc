"""Trigger simulation: triggers on user events fired by real capsule cores, at 10^4 nodes.

Scenario: a capsule scenario (``protocols = ["capsule"]``, sim/capsules.py) with two
more workloads, ``kind = "trigger"`` (create triggers through random live nodes;
one-shot with ``count``, or a rate) and ``kind = "trigger_event"`` (signed user events
from random live nodes, each for one trigger chosen at random). `simulation_for`
returns a `TriggerSimulation` for such scenarios.

What is real: each trigger is a signed capsule built by `trigger_spec` (as the API
builds it), kept by custody and leased to a node of executor kind `trigger` as in the
daemon; each firing is `Capsule.derive(trigger, Origin(event))` on a real signed
`UserEvent`, submitted to the holder's own core, which replicates it to the derived
capsule's custodians and places it like any capsule. Duplicate firings (the old and the
new holder after a re-placement, a catch-up) submit the same capsule id, and custody
collapses them: that is the exactly-once mechanism under test.

What is modelled (as services/trigger_runs.py behaves in the daemon):
- gossip of user events: an event reaches every live node `d` after it was published,
  `d` uniform in [event_spread_s / 10, event_spread_s] (push gossip in a cell of 10^4
  with 3 targets per 200 ms round takes ~10 rounds: docs/simulation.md, fidelity 3);
  the node that holds the trigger's lease then fires it;
- the recent-events log a new holder catches up from: the last `event_log` user
  events the node received since it (re)started. The daemon's log holds every logged
  event kind, so its window of user events is shorter than this one: an upper bound.

Measured (metrics.json): `trigger_event_to_fired_s` (publish → the first holder
submitted the derived capsule), `trigger_event_to_running_s` (→ the derived capsule's
first `CapsuleStarted`), `trigger_event_to_finished_s`; counters for events published,
fired, missed (never fired by the end), duplicate and catch-up firings, trigger
re-placements, and derived capsules accepted twice (the base class's check). The
workload's events should end `run_max_s` plus a takeover before the run does.
"""

from __future__ import annotations

import json
import random
from collections import deque
from dataclasses import dataclass

from gossip.messages import UserEvent
from overlay.capsule import events as ev
from overlay.capsule.core import SubmitCapsule
from overlay.capsule.executor import CapsuleExited, ExecutorConfig
from overlay.capsule.spec import Capsule
from overlay.capsule.trigger_def import TRIGGER_EXECUTOR, TRIGGER_FUNCTION, Origin
from overlay.capsule.trigger_spec import trigger_spec
from sim.capsules import CapsuleSimulation
from sim.scenario import Scenario, Workload

TRIGGER_WORKLOADS = ("trigger", "trigger_event")
#: Why an event was never fired: its trigger's custody lost a majority for good (it
#: cannot be re-placed until one returns); the next holder's node restarted after the
#: event reached it (its in-memory log lost it); the event was older than the next
#: holder's log; anything else is a defect.
MISS_REASONS = ("custody_blocked", "holder_restarted", "log_overflow", "other")
#: Exit status of a trigger's lease ended by custody (services/trigger_runs.py).
EXIT_CANCELLED = -3
TEMPLATE = json.dumps({"name": "on-${event.name}", "command": ["work", "${event.payload}"]},
                      sort_keys=True, separators=(",", ":"))  # fmt: skip


@dataclass(slots=True)
class _Published:
    trigger: int  # index into `triggers`
    event: UserEvent
    at: float  # published
    arrives: float  # reached every live node
    fired: int = 0
    first_fired: float = -1.0
    derived: Capsule | None = None


class TriggerSimulation(CapsuleSimulation):
    def __init__(self, sc: Scenario, *, progress: bool = False) -> None:
        super().__init__(sc, progress=progress)
        cc = self.cc
        self.exec_cfg = ExecutorConfig(slots=cc.slots, cpu=float(cc.slots),
                                       mem_mib=1024 * cc.slots,
                                       executors=("subprocess", TRIGGER_EXECUTOR))  # fmt: skip
        self.rng_events = random.Random(self.rng_work.getrandbits(64))
        self.triggers: list[Capsule] = []
        self.trigger_index: dict[str, int] = {}
        #: trigger id -> (node, node epoch, lease token) of its current holder.
        self.holders: dict[str, tuple[int, int, int]] = {}
        self.events: list[_Published] = []
        self.event_of: dict[str, int] = {}  # derived capsule id -> event number
        self.log: deque[int] = deque(maxlen=cc.event_log)  # event numbers, by arrival
        self._seq: dict[int, int] = {}
        #: trigger id -> (time, holder's node up since, its log's oldest arrival) per lease.
        self.starts: dict[str, list[tuple[float, float, float]]] = {}
        self.workloads.register("trigger", self._create_trigger)
        self.workloads.register("trigger_event", self._publish)

    # ------------------------------------------------------------ workloads

    def _create_trigger(self, w: Workload) -> None:
        idx = self._random_live()
        if idx is None:
            self.metrics.count("workload_no_live_node")
            return
        n = len(self.triggers)
        spec, _ = trigger_spec(f"t{n}", {"on": f"user:e{n}", "template": TEMPLATE})
        self._nonce += 1
        cap = Capsule.sign(self.keys[idx], spec, self.engine.now, self._nonce)
        self.trigger_index[cap.id] = n
        self.triggers.append(cap)
        self.world.inject(idx, SubmitCapsule(cap))

    def _publish(self, w: Workload) -> None:
        key = id(w)
        done = self._limits.get(key, 0)
        if w.limit and done >= w.limit:
            return
        idx = self._random_live()
        if idx is None or not self.triggers:
            self.metrics.count("workload_no_live_node" if idx is None else "workload_no_trigger")
            return
        self._limits[key] = done + 1
        t = self.rng_events.randrange(len(self.triggers))
        seq = self._seq[idx] = self._seq.get(idx, 0) + 1
        no = len(self.events)
        uev = UserEvent.create(self.keys[idx], f"e{t}", no.to_bytes(4, "big"), no, seq)
        now = self.engine.now
        spread = self.cc.event_spread_s
        arrives = now + self.rng_events.uniform(spread / 10, spread)
        self.events.append(_Published(t, uev, now, arrives))
        self.engine.at(arrives, self._arrive, no)

    def _arrive(self, no: int) -> None:
        self.log.append(no)
        p = self.events[no]
        h = self.holders.get(self.triggers[p.trigger].id)
        if h is None:
            self.metrics.count("trigger_events_unheld_on_arrival")
            return
        idx, epoch, _ = h
        n = self.world.nodes[idx]
        if not n.alive or n.epoch != epoch:
            self.metrics.count("trigger_events_unheld_on_arrival")
            return
        self._fire(idx, no)

    def _fire(self, idx: int, no: int) -> None:
        """The holder at `idx` fires the trigger for event `no` (services/trigger_runs)."""
        p = self.events[no]
        if p.derived is None:  # the same capsule on every node: derive once
            p.derived = Capsule.derive(self.triggers[p.trigger], Origin(events=(p.event,)))
            self.event_of[p.derived.id] = no
            self.submitted[p.derived.id] = self.engine.now  # base metrics: from the firing
        p.fired += 1
        if p.fired == 1:
            p.first_fired = self.engine.now
        else:
            self.metrics.count("trigger_duplicate_firings")
        self.world.inject(idx, SubmitCapsule(p.derived))

    # ------------------------------------------------------------ leases

    def _on_run(self, idx: int, e: ev.RunRequested) -> None:
        if e.capsule.spec.function != TRIGGER_FUNCTION:
            super()._on_run(idx, e)
            return
        tid = e.capsule.id
        if tid in self.holders:
            self.metrics.count("trigger_replacements")
        n = self.world.nodes[idx]
        self.holders[tid] = (idx, n.epoch, e.token)
        # What this holder's catch-up can reach: events since its node (re)started and
        # no older than its log's oldest (to explain a miss at the end).
        floor = self.events[self.log[0]].arrives if len(self.log) == self.log.maxlen else 0.0
        self.starts.setdefault(tid, []).append((self.engine.now, n.up_since, floor))
        # Catch up from this node's recent-events log (what it received since it
        # started): what a previous holder may have missed; duplicates collapse.
        t = self.trigger_index.get(tid)
        created = e.capsule.submitted_at
        for no in list(self.log):
            p = self.events[no]
            if p.trigger == t and p.arrives >= n.up_since and p.at >= created:
                self.metrics.count("trigger_catchup_firings")
                self._fire(idx, no)

    def _on_kill(self, idx: int, e: ev.KillRequested) -> None:
        if e.capsule_id not in self.trigger_index:
            super()._on_kill(idx, e)
            return
        h = self.holders.get(e.capsule_id)
        if h is not None and h[0] == idx and h[2] == e.token:
            del self.holders[e.capsule_id]
        now = self.engine.now
        self.world.inject(idx, CapsuleExited(e.capsule_id, e.token, EXIT_CANCELLED,
                                             started=now, finished=now,
                                             reason=e.reason or "trigger removed"))  # fmt: skip

    # ------------------------------------------------------------ results

    def _why_missed(self, p: _Published, blocked: bool) -> str:
        """Why event `p` was never fired (one of MISS_REASONS)."""
        later = [s for s in self.starts.get(self.triggers[p.trigger].id, ()) if s[0] >= p.arrives]
        if not later:
            return "custody_blocked" if blocked else "other"
        _, up_since, floor = later[0]  # the first holder that should have caught it up
        if p.arrives < up_since:
            return "holder_restarted"
        if p.arrives < floor:
            return "log_overflow"
        return "other"


    def _finish(self) -> None:
        super()._finish()
        m = self.metrics
        live = self.live_peers()
        blocked: dict[int, bool] = {}  # trigger -> its custody lost a majority for good
        fired = missed = 0
        why: dict[str, int] = {}
        for p in self.events:
            if not p.fired:
                missed += 1
                if p.trigger not in blocked:
                    blocked[p.trigger] = self.custody_blocked(self.triggers[p.trigger].id, live)
                reason = self._why_missed(p, blocked[p.trigger])
                why[reason] = why.get(reason, 0) + 1
                continue
            fired += 1
            m.sample("trigger_event_to_fired_s", p.first_fired - p.at)
            cid = p.derived.id if p.derived is not None else ""
            if cid in self.started:
                m.sample("trigger_event_to_running_s", self.started[cid] - p.at)
            fin = self.finished.get(cid)
            if fin is not None:
                m.sample("trigger_event_to_finished_s", fin[0] - p.at)
        m.counters["triggers_created"] = len(self.triggers)
        m.counters["trigger_events_published"] = len(self.events)
        m.counters["trigger_events_fired"] = fired
        m.counters["trigger_events_missed"] = missed
        for reason in MISS_REASONS:
            m.counters[f"trigger_events_missed_{reason}"] = why.get(reason, 0)
        m.counters["triggers_custody_blocked"] = sum(blocked.values())
        # Unfinished derived capsules: behind custody that lost its majority, or fired
        # too late to finish (a run, a lost lease and a detection before the end).
        cc = self.cc
        late = self.engine.now - (cc.run_max_s + cc.lease_timeout_s + cc.offer_timeout_s
                                  + cc.detect_s)  # fmt: skip
        unfinished = [cid for cid in self.submitted if cid not in self.finished]
        stuck = [cid for cid in unfinished if self.custody_blocked(cid, live)]
        m.counters["capsules_unfinished_custody_blocked"] = len(stuck)
        m.counters["capsules_unfinished_fired_late"] = sum(
            1 for cid in unfinished if cid not in stuck and self.submitted[cid] >= late)
        for k in ("trigger_duplicate_firings", "trigger_catchup_firings", "trigger_replacements",
                  "trigger_events_unheld_on_arrival"):
            m.counters.setdefault(k, 0)
        m.info["trigger_exactly_once"] = bool(
            missed == 0 and m.counters["capsules_accepted_twice"] == 0
            and m.counters["capsules_unfinished"] == 0
        )
        spread = self.cc.event_spread_s
        m.info["trigger_model"] = (f"user events reach every node in U({spread / 10:g}, "
                                   f"{spread:g}) s; recent-events log "
                                   f"{self.cc.event_log} events")  # fmt: skip


def has_triggers(sc: Scenario) -> bool:
    return any(w.kind in TRIGGER_WORKLOADS for w in sc.workloads)
