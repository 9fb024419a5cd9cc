"""Colonies' revocation lists (`/colony/revlist/<colony>`): who may sign one, what is
refused (forged, replayed, expired, foreign entries, too many), and the selector."""

from __future__ import annotations

import pytest

from dht.labels import default_validators
from dht.records import ValidRecord
from dht.revlists import (
    MAX_REVLIST_ENTRIES,
    RevListValidator,
    make_revlist_record,
    parse_revlist_record,
    revlist_key,
)
from dht.wire import MAX_VALUE_BYTES
from overlay.core.certs import MAX_CHAIN_DEPTH, Certificate, NotAuthorized, Revocation
from overlay.core.crypto import Envelope, KeyPair
from overlay.core.errors import BadSignature, ExpiredError, MalformedFrame

NOW = 1_800_000_000.0
OWNER = KeyPair.from_rng_seed(b"o" * 32)
COLONY = OWNER.peer_id
ADMIN = KeyPair.from_rng_seed(b"a" * 32)
MEMBER = KeyPair.from_rng_seed(b"m" * 32)
OTHER = KeyPair.from_rng_seed(b"x" * 32)  # another colony's owner


def cert(kp: KeyPair, roles: tuple[str, ...], owner: KeyPair = OWNER) -> Certificate:
    return Certificate.issue(owner, owner.public.raw, kp.peer_id, roles, NOW - 10, NOW + 3600)


def revoked(n: int, owner: KeyPair = OWNER) -> list[Revocation]:
    """`n` owner-signed revocations of distinct certificates."""
    return [Revocation.issue(owner, Certificate.issue(owner, owner.public.raw, MEMBER.peer_id,
                                                      ("member",), NOW - 10, NOW + 3600 + i),
                             NOW - 5) for i in range(n)]  # fmt: skip


def test_owner_and_admit_holders_sign_lists() -> None:
    revs = revoked(2)
    key, value = make_revlist_record(OWNER, COLONY, revs, 7, NOW + 60)
    assert key == b"/colony/revlist/" + COLONY.to_base58().encode() == revlist_key(COLONY)
    rec = parse_revlist_record(key, value, NOW)
    assert (rec.seq, rec.colony, rec.signer) == (7, OWNER.public.raw, COLONY)
    assert [r.cert_id for r in rec.revs] == [r.cert_id for r in revs]
    assert default_validators().validate(key, value, NOW).seq == 7
    _, by_admin = make_revlist_record(ADMIN, COLONY, revs, 8, NOW + 60,
                                      chain=[cert(ADMIN, ("admit", "member"))])
    assert parse_revlist_record(key, by_admin, NOW).signer == ADMIN.peer_id


def test_forged_lists_are_refused_with_reasons() -> None:
    key = revlist_key(COLONY)
    revs = revoked(1)
    # A member without admit: it could otherwise push a huge seq over the genuine list.
    _, member = make_revlist_record(MEMBER, COLONY, revs, 2**40, NOW + 60,
                                    chain=[cert(MEMBER, ("member", "submit"))])
    with pytest.raises(NotAuthorized, match="neither the colony's owner nor a holder of admit"):
        parse_revlist_record(key, member, NOW)
    _, no_chain = make_revlist_record(MEMBER, COLONY, revs, 1, NOW + 60)
    with pytest.raises(NotAuthorized, match="no certificate"):
        parse_revlist_record(key, no_chain, NOW)
    _, borrowed = make_revlist_record(MEMBER, COLONY, revs, 1, NOW + 60,
                                      chain=[cert(ADMIN, ("admit", "member"))])
    with pytest.raises(NotAuthorized):
        parse_revlist_record(key, borrowed, NOW)
    # Another colony's owner signing for this colony, and a replay under another key.
    _, foreign = make_revlist_record(OTHER, COLONY, [], 1, NOW + 60)
    with pytest.raises(NotAuthorized):
        parse_revlist_record(key, foreign, NOW)
    _, other_list = make_revlist_record(OTHER, OTHER.peer_id, [], 1, NOW + 60)
    with pytest.raises(BadSignature, match="another colony's key"):
        parse_revlist_record(key, other_list, NOW)
    # An altered body.
    env = Envelope.from_bytes(make_revlist_record(OWNER, COLONY, revs, 1, NOW + 60)[1])
    tampered = Envelope(env.kind, env.body.replace(b"\x01", b"\x02", 1), env.signer,
                        env.signature).to_bytes()  # fmt: skip
    with pytest.raises(BadSignature):
        parse_revlist_record(key, tampered, NOW)
    with pytest.raises(ExpiredError):
        parse_revlist_record(key, make_revlist_record(OWNER, COLONY, revs, 1, NOW - 1)[1], NOW)
    # Entries: another colony's revocation, a duplicate.
    with pytest.raises(MalformedFrame, match="another colony"):
        parse_revlist_record(key, make_revlist_record(OWNER, COLONY, revoked(1, OTHER), 1,
                                                      NOW + 60)[1], NOW)  # fmt: skip
    with pytest.raises(MalformedFrame, match="distinct"):
        parse_revlist_record(key, make_revlist_record(OWNER, COLONY, revs * 2, 1, NOW + 60)[1],
                             NOW)  # fmt: skip
    with pytest.raises(MalformedFrame, match=r"colony id|peer id"):
        parse_revlist_record(b"/colony/revlist/nope", member, NOW)


def test_a_full_list_fits_the_dht_value_limit_and_no_more_is_signed() -> None:
    chain = [cert(ADMIN, ("admit", "member"))] * 1
    key, value = make_revlist_record(ADMIN, COLONY, revoked(MAX_REVLIST_ENTRIES), 1, NOW + 60,
                                     chain=chain)  # fmt: skip
    assert len(value) + 3 * 400 < MAX_VALUE_BYTES, len(value)  # room for a 3-link chain
    assert MAX_CHAIN_DEPTH == 3
    assert len(parse_revlist_record(key, value, NOW).revs) == MAX_REVLIST_ENTRIES
    with pytest.raises(ValueError, match="at most"):
        make_revlist_record(OWNER, COLONY, revoked(MAX_REVLIST_ENTRIES + 1), 1, NOW + 60)


def test_selector_prefers_seq_then_expiry_then_bytes() -> None:
    v = RevListValidator()
    key = revlist_key(COLONY)

    def rec(seq: int, expires: float, value: bytes) -> ValidRecord:
        return ValidRecord(key, value, seq, expires, value)

    assert v.select(key, [rec(1, NOW + 90, b"b"), rec(2, NOW + 10, b"a")]) == 1
    assert v.select(key, [rec(2, NOW + 90, b"a"), rec(2, NOW + 10, b"b")]) == 0
    assert v.select(key, [rec(2, NOW + 10, b"a"), rec(2, NOW + 10, b"b")]) == 1
    with pytest.raises(ValueError):
        v.select(key, [])
