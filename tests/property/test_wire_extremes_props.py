"""Hypothesis: every decoder, fed integer extremes, bignums and floats where ints belong.

A valid message of each type is built, then one node of it — anywhere, also inside a
signed envelope's body, which is then re-signed so the signature still holds, as a
hostile member would — is replaced by an extreme value (0, −1, 2^31, 2^53, 2^63−1,
2^63, 2^64, 10^30, ±10^400 (beyond any float), a float, NaN, ∞, …). Asserted:

- decoding either succeeds with every integer of the result in a 64-bit range, or
  raises a `WireError` — never OverflowError, ValueError, TypeError, …;
- where a sans-IO core consumes the message (`Swim`, `Kademlia`, `Exchange`), handling
  it raises nothing, its counters stay below 2^63, and everything it sends in reply
  decodes again (a core never produces a value its peers refuse).

Covers gossip MESSAGE_TYPES (with every update kind) into `Swim`, dht KadMessage
(requests and responses, protobuf varints up to 2^70) into `Kademlia`, Bitswap into
`Exchange`, capsule MESSAGE_TYPES, framing envelopes, resource ads, Vivaldi
coordinates, certificates, revocations and signed envelopes.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import random
from collections.abc import Callable, Iterator
from typing import Any

import cbor2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dht import KadConfig, Kademlia
from dht.records import make_name_record
from dht.wire import DhtRequest, DhtResponse, KadMessage
from gossip.coordinates import Coord
from gossip.messages import (
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
    Revoke,
    UserEvent,
    decode_message,
)
from gossip.profiles import LAN
from gossip.resources import ResourceAd
from gossip.swim import Swim
from overlay.capsule import messages as capsule
from overlay.capsule.leases import CustodyRecord, LeaseTiming, State
from overlay.capsule.receipts import Receipt
from overlay.capsule.spec import Capsule, CapsuleSpec, capsule_cid
from overlay.core.certs import Certificate, Revocation
from overlay.core.crypto import Envelope, KeyPair
from overlay.core.effects import Received, Send
from overlay.core.errors import WireError
from overlay.core.ids import PeerId
from overlay.core.protobuf import Writer
from overlay.core.wire import cbor_decode, cbor_encode
from overlay.exchange.engine import Exchange
from overlay.exchange.messages import BitswapMessage
from overlay.runtime.net.framing import decode_envelope

KEYS = [KeyPair(bytes([i + 1]) * 32) for i in range(4)]
A, B, C, D = (k.peer_id for k in KEYS)
BY_SIGNER = {k.public.raw: k for k in KEYS}
OWNER = KEYS[3]

INTS = [0, 1, -1, 2**31, 2**32, 2**53, 2**62, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 10**30,
        -(2**63), -(2**64), 10**60, 10**400, -(10**400)]  # fmt: skip
FLOATS = [0.5, -0.0, 2.0**63, 1e300, -1e300, math.inf, -math.inf, math.nan]
#: Values at the edges of the ranges decoders and cores use, drawn half of the time.
EDGES = [2**62 - 1, 2**62, 2**63 - 1, 2**63, 2**64 - 1, 2**32 + 1]
EXTREMES: st.SearchStrategy[Any] = st.one_of(st.sampled_from(EDGES),
                     st.sampled_from([*INTS, *FLOATS, True, None, "", b"", [], {}]))
U64 = 1 << 64

SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])  # fmt: skip

# ---------------------------------------------------------------- mutation of a wire tree


def _signed(obj: Any) -> bool:
    return (isinstance(obj, list) and len(obj) == 4 and isinstance(obj[0], str)
            and isinstance(obj[1], bytes) and obj[2] in BY_SIGNER)  # fmt: skip


def _walk_decode(body: bytes) -> Any:
    """Decode a body the mutator wrote. Not `cbor_decode`: an integer beyond 64 bits
    (EXTREMES) is encoded as a bignum tag, which the code under test refuses (that is
    checked) but a second mutation must still be able to walk."""
    return cbor2.loads(body)


def paths(obj: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """Every (path, node) of a CBOR value; a signed envelope's body is its subtree."""
    yield prefix, obj
    if _signed(obj):
        yield from paths(_walk_decode(obj[1]), (*prefix, "@body"))
    elif isinstance(obj, list):
        for i, x in enumerate(obj):
            yield from paths(x, (*prefix, i))
    elif isinstance(obj, dict):
        for k, x in obj.items():
            yield from paths(x, (*prefix, k))


def replace_at(obj: Any, path: tuple[Any, ...], value: Any) -> Any:
    """`obj` with the node at `path` replaced; envelopes on the way are re-signed."""
    if not path:
        return value
    step, rest = path[0], path[1:]
    if step == "@body":
        kind, body, signer, _ = obj
        return BY_SIGNER[signer].seal(kind, replace_at(_walk_decode(body), rest, value)).to_wire()
    out = list(obj) if isinstance(obj, list) else dict(obj)
    out[step] = replace_at(obj[step], rest, value)
    return out


@st.composite
def mutated(draw: st.DrawFn, seeds: list[Any]) -> Any:
    """A seed with one or two nodes replaced; integer leaves are picked most often."""
    wire = draw(st.sampled_from(seeds))
    for _ in range(draw(st.integers(1, 2))):
        nodes = list(paths(wire))
        ints = [p for p, v in nodes if isinstance(v, int) and not isinstance(v, bool)]
        pick_int = draw(st.integers(0, 3)) > 0
        pool = ints if ints and pick_int else [p for p, _ in nodes]
        wire = replace_at(wire, draw(st.sampled_from(pool)), draw(EXTREMES))
    return wire


def in_range(obj: Any, seen: int = 0) -> None:
    """Every integer reachable from a decoded value fits 64 bits; floats are plain."""
    if seen > 40:
        return
    if isinstance(obj, bool) or obj is None or isinstance(obj, (str, bytes, float)):
        return
    if isinstance(obj, (enum.Enum, PeerId)):  # a PeerId caches its 256-bit DHT key
        return
    if isinstance(obj, int):
        assert -(1 << 63) <= obj < U64, obj
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            # opaque user data, cached 256-bit DHT keys
            if f.name not in ("args", "kwargs", "fields", "memo", "key", "_key"):
                in_range(getattr(obj, f.name), seen + 1)
    elif isinstance(obj, (list, tuple)):
        for x in obj:
            in_range(x, seen + 1)
    elif isinstance(obj, dict):
        for x in obj.values():
            in_range(x, seen + 1)


def decodes_or_wire_error(decode: Callable[[Any], Any], wire: Any) -> Any | None:
    try:
        msg = decode(wire)
    except WireError:
        return None
    in_range(msg)
    return msg


# ---------------------------------------------------------------- gossip

AD = ResourceAd.make(cpu_cores=4, mem_bytes=1 << 30, gpus=1, cpu_load=0.5,
                     labels={"site": "x"}, bandwidth_bps=10**9)  # fmt: skip
CERT = Certificate.issue(OWNER, OWNER.public, B, ("member",), 0, 9e9)
REVOKE = Revoke.from_envelope(Revocation.issue(OWNER, CERT, 5.0).envelope)
COORD = Coord((0.1, -0.2, 0.3, 0.0), 0.001, 0.5)


def gossip_updates() -> tuple[Any, ...]:
    return (
        Alive.create(KEYS[1], 3, ("/ip4/1.2.3.4/udp/1",)),
        Alive.create(KEYS[2], 0, (), (CERT.envelope,)),
        Accuse.create(KEYS[1], A, 0, AccuseKind.SUSPECT),
        Accuse.create(KEYS[1], C, 0, AccuseKind.DEAD),
        Accuse.create(KEYS[2], C, 1, AccuseKind.LEFT),
        AdUpdate.create(KEYS[1], 2, AD.to_body()),
        AdUpdate.create(KEYS[1], 3, {"l": 1.5, "c": 8}, 2),
        UserEvent.create(KEYS[1], "deploy", b"payload", 7, 0),
        REVOKE,
    )


U = gossip_updates()
GOSSIP_SEEDS: list[Any] = [
    m.to_wire()  # type: ignore[attr-defined]
    for m in (
        Ping(5, None, U[:4], COORD),
        Ping(6, C, U[4:], None),
        Ack(5, U, COORD),
        Nack(9),
        PingReq(7, C, U[2:5]),
        Gossip(U),
        PushPull((MemberRecord(U[0], None, U[5:7]), MemberRecord(U[1], U[4], ())),
                 True, True, 0, 2, (REVOKE,)),
        *(Gossip((u,)) for u in U),  # one update alone: its fields are drawn more often
    )
]


def gossip_core() -> Swim:
    core = Swim(KEYS[0], LAN, rng=random.Random(1))
    core.handle(Received(B, Gossip((Alive.create(KEYS[1], 0), Alive.create(KEYS[2], 0)))), 0.0)
    return core


def check_gossip_core(core: Swim) -> None:
    lim = 1 << 63
    assert 0 <= core.incarnation < lim
    assert 0 <= core.user_events.orderer.lamport < lim
    for m in core.members.values():
        assert 0 <= m.incarnation < lim and m.ad_version < lim
    decode_message(cbor_decode(cbor_encode(Gossip((core.local.alive,)).to_wire())))


@settings(SETTINGS, max_examples=1000)
@given(mutated(GOSSIP_SEEDS))
def test_gossip_decoders_and_core(wire: Any) -> None:
    msg = decodes_or_wire_error(lambda w: decode_message(cbor_decode(cbor_encode(w))), wire)
    if msg is None:
        return
    core = gossip_core()
    for now in (1.0, 1.5):
        for e in core.handle(Received(B, msg), now):
            if isinstance(e, Send):  # whatever we answer must decode at the peer
                decode_message(cbor_decode(cbor_encode(e.msg.to_wire())))
    check_gossip_core(core)


@SETTINGS
@given(mutated([AD.to_body()]))
def test_resource_ads(body: Any) -> None:
    decodes_or_wire_error(ResourceAd.from_body, body)


@SETTINGS
@given(mutated([COORD.to_wire()]))
def test_coordinates(wire: Any) -> None:
    c = decodes_or_wire_error(Coord.from_wire, wire)
    if c is not None:
        assert all(math.isfinite(v) for v in (*c.vec, c.height, c.error))


@SETTINGS
@given(mutated([KEYS[1].seal("anything", {"n": 1, "f": 0.5}).to_wire()]))
def test_signed_envelopes(wire: Any) -> None:
    env = decodes_or_wire_error(Envelope.from_wire, wire)
    if env is not None:
        assert Envelope.from_bytes(env.to_bytes()) == env


def _cert_or_revocation(w: Any) -> Any:
    env = Envelope.from_wire(w)
    if env.kind == CERT.envelope.kind:
        return Certificate.from_envelope(env)
    return Revocation.from_envelope(env)


@SETTINGS
@given(mutated([CERT.to_wire(), REVOKE.env.to_wire()]))
def test_certificates_and_revocations(wire: Any) -> None:
    decodes_or_wire_error(_cert_or_revocation, wire)


# ---------------------------------------------------------------- capsules

SPEC = CapsuleSpec(name="job", command=("echo", "hi"))
CAP = Capsule.sign(KEYS[1], SPEC, 1000.0, 3)
RECEIPT = Receipt.sign(KEYS[2], CAP.id, 4, 0, [capsule_cid(b"out")], "", 1.0, 2.0, "log")
RECORD = CustodyRecord(CAP, B, State.RUNNING, 5, 4, C, 1, (D,), None, "", 2.5, None)
CAPSULE_SEEDS = [
    m.to_wire()
    for m in (
        capsule.Submit(CAP, (CERT,), C, 2),
        capsule.SubmitAck(CAP.id, True, "ok"),
        capsule.Replicate(RECORD),
        capsule.Replicate(RECORD, 4),  # with a commit point
        capsule.ReplicateAck(CAP.id, 5),
        capsule.ReplicateAck(CAP.id, 5, (3, B.raw), (3, B.raw), 4),
        capsule.Committed(CAP.id, (3, B.raw), 5),
        capsule.SyncRequest(CAP.id),
        capsule.SyncReply(CAP.id, RECORD),
        capsule.LeaseOffer(CAP, 4, LeaseTiming(30.0, 1.0, 5.0), ()),
        capsule.LeaseReply(CAP.id, 4, True, ""),
        capsule.Heartbeat(CAP.id, 4),
        capsule.LeaseRevoked(CAP.id, 4, "stale"),
        capsule.ReceiptMsg(RECEIPT),
        capsule.ReceiptReply(CAP.id, 4, True, ""),
        capsule.StatusQuery(CAP.id),
        capsule.StatusReply(CAP.id, "running", 4, "", (), 0, (), ""),
        capsule.CancelRequest(CAP.id, "user"),
    )
]


def test_capsule_seeds_cover_every_message_type() -> None:
    tags = {w[0] for w in CAPSULE_SEEDS}
    assert tags == {t.TAG for t in capsule.MESSAGE_TYPES}


@SETTINGS
@given(mutated(CAPSULE_SEEDS))
def test_capsule_decoders(wire: Any) -> None:
    decodes_or_wire_error(lambda w: capsule.decode_bytes(cbor_encode(w)), wire)


# ---------------------------------------------------------------- framing envelopes

FRAMING_SEEDS = [[0, {"x": 1}], [1, 7, ["req", 1]], [2, 7, ["resp"]], [3, 7, "no"]]


@SETTINGS
@given(mutated(FRAMING_SEEDS))
def test_framing_envelopes(wire: Any) -> None:
    try:
        env = decode_envelope(wire)
    except WireError:
        return
    assert 0 <= env.rid < U64 and env.kind in (0, 1, 2, 3)  # the body is the protocol's


# ---------------------------------------------------------------- protobuf (dht, bitswap)

VARINTS = st.sampled_from([0, 1, 5, 6, 2**31, 2**32, 2**63 - 1, 2**63, 2**64 - 1, 2**70 - 1])


@st.composite
def kad_messages(draw: st.DrawFn) -> bytes:
    """A KadMessage whose varint fields take extreme values (protobuf allows 10 bytes)."""
    key, record = make_name_record(KEYS[1], b"v", draw(VARINTS) % (1 << 63), 1e12)
    w = Writer()
    w.varint(1, draw(VARINTS) if draw(st.booleans()) else draw(st.integers(0, 5)))
    w.blob(2, key)
    if draw(st.booleans()):
        w.message(3, Writer().blob(1, key).blob(2, record))
    for field in (8, 9):
        for _ in range(draw(st.integers(0, 2))):
            pw = Writer().blob(1, draw(st.sampled_from([B, C, D])).raw)
            pw.blob(2, b"\x04\x7f\x00\x00\x01")
            pw.varint(3, draw(VARINTS) if draw(st.booleans()) else draw(st.integers(0, 3)))
            w.message(field, pw)
    if draw(st.booleans()):
        w.varint(10, draw(VARINTS))
    return w.finish()


@SETTINGS
@given(kad_messages(), st.booleans())
def test_kad_decoder_and_core(data: bytes, as_response: bool) -> None:
    msg = decodes_or_wire_error(KadMessage.from_wire, data)
    if msg is None:
        return
    core = Kademlia(A, KadConfig(), rng=random.Random(2))
    core.table.seen(C, 0.0)
    wrapped = DhtResponse(1, msg) if as_response else DhtRequest(1, msg)
    for e in core.handle(Received(B, wrapped), 1.0):
        if isinstance(e, Send):
            KadMessage.from_wire(e.msg.msg.to_wire())  # what we send decodes


@st.composite
def bitswap_messages(draw: st.DrawFn) -> bytes:
    cid = bytes.fromhex("01551220" + "00" * 32)  # raw-codec CIDv1, sha2-256
    wl = Writer()
    for _ in range(draw(st.integers(0, 2))):
        ew = Writer().blob(1, cid)
        for f in (2, 3, 4, 5):
            if draw(st.booleans()):
                ew.varint(f, draw(VARINTS))
        wl.message(1, ew)
    if draw(st.booleans()):
        wl.varint(2, draw(VARINTS))
    w = Writer().message(1, wl)
    if draw(st.booleans()):
        w.message(4, Writer().blob(1, cid).varint(2, draw(VARINTS)))
    if draw(st.booleans()):
        w.varint(5, draw(VARINTS))
    return w.finish()


@SETTINGS
@given(bitswap_messages())
def test_bitswap_decoder(data: bytes) -> None:
    msg = decodes_or_wire_error(BitswapMessage.from_bytes, data)
    if msg is None:
        return
    assert BitswapMessage.from_bytes(msg.to_bytes()) == msg
    core = Exchange(A, _Blocks())
    for e in core.handle(Received(B, msg), 1.0):
        if isinstance(e, Send) and isinstance(e.msg, BitswapMessage):
            BitswapMessage.from_bytes(e.msg.to_bytes())  # what we send decodes


class _Blocks:
    """A block source holding every block (so wants are answered)."""

    def get_block(self, cid: bytes) -> bytes | None:
        return b"\x00" * 8

    def has_block(self, cid: bytes) -> bool:
        return True
