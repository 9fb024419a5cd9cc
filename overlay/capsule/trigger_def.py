"""Triggers, crons and generators: what launches a capsule, and from which event.

A trigger is itself a capsule (function `colony.trigger`, executor kind `trigger`), so
it gets everything a capsule has: a signature by its creator (who needs the `submit`
role), custody by the `k_c` members closest to its id, a fencing-token lease on one
node that runs it, re-placement when that node dies, `colony capsule ps`, cancel. Its
definition is in the spec's kwargs (`TriggerDef.from_kwargs`):

| kwarg      | meaning                                                              |
|------------|----------------------------------------------------------------------|
| `on`       | `user`, `user:NAME` (user events), `topic:NAME` (topic messages) or `cron` |
| `schedule` | for `cron`: a schedule (overlay/capsule/cron.py)                     |
| `filter`   | an expression over the event (overlay/capsule/trigger_filter.py)     |
| `template` | the capsule spec to launch, as JSON text with `${…}` variables        |
| `catchup`  | for `cron`: `skip` (default) or `all` — ticks missed while no node ran it |
| `count`    | a generator: launch once `count` matching events were collected ...   |
| `within_s` | ... or `within_s` after the first of them, with all collected         |

The capsule it launches is *derived* (spec.py `Capsule.derive`): its wire form is the
trigger capsule plus the `Origin` (the signed user events or topic messages, or the
cron tick), and its
id is the CID of exactly that — so every node that fires the same trigger for the
same event builds the same capsule, and custody, which keeps one record per capsule
id, collapses duplicates. That is what makes firing exactly-once without a central
scheduler (docs/triggers.md). Nothing in a derived capsule is unsigned: the creator
signed the trigger, the senders signed the events (the publishers their topic
messages: the topic's name is inside what they signed), and a cron tick is checked
against the schedule; anyone can fire, nobody can forge.

Template variables (an unknown `${name}` is refused when the trigger is created):
`${trigger.id}`, `${trigger.name}`, `${event.name}`, `${event.payload}`,
`${event.sender}`, `${event.lamport}`, `${event.seq}`, `${tick}` (POSIX seconds),
(for a topic message: `event.name` is the topic, `event.sender` the publisher,
`event.seq` its sequence number and `event.lamport` is empty),
`${tick.iso}`, `${count}` and `${payloads}` (a JSON list of the payloads as text).
`$$` is a literal `$`. Every derived capsule also gets `COLONY_TRIGGER_ID` and
`COLONY_EVENT` (a JSON description of its event or events) in its environment.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gossip.messages import KIND_EVENT, UserEvent
from gossip.topic_signed import SignedMessage, open_envelope
from overlay.capsule.cron import CronError, Schedule
from overlay.capsule.trigger_filter import EventFields, Filter, FilterError
from overlay.core.crypto import Envelope
from overlay.core.errors import MalformedFrame, WireError

TRIGGER_FUNCTION = "colony.trigger"
TRIGGER_EXECUTOR = "trigger"
#: Events one generator batch may hold, and their total payload bytes.
MAX_BATCH = 64
MAX_BATCH_BYTES = 1 << 20
MAX_TEMPLATE_CHARS = 4096
#: Capsules one workflow template may launch per firing.
MAX_WORKFLOW_CAPSULES = 16
_VAR = re.compile(r"\$(\$|\{([a-z.]+)\})")
VARIABLES = ("trigger.id", "trigger.name", "event.name", "event.payload", "event.sender",
             "event.lamport", "event.seq", "tick", "tick.iso", "count", "payloads")  # fmt: skip


class TriggerError(ValueError):
    """A trigger definition that cannot work, with the reason."""


#: What a user or topic trigger fires on: a signed user event or topic message.
Event = UserEvent | SignedMessage


@dataclass(frozen=True, slots=True)
class Origin:
    """What a derived capsule was launched by: signed user events, signed topic
    messages (`messages`, each with its envelope), or a cron tick."""

    events: tuple[UserEvent, ...] = ()
    tick: int | None = None
    messages: tuple[SignedMessage, ...] = ()

    @classmethod
    def of(cls, batch: tuple[Event, ...]) -> Origin:
        """An origin of user events or of topic messages (a trigger has one kind)."""
        if all(isinstance(e, SignedMessage) for e in batch):
            return cls(messages=batch)  # type: ignore[arg-type]
        return cls(events=batch)  # type: ignore[arg-type]

    @property
    def items(self) -> tuple[Event, ...]:
        return self.messages or self.events

    def to_wire(self) -> dict[str, Any]:
        if self.tick is not None:
            return {"t": self.tick}
        if self.messages:
            envs = [m.env for m in self.messages]
            if any(e is None for e in envs):
                raise ValueError("a topic message without its signed envelope")
            return {"m": [e.to_wire() for e in envs if e is not None]}
        return {"u": [e.env.to_wire() for e in self.events]}

    @classmethod
    def from_wire(cls, obj: Any) -> Origin:
        if not isinstance(obj, dict) or len(obj) != 1:
            raise MalformedFrame("a trigger origin is {t: tick} or {u: [events]}")
        if "t" in obj:
            tick = obj["t"]
            if isinstance(tick, bool) or not isinstance(tick, int) or not 0 < tick < 1 << 40:
                raise MalformedFrame("a cron tick must be a positive integer")
            return cls(tick=tick)
        raw = obj.get("u", obj.get("m"))
        if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_BATCH:
            raise MalformedFrame(f"a trigger origin holds 1..{MAX_BATCH} events")
        envs = [Envelope.from_wire(e) for e in raw]
        if "m" in obj:
            messages = tuple(open_envelope(env) for env in envs)  # signatures checked
            if sum(len(m.data) for m in messages) > MAX_BATCH_BYTES:
                raise MalformedFrame(f"a trigger origin holds at most {MAX_BATCH_BYTES} bytes")
            return cls(messages=messages)
        for env in envs:
            env.verify(KIND_EVENT)  # gossip checks lazily; a derived capsule checks here
        events = tuple(UserEvent.from_envelope(env) for env in envs)
        if sum(len(e.payload) for e in events) > MAX_BATCH_BYTES:
            raise MalformedFrame(f"a trigger origin holds at most {MAX_BATCH_BYTES} bytes")
        return cls(events=events)


def fields_of(ev: Event) -> EventFields:
    if isinstance(ev, SignedMessage):
        return EventFields(ev.name, ev.data, str(ev.publisher), 0, ev.seq)
    return EventFields(ev.name, ev.payload, str(ev.sender), ev.lamport, ev.seq)


def payload_of(ev: Event) -> bytes:
    return ev.data if isinstance(ev, SignedMessage) else ev.payload


@dataclass(frozen=True, slots=True)
class TriggerDef:
    """A trigger's definition, checked; `accepts` and `render` are pure."""

    on: str  # "user", "topic" or "cron"
    event_name: str  # on = user: "" = any name; on = topic: the topic
    schedule: Schedule | None
    filter: Filter
    template: Mapping[str, Any]
    catchup: str
    count: int
    within_s: float

    @property
    def is_workflow(self) -> bool:
        """The template is a workflow (`{"name", "capsules": [spec…]}`): each firing
        launches every capsule of it, dependencies resolved to their derived ids."""
        return "capsules" in self.template

    @property
    def is_generator(self) -> bool:
        return self.count > 1 or self.within_s > 0

    @classmethod
    def from_kwargs(cls, kw: Mapping[str, object]) -> TriggerDef:
        # `chain` (the creator's certificate chain) is for the runtime, not the definition.
        known = {"on", "schedule", "filter", "template", "catchup", "count", "within_s", "chain"}
        unknown = set(kw) - known
        if unknown:
            raise TriggerError(f"unknown trigger settings: {', '.join(sorted(unknown))}")
        on = str(kw.get("on", ""))
        kind, _, name = on.partition(":")
        schedule = None
        if kind == "cron":
            try:
                schedule = Schedule.parse(str(kw.get("schedule", "")))
            except CronError as e:
                raise TriggerError(f"schedule: {e}") from None
        elif kind == "topic":
            if not name:
                raise TriggerError("on = topic:NAME needs the topic's name")
        elif kind != "user":
            raise TriggerError(f"on must be user, user:NAME, topic:NAME or cron, not {on!r}")
        try:
            flt = Filter.parse(str(kw.get("filter", "")))
        except FilterError as e:
            raise TriggerError(str(e)) from None
        text = str(kw.get("template", ""))
        if len(text) > MAX_TEMPLATE_CHARS:
            raise TriggerError(f"template longer than {MAX_TEMPLATE_CHARS} characters")
        try:
            template = json.loads(text)
        except ValueError as e:
            raise TriggerError(f"template is not JSON: {e}") from None
        if not isinstance(template, dict):
            raise TriggerError("template must be a capsule spec (a JSON object)")
        _check_variables(template)
        if "capsules" in template:
            workflow_members(template)  # names and edges; each spec checked when rendered
        catchup = str(kw.get("catchup", "skip"))
        if catchup not in ("skip", "all"):
            raise TriggerError(f"catchup must be skip or all, not {catchup!r}")
        within = kw.get("within_s", 0.0)
        # A generator given only a time collects as many as one batch holds.
        count = kw.get("count", MAX_BATCH if within else 1)
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_BATCH:
            raise TriggerError(f"count must be 1..{MAX_BATCH}")
        if isinstance(within, bool) or not isinstance(within, int | float) \
                or not 0 <= within <= 86400:
            raise TriggerError("within_s must be 0..86400")
        if kind == "cron" and (count > 1 or within > 0 or flt.tree is not None):
            raise TriggerError("count, within_s and filter apply to user events, not cron")
        return cls(kind, name, schedule, flt, template, catchup, count, float(within))

    def matches(self, ev: Event) -> bool:
        """Whether a user event or topic message fires (or joins a batch of) this trigger."""
        kind = "topic" if isinstance(ev, SignedMessage) else "user"
        if self.on != kind or (self.event_name and ev.name != self.event_name):
            return False
        return self.filter.matches(fields_of(ev))

    def accepts(self, origin: Origin, created_at: float) -> str | None:
        """Why `origin` cannot have launched this trigger, or None if it can."""
        if origin.tick is not None:
            if self.schedule is None:
                return "a cron tick for a trigger on user events"
            if origin.tick <= created_at or not self.schedule.matches(origin.tick, created_at):
                return f"tick {origin.tick} is not on the schedule {self.schedule.text!r}"
            return None
        if self.on == "cron":
            return "events for a cron trigger"
        items = origin.items
        if len(items) > self.count:
            return f"{len(items)} events for a batch of at most {self.count}"
        if len(items) > 1 and not self.is_generator:
            return "several events for a trigger that fires on one"
        for ev in items:
            if not self.matches(ev):
                return (f"event {ev.name!r} from {fields_of(ev).sender} does not match "
                        "the trigger")
        return None

    def members(self, trigger_id: str, trigger_name: str, origin: Origin) -> list[str]:
        """A workflow template's capsule names for `origin`, parents first (submission
        order); [""] for a single-capsule template. TriggerError on a cycle."""
        if not self.is_workflow:
            return [""]
        rendered = _substitute(self.template, _variables(trigger_id, trigger_name, origin))
        assert isinstance(rendered, dict)
        edges = dict(workflow_members(rendered))
        out: list[str] = []
        while len(out) < len(edges):
            ready = [n for n, deps in edges.items()
                     if n not in out and all(d in out for d in deps)]
            if not ready:
                raise TriggerError("the workflow template's dependencies form a cycle")
            out.extend(ready)
        return out

    def render(self, trigger_id: str, trigger_name: str, origin: Origin,
               member: str = "") -> dict[str, Any]:
        """The capsule spec (as from_dict input) this trigger launches for `origin`; for
        a workflow template, that of its capsule named `member` (its `dependencies`
        still name other members)."""
        values = _variables(trigger_id, trigger_name, origin)
        spec = _substitute(self.template, values)
        assert isinstance(spec, dict)
        if self.is_workflow:
            spec = _member(spec, member)
        env = dict(spec.get("env") or {})
        env["COLONY_TRIGGER_ID"] = trigger_id
        env["COLONY_EVENT"] = _event_json(origin)
        spec["env"] = env
        return spec


def workflow_members(rendered: Mapping[str, Any]) -> list[tuple[str, list[str]]]:
    """(name, dependency names) of each capsule of a rendered workflow template, in
    declaration order; TriggerError when one is unnamed, named twice, not a table, or
    depends on a name the workflow does not have."""
    raw = rendered.get("capsules")
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_WORKFLOW_CAPSULES:
        raise TriggerError(f"a workflow template needs 1..{MAX_WORKFLOW_CAPSULES} capsules")
    out: list[tuple[str, list[str]]] = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) \
                or not item["name"]:
            raise TriggerError("every capsule of a workflow template needs a name")
        deps = item.get("dependencies") or []
        if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
            raise TriggerError(f"capsule {item['name']!r}: dependencies must be names")
        out.append((item["name"], list(deps)))
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise TriggerError("two capsules of the workflow template have the same name")
    for name, deps in out:
        unknown = [d for d in deps if d not in names]
        if unknown:
            raise TriggerError(f"capsule {name!r} depends on unknown {unknown[0]!r}")
    return out


def _member(rendered: dict[str, Any], member: str) -> dict[str, Any]:
    names = [n for n, _ in workflow_members(rendered)]
    if member not in names:
        raise TriggerError(f"the workflow template has no capsule named {member!r}")
    return dict(rendered["capsules"][names.index(member)])


def _variables(trigger_id: str, trigger_name: str, origin: Origin) -> dict[str, str]:
    items = origin.items
    first = fields_of(items[0]) if items else None
    tick = origin.tick or 0
    return {
        "trigger.id": trigger_id, "trigger.name": trigger_name,
        "event.name": first.name if first else "",
        "event.payload": first.payload.decode(errors="replace") if first else "",
        "event.sender": first.sender if first else "",
        "event.lamport": str(first.lamport) if first and not origin.messages else "",
        "event.seq": str(first.seq) if first else "",
        "tick": str(tick) if origin.tick is not None else "",
        "tick.iso": datetime.fromtimestamp(tick, UTC).isoformat() if origin.tick else "",
        "count": str(len(items) if items else 1),
        "payloads": json.dumps([payload_of(e).decode(errors="replace") for e in items]),
    }  # fmt: skip


def _event_json(origin: Origin) -> str:
    if origin.tick is not None:
        return json.dumps({"tick": origin.tick})
    if origin.messages:
        return json.dumps([{"topic": m.name, "sender": str(m.publisher), "epoch": m.epoch,
                            "seq": m.seq, "at": m.at, "payload": m.data.decode(errors="replace")}
                           for m in origin.messages])  # fmt: skip
    return json.dumps([{"name": e.name, "sender": str(e.sender), "lamport": e.lamport,
                        "seq": e.seq, "payload": e.payload.decode(errors="replace")}
                       for e in origin.events])  # fmt: skip


def _substitute(value: object, values: Mapping[str, str]) -> object:
    if isinstance(value, str):
        return _VAR.sub(lambda m: "$" if m.group(1) == "$" else values[m.group(2)], value)
    if isinstance(value, list):
        return [_substitute(v, values) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, values) for k, v in value.items()}
    return value


def _check_variables(value: object) -> None:
    if isinstance(value, str):
        for m in _VAR.finditer(value):
            if m.group(1) != "$" and m.group(2) not in VARIABLES:
                raise TriggerError(f"template uses unknown variable ${{{m.group(2)}}}; "
                                   f"known: {', '.join(VARIABLES)}")
        if re.search(r"\$\{(?![a-z.]+\})", value):
            raise TriggerError(f"template has a malformed variable in {value[:60]!r}")
    elif isinstance(value, list):
        for v in value:
            _check_variables(v)
    elif isinstance(value, dict):
        for v in value.values():
            _check_variables(v)


def parse_origin(obj: Any) -> Origin:
    """`Origin.from_wire`, with every failure a WireError (bad signatures included)."""
    try:
        return Origin.from_wire(obj)
    except WireError:
        raise
    except ValueError as e:
        raise MalformedFrame(f"trigger origin: {e}") from None
