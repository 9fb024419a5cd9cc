"""Message codec: round trips through canonical CBOR frames, and every rejection path."""

from typing import Any

import pytest

from gossip.coordinates import Coord
from gossip.messages import (
    KIND_ALIVE,
    Accuse,
    AccuseKind,
    Ack,
    AdUpdate,
    Alive,
    Gossip,
    MemberRecord,
    Nack,
    Ping,
    PingReq,
    PushPull,
    UserEvent,
    decode_message,
    update_size,
    update_to_wire,
)
from gossip.resources import ResourceAd
from overlay.core.crypto import Envelope, KeyPair
from overlay.core.errors import MalformedFrame, WireError
from overlay.core.wire import cbor_encode, decode_frame, encode_frame

KA, KB = KeyPair(b"\x01" * 32), KeyPair(b"\x02" * 32)
A, B = KA.peer_id, KB.peer_id


def roundtrip(msg: Any) -> Any:
    return decode_message(decode_frame(encode_frame(msg.to_wire())))


def sample_updates() -> tuple[Any, ...]:
    ad = ResourceAd.make(cpu_cores=8, gpus=1, labels={"site": "cern"}, executors=("slurm",))
    return (
        Alive.create(KA, 3, ("/ip4/10.0.0.1/tcp/4001",)),
        Accuse.create(KA, B, 7, AccuseKind.SUSPECT),
        Accuse.create(KB, B, 7, AccuseKind.LEFT),
        AdUpdate.create(KA, 1, ad.to_body()),
        AdUpdate.create(KA, 2, {"l": 2.5}, base=1),
        UserEvent.create(KA, "deploy", b"x" * 1000, 5, 0),
    )


@pytest.mark.parametrize(
    "msg",
    [
        Ping(1, B, sample_updates(), Coord((0.1, 0.0, -0.2, 0.0), 0.001, 0.5)),
        Ping(2, None),
        Ack(3, sample_updates()[:2]),
        Nack(4),
        PingReq(5, A, sample_updates()[3:]),
        Gossip(sample_updates()),
        PushPull(
            (
                MemberRecord(Alive.create(KA, 1), None, (AdUpdate.create(KA, 0, {"c": 4}),)),
                MemberRecord(Alive.create(KB, 2), Accuse.create(KA, B, 2, AccuseKind.DEAD)),
            ),
            reply=True,
            join=True,
        ),
    ],
)
def test_round_trip(msg: Any) -> None:
    assert roundtrip(msg) == msg


def test_update_size_is_an_upper_bound() -> None:
    for u in sample_updates():
        assert len(cbor_encode(update_to_wire(u))) <= update_size(u.env)


def test_signed_update_carries_decoded_fields() -> None:
    a = Alive.create(KA, 9)
    assert (a.peer, a.incarnation) == (A, 9)
    ad = AdUpdate.create(KA, 2, {"l": 1.5}, base=1)
    assert ad.apply_to(ResourceAd(cpu_cores=4)) == ResourceAd(cpu_cores=4, cpu_load=1.5)


def env(kind: str, body: Any, keys: KeyPair = KA) -> list[Any]:
    return keys.seal(kind, body).to_wire()


@pytest.mark.parametrize(
    "obj",
    [
        [],
        "ping",
        [99, 1],
        [1, 1, None, []],  # wrong arity
        [1, -1, None, [], None],  # negative seq
        [1, 1, b"\x99", [], None],  # bad peer id
        [2, 1, [[9, env("x", {})]], None],  # unknown update kind
        [2, 1, [[1, env("gossip-accuse", {"i": 1})]], None],  # kind mismatch
        [2, 1, [[1, env(KIND_ALIVE, {"i": 1, "z": 0})]], None],  # extra field
        [2, 1, [[1, env(KIND_ALIVE, {"i": "1"})]], None],
        [2, 1, [[2, env("gossip-accuse", {"t": B.raw, "i": 1, "s": 2})]], None],  # left by other
        [2, 1, [[2, env("gossip-accuse", {"t": A.raw, "i": 1, "s": 0})]], None],  # self-accuse
        [2, 1, [[2, env("gossip-accuse", {"t": B.raw, "i": 1, "s": 7})]], None],
        [2, 1, [[3, env("resource-ad", {"v": 1, "r": {"zz": 1}})]], None],  # unknown ad field
        [2, 1, [[3, env("resource-ad", {"v": 1, "r": {"c": -1}})]], None],
        [2, 1, [[3, env("resource-ad", {"v": 1, "b": 1, "r": {}})]], None],  # base >= version
        [2, 1, [[4, env("user-event", {"n": "", "p": b"", "l": 0, "s": 0})]], None],
        [2, 1, [[4, env("user-event", {"n": "e", "p": b"x" * 65537, "l": 0, "s": 0})]], None],
        [2, 1, [], [[0.0, 0.0], 0.0, 0.5]],  # coordinate of wrong dimension
        [2, 1, [], [[0.0, 0.0, 0.0, float("nan")], 0.0, 0.5]],
        [3, 1, 2],
        [6, 4, [], 0, 1],  # unknown flags
        [6, 0, [], 1, 1],  # page out of range
        [6, 0, [[[1, env(KIND_ALIVE, {"i": 1})], [1, env(KIND_ALIVE, {"i": 1})], []]], 0, 1],
    ],
)
def test_rejects_invalid(obj: Any) -> None:
    with pytest.raises(WireError):
        decode_message(obj)


def test_record_ad_must_belong_to_member() -> None:
    rec = [update_to_wire(Alive.create(KA, 1)), None, [update_to_wire(AdUpdate.create(KB, 0, {}))]]
    with pytest.raises(MalformedFrame):
        decode_message([6, 0, [rec], 0, 1])


def test_forged_envelope_decodes_but_does_not_verify() -> None:
    real = Alive.create(KB, 5)
    forged = Envelope(KIND_ALIVE, cbor_encode({"i": 6}), KB.public.raw, real.env.signature)
    a = Alive.from_envelope(forged)  # decoding does not verify ...
    assert a.peer == B and a.incarnation == 6
    with pytest.raises(WireError):  # ... verification does
        forged.verify(KIND_ALIVE)
