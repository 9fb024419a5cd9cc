"""Label records (`/colony/label/<colony>/<label>`): what verifies, what is refused,
and the selector's total order."""

from __future__ import annotations

import pytest

from dht.labels import (
    LabelValidator,
    check_label,
    default_validators,
    label_key,
    make_label_record,
    parse_label_record,
)
from dht.records import ValidRecord
from overlay.core.certs import Certificate, NotAuthorized
from overlay.core.crypto import Envelope, KeyPair
from overlay.core.errors import BadSignature, ExpiredError, MalformedFrame
from overlay.core.ids import PeerId

NOW = 1_800_000_000.0
OWNER = KeyPair.from_rng_seed(b"o" * 32)
COLONY = OWNER.peer_id
MEMBER = KeyPair.from_rng_seed(b"m" * 32)
OUTSIDER = KeyPair.from_rng_seed(b"x" * 32)
CID = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"


def member_chain(roles: tuple[str, ...] = ("member", "submit")) -> tuple[Certificate, ...]:
    return (Certificate.issue(OWNER, OWNER.public.raw, MEMBER.peer_id, roles, NOW - 10,
                              NOW + 3600),)


def test_open_mode_record_round_trip() -> None:
    key, value = make_label_record(OUTSIDER, None, "results", CID, 3, NOW + 60, prev="")
    assert key == b"/colony/label/open/results"
    rec = parse_label_record(key, value, NOW)
    assert (rec.value, rec.seq, rec.writer, rec.label) == (CID, 3, OUTSIDER.peer_id, "results")
    assert default_validators().validate(key, value, NOW).seq == 3


def test_colony_labels_need_a_submit_chain() -> None:
    key, value = make_label_record(MEMBER, COLONY, "results", CID, 0, NOW + 60,
                                   chain=member_chain())
    assert parse_label_record(key, value, NOW).writer == MEMBER.peer_id
    _, no_chain = make_label_record(OUTSIDER, COLONY, "results", CID, 0, NOW + 60)
    with pytest.raises(NotAuthorized, match="no certificate"):
        parse_label_record(key, no_chain, NOW)
    _, no_submit = make_label_record(MEMBER, COLONY, "results", CID, 0, NOW + 60,
                                     chain=member_chain(("member",)))
    with pytest.raises(NotAuthorized, match="submit"):
        parse_label_record(key, no_submit, NOW)
    _, borrowed = make_label_record(OUTSIDER, COLONY, "results", CID, 0, NOW + 60,
                                    chain=member_chain())  # someone else's chain
    with pytest.raises(NotAuthorized):
        parse_label_record(key, borrowed, NOW)


def test_replays_forgeries_and_expiry_are_refused() -> None:
    key, value = make_label_record(OUTSIDER, None, "a", CID, 0, NOW + 60)
    with pytest.raises(BadSignature, match="another key"):
        parse_label_record(label_key(None, "b"), value, NOW)  # replayed under another label
    env = Envelope.from_bytes(value)
    forged = Envelope(env.kind, env.body.replace(b"a", b"b", 1), env.signer, env.signature)
    with pytest.raises(BadSignature):
        parse_label_record(key, forged.to_bytes(), NOW)
    with pytest.raises(ExpiredError):
        parse_label_record(key, value, NOW + 61)


@pytest.mark.parametrize("bad", ["", "-x", "a/b", "a b", "x" * 129, "..", "ä"])
def test_bad_label_names(bad: str) -> None:
    with pytest.raises(MalformedFrame, match="a label is"):
        check_label(bad)


def test_selector_is_a_total_order() -> None:
    v = LabelValidator()
    key = label_key(None, "a")
    recs = [ValidRecord(key, b"x", 1, NOW + 5, b""), ValidRecord(key, b"y", 2, NOW + 1, b""),
            ValidRecord(key, b"z", 2, NOW + 1, b"")]
    assert v.select(key, recs) == 2  # highest seq, then expiry, then the larger bytes
    assert v.select(key, list(reversed(recs))) == 0


def test_colony_key_names_the_colony() -> None:
    assert label_key(COLONY, "x") == b"/colony/label/" + COLONY.to_base58().encode() + b"/x"
    assert PeerId.from_base58(COLONY.to_base58()) == COLONY
