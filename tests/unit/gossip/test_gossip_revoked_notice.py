"""A revoked node is told it was revoked (colony mode, virtual time).

Before: members silently refused a revoked node's messages; it kept probing for ever
and never learned why. Now the refusal (once per report interval) carries the signed
revocation, and the node emits `OwnCertificateRevoked`.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Any

from gossip.admission import Admission
from gossip.events import Join, OwnCertificateRevoked, PublishRevocation
from gossip.messages import Gossip, Ping, Revoke, decode_message
from gossip.profiles import LAN
from gossip.swim import Swim
from overlay.core.certs import Certificate, Revocation
from overlay.core.crypto import KeyPair
from overlay.core.effects import Effect, Emit, Received, Send, TimerFired
from overlay.core.ids import PeerId
from overlay.core.wire import cbor_decode, cbor_encode

OWNER = KeyPair(b"\x77" * 32)
KEYS = [KeyPair(bytes([i + 1]) * 32) for i in range(3)]
A, B, C = (k.peer_id for k in KEYS)
T0 = 1_000_000.0


def cert(kp: KeyPair) -> Certificate:
    return Certificate.issue(OWNER, OWNER.public, kp.peer_id, ("member",), T0 - 10, T0 + 86400)


class Net:
    def __init__(self) -> None:
        self.cores = {
            k.peer_id: Swim(k, LAN, rng=random.Random(i), admission=Admission(OWNER.public.raw),
                            chain=(cert(k).envelope,))
            for i, k in enumerate(KEYS)
        }  # fmt: skip
        self.events: list[tuple[PeerId, Any]] = []
        self.sent: list[tuple[PeerId, PeerId, Any]] = []

    def feed(self, peer: PeerId, inp: Any, now: float) -> None:
        first = self.cores[peer].handle(inp, now)
        q: deque[tuple[PeerId, Effect]] = deque((peer, e) for e in first)
        while q:
            who, e = q.popleft()
            if isinstance(e, Send):
                self.sent.append((who, e.peer, e.msg))
                msg = decode_message(cbor_decode(cbor_encode(e.msg.to_wire())))
                more = self.cores[e.peer].handle(Received(who, msg), now)
                q.extend((e.peer, x) for x in more)
            elif isinstance(e, Emit):
                self.events.append((who, e.event))


def test_revoked_node_is_told_with_the_signed_revocation() -> None:
    net = Net()
    net.feed(A, Join(), T0)
    for p in (B, C):
        net.feed(p, Join((A,)), T0)
    c_cert = cert(KEYS[2])
    rev = Revocation.issue(OWNER, c_cert, T0 + 5)
    net.feed(A, PublishRevocation(rev.envelope), T0 + 5)
    assert C not in net.cores[A].members
    before = len(net.sent)
    net.feed(C, TimerFired("gossip"), T0 + 6)  # C still talks to A (it does not know)
    net.feed(A, Received(C, Ping(1, None)), T0 + 6)
    notices = [m for s, d, m in net.sent[before:] if s == A and d == C and isinstance(m, Gossip)]
    assert notices and isinstance(notices[0].updates[0], Revoke)
    assert notices[0].updates[0].cert_id == c_cert.cert_id
    told = [e for p, e in net.events if p == C and isinstance(e, OwnCertificateRevoked)]
    assert len(told) == 1 and told[0].cert_id == c_cert.cert_id
    assert net.cores[C].stats["own_certificate_revoked"] == 1
    # Once per report interval: a second message gets no second notice.
    n = len(net.sent)
    net.feed(A, Received(C, Ping(2, None)), T0 + 7)
    assert not [m for s, d, m in net.sent[n:] if s == A and d == C]
    assert net.cores[A].stats["revocation_notice_sent"] == 1


def test_an_outsider_gets_no_notice() -> None:
    net = Net()
    net.feed(A, Join(), T0)
    before = len(net.sent)
    net.feed(A, Received(B, Ping(1, None)), T0)  # B never joined: not revoked, not told
    assert not [m for s, d, m in net.sent[before:] if s == A and isinstance(m, Gossip)]
