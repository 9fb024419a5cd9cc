"""Triggers: definitions, filters, templates and derived capsules (deterministic ids,
round trips, and refusals of forged, mismatched or off-schedule origins)."""

from __future__ import annotations

import json

import pytest

from gossip.messages import UserEvent
from gossip.topic_signed import SignedMessage, open_payload, seal_payload, topic_id
from overlay.capsule.spec import Capsule, CapsuleSpec
from overlay.capsule.trigger_def import (
    TRIGGER_EXECUTOR,
    TRIGGER_FUNCTION,
    Origin,
    TriggerDef,
    TriggerError,
)
from overlay.capsule.trigger_filter import EventFields, Filter, FilterError
from overlay.core.crypto import Envelope, KeyPair
from overlay.core.errors import BadSignature, MalformedFrame

CREATOR = KeyPair.from_rng_seed(b"c" * 32)
SENDER = KeyPair.from_rng_seed(b"s" * 32)
TEMPLATE = {"name": "on-${event.name}", "command": ["echo", "${event.payload}"],
            "env": {"SEQ": "${event.seq}"}}
CREATED = 1_800_000_000.0


def trigger(at: float = CREATED, **kw: object) -> Capsule:
    kwargs = {"on": "user:deploy", "template": json.dumps(TEMPLATE), **kw}
    spec = CapsuleSpec(name="t1", function=TRIGGER_FUNCTION,
                       kwargs=tuple(sorted((k, v) for k, v in kwargs.items())))  # type: ignore[misc]
    return Capsule.sign(CREATOR, spec, at)


def event(name: str = "deploy", payload: bytes = b"v2", seq: int = 0) -> UserEvent:
    return UserEvent.create(SENDER, name, payload, lamport=10 + seq, seq=seq)


# ------------------------------------------------------------------ filters


@pytest.mark.parametrize(("text", "ok"), [
    ('name == "deploy"', True),
    ('json.version >= 2 and "v" in payload', True),
    ('json["version"] == 3', False),
    ("not (lamport < 5)", True),
    ('json.missing == None and sender != ""', True),
    ('payload > 3', False),  # str vs int: false, not an error
])
def test_filters_evaluate_safely(text: str, ok: bool) -> None:
    f = Filter.parse(text)
    ev = EventFields("deploy", b'{"version": 2}', "peer", 10, 0)
    assert f.matches(ev) is ok


@pytest.mark.parametrize(("text", "reason"), [
    ("__import__('os')", "cannot use call"),
    ("name.upper", "only json.<key> may use a dot"),
    ("[x for x in payload]", "cannot use listcomp"),
    ("undefined == 1", "unknown field 'undefined'"),
    ("name ==", "does not parse"),
    ("a" * 2000, "longer than"),
])
def test_bad_filters_are_refused_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(FilterError, match=reason):
        Filter.parse(text)


# ------------------------------------------------------------------ definitions


@pytest.mark.parametrize(("kw", "reason"), [
    ({"on": "mqtt:x"}, "on must be user, user:NAME, topic:NAME or cron"),
    ({"on": "topic"}, "needs the topic's name"),
    ({"on": "cron", "schedule": "61 * * * *"}, "schedule: minute: 61"),
    ({"filter": "name =="}, "does not parse"),
    ({"template": "{not json"}, "template is not JSON"),
    ({"template": json.dumps({"command": ["echo", "${event.colour}"]})},
     r"unknown variable \$\{event.colour\}"),
    ({"catchup": "maybe"}, "catchup must be skip or all"),
    ({"count": 0}, "count must be"),
    ({"on": "cron", "schedule": "@every 2s", "count": 3}, "apply to user events"),
    ({"colour": "red"}, "unknown trigger settings: colour"),
])
def test_bad_definitions_are_refused(kw: dict[str, object], reason: str) -> None:
    base: dict[str, object] = {"on": "user:deploy", "template": json.dumps(TEMPLATE)}
    with pytest.raises(TriggerError, match=reason):
        TriggerDef.from_kwargs({**base, **kw})


# ------------------------------------------------------------------ derived capsules


def test_a_derived_capsule_is_the_same_on_every_node() -> None:
    t, ev = trigger(), event()
    a = Capsule.derive(t, Origin(events=(ev,)))
    b = Capsule.derive(Capsule.from_wire(t.to_wire()), Origin.from_wire(Origin((ev,)).to_wire()))
    assert a.id == b.id and a.key == b.key
    assert a.submitter == CREATOR.peer_id and a.submitted_at == CREATED
    assert a.spec.name == "on-deploy" and a.spec.command == ("echo", "v2")
    env = dict(a.spec.env)
    assert env["SEQ"] == "0" and env["COLONY_TRIGGER_ID"] == t.id
    assert json.loads(env["COLONY_EVENT"])[0]["payload"] == "v2"
    back = Capsule.from_wire(a.to_wire())
    assert back.id == a.id and back.spec == a.spec and back.derived is not None
    other = Capsule.derive(t, Origin(events=(event(seq=1),)))
    assert other.id != a.id  # another event, another capsule


def test_origins_that_could_not_have_fired_are_refused() -> None:
    t = trigger(filter='json.ok == True or payload == "v2"')
    with pytest.raises(MalformedFrame, match="does not match"):
        Capsule.derive(t, Origin(events=(event(name="other"),)))
    with pytest.raises(MalformedFrame, match="does not match"):
        Capsule.derive(t, Origin(events=(event(payload=b"v3"),)))
    with pytest.raises(MalformedFrame, match="2 events for a batch of at most 1"):
        Capsule.derive(t, Origin(events=(event(), event(seq=1))))
    with pytest.raises(MalformedFrame, match="cron tick for a trigger on user events"):
        Capsule.derive(t, Origin(tick=1_800_000_060))
    plain = Capsule.sign(CREATOR, CapsuleSpec(command=("true",)), CREATED)
    with pytest.raises(MalformedFrame, match="is not a trigger"):
        Capsule.derive(plain, Origin(events=(event(),)))


def test_a_forged_event_is_refused() -> None:
    t, ev = trigger(), event()
    wire = Capsule.derive(t, Origin(events=(ev,))).to_wire()
    env = ev.env
    forged = Envelope(env.kind, env.body.replace(b"v2", b"v9"), env.signer, env.signature)
    wire[2] = {"u": [forged.to_wire()]}
    with pytest.raises(BadSignature):
        Capsule.from_wire(wire)


def test_cron_ticks_must_be_on_the_schedule_and_after_creation() -> None:
    t = trigger(on="cron", schedule="*/5 * * * *",
                template=json.dumps({"command": ["echo", "${tick.iso}"]}))
    ok = Capsule.derive(t, Origin(tick=int(CREATED) + 300 - int(CREATED) % 300))
    assert ok.submitted_at == ok.derived[1].tick  # type: ignore[index]
    assert ok.spec.command[1].endswith("+00:00")
    with pytest.raises(MalformedFrame, match="not on the schedule"):
        Capsule.derive(t, Origin(tick=int(CREATED) + 301 - int(CREATED) % 300))
    with pytest.raises(MalformedFrame, match="not on the schedule"):
        Capsule.derive(t, Origin(tick=int(CREATED) - int(CREATED) % 300))  # before creation


def test_generators_take_up_to_count_events() -> None:
    t = trigger(on="user:reading", count=3,
                template=json.dumps({"command": ["echo", "${count}", "${payloads}"]}))
    evs = tuple(event("reading", str(i).encode(), seq=i) for i in range(3))
    cap = Capsule.derive(t, Origin(events=evs))
    assert cap.spec.command == ("echo", "3", '["0", "1", "2"]')
    with pytest.raises(MalformedFrame, match="4 events for a batch of at most 3"):
        Capsule.derive(t, Origin(events=(*evs, event("reading", b"3", seq=3))))


def test_a_template_giving_a_bad_spec_is_refused() -> None:
    t = trigger(template=json.dumps({"name": "x"}))  # neither command nor function
    with pytest.raises(MalformedFrame, match="template gives a bad spec"):
        Capsule.derive(t, Origin(events=(event(),)))


def message(topic: str = "news", data: bytes = b"v2", seq: int = 1) -> SignedMessage:
    payload = seal_payload(SENDER, (), topic, 7, seq, CREATED + seq, data)
    return open_payload(payload, topic_id(topic), None)


def test_topic_messages_derive_capsules_the_same_on_every_node() -> None:
    t = trigger(on="topic:news", filter='payload != "skip"')
    m = message()
    a = Capsule.derive(t, Origin(messages=(m,)))
    b = Capsule.derive(Capsule.from_wire(t.to_wire()),
                       Origin.from_wire(Origin(messages=(m,)).to_wire()))
    assert a.id == b.id and a.spec.name == "on-news" and a.spec.command == ("echo", "v2")
    event_json = json.loads(dict(a.spec.env)["COLONY_EVENT"])[0]
    assert event_json["topic"] == "news" and event_json["seq"] == 1
    assert event_json["sender"] == str(SENDER.peer_id)
    assert Capsule.from_wire(a.to_wire()).id == a.id
    assert Capsule.derive(t, Origin(messages=(message(seq=2),))).id != a.id
    # A user event named like the topic does not fire a topic trigger, and vice versa.
    with pytest.raises(MalformedFrame, match="does not match"):
        Capsule.derive(t, Origin(events=(event(name="news"),)))
    with pytest.raises(MalformedFrame, match="does not match"):
        Capsule.derive(trigger(), Origin(messages=(message("deploy"),)))
    with pytest.raises(MalformedFrame, match="does not match"):
        Capsule.derive(t, Origin(messages=(message("other"),)))
    with pytest.raises(MalformedFrame, match="does not match"):
        Capsule.derive(t, Origin(messages=(message(data=b"skip"),)))


def test_a_forged_topic_message_is_refused() -> None:
    t, m = trigger(on="topic:news"), message()
    wire = Capsule.derive(t, Origin(messages=(m,))).to_wire()
    assert m.env is not None
    forged = Envelope(m.env.kind, m.env.body.replace(b"v2", b"v9"), m.env.signer,
                      m.env.signature)
    wire[2] = {"m": [forged.to_wire()]}
    with pytest.raises(BadSignature):
        Capsule.from_wire(wire)
    wire[2] = {"m": [event().env.to_wire()]}  # a user event's envelope is not a message
    with pytest.raises(BadSignature, match="expected a 'colony-topic-msg' envelope"):
        Capsule.from_wire(wire)


def test_topic_generators_batch_messages() -> None:
    t = trigger(on="topic:news", count=2,
                template=json.dumps({"command": ["echo", "${count}", "${payloads}"]}))
    ms = (message(data=b"a", seq=1), message(data=b"b", seq=2))
    cap = Capsule.derive(t, Origin.of(ms))
    assert cap.spec.command == ("echo", "2", '["a", "b"]')


def test_executor_kind_constant() -> None:
    assert TRIGGER_EXECUTOR == "trigger"


# ------------------------------------------------------------------ workflow templates

WORKFLOW = {"name": "batch", "capsules": [
    {"name": "report", "command": ["report"], "dependencies": ["collect"]},
    {"name": "collect", "command": ["collect", "${payloads}"]},
]}


def test_a_generator_launches_one_workflow_with_every_payload() -> None:
    """ColonyOS generators: 10 events collected, then one workflow of two capsules; the
    same ids on every node, the child depending on the parent's derived id."""
    t = trigger(count=10, template=json.dumps(WORKFLOW))
    tdef = t.trigger_def
    assert tdef is not None and tdef.is_workflow
    origin = Origin(events=tuple(event(payload=f"p{i}".encode(), seq=i) for i in range(10)))
    assert tdef.members(t.id, "t1", origin) == ["collect", "report"]  # parents first
    collect, report = (Capsule.derive(t, origin, m) for m in ("collect", "report"))
    assert json.loads(collect.spec.command[1]) == [f"p{i}" for i in range(10)]
    assert report.spec.dependencies == (collect.id,) and collect.spec.dependencies == ()
    assert collect.id != report.id and collect.member == "collect"
    again = Capsule.from_wire(report.to_wire())  # as another node decodes it
    assert again.id == report.id and again.spec.dependencies == (collect.id,)
    assert dict(again.spec.env)["COLONY_TRIGGER_ID"] == t.id
    with pytest.raises(MalformedFrame, match="member must be named"):
        Capsule.derive(t, origin)  # a workflow template needs the member
    with pytest.raises(MalformedFrame, match="no capsule named"):
        Capsule.derive(t, origin, "missing")
    with pytest.raises(MalformedFrame, match="member must be named"):
        Capsule.derive(trigger(), Origin(events=(event(),)), "collect")  # not a workflow


@pytest.mark.parametrize(("capsules", "reason"), [
    ([{"name": "a", "command": ["x"], "dependencies": ["b"]}], "depends on unknown 'b'"),
    ([{"command": ["x"]}], "needs a name"),
    ([{"name": "a", "command": ["x"]}, {"name": "a", "command": ["y"]}], "same name"),
    ([], "needs 1..16 capsules"),
])
def test_bad_workflow_templates_are_refused(capsules: list[object], reason: str) -> None:
    with pytest.raises(TriggerError, match=reason):
        TriggerDef.from_kwargs({"on": "user", "template": json.dumps(
            {"name": "w", "capsules": capsules})})


def test_a_workflow_template_with_a_cycle_cannot_fire() -> None:
    cyc = {"name": "w", "capsules": [
        {"name": "a", "command": ["x"], "dependencies": ["b"]},
        {"name": "b", "command": ["y"], "dependencies": ["a"]}]}
    t = trigger(template=json.dumps(cyc))
    tdef = t.trigger_def
    assert tdef is not None
    with pytest.raises(TriggerError, match="cycle"):
        tdef.members(t.id, "t1", Origin(events=(event(),)))
