"""Membership certificates: chains, expiry, roles, depth, revocation, join tokens."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from overlay.core.certs import (
    CLOCK_SKEW_S,
    Certificate,
    JoinToken,
    NotAuthorized,
    Revocation,
    RevocationList,
    Revoked,
    verify_chain,
)
from overlay.core.crypto import Envelope, KeyPair, PublicKey
from overlay.core.errors import BadSignature, ExpiredError, MalformedFrame, WireError
from overlay.core.wire import cbor_decode, cbor_encode

OWNER = KeyPair(b"\x01" * 32)
OTHER_OWNER = KeyPair(b"\x02" * 32)
A = KeyPair(b"\x03" * 32)  # admitter
B = KeyPair(b"\x04" * 32)  # second-level admitter
C = KeyPair(b"\x05" * 32)  # subject
D = KeyPair(b"\x06" * 32)
NOW = 1_700_000_000.0
DAY = 86400.0


def cert(issuer: KeyPair, subject: KeyPair, roles: tuple[str, ...], expires: float = NOW + DAY,
         owner: KeyPair = OWNER, issued: float = NOW - DAY) -> Certificate:  # fmt: skip
    return Certificate.issue(issuer, owner.public, subject.peer_id, roles, issued, expires)


def test_owner_signed_certificate_grants_its_roles() -> None:
    c = cert(OWNER, C, ("member", "submit"))
    leaf = verify_chain([c], OWNER.public, C.peer_id, "submit", NOW)
    assert leaf.roles == ("member", "submit") and leaf.issuer == OWNER.peer_id
    assert Certificate.from_wire(c.to_wire()) == c


def test_delegated_chain_of_depth_three_is_valid() -> None:
    chain = [
        cert(OWNER, A, ("admit", "execute", "member", "submit")),
        cert(A, B, ("admit", "member", "submit"), NOW + DAY / 2),
        cert(B, C, ("member", "submit"), NOW + DAY / 4),
    ]
    assert verify_chain(chain, OWNER.public, C.peer_id, "submit", NOW).subject == C.peer_id


def test_expired_certificate_names_peer_and_time() -> None:
    c = cert(OWNER, C, ("member",), expires=NOW - 1)
    with pytest.raises(ExpiredError, match=r"certificate for 12D3…\w{6} expired at 2023-11-14T"):
        verify_chain([c], OWNER.public, C.peer_id, "member", NOW)


def test_not_yet_valid_certificate_is_refused_beyond_the_clock_skew() -> None:
    late = cert(OWNER, C, ("member",), issued=NOW + CLOCK_SKEW_S + 10)
    with pytest.raises(NotAuthorized, match="not valid before"):
        verify_chain([late], OWNER.public, C.peer_id, "member", NOW)
    # A checker whose clock is behind the issuer's (by less than the skew) accepts it.
    fresh = cert(OWNER, C, ("member",), issued=NOW + 300)
    assert verify_chain([fresh], OWNER.public, C.peer_id, "member", NOW).subject == C.peer_id


def test_wrong_colony_is_refused() -> None:
    c = cert(OTHER_OWNER, C, ("member",), owner=OTHER_OWNER)
    with pytest.raises(NotAuthorized, match="another colony"):
        verify_chain([c], OWNER.public, C.peer_id, "member", NOW)


def test_root_not_signed_by_owner_is_a_bad_signature() -> None:
    c = cert(A, C, ("member",))  # claims OWNER's colony, signed by A
    with pytest.raises(BadSignature, match="not signed by the owner"):
        verify_chain([c], OWNER.public, C.peer_id, "member", NOW)


def test_missing_role_is_named() -> None:
    c = cert(OWNER, C, ("member",))
    with pytest.raises(NotAuthorized, match=r"role submit not granted to 12D3"):
        verify_chain([c], OWNER.public, C.peer_id, "submit", NOW)


def test_chain_for_another_subject_is_refused() -> None:
    c = cert(OWNER, C, ("member",))
    with pytest.raises(NotAuthorized, match="not 12D3"):
        verify_chain([c], OWNER.public, D.peer_id, "member", NOW)


def test_too_deep_chain_is_refused() -> None:
    chain = [
        cert(OWNER, A, ("admit", "member")),
        cert(A, B, ("admit", "member")),
        cert(B, D, ("admit", "member")),
        cert(D, C, ("member",)),
    ]
    with pytest.raises(NotAuthorized, match="4 links; at most 3"):
        verify_chain(chain, OWNER.public, C.peer_id, "member", NOW)


def test_delegation_needs_admit() -> None:
    chain = [cert(OWNER, A, ("member", "submit")), cert(A, C, ("submit",))]
    with pytest.raises(NotAuthorized, match="without role admit"):
        verify_chain(chain, OWNER.public, C.peer_id, "submit", NOW)


def test_delegate_may_not_outlive_delegator() -> None:
    chain = [cert(OWNER, A, ("admit", "member"), NOW + DAY), cert(A, C, ("member",), NOW + 2 * DAY)]
    with pytest.raises(NotAuthorized, match="after its delegator"):
        verify_chain(chain, OWNER.public, C.peer_id, "member", NOW)


def test_delegate_may_not_gain_roles() -> None:
    chain = [cert(OWNER, A, ("admit", "member")), cert(A, C, ("member", "submit"))]
    with pytest.raises(NotAuthorized, match="grants submit beyond its delegator"):
        verify_chain(chain, OWNER.public, C.peer_id, "member", NOW)


def test_link_signed_by_someone_else_is_a_bad_signature() -> None:
    chain = [cert(OWNER, A, ("admit", "member")), cert(B, C, ("member",))]
    with pytest.raises(BadSignature, match="not signed by its delegator"):
        verify_chain(chain, OWNER.public, C.peer_id, "member", NOW)


def test_forged_signature_is_rejected_on_decode_and_on_verify() -> None:
    good = cert(OWNER, C, ("member",))
    env = good.envelope
    forged = Envelope(env.kind, env.body, env.signer, bytes(64))
    with pytest.raises(BadSignature):
        Certificate.from_envelope(forged)
    hand_built = Certificate(good.colony, good.subject, ("admit", "member"), good.issued,
                             good.expires, forged)  # fmt: skip
    with pytest.raises(BadSignature):
        verify_chain([hand_built], OWNER.public, C.peer_id, "member", NOW)


def _count_verifications(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    real = PublicKey.verify

    def counting(self: PublicKey, kind: str, body: bytes, sig: bytes) -> None:
        calls[0] += 1
        real(self, kind, body, sig)

    monkeypatch.setattr(PublicKey, "verify", counting)
    return calls


def test_parsed_chain_is_verified_once(monkeypatch: pytest.MonkeyPatch) -> None:
    wire = [cert(OWNER, A, ("admit", "member")).to_wire(), cert(A, C, ("member",)).to_wire()]
    calls = _count_verifications(monkeypatch)
    chain = [Certificate.from_wire(w) for w in wire]
    assert calls[0] == 2 and all(c.verified for c in chain)
    verify_chain(chain, OWNER.public, C.peer_id, "member", NOW)
    verify_chain(chain, OWNER.public, C.peer_id, "member", NOW)
    assert calls[0] == 2  # parsing verified each link; verify_chain trusts that


def test_hand_built_or_replaced_certificates_are_reverified(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    good = cert(OWNER, C, ("member",))
    same = Certificate(good.colony, good.subject, good.roles, good.issued, good.expires,
                       good.envelope)  # fmt: skip
    copy = dataclasses.replace(good)
    assert not same.verified and not copy.verified and same == good
    calls = _count_verifications(monkeypatch)
    verify_chain([same], OWNER.public, C.peer_id, "member", NOW)
    verify_chain([copy], OWNER.public, C.peer_id, "member", NOW)
    assert calls[0] == 2  # faithful, but not built by the verifying constructor
    # A hand-built certificate with a genuine envelope but more roles than it signs.
    inflated = dataclasses.replace(good, roles=("admit", "member", "submit"))
    with pytest.raises(BadSignature, match="differs from its signed body"):
        verify_chain([inflated], OWNER.public, C.peer_id, "submit", NOW)
    # A genuine signature over a body that is not a certificate.
    junk = OWNER.seal("colony-cert", {"x": 1})
    with pytest.raises(BadSignature, match="does not parse"):
        verify_chain([dataclasses.replace(good, envelope=junk)], OWNER.public, C.peer_id,
                     "member", NOW)  # fmt: skip


def test_certificate_tampered_after_parsing_cannot_slip_through() -> None:
    """A parsed (verified) certificate whose bytes or fields are swapped afterwards,
    even past `frozen` with object.__setattr__, loses its verified mark."""
    body = cbor_decode(cert(OWNER, C, ("member",)).envelope.body)
    body["roles"] = ["admit", "execute", "member", "submit"]
    greedy = cbor_encode(body)

    c1 = Certificate.from_wire(cert(OWNER, C, ("member",)).to_wire())
    object.__setattr__(c1.envelope, "body", greedy)  # the envelope's bytes, in place
    assert not c1.verified
    with pytest.raises(BadSignature):
        verify_chain([c1], OWNER.public, C.peer_id, "member", NOW)

    c2 = Certificate.from_wire(cert(OWNER, C, ("member",)).to_wire())
    env = c2.envelope
    object.__setattr__(c2, "envelope", Envelope(env.kind, greedy, env.signer, env.signature))
    assert not c2.verified
    with pytest.raises(BadSignature):
        verify_chain([c2], OWNER.public, C.peer_id, "submit", NOW)

    c3 = Certificate.from_wire(cert(OWNER, C, ("member",)).to_wire())
    object.__setattr__(c3, "roles", ("admit", "execute", "member", "submit"))
    assert not c3.verified
    with pytest.raises(BadSignature, match="differs from its signed body"):
        verify_chain([c3], OWNER.public, C.peer_id, "submit", NOW)

    c4 = Certificate.from_wire(cert(OWNER, C, ("member",)).to_wire())
    object.__setattr__(c4, "expires", NOW + 100 * DAY)  # an equal-looking new value
    with pytest.raises(BadSignature, match="differs from its signed body"):
        verify_chain([c4], OWNER.public, C.peer_id, "member", NOW)


def test_verified_certificate_survives_pickling_safely() -> None:
    c = cert(OWNER, C, ("member",))
    back = pickle.loads(pickle.dumps(c))
    assert back == c
    verify_chain([back], OWNER.public, C.peer_id, "member", NOW)  # verified or re-checked


def test_revocation_by_owner_or_chain_admitter_but_not_by_outsider() -> None:
    a_cert = cert(OWNER, A, ("admit", "member", "submit"))
    c_cert = cert(A, C, ("member", "submit"))
    chain = [a_cert, c_cert]
    rl = RevocationList(OWNER.public)
    assert rl.add(Revocation.issue(D, c_cert, NOW), NOW)  # outsider: recorded, no authority
    verify_chain(chain, OWNER.public, C.peer_id, "submit", NOW, rl)
    assert rl.add(Revocation.issue(A, c_cert, NOW), NOW)  # the issuer revokes
    with pytest.raises(Revoked, match="link 1"):
        verify_chain(chain, OWNER.public, C.peer_id, "submit", NOW, rl)
    rl2 = RevocationList(OWNER.public)
    rl2.add(Revocation.from_wire(Revocation.issue(OWNER, a_cert, NOW).to_wire()), NOW)
    with pytest.raises(Revoked, match="link 0"):  # revoking the delegator cuts the chain
        verify_chain(chain, OWNER.public, C.peer_id, "submit", NOW, rl2)


def test_revocation_list_is_bounded_and_prunes_expired() -> None:
    rl = RevocationList(OWNER.public, max_entries=2)
    certs = [cert(OWNER, k, ("member",), NOW + 10 * (i + 1)) for i, k in enumerate((A, B, C))]
    for c in certs:
        rl.add(Revocation.issue(OWNER, c, NOW), NOW)
    assert len(rl) == 2 and rl.dropped == 1
    assert not rl.add(Revocation.issue(OWNER, certs[0], NOW), NOW + 11)  # already expired
    assert rl.prune(NOW + 25) == 1 and len(rl) == 1
    other = cert(OTHER_OWNER, C, ("member",), owner=OTHER_OWNER)
    assert not rl.add(Revocation.issue(OTHER_OWNER, other, NOW), NOW)


def test_join_token_round_trip_and_verify() -> None:
    chain = (cert(OWNER, A, ("admit", "member")), cert(A, C, ("member",)))
    tok = JoinToken(OWNER.public.raw, chain, ("/ip4/10.0.0.1/tcp/4001", "/dns4/x/tcp/1"))
    text = tok.encode()
    assert "=" not in text and "+" not in text and "/" not in text
    back = JoinToken.decode(text)
    assert back == tok
    assert back.verify(C.peer_id, NOW).subject == C.peer_id


@pytest.mark.parametrize("text", ["", "!!!", "AAAA", "oWFhAQ", "x" * 30000])
def test_bad_join_tokens_raise_wire_errors(text: str) -> None:
    with pytest.raises(WireError):
        JoinToken.decode(text)


def test_join_token_with_foreign_certificate_is_refused() -> None:
    tok = JoinToken(OWNER.public.raw, (cert(OTHER_OWNER, C, ("member",), owner=OTHER_OWNER),), ())
    with pytest.raises(MalformedFrame, match="another colony"):
        JoinToken.decode(tok.encode())


def test_issue_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        Certificate.issue(OWNER, OWNER.public, C.peer_id, ("wizard",), NOW, NOW + 1)
    with pytest.raises(ValueError):
        Certificate.issue(OWNER, OWNER.public, C.peer_id, ("member",), NOW, NOW)
