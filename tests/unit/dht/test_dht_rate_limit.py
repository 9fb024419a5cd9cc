"""Inbound requests are rate-limited per peer (fake time), and hostile record numbers
are refused as `WireError`s: each test failed before its fix."""

from __future__ import annotations

import math
import random

import pytest

from dht import KadConfig, Kademlia
from dht.rate_limit import PeerRateLimiter
from dht.records import RECORD_KIND, Validators, name_key
from dht.wire import DhtRequest, DhtResponse, KadMessage, MessageType, Record
from overlay.core.crypto import KeyPair
from overlay.core.effects import Received, Send
from overlay.core.errors import WireError
from overlay.core.ids import PeerId


def pid(i: int) -> PeerId:
    return PeerId.from_ed25519(random.Random(i).randbytes(32))


ME, EVE, BOB = pid(0), pid(666), pid(7)
OWNER = KeyPair.from_rng_seed(bytes([9]) * 32)


def answered(c: Kademlia, frm: PeerId, now: float) -> bool:
    eff = c.handle(Received(frm, DhtRequest(1, KadMessage(MessageType.FIND_NODE, b"k"))), now)
    return any(isinstance(e, Send) and isinstance(e.msg, DhtResponse) for e in eff)


def test_requests_over_the_per_peer_limit_are_dropped_and_counted() -> None:
    c = Kademlia(ME, KadConfig(request_burst=5, request_rate_per_s=2.0), rng=random.Random(1))
    assert all(answered(c, EVE, 1.0) for _ in range(5))
    assert not any(answered(c, EVE, 1.0) for _ in range(100))  # before: all 100 answered
    assert c.stats.requests_rate_limited == 100
    assert answered(c, BOB, 1.0)  # another peer has its own bucket
    assert answered(c, EVE, 1.5) and not answered(c, EVE, 1.5)  # 2 tokens/s refill
    assert c.stats.requests_served == 7


def test_limiter_table_is_bounded_and_drops_counted() -> None:
    lim = PeerRateLimiter(burst=1, per_s=0.0, max_peers=3)
    for i in range(10):
        assert lim.allow(pid(i), 0.0)
    assert len(lim) == 3 and lim.dropped == 7
    assert not lim.allow(pid(9), 0.0)


def test_default_limits_leave_honest_bursts_alone() -> None:
    c = Kademlia(ME, KadConfig(), rng=random.Random(1))
    assert all(answered(c, EVE, 1.0 + i * 0.01) for i in range(1000))  # 100/s for 10 s


@pytest.mark.parametrize("expires", [10**400, math.inf, math.nan, -(10**400), "1e9", None])
def test_record_expires_out_of_range_is_a_wire_error(expires: object) -> None:
    key = name_key(OWNER.peer_id)
    env = OWNER.seal(RECORD_KIND, {"name": key.decode("ascii"), "value": b"v", "seq": 1,
                                   "expires": expires})
    with pytest.raises(WireError):  # before: OverflowError for a bignum, inf kept forever
        Validators().validate(key, env.to_bytes(), 1.0)


def test_put_value_with_bignum_expires_does_not_escape_the_core() -> None:
    c = Kademlia(ME, KadConfig(), rng=random.Random(1))
    key = name_key(OWNER.peer_id)
    env = OWNER.seal(RECORD_KIND, {"name": key.decode("ascii"), "value": b"v", "seq": 1,
                                   "expires": 10**400})
    msg = KadMessage(MessageType.PUT_VALUE, key, Record(key, env.to_bytes()))
    c.handle(Received(EVE, DhtRequest(1, msg)), 1.0)  # before: OverflowError
    assert c.stats.records_rejected == 1
