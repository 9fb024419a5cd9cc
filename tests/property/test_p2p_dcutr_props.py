"""Properties of the DCUtR core (overlay/p2p/dcutr.py).

* Decoding random bytes raises only DcutrError (never IndexError/KeyError), and what
  it accepts is bounded (≤ max_addrs addresses of ≤ MAX_ADDR_BYTES).
* Any sequence of inputs, well-formed or hostile, in any order: a Punch emits at most
  one PunchFinished, sends and accepts at most `max_attempts` CONNECTs, schedules at
  most one dial per attempt, and never dials before `now`.
* The guard never admits more than `per_peer` punches of one peer in any window of
  `window_s` nor more than `max_concurrent` at once.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.core.crypto import KeyPair
from overlay.core.effects import Emit, SetTimer, TimerFired
from overlay.p2p import multiaddr
from overlay.p2p.dcutr import (
    MAX_ADDR_BYTES,
    DcutrConfig,
    DcutrError,
    DialAt,
    DialResult,
    HolePunchMsg,
    MessageIn,
    MsgType,
    Punch,
    PunchFinished,
    PunchGuard,
    Role,
    SendMsg,
    Start,
    StreamEnded,
)

SETTINGS = settings(max_examples=300, deadline=None)
ADDR = multiaddr.to_bytes("/ip4/198.18.0.21/tcp/4001")


@SETTINGS
@given(st.binary(max_size=5000))
def test_random_bytes_raise_only_dcutr_error(data: bytes) -> None:
    try:
        m = HolePunchMsg.from_wire(data)
    except DcutrError:
        return
    assert len(m.addrs) <= 16 and all(len(a) <= MAX_ADDR_BYTES for a in m.addrs)
    assert HolePunchMsg.from_wire(m.to_wire()) == m


messages = st.builds(
    HolePunchMsg,
    st.sampled_from(list(MsgType)),
    st.lists(st.sampled_from([ADDR, b"\x04\x7f", b"", b"\xff" * 40]), max_size=5).map(tuple),
)
inputs = st.one_of(
    messages.map(MessageIn),
    st.booleans().map(lambda ok: DialResult(ok, "" if ok else "refused")),
    st.integers(0, 5).map(lambda n: TimerFired(("deadline", n))),
    st.just(StreamEnded("eof")),
)


@SETTINGS
@given(st.sampled_from(list(Role)), st.lists(st.tuples(inputs, st.floats(0, 5)), max_size=40))
def test_any_input_sequence_keeps_the_punch_bounded(
    role: Role, steps: list[tuple[object, float]]
) -> None:
    c = DcutrConfig(max_attempts=3)
    p = Punch(role, (ADDR,), c)
    now = 0.0
    out = p.handle(Start(), now) if role is Role.INITIATOR else []
    effects = list(out)
    for inp, dt in steps:
        now += dt
        got = p.handle(inp, now)  # type: ignore[arg-type]
        for e in got:
            if isinstance(e, DialAt):
                assert e.at >= now
            if isinstance(e, SetTimer):
                assert e.at >= now
        effects += got
    finishes = [e for e in effects if isinstance(e, Emit) and isinstance(e.event, PunchFinished)]
    assert len(finishes) <= 1
    connects = [e for e in effects
                if isinstance(e, SendMsg) and e.msg.type is MsgType.CONNECT]
    assert len(connects) <= c.max_attempts
    dials = [e.attempt for e in effects if isinstance(e, DialAt)]
    assert len(dials) == len(set(dials)) and len(dials) <= c.max_attempts
    if finishes:
        assert p.done and p.handle(DialResult(True), now + 1) == []


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 3), st.floats(0, 30), st.booleans()), max_size=200))
def test_guard_never_exceeds_its_limits(ops: list[tuple[int, float, bool]]) -> None:
    c = DcutrConfig(per_peer=3, window_s=60.0, max_concurrent=2)
    g = PunchGuard(c)
    peers = [KeyPair.from_rng_seed(bytes([i + 1]) * 32).peer_id for i in range(4)]
    admitted: dict[int, list[float]] = {}
    now = 0.0
    for who, dt, release in ops:
        now += dt
        if g.admit(peers[who], now) is None:
            admitted.setdefault(who, []).append(now)
            assert sum(g.active.values()) <= c.max_concurrent
            if release:
                g.release(peers[who])
        for times in admitted.values():
            recent = [t for t in times if t > now - c.window_s]
            assert len(recent) <= c.per_peer
