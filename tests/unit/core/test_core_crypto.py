"""Signed envelopes: domain separation, verify-before-use, strict decoding."""

import pytest

from overlay.core.crypto import Envelope, KeyPair, PublicKey
from overlay.core.errors import BadSignature, MalformedFrame, WireError


def test_seal_and_open_roundtrip() -> None:
    kp = KeyPair(b"\x01" * 32)
    env = kp.seal("resource-ad", {"cpu": 8, "labels": {"site": "cern"}})
    back = Envelope.from_bytes(env.to_bytes())
    assert back == env
    assert back.open("resource-ad") == {"cpu": 8, "labels": {"site": "cern"}}
    assert back.signer_id == kp.peer_id


def test_signature_for_one_kind_does_not_verify_as_another() -> None:
    kp = KeyPair(b"\x02" * 32)
    env = kp.seal("receipt", {"ok": True})
    forged = Envelope("capsule", env.body, env.signer, env.signature)
    with pytest.raises(BadSignature):
        forged.open("capsule")
    with pytest.raises(BadSignature, match="expected"):
        env.open("capsule")


def test_tampered_body_or_signer_is_rejected() -> None:
    kp, other = KeyPair(b"\x03" * 32), KeyPair(b"\x04" * 32)
    env = kp.seal("ad", [1, 2, 3])
    with pytest.raises(BadSignature):
        Envelope(env.kind, env.body[:-1] + b"\x04", env.signer, env.signature).open("ad")
    with pytest.raises(BadSignature):
        Envelope(env.kind, env.body, other.public.raw, env.signature).open("ad")


@pytest.mark.parametrize(
    "wire",
    [
        [],
        ["ad", b"", b"x" * 31, b"s" * 64],
        ["ad", b"", b"x" * 32, b"s" * 63],
        ["", b"", b"x" * 32, b"s" * 64],
        ["a\0b", b"", b"x" * 32, b"s" * 64],
        [1, b"", b"x" * 32, b"s" * 64],
        {"kind": "ad"},
    ],
)
def test_malformed_envelopes_raise_wire_errors(wire: object) -> None:
    with pytest.raises(MalformedFrame):
        Envelope.from_wire(wire)


def test_body_that_is_not_canonical_cbor_is_refused_after_verify() -> None:
    kp = KeyPair(b"\x05" * 32)
    body = b"\xb9\x00\x00"  # an empty map with a non-minimal length
    env = Envelope("ad", body, kp.public.raw, kp.sign_raw("ad", body))
    with pytest.raises(WireError):
        env.open("ad")


def test_public_key_length_checked() -> None:
    with pytest.raises(MalformedFrame):
        PublicKey(b"short")
