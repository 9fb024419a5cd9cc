"""Cross-colony grants: codec, verification refusals (with reasons), proofs, quotas."""

from __future__ import annotations

import pytest

from overlay.core.certs import Certificate, NotAuthorized, Revocation, RevocationList, Revoked
from overlay.core.cid import RAW, Cid
from overlay.core.crypto import Envelope, KeyPair
from overlay.core.errors import BadSignature, ExpiredError, LocalProtocolError, MalformedFrame
from overlay.core.grants import (
    GRANT_KIND,
    Grant,
    Proof,
    parse_grant,
    revocation_authority,
    revoke_grant,
    verify_grant,
    verify_proof,
)
from overlay.core.quota import QuotaLedger, cpu_cost, day_of

A_OWNER = KeyPair(b"\x11" * 32)
B_OWNER = KeyPair(b"\x22" * 32)
C_OWNER = KeyPair(b"\x33" * 32)
A_ADMIN = KeyPair(b"\x12" * 32)  # holds admit in A
A_PLAIN = KeyPair(b"\x13" * 32)  # a member of A without admit
B_NODE = KeyPair(b"\x23" * 32)
B_READER = KeyPair(b"\x24" * 32)  # member of B without submit
NOW = 1_700_000_000.0
DAY = 86400.0
ROOT = Cid.of(RAW, b"private dataset of A")


def cert(owner: KeyPair, subject: KeyPair, roles: tuple[str, ...],
         expires: float = NOW + 30 * DAY) -> Certificate:  # fmt: skip
    return Certificate.issue(owner, owner.public, subject.peer_id, roles, NOW - DAY, expires)


def grant(issuer: KeyPair = A_OWNER, roles: tuple[str, ...] = ("read", "submit"),
          chain: tuple[Certificate, ...] = (), expires: float = NOW + DAY,
          quota: dict[str, int] | None = None) -> Grant:  # fmt: skip
    return Grant.issue(issuer, A_OWNER.public.raw, B_OWNER.public.raw, roles, NOW - 60, expires,
                       roots=[ROOT], prefix="datasets/", quota=quota or {"capsules": 2},
                       chain=chain)  # fmt: skip


B_CHAIN = (cert(B_OWNER, B_NODE, ("member", "submit")),)


def test_round_trip_keeps_every_field() -> None:
    g = grant(quota={"capsules": 5, "cpu_s": 3600, "bytes": 10**9})
    back = parse_grant(g.to_bytes())
    assert back == g and back.grant_id == g.grant_id
    assert back.roots == (ROOT,) and back.prefix == "datasets/"
    assert back.limit("cpu_s") == 3600 and back.limit("nothing") is None
    assert back.covers_label("datasets/genome") and not back.covers_label("private/x")
    assert parse_grant(g.to_wire()) == g
    assert verify_grant(back, A_OWNER.public, NOW) == g


def test_forged_grant_is_refused_at_parse() -> None:
    g = grant()
    env = g.envelope
    forged = Envelope(env.kind, env.body.replace(B_OWNER.public.raw, C_OWNER.public.raw),
                      env.signer, env.signature)  # fmt: skip
    with pytest.raises(BadSignature):
        parse_grant(forged.to_bytes())
    with pytest.raises(MalformedFrame, match=r"bad grant|wrong fields"):
        parse_grant(A_OWNER.seal(GRANT_KIND, {"colony": A_OWNER.public.raw}).to_bytes())


def test_wrong_colony_refused_with_both_names() -> None:
    with pytest.raises(NotAuthorized, match=r"is for colony .* not this colony"):
        verify_grant(grant(), C_OWNER.public, NOW)


def test_expired_and_future_grants_refused() -> None:
    g = grant(expires=NOW + 10)
    with pytest.raises(ExpiredError, match=f"grant {g.serial[:12]} expired at"):
        verify_grant(g, A_OWNER.public, NOW + 10)
    late = Grant.issue(A_OWNER, A_OWNER.public.raw, B_OWNER.public.raw, ["submit"],
                       NOW + 3600, NOW + DAY)  # fmt: skip
    with pytest.raises(NotAuthorized, match="not valid before"):
        verify_grant(late, A_OWNER.public, NOW)


def test_delegated_admit_may_grant_but_a_plain_member_may_not() -> None:
    admin_chain = (cert(A_OWNER, A_ADMIN, ("admit", "member")),)
    g = grant(A_ADMIN, chain=admin_chain)
    assert verify_grant(g, A_OWNER.public, NOW) == g
    plain_chain = (cert(A_OWNER, A_PLAIN, ("member", "submit")),)
    with pytest.raises(NotAuthorized, match="may not admit in this colony: role admit not"):
        verify_grant(grant(A_PLAIN, chain=plain_chain), A_OWNER.public, NOW)
    with pytest.raises(NotAuthorized, match="shows no certificate chain"):
        verify_grant(grant(A_ADMIN), A_OWNER.public, NOW)
    # An admin's chain from another colony does not count in A.
    other = (cert(C_OWNER, A_ADMIN, ("admit", "member")),)
    with pytest.raises(NotAuthorized, match="another colony"):
        verify_grant(grant(A_ADMIN, chain=other), A_OWNER.public, NOW)


def test_delegate_whose_certificate_was_revoked_no_longer_vouches() -> None:
    admin_cert = cert(A_OWNER, A_ADMIN, ("admit", "member"))
    g = grant(A_ADMIN, chain=(admin_cert,))
    revs = RevocationList(A_OWNER.public)
    from overlay.core.certs import Revocation

    revs.add(Revocation.issue(A_OWNER, admin_cert, NOW), NOW)
    with pytest.raises(NotAuthorized, match="revoked"):
        verify_grant(g, A_OWNER.public, NOW, revs)


def test_revocation_by_authority_only() -> None:
    admin_chain = (cert(A_OWNER, A_ADMIN, ("admit", "member")),)
    g = grant(A_ADMIN, chain=admin_chain)
    assert revocation_authority(g) == {A_OWNER.public.raw, A_ADMIN.public.raw}
    revs = RevocationList(A_OWNER.public)
    assert revs.add(revoke_grant(A_PLAIN, g, NOW), NOW)  # recorded, but no authority
    verify_grant(g, A_OWNER.public, NOW, revs)
    assert revs.add(revoke_grant(A_ADMIN, g, NOW), NOW)  # its signer: in force
    with pytest.raises(Revoked, match=rf"grant {g.serial[:12]} to colony .* was revoked"):
        verify_grant(g, A_OWNER.public, NOW, revs)
    owner_revs = RevocationList(A_OWNER.public)
    owner_revs.add(revoke_grant(A_OWNER, grant(), NOW), NOW)
    with pytest.raises(Revoked):
        verify_grant(grant(), A_OWNER.public, NOW, owner_revs)


def test_proof_needs_the_role_and_a_chain_to_the_grantee() -> None:
    g = grant(roles=("read",))
    proof = Proof(B_CHAIN, g)
    back = Proof.from_wire(proof.to_wire())
    assert verify_proof(back, A_OWNER.public, B_NODE.peer_id, "read", NOW) == g
    with pytest.raises(NotAuthorized, match="does not give submit"):
        verify_proof(proof, A_OWNER.public, B_NODE.peer_id, "submit", NOW)
    # The chain is B_NODE's: another peer presenting it is refused.
    with pytest.raises(NotAuthorized, match="is not a member of colony"):
        verify_proof(proof, A_OWNER.public, B_READER.peer_id, "read", NOW)
    # A chain of a third colony is not a member of the grantee.
    c_chain = (cert(C_OWNER, B_NODE, ("member", "submit")),)
    with pytest.raises(NotAuthorized, match="another colony"):
        verify_proof(Proof(c_chain, g), A_OWNER.public, B_NODE.peer_id, "read", NOW)


def test_proof_checks_the_chain_against_the_grantees_revocations() -> None:
    """B's revocations, as A learned them from B's list (dht/revlists.py), end a B
    member's proofs: the revoker needs authority over the link, as inside B."""
    g = grant(roles=("read",))
    b_revs = RevocationList(B_OWNER.public)
    assert verify_proof(Proof(B_CHAIN, g), A_OWNER.public, B_NODE.peer_id, "read", NOW,
                        grantee_revocations=b_revs) == g  # fmt: skip
    b_revs.add(Revocation.issue(B_READER, B_CHAIN[0], NOW), NOW)  # no authority over it
    assert verify_proof(Proof(B_CHAIN, g), A_OWNER.public, B_NODE.peer_id, "read", NOW,
                        grantee_revocations=b_revs) == g  # fmt: skip
    b_revs.add(Revocation.issue(B_OWNER, B_CHAIN[0], NOW), NOW)
    with pytest.raises(NotAuthorized, match=r"able to read: .*\(link 0\) was revoked"):
        verify_proof(Proof(B_CHAIN, g), A_OWNER.public, B_NODE.peer_id, "read", NOW,
                     grantee_revocations=b_revs)  # fmt: skip
    # A's own revocations do not count against B's chain, and B's list is B's only.
    a_revs = RevocationList(A_OWNER.public)
    a_revs.add(Revocation.issue(B_OWNER, B_CHAIN[0], NOW), NOW)  # wrong colony: not kept
    assert verify_proof(Proof(B_CHAIN, g), A_OWNER.public, B_NODE.peer_id, "read", NOW, a_revs)
    with pytest.raises(LocalProtocolError, match="another colony"):
        verify_proof(Proof(B_CHAIN, g), A_OWNER.public, B_NODE.peer_id, "read", NOW,
                     grantee_revocations=a_revs)  # fmt: skip


def test_submit_through_a_grant_needs_submit_in_the_grantee_colony() -> None:
    g = grant()
    reader_chain = (cert(B_OWNER, B_READER, ("member",)),)
    assert verify_proof(Proof(reader_chain, g), A_OWNER.public, B_READER.peer_id, "read", NOW)
    with pytest.raises(NotAuthorized, match="role submit not granted"):
        verify_proof(Proof(reader_chain, g), A_OWNER.public, B_READER.peer_id, "submit", NOW)
    assert verify_proof(Proof(B_CHAIN, g), A_OWNER.public, B_NODE.peer_id, "submit", NOW)


@pytest.mark.parametrize(
    ("roles", "kw", "match"),
    [
        ((), {}, "gives one or more"),
        (("read",), {"roots": [], "prefix": ""}, "names DAG roots"),
        (("admit",), {}, "gives one or more"),
    ],
)
def test_bad_requests_are_value_errors(roles: tuple[str, ...], kw: dict[str, object],
                                       match: str) -> None:  # fmt: skip
    args = {"roots": [ROOT], **kw}
    with pytest.raises(ValueError, match=match):
        Grant.issue(A_OWNER, A_OWNER.public.raw, B_OWNER.public.raw, roles, NOW, NOW + 1,
                    **args)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="to itself"):
        Grant.issue(A_OWNER, A_OWNER.public.raw, A_OWNER.public.raw, ["submit"], NOW, NOW + 1)
    with pytest.raises(ValueError, match="quota"):
        Grant.issue(A_OWNER, A_OWNER.public.raw, B_OWNER.public.raw, ["submit"], NOW, NOW + 1,
                    quota={"cpu_s": -1})  # fmt: skip


# ---------------------------------------------------------------- quotas


def test_capsule_quota_refuses_with_figures() -> None:
    g = grant(quota={"capsules": 2})
    led = QuotaLedger()
    for cid in ("c1", "c2"):
        assert led.check_submit(g, 0.0, NOW) is None
        led.charge_submit(g, cid, 0.0, NOW)
    led.charge_submit(g, "c2", 0.0, NOW)  # a duplicate is charged once
    why = led.check_submit(g, 0.0, NOW)
    assert why is not None and "used 2 of 2 capsules today" in why and g.serial[:12] in why
    assert led.check_submit(g, 0.0, NOW + DAY) is None  # a new UTC day starts at zero
    led.refund("c1")
    assert led.usage(g.serial, NOW + DAY).capsules == 0


def test_cpu_quota_reserves_then_settles() -> None:
    g = grant(quota={"cpu_s": 3600})
    led = QuotaLedger()
    cost = cpu_cost(2.0, 900)  # 2 cores × 15 min
    assert cost == 1800 and cpu_cost(0.0, 60) == 60
    led.charge_submit(g, "a", cost, NOW)
    led.charge_submit(g, "b", cost, NOW)
    why = led.check_submit(g, 60, NOW)
    assert why is not None
    assert why == (f"quota exceeded: colony {why.split('colony ')[1].split(' ')[0]} used 3,600 "
                   f"of 3,600 CPU-s today under grant {g.serial[:12]}; this request asks 60 more")
    assert led.unsettled(g.serial) == ["a", "b"]
    assert led.settle("a", cpu_cost(2.0, 100)) and not led.settle("a", 5)
    assert led.usage(g.serial, NOW).cpu_s == 2000
    assert led.check_submit(g, 1600, NOW) is None
    assert led.settle("b", 10**9)  # never more than reserved
    assert led.usage(g.serial, NOW).cpu_s == 2000


def test_bytes_quota_counts_only_what_fits_and_survives_json() -> None:
    g = grant(quota={"bytes": 1000})
    led = QuotaLedger()
    assert led.charge_bytes(g, 600, NOW) is None
    why = led.charge_bytes(g, 500, NOW)
    assert why is not None and "used 600 of 1,000 bytes today" in why
    assert led.charge_bytes(g, 400, NOW) is None
    led.charge_submit(g, "x", 5.0, NOW)
    back = QuotaLedger.from_json(led.to_json())
    assert back.usage(g.serial, NOW).bytes == 1000 and back.unsettled(g.serial) == ["x"]
    assert day_of(NOW) == day_of(NOW + 1) and QuotaLedger.from_json("junk").grants == {}


def test_ledger_is_bounded() -> None:
    led = QuotaLedger(max_grants=2, max_charges=2)
    gs = [grant(quota={"capsules": 9}, expires=NOW + DAY + i) for i in range(3)]
    for i, g in enumerate(gs):
        led.charge_submit(g, f"c{i}", 1.0, NOW)
    assert len(led.grants) == 2 and len(led.charges) == 2 and led.dropped == 2
