"""DCUtR core (overlay/p2p/dcutr.py): the wire, address filtering, the two roles wired
back to back with a hand-advanced clock, and the refusals of hostile input."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from overlay.core.crypto import KeyPair
from overlay.core.effects import Emit, SetTimer, TimerFired
from overlay.core.multiformats import encode_varint
from overlay.p2p import multiaddr, pb
from overlay.p2p.dcutr import (
    MAX_MESSAGE_BYTES,
    DcutrConfig,
    DcutrError,
    DialAt,
    DialResult,
    HolePunchMsg,
    MessageIn,
    MsgType,
    OwnAddrs,
    Punch,
    PunchFinished,
    PunchGuard,
    Role,
    SendMsg,
    Start,
    StreamEnded,
    predicted_addrs,
    quic_targets,
    tcp_targets,
)

A_ADDRS = (multiaddr.to_bytes("/ip4/198.18.0.21/tcp/4001"),)
B_ADDRS = (multiaddr.to_bytes("/ip4/198.18.0.23/tcp/4001"),
           multiaddr.to_bytes("/ip4/198.18.0.23/tcp/51000"))


def sent(effects: Sequence[object]) -> list[HolePunchMsg]:
    return [e.msg for e in effects if isinstance(e, SendMsg)]


def finished(effects: Sequence[object]) -> PunchFinished | None:
    for e in effects:
        if isinstance(e, Emit) and isinstance(e.event, PunchFinished):
            return e.event
    return None


def test_wire_round_trip_and_spec_bytes() -> None:
    m = HolePunchMsg(MsgType.CONNECT, A_ADDRS)
    body = m.to_wire()
    # type = 100 as field 1 varint (0x08 0x64), then field 2 length-delimited.
    assert body[:2] == b"\x08\x64" and body[2] == 0x12
    assert HolePunchMsg.from_wire(body) == m
    assert HolePunchMsg.from_wire(HolePunchMsg(MsgType.SYNC).to_wire()).type is MsgType.SYNC
    assert m.frame() == encode_varint(len(body)) + body


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x08\x01", "malformed"),  # type 1 is not a DCUtR type
        (b"", "malformed"),  # no type
        (b"\xff\xff", "malformed"),  # not protobuf
        (b"\x08\x64" + pb.field_bytes(2, b"x" * 129), "addr_too_large"),
        (b"\x08\x64" + b"".join(pb.field_bytes(2, b"\x04") for _ in range(17)), "too_many_addrs"),
        (b"\x08\x64" + b"\x12\x01\x00" * 1400, "message_too_large"),
    ],
)
def test_hostile_messages_are_refused_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(DcutrError) as e:
        HolePunchMsg.from_wire(data)
    assert e.value.reason == reason


def test_tcp_targets_keeps_only_dialable_tcp() -> None:
    pid = KeyPair.generate().peer_id
    addrs = (
        multiaddr.to_bytes("/ip4/1.2.3.4/tcp/4001"),
        multiaddr.to_bytes("/ip4/1.2.3.4/tcp/4001"),  # duplicate
        multiaddr.to_bytes(f"/ip4/5.6.7.8/tcp/9/p2p/{pid}"),
        multiaddr.to_bytes("/ip4/0.0.0.0/tcp/4001"),  # unspecified
        multiaddr.to_bytes("/ip4/1.2.3.4/tcp/0"),  # port 0
        multiaddr.to_bytes("/ip4/1.2.3.4/udp/4001/quic-v1"),  # not TCP (yet)
        multiaddr.to_bytes("/ip4/224.0.0.1/tcp/4001"),  # multicast
        b"\xff\xff\xff",  # garbage
    )
    assert tcp_targets(addrs) == (("1.2.3.4", 4001), ("5.6.7.8", 9))


def test_predicted_addrs_put_the_listen_port_first() -> None:
    got = predicted_addrs(["/ip4/198.18.0.21/tcp/50123", "/ip4/198.18.0.21/tcp/50999",
                           "/ip4/198.18.0.21/udp/1/quic-v1"], 4001)
    assert got == ["/ip4/198.18.0.21/tcp/4001", "/ip4/198.18.0.21/tcp/50123",
                   "/ip4/198.18.0.21/tcp/50999"]


def test_quic_targets_keep_only_dialable_quic_v1() -> None:
    pid = KeyPair.generate().peer_id
    addrs = (
        multiaddr.to_bytes("/ip4/1.2.3.4/udp/4001/quic-v1"),
        multiaddr.to_bytes("/ip4/1.2.3.4/udp/4001/quic-v1"),  # duplicate
        multiaddr.to_bytes(f"/ip4/5.6.7.8/udp/9/quic-v1/p2p/{pid}"),
        multiaddr.to_bytes("/ip4/1.2.3.4/udp/4002/quic"),  # draft-29 QUIC: not ours
        multiaddr.to_bytes("/ip4/1.2.3.4/udp/4003"),  # bare UDP
        multiaddr.to_bytes("/ip4/0.0.0.0/udp/4001/quic-v1"),  # unspecified
        multiaddr.to_bytes("/ip4/1.2.3.4/udp/0/quic-v1"),  # port 0
        multiaddr.to_bytes("/ip4/1.2.3.4/tcp/4001"),  # TCP
        b"\xff\xff\xff",  # garbage
    )
    assert quic_targets(addrs) == (("1.2.3.4", 4001), ("5.6.7.8", 9))


def test_predicted_addrs_with_quic_interleave_both_transports() -> None:
    got = predicted_addrs(["/ip4/198.18.0.21/tcp/50123", "/ip4/198.18.0.21/udp/61000/quic-v1"],
                          4001, quic_port=4002)
    assert got == ["/ip4/198.18.0.21/tcp/4001", "/ip4/198.18.0.21/udp/4002/quic-v1",
                   "/ip4/198.18.0.21/tcp/50123", "/ip4/198.18.0.21/udp/61000/quic-v1"]
    # TCP punching off (listen port 0): QUIC only; a limit keeps the first ones.
    assert predicted_addrs(["/ip4/198.18.0.21/tcp/50123"], 0, quic_port=4002) == [
        "/ip4/198.18.0.21/udp/4002/quic-v1"]
    assert len(predicted_addrs([f"/ip4/10.0.0.{i}/tcp/1" for i in range(20)], 4001,
                               quic_port=4002)) == 8


def test_quic_targets_reach_both_dials_capped_and_filtered_by_config() -> None:
    quic = tuple(multiaddr.to_bytes(f"/ip4/198.18.0.23/udp/{4000 + i}/quic-v1")
                 for i in range(12))
    b, a = pair()
    b.handle(Start(), 0.0)
    connect = HolePunchMsg(MsgType.CONNECT, B_ADDRS + quic)
    a.handle(MessageIn(connect), 0.05)
    dial_a = next(e for e in a.handle(MessageIn(HolePunchMsg(MsgType.SYNC)), 0.15)
                  if isinstance(e, DialAt))
    # A punch packet train per QUIC target: a peer's list aims at most 4 of them.
    assert dial_a.quic == tuple(("198.18.0.23", 4000 + i) for i in range(4))
    assert len(dial_a.targets) == 2
    out = b.handle(MessageIn(HolePunchMsg(MsgType.CONNECT, quic[:1])), 0.1)
    dial_b = next(e for e in out if isinstance(e, DialAt))  # QUIC alone is enough
    assert dial_b.targets == () and dial_b.quic == (("198.18.0.23", 4000),)
    done = finished(b.handle(DialResult(True, transport="quic"), 0.3))
    assert done is not None and done.ok and done.transport == "quic"
    # TCP punching off: the peer's TCP addresses are ignored; nothing else: no punch.
    b2, _ = pair(DcutrConfig(transports=("quic",)))
    b2.handle(Start(), 0.0)
    done = finished(b2.handle(MessageIn(HolePunchMsg(MsgType.CONNECT, A_ADDRS)), 0.1))
    assert done is not None and done.reason.startswith("no_usable_addrs"), done


def pair(config: DcutrConfig | None = None) -> tuple[Punch, Punch]:
    c = config or DcutrConfig()
    return Punch(Role.INITIATOR, B_ADDRS, c), Punch(Role.RESPONDER, A_ADDRS, c)


def test_exchange_times_the_initiators_dial_at_half_the_rtt() -> None:
    b, a = pair()
    out = b.handle(Start(), 10.0)
    (connect,) = sent(out)
    assert connect.type is MsgType.CONNECT and connect.addrs == B_ADDRS
    out = a.handle(MessageIn(connect), 10.05)
    (answer,) = sent(out)
    assert answer.type is MsgType.CONNECT and answer.addrs == A_ADDRS
    out = b.handle(MessageIn(answer), 10.1)  # RTT 0.1 s
    sync, dial_b = sent(out)[0], next(e for e in out if isinstance(e, DialAt))
    assert sync.type is MsgType.SYNC
    assert dial_b.at == pytest.approx(10.15) and dial_b.client
    assert dial_b.targets == (("198.18.0.21", 4001),)
    out = a.handle(MessageIn(sync), 10.15)  # one-way 0.05 s: both dial at 10.15
    dial_a = next(e for e in out if isinstance(e, DialAt))
    assert dial_a.at == pytest.approx(10.15) and not dial_a.client
    assert dial_a.targets == (("198.18.0.23", 4001), ("198.18.0.23", 51000))
    done = finished(b.handle(DialResult(True), 10.3))
    assert done is not None and done.ok and done.attempts == 1
    assert done.rtt_s == pytest.approx(0.1)
    assert finished(a.handle(DialResult(True), 10.3)) is not None
    assert b.handle(DialResult(False, "late"), 11.0) == []  # done: inputs ignored


def test_initiator_retries_twice_on_the_same_stream_then_gives_up() -> None:
    b, a = pair()
    out = b.handle(Start(), 0.0)
    now = 0.0
    for attempt in (1, 2, 3):
        now += 0.1
        out = b.handle(MessageIn(sent(a.handle(MessageIn(sent(out)[0]), now))[0]), now)
        a.handle(MessageIn(sent(out)[0]), now)
        out = b.handle(DialResult(False, "ConnectionRefusedError"), now + 0.2)
        a.handle(DialResult(False, "refused"), now + 0.2)
        if attempt < 3:
            assert sent(out)[0].type is MsgType.CONNECT  # retry
    done = finished(out)
    assert done is not None and not done.ok and done.attempts == 3
    assert done.reason.startswith("dial_failed after 3 attempts")


def test_a_stream_closed_mid_dial_lets_the_dial_finish() -> None:
    """A closes the stream the moment its own dial succeeded; B's dial is the same
    connection, still in its handshake: B must wait for it, not give up."""
    b, a = pair()
    out = b.handle(Start(), 0.0)
    out = b.handle(MessageIn(sent(a.handle(MessageIn(sent(out)[0]), 0.05))[0]), 0.1)
    assert any(isinstance(e, DialAt) for e in out)
    assert b.handle(StreamEnded("eof"), 0.2) == []
    done = finished(b.handle(DialResult(True), 0.3))
    assert done is not None and done.ok
    b2, a2 = pair()
    out = b2.handle(Start(), 0.0)
    b2.handle(MessageIn(sent(a2.handle(MessageIn(sent(out)[0]), 0.05))[0]), 0.1)
    b2.handle(StreamEnded("eof"), 0.2)
    done = finished(b2.handle(DialResult(False, "refused"), 0.3))  # no retry: no stream
    assert done is not None and done.reason == "stream_ended: eof; last dial: refused"


def test_timeouts_and_stale_timers() -> None:
    b, _ = pair(DcutrConfig(exchange_timeout_s=5.0))
    out = b.handle(Start(), 0.0)
    timer = next(e for e in out if isinstance(e, SetTimer))
    assert timer.at == 5.0
    assert b.handle(TimerFired(("deadline", 7)), 5.0) == []  # stale id
    done = finished(b.handle(TimerFired(timer.timer), 5.0))
    assert done is not None and done.reason == "timeout: no CONNECT from the peer"


def test_unexpected_messages_end_the_punch() -> None:
    b, a = pair()
    b.handle(Start(), 0.0)
    done = finished(b.handle(MessageIn(HolePunchMsg(MsgType.SYNC)), 0.1))
    assert done is not None and done.reason.startswith("unexpected_message")
    done = finished(a.handle(MessageIn(HolePunchMsg(MsgType.SYNC)), 0.1))  # SYNC first
    assert done is not None and done.reason.startswith("unexpected_message")
    _, a = pair()
    assert finished(a.handle(StreamEnded("eof"), 0.0)) is not None


def test_responder_bounds_connects_per_stream() -> None:
    _, a = pair(DcutrConfig(max_attempts=2))
    connect = HolePunchMsg(MsgType.CONNECT, B_ADDRS)
    a.handle(MessageIn(connect), 0.0)
    a.handle(MessageIn(HolePunchMsg(MsgType.SYNC)), 0.1)
    a.handle(MessageIn(connect), 0.2)  # retry 2
    a.handle(MessageIn(HolePunchMsg(MsgType.SYNC)), 0.3)
    done = finished(a.handle(MessageIn(connect), 0.4))
    assert done is not None and done.reason == "too_many_attempts"


def test_a_retry_connect_carries_the_readdressed_quic_port() -> None:
    """The driver gives A's retry a fresh UDP port (a lost UDP race leaves a NAT
    entry that spoils the old 4-tuple): the next CONNECT carries the new addresses,
    B's QUIC targets follow, and the address cap still holds."""
    b, a = pair(DcutrConfig(max_addrs=2))
    first = (multiaddr.to_bytes("/ip4/198.18.0.21/udp/4001/quic-v1"),)
    fresh = (multiaddr.to_bytes("/ip4/198.18.0.21/udp/40123/quic-v1"),) * 3
    a.handle(OwnAddrs(first), 0.0)
    out = b.handle(Start(), 0.0)
    reply = sent(a.handle(MessageIn(sent(out)[0]), 0.05))[0]
    assert reply.addrs == first
    out = b.handle(MessageIn(reply), 0.1)
    dial = [e for e in out if isinstance(e, DialAt)]
    assert dial[0].quic == (("198.18.0.21", 4001),)
    a.handle(MessageIn(sent(out)[0]), 0.15)  # SYNC
    a.handle(DialResult(False, "quic: handshake timed out"), 5.0)
    out = b.handle(DialResult(False, "quic: handshake timed out"), 5.0)  # retry
    assert a.handle(OwnAddrs(fresh), 5.0) == []
    reply = sent(a.handle(MessageIn(sent(out)[0]), 5.05))[0]
    assert reply.addrs == fresh[:2]
    dial = [e for e in b.handle(MessageIn(reply), 5.1) if isinstance(e, DialAt)]
    assert dial[0].quic == (("198.18.0.21", 40123),)


def test_readdress_before_marks_exactly_the_inputs_that_lead_to_a_retry_connect() -> None:
    b, a = pair(DcutrConfig(max_attempts=2))
    out = b.handle(Start(), 0.0)
    connect = sent(out)[0]
    assert not a.readdress_before(MessageIn(connect))  # attempt 1: the listen port
    out = b.handle(MessageIn(sent(a.handle(MessageIn(connect), 0.05))[0]), 0.1)
    a.handle(MessageIn(sent(out)[0]), 0.15)
    fail = DialResult(False, "quic: handshake timed out")
    assert b.readdress_before(fail) and b.readdress_before(TimerFired(("deadline", 1)))
    assert not b.readdress_before(TimerFired(("deadline", 0)))  # stale
    assert not b.readdress_before(DialResult(True, transport="quic"))
    out = b.handle(fail, 5.0)
    assert a.readdress_before(MessageIn(sent(out)[0]))  # B's retry CONNECT
    a.handle(MessageIn(sent(out)[0]), 5.05)
    assert not b.readdress_before(fail)  # B awaits CONNECT, not dialling
    assert not a.readdress_before(MessageIn(sent(out)[0]))  # max_attempts reached


def test_initiator_without_usable_addresses_says_so() -> None:
    b, _ = pair()
    b.handle(Start(), 0.0)
    junk = HolePunchMsg(MsgType.CONNECT, (multiaddr.to_bytes("/ip4/0.0.0.0/tcp/1"),))
    done = finished(b.handle(MessageIn(junk), 0.1))
    assert done is not None and done.reason.startswith("no_usable_addrs")


def test_guard_rate_limits_one_peer_and_caps_concurrency() -> None:
    g = PunchGuard(DcutrConfig(per_peer=3, window_s=60.0, max_concurrent=2))
    storm, other, third = (KeyPair.generate().peer_id for _ in range(3))
    results = []
    for i in range(100):  # a punch storm: 100 punches in 10 s from one peer
        r = g.admit(storm, i * 0.1)
        results.append(r)
        if r is None:
            g.release(storm)
    assert results.count(None) == 3 and g.refusals == {"rate_limited": 97}
    assert g.admit(storm, 61.0) is None  # the window moved on
    assert g.admit(storm, 61.1) == "punch_in_progress"
    assert g.admit(storm, 61.15, "initiator") is None  # both ends initiated at once
    g.release(storm, "initiator")
    assert g.admit(other, 61.2) is None
    assert g.admit(third, 61.3) == "too_many_punches"
    g.release(storm)
    assert g.admit(third, 61.4) is None


def test_guard_forgets_the_oldest_peer_beyond_its_cap() -> None:
    g = PunchGuard(DcutrConfig(max_tracked_peers=10))
    for _ in range(50):
        p = KeyPair.generate().peer_id
        assert g.admit(p, 0.0) is None
        g.release(p)
    assert len(g.recent) == 10 and not g.active


def test_own_addresses_are_capped() -> None:
    many = tuple(multiaddr.to_bytes(f"/ip4/10.0.0.{i}/tcp/1") for i in range(40))
    b = Punch(Role.INITIATOR, many, DcutrConfig(max_addrs=16))
    (msg,) = sent(b.handle(Start(), 0.0))
    assert len(msg.addrs) == 16 and len(msg.to_wire()) < MAX_MESSAGE_BYTES
