"""Property: in colony mode, nothing an uncertified, expired or revoked claimant sends —
directly, or forwarded by a real member — changes the gossip core's state.

A hypothesis state machine drives one colony-mode core (A) whose members B and C hold
valid certificates. D has none, E's certificate has expired, F's was revoked (A knows
the revocation). Rules mix legitimate traffic from B and C (which does change state)
with arbitrary messages from D/E/F and forwarded updates signed by them; after every
"bad" rule the state snapshot must be exactly what it was before.
"""

from __future__ import annotations

import random
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from gossip.admission import Admission
from gossip.events import Join, PublishRevocation
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
)
from gossip.profiles import LAN
from gossip.resources import ResourceAd
from gossip.swim import Swim
from overlay.core.certs import Certificate, Revocation
from overlay.core.crypto import Envelope, KeyPair
from overlay.core.effects import Received, Send, TimerFired

OWNER = KeyPair(b"\x42" * 32)
KA, KB, KC, KD, KE, KF = (KeyPair(bytes([i + 10]) * 32) for i in range(6))
T0 = 5_000_000.0


def chain_for(k: KeyPair, issued: float, expires: float) -> tuple[Envelope, ...]:
    c = Certificate.issue(OWNER, OWNER.public, k.peer_id, ["member"], issued, expires)
    return (c.envelope,)


GOOD = {KB.peer_id: (KB, chain_for(KB, T0 - 10, T0 + 10**6)),
        KC.peer_id: (KC, chain_for(KC, T0 - 10, T0 + 10**6))}  # fmt: skip
F_CERT = Certificate.issue(OWNER, OWNER.public, KF.peer_id, ["member"], T0 - 10, T0 + 10**6)
BAD = {
    KD.peer_id: (KD, ()),  # uncertified
    KE.peer_id: (KE, chain_for(KE, T0 - 100, T0 - 1)),  # expired
    KF.peer_id: (KF, (F_CERT.envelope,)),  # revoked
}
BAD_IDS = sorted(BAD, key=lambda p: p.raw)
GOOD_IDS = sorted(GOOD, key=lambda p: p.raw)
ALL_IDS = [KA.peer_id, *GOOD_IDS, *BAD_IDS]

incs = st.integers(0, 50)


@st.composite
def bad_update(draw: Any) -> Any:
    """An update signed by a bad claimant (or an alive claim for one)."""
    k, chain = BAD[draw(st.sampled_from(BAD_IDS))]
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return Alive.create(k, draw(incs), (), chain)
    if kind == 1:
        target = draw(st.sampled_from([p for p in ALL_IDS if p != k.peer_id]))
        return Accuse.create(k, target, draw(incs), draw(st.sampled_from(list(AccuseKind)[:2])))
    if kind == 2:
        return AdUpdate.create(k, draw(incs), ResourceAd.make(cpu_cores=draw(incs)).to_body())
    return UserEvent.create(k, "ev", draw(st.binary(max_size=16)), draw(incs), draw(incs))


@st.composite
def any_update(draw: Any) -> Any:
    """Bad updates plus valid claims of good members (bad senders may forward those)."""
    if draw(st.booleans()):
        return draw(bad_update())
    k, chain = GOOD[draw(st.sampled_from(GOOD_IDS))]
    return Alive.create(k, draw(st.integers(100, 200)), (), chain)


@st.composite
def bad_message(draw: Any) -> Any:
    ups = tuple(draw(st.lists(any_update(), max_size=4)))
    kind = draw(st.integers(0, 5))
    seq = draw(st.integers(0, 1000))
    if kind == 0:
        return Ping(seq, draw(st.sampled_from([None, KA.peer_id])), ups)
    if kind == 1:
        return Ack(seq, ups)
    if kind == 2:
        return Nack(seq)
    if kind == 3:
        return PingReq(seq, draw(st.sampled_from(GOOD_IDS)), ups)
    if kind == 4:
        return Gossip(ups)
    records = tuple(MemberRecord(u) for u in ups if isinstance(u, Alive))
    return PushPull(records, reply=draw(st.booleans()), join=draw(st.booleans()))


class ColonyCore(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = T0
        self.core = Swim(KA, LAN, rng=random.Random(1), admission=Admission(OWNER.public.raw),
                         chain=chain_for(KA, T0 - 10, T0 + 10**6))  # fmt: skip
        self.core.handle(Join(), self.now)
        rev = Revocation.issue(OWNER, F_CERT, T0)
        self.core.handle(PublishRevocation(rev.envelope), self.now)
        for p in GOOD_IDS:  # members join by push-pull, as a real joiner does
            k, chain = GOOD[p]
            rec = MemberRecord(Alive.create(k, 1, (), chain))
            self.core.handle(Received(p, PushPull((rec,), reply=True, join=True)), self.now)
        assert set(self.core.members) == set(GOOD_IDS)
        self.incs = {p: 1 for p in GOOD_IDS}

    def snapshot(self) -> Any:
        c = self.core
        members = {
            p: (m.state, m.incarnation, m.ad_version, m.valid_until)
            for p, m in c.members.items()
        }
        return (members, c.incarnation, c.num_members(), len(c.spread.bq), len(c.spread.uq),
                len(c.admission.revocations) if c.admission else 0)  # fmt: skip

    def _check_unchanged(self, inp: Any) -> None:
        before = self.snapshot()
        effects = self.core.handle(inp, self.now)
        assert self.snapshot() == before
        # Nothing is sent to a bad claimant in answer, except to the revoked one (F):
        # the signed revocation of its own certificate, so it learns why.
        for e in effects:
            peer = getattr(e, "peer", None)
            if peer == KF.peer_id and isinstance(e, Send) and isinstance(e.msg, Gossip):
                assert [u.cert_id if isinstance(u, Revoke) else u for u in e.msg.updates] == [
                    F_CERT.cert_id
                ]
                continue
            assert peer not in BAD

    # -------------------------------------------------------------- legitimate traffic

    @rule(who=st.sampled_from(GOOD_IDS))
    def good_member_refreshes(self, who: Any) -> None:
        k, chain = GOOD[who]
        self.incs[who] += 1
        self.core.handle(Received(who, Gossip((Alive.create(k, self.incs[who], (), chain),))),
                         self.now)  # fmt: skip

    @rule()
    def b_suspects_c(self) -> None:
        acc = Accuse.create(KB, KC.peer_id, self.incs[KC.peer_id], AccuseKind.SUSPECT)
        self.core.handle(Received(KB.peer_id, Gossip((acc,))), self.now)

    @rule(dt=st.floats(0.0, 5.0))
    def time_passes(self, dt: float) -> None:
        self.now += dt

    # -------------------------------------------------------------- bad claimants

    @rule(sender=st.sampled_from(BAD_IDS), msg=bad_message())
    def bad_sender_sends_anything(self, sender: Any, msg: Any) -> None:
        self._check_unchanged(Received(sender, msg))

    @rule(via=st.sampled_from(GOOD_IDS), ups=st.lists(bad_update(), min_size=1, max_size=4))
    def member_forwards_bad_claims(self, via: Any, ups: list[Any]) -> None:
        self._check_unchanged(Received(via, Gossip(tuple(ups))))

    @rule(via=st.sampled_from(GOOD_IDS))
    def member_forwards_a_bad_revocation(self, via: Any) -> None:
        # A revocation signed by a non-owner for a good member's certificate: it may be
        # recorded (authority is judged per chain), but no member is expelled.
        cert = Certificate.from_envelope(GOOD[via][1][0])
        rev = Revocation.issue(KD, cert, self.now)
        members = set(self.core.members)
        self.core.handle(Received(via, Gossip((Revoke.from_envelope(rev.envelope),))), self.now)
        assert set(self.core.members) == members

    # (`target` is reserved by hypothesis' @rule: the outsider is `outsider`.)
    @rule(via=st.sampled_from(GOOD_IDS), outsider=st.sampled_from(BAD_IDS),
          seq=st.integers(0, 1000))
    def member_asks_to_probe_an_outsider(self, via: Any, outsider: Any, seq: int) -> None:
        self._check_unchanged(Received(via, PingReq(seq, outsider)))

    @rule(timer=st.sampled_from(["probe", "probe-timeout", "gossip", "pushpull"]))
    def timer_fires(self, timer: str) -> None:
        for e in self.core.handle(TimerFired(timer), self.now):
            assert getattr(e, "peer", None) not in BAD  # never gossip to outsiders

    @invariant()
    def good_members_stay(self) -> None:
        # Nothing in this machine expels B or C (it is not vacuous: they are members).
        assert set(self.core.members) == set(GOOD_IDS)

    @invariant()
    def bad_claimants_never_members(self) -> None:
        assert not any(p in self.core.members for p in BAD)
        listed = {m.peer for m in self.core.list_members(include_gone=True)}
        assert not listed & set(BAD)


ColonyCore.TestCase.settings = settings(
    max_examples=60, stateful_step_count=25, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)  # fmt: skip
TestColonyCore = ColonyCore.TestCase


@st.composite
def junk_cert(draw: Any) -> Envelope:
    """A signed `colony-cert` envelope whose body is anything CBOR can hold."""
    body = draw(st.one_of(
        st.dictionaries(st.sampled_from(["colony", "subject", "roles", "issued", "expires",
                                         "x"]),
                        st.one_of(st.binary(max_size=40), st.integers(-5, 2**64),
                                  st.floats(allow_nan=True), st.lists(st.text(max_size=8),
                                                                      max_size=5)),
                        max_size=6),
        st.integers(), st.text(max_size=10),
    ))  # fmt: skip
    signer: KeyPair = draw(st.sampled_from([OWNER, KD, KE]))
    return signer.seal("colony-cert", body)


@settings(max_examples=150, deadline=None)
@given(chain=st.lists(junk_cert(), min_size=1, max_size=3), inc=incs)
def test_junk_chains_never_raise_and_never_admit(chain: list[Envelope], inc: int) -> None:
    core = Swim(KA, LAN, rng=random.Random(0), admission=Admission(OWNER.public.raw))
    core.handle(Join(), T0)
    alive = Alive.create(KD, inc, (), tuple(chain))
    core.handle(Received(KD.peer_id, PushPull((MemberRecord(alive),), reply=True)), T0)
    k, good_chain = GOOD[KB.peer_id]
    core.handle(Received(KB.peer_id, PushPull((MemberRecord(Alive.create(k, 1, (), good_chain)),))),
                T0)  # fmt: skip
    core.handle(Received(KB.peer_id, Gossip((alive,))), T0)
    assert KD.peer_id not in core.members and KB.peer_id in core.members
