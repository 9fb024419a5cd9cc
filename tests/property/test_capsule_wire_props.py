"""Hypothesis: capsule messages round-trip through canonical CBOR; fuzzed input raises
only the WireError family."""

from __future__ import annotations

import contextlib
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from overlay.capsule.dataflow import ParentOutput
from overlay.capsule.durable import DurableRecord
from overlay.capsule.leases import CustodyRecord, LeaseTiming, State
from overlay.capsule.messages import (
    CancelRequest,
    Heartbeat,
    LeaseOffer,
    LeaseReply,
    LeaseRevoked,
    ReceiptMsg,
    ReceiptReply,
    Replicate,
    ReplicateAck,
    StatusQuery,
    StatusReply,
    Submit,
    SubmitAck,
    SyncReply,
    SyncRequest,
    decode_bytes,
    decode_message,
    encode_bytes,
)
from overlay.capsule.receipts import Receipt
from overlay.capsule.spec import Capsule, CapsuleSpec, Conditions, capsule_cid
from overlay.core.certs import Certificate, JoinToken
from overlay.core.crypto import KeyPair
from overlay.core.errors import WireError
from overlay.core.wire import cbor_encode

KEYS = [KeyPair(bytes([i + 1]) * 32) for i in range(3)]
OWNER = KeyPair(b"\x42" * 32)
CHAIN = (Certificate.issue(OWNER, OWNER.public, KEYS[0].peer_id, ("member", "submit"), 0, 9e9),)

text = st.text(max_size=20)
scalar = st.one_of(st.none(), st.booleans(), st.integers(-(2**62), 2**62), text,
                   st.floats(allow_nan=False, allow_infinity=False))  # fmt: skip
cids = st.binary(min_size=1, max_size=8).map(capsule_cid)
conditions = st.builds(
    Conditions,
    cpu=st.floats(0, 64).map(lambda x: round(x, 2)),
    mem_mib=st.integers(0, 1 << 20),
    gpu=st.integers(0, 8),
    executor=st.sampled_from(["", "subprocess", "slurm"]),
    labels=st.dictionaries(text, text, max_size=3).map(lambda d: tuple(sorted(d.items()))),
    location=text,
)
specs = st.builds(
    CapsuleSpec,
    name=text,
    command=st.lists(text, min_size=1, max_size=4).map(tuple),
    args=st.lists(scalar, max_size=4).map(tuple),
    kwargs=st.dictionaries(text, scalar, max_size=3).map(lambda d: tuple(sorted(d.items()))),
    env=st.dictionaries(text, text, max_size=3).map(lambda d: tuple(sorted(d.items()))),
    inputs=st.lists(cids, max_size=3).map(tuple),
    outputs=st.lists(text, max_size=3).map(tuple),
    conditions=conditions,
    priority=st.integers(-100, 100),
    maxwaittime_s=st.floats(0, 1e6),
    maxexectime_s=st.floats(0, 1e6),
    maxretries=st.integers(0, 1000),
    dependencies=st.lists(cids, max_size=3).map(tuple),
)
capsules = st.builds(
    lambda k, s, at, n: Capsule.sign(k, s, at, n),
    st.sampled_from(KEYS), specs, st.floats(0, 2e9), st.integers(0, 2**62),
)  # fmt: skip
tokens = st.integers(1, 2**40)
names = st.from_regex(r"[a-z][a-z0-9_]{0,8}(/[a-z0-9_.]{1,8}){0,2}", fullmatch=True).filter(
    lambda n: ".." not in n.split("/")
)
labels = names.filter(lambda n: "/" not in n)
parent_outs = st.lists(st.builds(ParentOutput, cids, labels, names, cids),
                       max_size=3).map(tuple)  # fmt: skip


@st.composite
def receipts(draw: st.DrawFn) -> Receipt:
    return Receipt.sign(draw(st.sampled_from(KEYS)), draw(cids), draw(tokens),
                        draw(st.integers(-255, 255)), draw(st.lists(cids, max_size=3)),
                        draw(st.one_of(st.just(""), cids)), draw(st.floats(0, 2e9)),
                        draw(st.floats(0, 2e9)), draw(text))  # fmt: skip


@st.composite
def records(draw: st.DrawFn) -> CustodyRecord:
    cap = draw(capsules)
    state = draw(st.sampled_from(list(State)))
    rcpt = None
    if state in (State.SUCCEEDED, State.FAILED) and draw(st.booleans()):
        rcpt = Receipt.sign(KEYS[1], cap.id, 1, 0)
    return CustodyRecord(cap, draw(st.sampled_from(KEYS)).peer_id, state,
                         draw(st.integers(1, 1000)), draw(st.integers(0, 1000)),
                         draw(st.one_of(st.none(), st.sampled_from([k.peer_id for k in KEYS]))),
                         draw(st.integers(0, 50)),
                         tuple(k.peer_id for k in draw(st.lists(st.sampled_from(KEYS),
                                                                max_size=3))),
                         rcpt, draw(text), draw(st.floats(0, 1e6)),
                         draw(st.one_of(st.none(), parent_outs)), draw(st.integers(0, 2**41 - 1)),
                         tuple(k.peer_id for k in draw(st.lists(st.sampled_from(KEYS),
                                                                max_size=3))))  # fmt: skip


ballots = st.tuples(st.integers(0, 2**41 - 1), st.sampled_from([b""] + [k.peer_id.raw
                                                                         for k in KEYS]))


@st.composite
def status_replies(draw: st.DrawFn) -> StatusReply:
    outs = draw(st.lists(cids, max_size=2).map(tuple))
    named = draw(st.lists(names, min_size=len(outs), max_size=len(outs)).map(tuple))
    return StatusReply(draw(cids), draw(st.sampled_from(["unknown", *[s.value for s in State]])),
                       draw(st.integers(0, 99)), draw(text), outs,
                       draw(st.one_of(st.none(), st.integers(-255, 255))),
                       draw(st.sampled_from([(), named])),
                       draw(st.one_of(st.just(""), labels)))  # fmt: skip


timing = st.builds(LeaseTiming, st.floats(4, 60), st.floats(0.1, 2), st.floats(0.1, 10))
messages = st.one_of(
    st.builds(Submit, capsules, st.sampled_from([(), CHAIN]),
              st.one_of(st.none(), st.just(KEYS[2].peer_id)), st.integers(0, 8)),
    st.builds(SubmitAck, cids, st.booleans(), text),
    st.builds(Replicate, records()),
    st.builds(ReplicateAck, cids, st.integers(0, 2**40)),
    st.builds(ReplicateAck, cids, st.integers(0, 2**40), ballots, ballots),
    st.builds(SyncRequest, cids),
    st.builds(lambda r, b: SyncRequest(r.capsule_id, b, r), records(), ballots),
    records().map(lambda r: SyncReply(r.capsule_id, r)),
    st.builds(lambda r, b, ok, p: SyncReply(r.capsule_id, r, None, b, ok, p), records(),
              ballots, st.booleans(), ballots),
    st.builds(SyncReply, cids, st.none()),
    st.builds(LeaseOffer, capsules, tokens, timing, parent_outs),
    st.builds(LeaseReply, cids, tokens, st.booleans(), text),
    st.builds(Heartbeat, cids, tokens),
    st.builds(LeaseRevoked, cids, tokens, text),
    st.builds(ReceiptMsg, receipts()),
    st.builds(ReceiptReply, cids, tokens, st.booleans(), text),
    st.builds(StatusQuery, cids),
    status_replies(),
    st.builds(CancelRequest, cids, text),
)  # fmt: skip

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])  # fmt: skip


@SETTINGS
@given(messages)
def test_every_message_round_trips(msg: Any) -> None:
    assert decode_bytes(encode_bytes(msg)) == msg


@SETTINGS
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_wire_errors(data: bytes) -> None:
    with contextlib.suppress(WireError):
        decode_bytes(data)


cbor_values = st.recursive(
    scalar | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(text, inner, max_size=4),
    max_leaves=20,
)


@SETTINGS
@given(st.sampled_from([m.TAG for m in (Submit, Replicate, LeaseOffer, ReceiptMsg, StatusReply,
                                        SyncReply, LeaseReply)]),
       st.lists(cbor_values, max_size=8))  # fmt: skip
def test_tagged_garbage_raises_only_wire_errors(tag: str, rest: list[Any]) -> None:
    with contextlib.suppress(WireError):
        decode_message([tag, *rest])


@SETTINGS
@given(messages, st.data())
def test_mutated_encodings_raise_only_wire_errors(msg: Any, data: st.DataObject) -> None:
    raw = bytearray(encode_bytes(msg))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    with contextlib.suppress(WireError):
        decode_bytes(bytes(raw))


@SETTINGS
@given(st.lists(st.text(min_size=1, max_size=30), max_size=4))
def test_join_token_round_trips(addrs: list[str]) -> None:
    tok = JoinToken(OWNER.public.raw, CHAIN, tuple(addrs))
    assert JoinToken.decode(tok.encode()) == tok


@SETTINGS
@given(st.binary(max_size=200))
def test_join_token_fuzz_raises_only_wire_errors(data: bytes) -> None:
    import base64

    with contextlib.suppress(WireError):
        JoinToken.decode(base64.urlsafe_b64encode(data).decode())
    token = base64.urlsafe_b64encode(cbor_encode({"o": data, "c": [], "a": []})).decode()
    with contextlib.suppress(WireError):
        JoinToken.decode(token)


@SETTINGS
@given(records(), st.integers(0, 2000), st.data())
def test_durable_records_round_trip_and_mutations_raise_only_wire_errors(
    rec: CustodyRecord, extra: int, data: st.DataObject
) -> None:
    d = DurableRecord(rec, data.draw(st.sampled_from([(), CHAIN])), rec.token + extra)
    blob = d.to_bytes()
    assert DurableRecord.from_bytes(blob) == d
    i = data.draw(st.integers(0, len(blob) - 1))
    flipped = blob[:i] + bytes([blob[i] ^ data.draw(st.integers(1, 255))]) + blob[i + 1 :]
    with contextlib.suppress(WireError):  # decodes (a text byte changed) or a WireError
        DurableRecord.from_bytes(flipped)
