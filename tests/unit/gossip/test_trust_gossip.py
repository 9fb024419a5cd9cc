"""Colony mode of the gossip core (gossip/admission.py + swim.py), on virtual time.

Cores are wired back to back by a FIFO wire (no sockets); timers fire on the virtual
clock. Every node's certificate is signed by one owner key, as `colony colony create` /
`cert issue` would make them.
"""

from __future__ import annotations

import random

import pytest
from helpers.core_net import CoreNet

from gossip.admission import Admission
from gossip.events import (
    Join,
    MemberExpelled,
    MemberJoined,
    MemberRefused,
    PublishRevocation,
    RevocationLearned,
)
from gossip.messages import (
    Ack,
    Alive,
    Gossip,
    MemberRecord,
    Ping,
    PingReq,
    PushPull,
    Revoke,
    decode_message,
)
from gossip.profiles import LAN
from gossip.swim import Swim
from overlay.core.certs import ALL_ROLES, Certificate, Revocation
from overlay.core.crypto import KeyPair
from overlay.core.effects import Emit, Received, Send, TimerFired
from overlay.core.errors import LocalProtocolError, MalformedFrame
from overlay.core.ids import PeerId
from overlay.core.wire import cbor_decode, cbor_encode

OWNER = KeyPair(b"\x77" * 32)
KEYS = [KeyPair(bytes([i + 1]) * 32) for i in range(6)]
IDS = [k.peer_id for k in KEYS]
A, B, C, D, E, F = IDS
T0 = 1_000_000.0  # wall-clock-like start (certificates carry absolute times)


def cert(
    subject: KeyPair,
    *,
    expires: float = T0 + 86400,
    roles: tuple[str, ...] = ("member",),
    issuer: KeyPair = OWNER,
) -> Certificate:
    return Certificate.issue(issuer, OWNER.public, subject.peer_id, roles, T0 - 10, expires)


class Net(CoreNet):
    """Cores keyed by peer id; `Send`s delivered at once, FIFO, through the codec."""

    def __init__(self) -> None:
        # Through the codec, as the daemon does: the wire form is what counts.
        super().__init__(transcode=lambda m: decode_message(cbor_decode(cbor_encode(m.to_wire()))))

    def add_swim(self, kp: KeyPair, chain: tuple[Certificate, ...] | None, seed: int = 0) -> Swim:
        core = Swim(
            kp, LAN, rng=random.Random(seed),
            admission=Admission(OWNER.public.raw),
            chain=tuple(c.envelope for c in chain or ()),
        )  # fmt: skip
        self.add(kp.peer_id, core)
        return core

    def members(self, at: PeerId) -> set[PeerId]:
        return {m.peer for m in self.cores[at].list_members() if not m.is_self}


def colony(n: int = 3) -> Net:
    net = Net()
    for i in range(n):
        net.add_swim(KEYS[i], (cert(KEYS[i]),), seed=i)
    net.feed(A, Join(), T0)
    for p in IDS[1:n]:
        net.feed(p, Join((A,)), T0)
    return net


def test_certified_nodes_join_through_a_seed_and_learn_each_other() -> None:
    net = colony(3)
    net.run_until(T0 + 5)
    assert net.members(A) == {B, C}
    assert net.members(B) == {A, C}
    assert net.members(C) == {A, B}
    assert not net.of(MemberRefused)


def test_uncertified_joiner_is_refused_with_a_reason_and_gets_no_state() -> None:
    net = colony(3)
    net.add_swim(KEYS[3], None, seed=3)
    net.feed(D, Join((A,)), T0 + 1)
    net.run_until(T0 + 40)  # includes a push-pull round where D knocks again
    for p in (A, B, C):
        assert D not in net.members(p)
    assert net.members(D) == set()
    refused = net.of(MemberRefused, A)
    assert refused and refused[0].peer == D
    assert "no colony certificate" in refused[0].reason
    # A never sent D anything: no ack, no push-pull, no gossip.
    assert not [m for s, d, m in net.sends if s in (A, B, C) and d == D]
    assert net.cores[A].stats["refused_non_member"] >= 1
    # Reported once per interval, not once per message.
    assert len(refused) == 1


def test_chain_from_another_colony_and_forged_chain_are_refused() -> None:
    net = colony(1)
    other = KeyPair(b"\x55" * 32)
    foreign = Certificate.issue(other, other.public, B, ["member"], T0 - 10, T0 + 100)
    net.add_swim(KEYS[1], (foreign,), seed=1)
    net.feed(B, Join((A,)), T0)
    assert B not in net.members(A)
    assert "another colony" in net.of(MemberRefused, A)[0].reason
    # C presents B's (valid) certificate: the chain is for someone else.
    net.add_swim(KEYS[2], (cert(KEYS[1]),), seed=2)
    net.feed(C, Join((A,)), T0)
    assert C not in net.members(A)
    assert "not " in net.of(MemberRefused, A)[-1].reason


def test_certificate_without_member_role_is_refused() -> None:
    net = colony(1)
    net.add_swim(KEYS[1], (cert(KEYS[1], roles=("submit",)),), seed=1)
    net.feed(B, Join((A,)), T0)
    assert B not in net.members(A)
    assert "role member not granted" in net.of(MemberRefused, A)[0].reason


def test_delegated_chain_is_accepted_and_outliving_delegation_is_refused() -> None:
    net = colony(1)
    admitter = cert(KEYS[1], roles=ALL_ROLES, expires=T0 + 1000)
    net.add_swim(KEYS[1], (admitter,), seed=1)
    net.feed(B, Join((A,)), T0)
    delegated = cert(KEYS[2], issuer=KEYS[1], expires=T0 + 500)
    net.add_swim(KEYS[2], (admitter, delegated), seed=2)
    net.feed(C, Join((A,)), T0)
    assert {B, C} <= net.members(A)
    outliving = cert(KEYS[3], issuer=KEYS[1], expires=T0 + 5000)
    net.add_swim(KEYS[3], (admitter, outliving), seed=3)
    net.feed(D, Join((A,)), T0)
    assert D not in net.members(A)
    assert "after its delegator" in net.of(MemberRefused, A)[-1].reason


def test_member_whose_certificate_expires_is_expelled_everywhere() -> None:
    net = Net()
    net.add_swim(KEYS[0], (cert(KEYS[0]),), seed=0)
    net.add_swim(KEYS[1], (cert(KEYS[1]),), seed=1)
    net.add_swim(KEYS[2], (cert(KEYS[2], expires=T0 + 20),), seed=2)
    net.feed(A, Join(), T0)
    net.feed(B, Join((A,)), T0)
    net.feed(C, Join((A,)), T0)
    net.run_until(T0 + 10)
    assert C in net.members(A) and C in net.members(B)
    net.run_until(T0 + 21)
    for p in (A, B):
        assert C not in net.members(p)
        expelled = [e for e in net.of(MemberExpelled, p) if e.peer == C]
        assert expelled and "expired" in expelled[0].reason
    # C keeps talking (it still pings its old members): refused, with the reason.
    net.run_until(T0 + 30)
    assert C not in net.members(A) and C not in net.members(B)
    assert net.cores[A].stats["refused_non_member"] >= 1


def test_revocation_expels_the_member_and_spreads_by_gossip() -> None:
    net = colony(3)
    net.run_until(T0 + 5)
    c_cert = cert(KEYS[2])
    # Same certificate as C presents (certificates are deterministic in Ed25519).
    assert c_cert.envelope == net.cores[C].chain[0]
    rev = Revocation.issue(OWNER, c_cert, T0 + 5)
    net.feed(A, PublishRevocation(rev.envelope), T0 + 5)
    assert C not in net.members(A)
    assert "revoked" in net.of(MemberExpelled, A)[0].reason
    assert net.of(RevocationLearned, A)[0].cert_id == c_cert.cert_id
    net.run_until(T0 + 8)  # gossip ticks carry the revocation to B
    assert C not in net.members(B)
    assert [e for e in net.of(MemberExpelled, B) if e.peer == C]
    # A revocation arriving twice is learned once.
    assert len(net.of(RevocationLearned, B)) == 1


def test_revocation_reaches_a_late_joiner_by_push_pull() -> None:
    net = colony(2)
    net.run_until(T0 + 2)
    d_cert = cert(KEYS[3])
    net.feed(A, PublishRevocation(Revocation.issue(OWNER, d_cert, T0 + 2).envelope), T0 + 2)
    net.add_swim(KEYS[2], (cert(KEYS[2]),), seed=2)
    net.feed(C, Join((A,)), T0 + 3)
    assert net.of(RevocationLearned, C)  # came with A's push-pull reply
    net.add_swim(KEYS[3], (d_cert,), seed=3)
    net.feed(D, Join((C,)), T0 + 4)
    assert D not in net.members(C)
    assert "revoked" in net.of(MemberRefused, C)[-1].reason


def test_revocation_by_a_key_without_authority_changes_nothing() -> None:
    net = colony(3)
    net.run_until(T0 + 5)
    c_cert = cert(KEYS[2])
    # B holds no authority over C's owner-signed certificate: recorded, but inert.
    net.feed(A, PublishRevocation(Revocation.issue(KEYS[1], c_cert, T0 + 5).envelope), T0 + 5)
    assert C in net.members(A)
    assert not net.of(MemberExpelled)


def test_publish_revocation_misuse_raises() -> None:
    open_core = Swim(KEYS[0], LAN, rng=random.Random(0))
    rev = Revocation.issue(OWNER, cert(KEYS[1]), T0)
    with pytest.raises(LocalProtocolError):
        open_core.handle(PublishRevocation(rev.envelope), T0)
    net = colony(1)
    with pytest.raises(LocalProtocolError):
        net.cores[A].handle(PublishRevocation(OWNER.seal("gossip-alive", {"i": 1})), T0)


def test_open_mode_accepts_alive_without_chain_as_before() -> None:
    core = Swim(KEYS[0], LAN, rng=random.Random(0))
    core.handle(Join(), T0)
    eff = core.handle(Received(B, Gossip((Alive.create(KEYS[1], 1),))), T0)
    assert B in core.members
    assert any(isinstance(e, Emit) and isinstance(e.event, MemberJoined) for e in eff)


def test_forwarded_claim_of_uncertified_peer_is_refused() -> None:
    net = colony(2)
    net.run_until(T0 + 2)
    # B (a member) forwards D's alive, which has no chain.
    net.feed(A, Received(B, Gossip((Alive.create(KEYS[3], 5),))), T0 + 3)
    assert D not in net.members(A)
    assert net.cores[A].stats["alive_refused"] == 1


def test_admission_cache_verifies_a_chain_once() -> None:
    adm = Admission(OWNER.public.raw)
    chain = (cert(KEYS[1]).envelope,)
    a1 = Alive.create(KEYS[1], 1, (), chain)
    a2 = Alive.create(KEYS[1], 2, (), chain)
    assert adm.check(a1, T0) == T0 + 86400
    assert adm.check(a2, T0 + 1) == T0 + 86400
    assert len(adm) == 1
    # After expiry, the cached verdict is not trusted: the reason comes back.
    verdict = adm.check(a2, T0 + 86400)
    assert isinstance(verdict, str) and "expired" in verdict


# ---------------------------------------------------------------- codec


def test_alive_with_chain_and_revoke_round_trip_through_the_codec() -> None:
    chain = (cert(KEYS[1]).envelope,)
    alive = Alive.create(KEYS[1], 3, ("/ip4/127.0.0.1/tcp/1",), chain)
    rev = Revocation.issue(OWNER, cert(KEYS[2]), T0)
    r = Revoke.from_envelope(rev.envelope)
    pp = PushPull((), False, True, 0, 1, (r,))
    back = decode_message(cbor_decode(cbor_encode(Gossip((alive, r)).to_wire())))
    assert isinstance(back, Gossip) and back.updates == (alive, r)
    back_pp = decode_message(cbor_decode(cbor_encode(pp.to_wire())))
    assert isinstance(back_pp, PushPull) and back_pp.revocations == (r,)
    # The 5-field form (no revocations) still decodes.
    assert decode_message(cbor_decode(cbor_encode(PushPull(()).to_wire()))) == PushPull(())


def test_alive_chain_must_hold_certificates_and_be_short() -> None:
    wrong_kind = (OWNER.seal("gossip-alive", {"i": 1}),)
    with pytest.raises(MalformedFrame):
        Alive.from_envelope(KEYS[1].seal("gossip-alive", {"i": 1, "c": [wrong_kind[0].to_wire()]}))
    long = [cert(KEYS[1]).envelope.to_wire()] * 4
    with pytest.raises(MalformedFrame):
        Alive.from_envelope(KEYS[1].seal("gossip-alive", {"i": 1, "c": long}))
    with pytest.raises(MalformedFrame):
        decode_message([6, 0, [], 0, 1, [[1, cert(KEYS[1]).envelope.to_wire()]]])


def test_ping_from_non_member_gets_no_ack() -> None:
    net = colony(1)
    net.add_swim(KEYS[4], None)
    before = len(net.sends)
    net.feed(A, Received(E, Ping(7, A)), T0)
    assert not [m for s, d, m in net.sends[before:] if s == A]
    assert net.of(MemberRefused, A)[0].peer == E


def test_ping_req_for_an_outsider_is_not_relayed() -> None:
    net = colony(2)
    net.run_until(T0 + 2)
    net.add_swim(KEYS[5], None)
    before = len(net.sends)
    net.feed(A, Received(B, PingReq(9, F)), T0 + 3)
    assert not [d for s, d, m in net.sends[before:] if d == F]
    assert net.cores[A].stats["ping_req_non_member"] == 1


def test_outsiders_revocations_are_not_taken() -> None:
    net = colony(1)
    junk = KeyPair(b"\x66" * 32)
    revs = tuple(
        Revoke.from_envelope(Revocation.issue(junk, cert(KEYS[i]), T0).envelope)
        for i in range(1, 4)
    )
    net.add_swim(KEYS[3], None)
    own = net.cores[D].anti_entropy.records()[:1]
    net.feed(A, Received(D, PushPull(own, True, True, 0, 1, revs)), T0)
    adm = net.cores[A].admission
    assert adm is not None and len(adm.revocations) == 0
    assert not net.of(RevocationLearned, A)


def test_members_junk_revocations_are_refused_delegates_own_are_taken() -> None:
    net = colony(1)
    admitter = cert(KEYS[1], roles=ALL_ROLES, expires=T0 + 1000)
    net.add_swim(KEYS[1], (admitter,), seed=1)
    net.feed(B, Join((A,)), T0)
    delegated = cert(KEYS[2], issuer=KEYS[1], expires=T0 + 500)
    net.add_swim(KEYS[2], (admitter, delegated), seed=2)
    net.feed(C, Join((A,)), T0)
    assert {B, C} <= net.members(A)
    adm = net.cores[A].admission
    assert adm is not None
    # Member B forwards a revocation signed by a key with no authority: not taken.
    junk = Revocation.issue(KeyPair(b"\x66" * 32), delegated, T0 + 1)
    net.feed(A, Received(B, Gossip((Revoke.from_envelope(junk.envelope),))), T0 + 1)
    assert len(adm.revocations) == 0 and net.cores[A].stats["revocation_refused"] == 1
    # B revokes the certificate it issued itself: B has authority, A takes it.
    own = Revocation.issue(KEYS[1], delegated, T0 + 2)
    net.feed(A, Received(B, Gossip((Revoke.from_envelope(own.envelope),))), T0 + 2)
    assert C not in net.members(A)
    assert "revoked" in next(e for e in net.of(MemberExpelled, A) if e.peer == C).reason


def test_first_pings_carry_the_senders_claim_and_admit_it() -> None:
    net = colony(2)
    net.run_until(T0 + 2)
    # C is certified but A has never heard of it: its ping carries its own alive.
    c_core = net.add_swim(KEYS[2], (cert(KEYS[2]),), seed=2)
    before = len(net.sends)
    net.feed(A, Received(C, Ping(5, A, (c_core.local.alive,))), T0 + 3)
    assert C in net.members(A)
    assert [m for s, d, m in net.sends[before:] if s == A and d == C and isinstance(m, Ack)]


def test_probes_introduce_us_until_the_target_has_talked_to_us() -> None:
    net = Net()
    net.add_swim(KEYS[0], (cert(KEYS[0]),), seed=0)
    b = net.add_swim(KEYS[1], (cert(KEYS[1]),), seed=1)
    c = net.add_swim(KEYS[2], (cert(KEYS[2]),), seed=2)
    # B learns A second-hand, from C's push-pull: A has never heard of B.
    b.handle(Join(), T0)
    recs = (MemberRecord(c.local.alive), MemberRecord(net.cores[A].local.alive))
    b.handle(Received(C, PushPull(recs)), T0)
    assert A in b.members and B not in net.cores[A].members
    pings = []
    for i in range(20):
        for e in b.handle(TimerFired("probe"), T0 + 1 + i):
            if isinstance(e, Send) and isinstance(e.msg, Ping) and e.peer == A:
                pings.append(e.msg)
        if pings:
            break
    assert pings and isinstance(pings[0].updates[0], Alive)
    assert pings[0].updates[0].peer == B  # our claim rides first
    # Once A has talked to B, B's pings to A no longer carry it.
    b.handle(Received(A, Ack(pings[0].seq)), T0 + 30)
    assert b.gate.introduce(A, ()) == ()


def test_simultaneous_joins_raise_no_false_suspicion() -> None:
    """20 certified nodes join through one seed at once over 5 ms links: members
    learn each other second-hand and ping before being heard of. When only a
    push-pull could admit its sender, those pings were refused and healthy members
    suspected (measured with 60 nodes: 810 suspicions, convergence 30.7 s instead of
    0.6 s); a sender's own claim in any message now admits it (and `_introduce`
    makes sure first pings carry it)."""
    n = 20
    keys = [KeyPair((i + 200).to_bytes(4, "big") * 8) for i in range(n)]
    net = CoreNet(delay_s=0.005, start=T0)
    for i, k in enumerate(keys):
        net.add(k.peer_id, Swim(k, LAN, rng=random.Random(i), admission=Admission(
            OWNER.public.raw), chain=(cert(k).envelope,)))  # fmt: skip
    cores = net.cores

    ids = list(cores)
    net.inject(ids[0], Join())
    for p in ids[1:]:
        net.inject(p, Join((ids[0],)))
    converged_at = None
    while net.engine.run_until(T0 + 10, max_events=1):
        if converged_at is None and all(c.num_members() == n for c in cores.values()):
            converged_at = net.now - T0
    suspected = sum(type(e).__name__ == "MemberSuspected" for _, _, e in net.emitted)
    assert converged_at is not None and converged_at < 2.0
    assert suspected == 0
