"""Hypothesis: kad-dht messages round-trip; random bytes raise only WireError."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dht.wire import ConnectionType, KadMessage, MessageType, PeerInfo, Record
from overlay.core.errors import WireError
from overlay.core.ids import PeerId

peer_ids = st.one_of(
    st.binary(min_size=32, max_size=32).map(PeerId.from_ed25519),
    st.binary(min_size=32, max_size=32).map(lambda d: PeerId(b"\x12\x20" + d)),
)
peer_infos = st.builds(
    PeerInfo,
    peer_ids,
    st.lists(st.binary(min_size=1, max_size=40), max_size=4).map(tuple),
    st.sampled_from(list(ConnectionType)),
)
records = st.builds(
    Record, st.binary(max_size=60), st.binary(max_size=300), st.text(max_size=20)
)
messages = st.builds(
    KadMessage,
    st.sampled_from(list(MessageType)),
    st.binary(max_size=80),
    st.none() | records,
    st.lists(peer_infos, max_size=5).map(tuple),
    st.lists(peer_infos, max_size=3).map(tuple),
    st.integers(min_value=-(2**31), max_value=2**31 - 1),
)


@settings(max_examples=300, deadline=None)
@given(messages)
def test_round_trip(msg: KadMessage) -> None:
    assert KadMessage.from_wire(msg.to_wire()) == msg


@settings(max_examples=600, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_wire_errors(raw: bytes) -> None:
    try:
        msg = KadMessage.from_wire(raw)
    except WireError:
        return
    assert KadMessage.from_wire(msg.to_wire()) == msg


@settings(max_examples=300, deadline=None)
@given(messages, st.data())
def test_mutated_messages_raise_only_wire_errors(msg: KadMessage, data: st.DataObject) -> None:
    raw = bytearray(msg.to_wire())
    if raw:
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
        cut = data.draw(st.integers(0, len(raw)))
        raw = raw[:cut]
    try:
        out = KadMessage.from_wire(bytes(raw))
    except WireError:
        return
    # whatever decodes must re-encode to something that decodes to the same message
    assert KadMessage.from_wire(out.to_wire()) == out
