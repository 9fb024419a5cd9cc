"""A replicated custody record whose version or token is at the edge of the wire's
range is refused at decode (before: accepted, and the leader's `+ 1` gave 2^63, which
every peer refuses, so the capsule never finished); a bignum elapsed time is a
`WireError`, not an OverflowError."""

from __future__ import annotations

import pytest

from overlay.capsule.leases import CustodyRecord, State
from overlay.capsule.messages import Replicate, SyncReply, decode_bytes
from overlay.capsule.spec import Capsule, CapsuleSpec
from overlay.core.crypto import KeyPair
from overlay.core.errors import WireError
from overlay.core.validate import COUNTER_LIMIT
from overlay.core.wire import cbor_encode

KEYS = [KeyPair(bytes([i + 1]) * 32) for i in range(3)]
CAP = Capsule.sign(KEYS[0], CapsuleSpec(name="job", command=("true",)), 1000.0)
REC = CustodyRecord(CAP, KEYS[0].peer_id, State.RUNNING, 5, 4, KEYS[1].peer_id)


def with_field(i: int, v: object) -> list[object]:
    w = Replicate(REC).to_wire()
    rec = list(w[1])
    rec[i] = v
    return [w[0], rec]


@pytest.mark.parametrize("index", [3, 4, 6])  # version, token, attempts
@pytest.mark.parametrize("value", [(1 << 63) - 1, COUNTER_LIMIT])
def test_record_counters_at_the_edge_are_refused(index: int, value: int) -> None:
    with pytest.raises(WireError):
        decode_bytes(cbor_encode(with_field(index, value)))
    sync = SyncReply(CAP.id, REC).to_wire()
    sync[2] = with_field(index, value)[1]
    with pytest.raises(WireError):
        decode_bytes(cbor_encode(sync))


def test_record_counters_below_the_limit_decode() -> None:
    msg = decode_bytes(cbor_encode(with_field(4, COUNTER_LIMIT - 1)))
    assert isinstance(msg, Replicate) and msg.record.token == COUNTER_LIMIT - 1
    assert msg.record.advance(State.RUNNING, token=msg.record.token + 1).token < 1 << 63


@pytest.mark.parametrize("waited", [10**400, -(10**400)])
def test_bignum_wait_is_a_wire_error(waited: int) -> None:
    # The record decoder itself (durable records use it too, without the message
    # decoder's OverflowError net). Before: OverflowError from math.isfinite.
    with pytest.raises(WireError):
        CustodyRecord.from_wire(with_field(10, waited)[1])
