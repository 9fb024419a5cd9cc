"""Tier-2 wire: every message round-trips through canonical CBOR; bad input → WireError."""

from __future__ import annotations

from typing import Any

import pytest

from gossip.plumtree import message_id
from gossip.topic_messages import (
    MAX_IHAVES,
    MAX_SHUFFLE_PEERS,
    Disconnect,
    ForwardJoin,
    Gossip,
    Graft,
    IHave,
    Join,
    Neighbor,
    NeighborReply,
    Prune,
    Shuffle,
    ShuffleReply,
    decode_topic_message,
)
from overlay.core.errors import LocalProtocolError, WireError
from overlay.core.ids import PeerId
from overlay.core.wire import cbor_decode, cbor_encode

T = bytes(range(32))
A, B = (PeerId.from_ed25519(bytes([i]) * 32) for i in (1, 2))
MID = message_id(b"x")

MESSAGES = [
    Join(T), ForwardJoin(T, A, 6), Neighbor(T, True), NeighborReply(T, False),
    Disconnect(T, True), Shuffle(T, A, (A, B), 6), ShuffleReply(T, (B,)),
    Gossip(T, MID, 3, b"x"), IHave(T, ((MID, 1), (MID, 2))), Graft(T, MID, 4),
    Graft(T, None, 0), Prune(T),
]


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip(msg: Any) -> None:
    assert decode_topic_message(cbor_decode(cbor_encode(msg.to_wire()))) == msg


BAD = [
    [],  # empty
    [99, T],  # unknown tag
    [20, T[:31]],  # short topic
    [20, T, 1],  # arity
    [21, T, A.raw, 33],  # ttl over MAX_TTL
    [21, T, A.raw, True],  # bool is not an int
    [21, T, b"\x99\x01", 3],  # not a peer id
    [22, T, 1],  # priority must be a bool
    [25, T, A.raw, [A.raw] * (MAX_SHUFFLE_PEERS + 1), 3],  # too many peers
    [30, T, MID[:5], 0, b"x"],  # short id
    [30, T, MID, 1 << 16, b"x"],  # round out of range
    [30, T, MID, 0, "text"],  # payload not bytes
    [31, T, [[MID, 0]] * (MAX_IHAVES + 1)],  # too many ihaves
    [31, T, [[MID]]],  # malformed item
    [32, T, 5, 0],  # id neither bytes nor null
    "not a list",
]


@pytest.mark.parametrize("obj", BAD)
def test_bad_input_raises_wire_error(obj: Any) -> None:
    with pytest.raises(WireError):
        decode_topic_message(obj)


def test_encoding_over_a_limit_is_our_bug() -> None:
    with pytest.raises(LocalProtocolError):
        Shuffle(T, A, (A,) * (MAX_SHUFFLE_PEERS + 1), 1).to_wire()
    with pytest.raises(LocalProtocolError):
        IHave(T, ((MID, 0),) * (MAX_IHAVES + 1)).to_wire()
