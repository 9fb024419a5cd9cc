"""Hostile and malformed input: ignored or dropped with a counter, never stored."""

from __future__ import annotations

import random

from dht import (
    GetProviders,
    GetValue,
    KadConfig,
    Kademlia,
    LookupDone,
    Value,
)
from dht.records import make_name_record, name_key
from dht.wire import DhtRequest, DhtResponse, KadMessage, MessageType, PeerInfo, Record
from overlay.core.crypto import KeyPair
from overlay.core.effects import Effect, Emit, Received, Send
from overlay.core.ids import PeerId
from overlay.core.multiformats import multihash_sha256


def pid(i: int) -> PeerId:
    return PeerId.from_ed25519(random.Random(i).randbytes(32))


ME = pid(0)
EVE = pid(666)
OWNER = KeyPair.from_rng_seed(bytes([9]) * 32)
MH = multihash_sha256(b"data")


def core(n: int = 30, **cfg: object) -> Kademlia:
    c = Kademlia(ME, KadConfig(**cfg), rng=random.Random(3))  # type: ignore[arg-type]
    for i in range(1, n + 1):
        c.table.seen(pid(i), 0.0)
    return c


def serve(c: Kademlia, msg: KadMessage, frm: PeerId = EVE, now: float = 1.0) -> list[Send]:
    eff = c.handle(Received(frm, DhtRequest(42, msg)), now)
    return [e for e in eff if isinstance(e, Send)]


def responses(out: list[Send]) -> list[Send]:
    """Answers only (an unknown requester also gets a PING that checks it is a server)."""
    return [s for s in out if isinstance(s.msg, DhtResponse)]


def reply_of(out: list[Send]) -> KadMessage:
    (s,) = [s for s in out if isinstance(s.msg, DhtResponse)]
    assert isinstance(s.msg, DhtResponse) and s.msg.rid == 42
    return s.msg.msg


def test_put_value_with_bad_signature_is_not_stored() -> None:
    c = core()
    key, value = make_name_record(OWNER, b"v", 1, 1e9)
    forged = bytearray(value)
    forged[-3] ^= 0xFF
    r = reply_of(serve(c, KadMessage(MessageType.PUT_VALUE, key, Record(key, bytes(forged)))))
    assert r.record is None
    assert c.stats.records_rejected == 1 and len(c.values) == 0


def test_put_value_signed_by_another_key_is_not_stored() -> None:
    c = core()
    _, value = make_name_record(KeyPair.from_rng_seed(bytes([8]) * 32), b"v", 1, 1e9)
    key = name_key(OWNER.peer_id)
    r = reply_of(serve(c, KadMessage(MessageType.PUT_VALUE, key, Record(key, value))))
    assert r.record is None and len(c.values) == 0


def test_put_value_expired_is_not_stored() -> None:
    c = core()
    key, value = make_name_record(OWNER, b"v", 1, 0.5)
    reply_of(serve(c, KadMessage(MessageType.PUT_VALUE, key, Record(key, value)), now=1.0))
    assert c.stats.records_rejected == 1 and len(c.values) == 0


def test_unknown_record_type_and_key_mismatch_are_dropped() -> None:
    c = core()
    reply_of(serve(c, KadMessage(MessageType.PUT_VALUE, b"/pk/x", Record(b"/pk/x", b"v"))))
    key, value = make_name_record(OWNER, b"v", 1, 1e9)
    reply_of(serve(c, KadMessage(MessageType.PUT_VALUE, b"/other", Record(key, value))))
    reply_of(serve(c, KadMessage(MessageType.PUT_VALUE, key)))  # no record at all
    assert c.stats.records_rejected == 3 and len(c.values) == 0


def test_valid_put_is_stored_echoed_and_served() -> None:
    c = core()
    key, value = make_name_record(OWNER, b"v", 1, 1e9)
    r = reply_of(serve(c, KadMessage(MessageType.PUT_VALUE, key, Record(key, value))))
    assert r.record == Record(key, value)
    got = reply_of(serve(c, KadMessage(MessageType.GET_VALUE, key), frm=pid(5)))
    assert got.record == Record(key, value)
    # an older sequence number does not replace it
    _, old = make_name_record(OWNER, b"old", 0, 1e9)
    r = reply_of(serve(c, KadMessage(MessageType.PUT_VALUE, key, Record(key, old))))
    assert r.record is None and c.stats.record_store_refusals == 1


def test_add_provider_for_someone_else_is_ignored() -> None:
    c = core()
    msg = KadMessage(MessageType.ADD_PROVIDER, MH, provider_peers=(PeerInfo(pid(3)),))
    assert responses(serve(c, msg)) == []  # fire-and-forget: no response
    assert c.stats.provider_sender_mismatch == 1 and len(c.providers) == 0
    msg = KadMessage(MessageType.ADD_PROVIDER, MH, provider_peers=(PeerInfo(EVE),))
    serve(c, msg)
    assert len(c.providers) == 1


def test_non_multihash_provider_keys_are_dropped() -> None:
    c = core()
    assert responses(serve(c, KadMessage(MessageType.GET_PROVIDERS, b"\xff\xff"))) == []
    serve(c, KadMessage(MessageType.ADD_PROVIDER, b"", provider_peers=(PeerInfo(EVE),)))
    assert c.stats.bad_keys == 2 and len(c.providers) == 0


def test_closer_peer_list_longer_than_k_is_cut_and_self_referral_dropped() -> None:
    c = core(k=5, alpha=1)
    eff = c.handle(GetProviders(1, MH), 0.0)
    (s,) = [e for e in eff if isinstance(e, Send)]
    assert isinstance(s.msg, DhtRequest)
    junk = tuple(PeerInfo(pid(1000 + i)) for i in range(40))
    reply = KadMessage(MessageType.GET_PROVIDERS, MH,
                       closer_peers=(PeerInfo(s.peer), *junk))
    c.handle(Received(s.peer, DhtResponse(s.msg.rid, reply)), 0.5)
    assert c.stats.peer_lists_truncated == 1
    assert c.stats.self_referrals == 1
    op = next(iter(c.lookups.ops.values()))
    # only the first k entries (minus the self-referral) became candidates
    assert sum(op.lookup.state(pid(1000 + i)) is not None for i in range(40)) <= 4


def test_invalid_records_in_get_value_answers_are_not_counted() -> None:
    c = core(alpha=3)
    key, good = make_name_record(OWNER, b"good", 2, 1e9)
    _, expired = make_name_record(OWNER, b"gone", 9, 0.5)
    eff: list[Effect] = c.handle(GetValue(1, key, quorum=3), 1.0)
    ss = [e for e in eff if isinstance(e, Send)]
    answers = [Record(key, good), Record(key, expired), Record(key, b"garbage")]
    out: list[Effect] = []
    for s, rec in zip(ss, answers, strict=True):
        assert isinstance(s.msg, DhtRequest)
        out += c.handle(Received(s.peer, DhtResponse(
            s.msg.rid, KadMessage(MessageType.GET_VALUE, key, rec))), 1.5)
    assert c.stats.records_rejected == 2
    # finish the walk with empty answers
    pending = [e for e in out if isinstance(e, Send)]
    for _ in range(50):
        if not pending:
            break
        nxt: list[Effect] = []
        for s in pending:
            assert isinstance(s.msg, DhtRequest)
            nxt += c.handle(Received(s.peer, DhtResponse(
                s.msg.rid, KadMessage(s.msg.msg.type, key))), 2.0)
        out += nxt
        pending = [e for e in nxt if isinstance(e, Send) and isinstance(e.msg, DhtRequest)
                   and e.msg.msg.type == MessageType.GET_VALUE]
    (ld,) = [e.event for e in out if isinstance(e, Emit) and isinstance(e.event, LookupDone)]
    assert isinstance(ld.result, Value)
    assert ld.result.payload == b"good" and ld.result.seq == 2
    assert ld.result.valid_responses == 1
    assert len(c.values) == 0  # a GET never stores what it hears
