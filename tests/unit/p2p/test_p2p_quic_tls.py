"""libp2p TLS certificates (overlay.p2p.quic_tls): a genuine one proves its peer id;
forged, tampered, expired or foreign ones are refused with a reason."""

from __future__ import annotations

import datetime as dt

import nacl.signing
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from overlay.core.crypto import KeyPair
from overlay.p2p import keys, pb, quic_tls
from overlay.p2p.errors import HandshakeError

NOW = dt.datetime(2026, 12, 5, 10, 0, tzinfo=dt.UTC)


def kp(i: int) -> KeyPair:
    return KeyPair.from_rng_seed(bytes([i]) * 32)


def build(
    ext_value: bytes | None,
    *,
    tls_key: ec.EllipticCurvePrivateKey | None = None,
    signer: ec.EllipticCurvePrivateKey | None = None,
    extra: x509.ExtensionType | None = None,
) -> x509.Certificate:
    tls_key = tls_key or ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([])
    b = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(tls_key.public_key())
        .serial_number(7)
        .not_valid_before(NOW - dt.timedelta(hours=1))
        .not_valid_after(NOW + dt.timedelta(days=1))
    )
    if ext_value is not None:
        b = b.add_extension(x509.UnrecognizedExtension(quic_tls.EXTENSION_OID, ext_value), True)
    if extra is not None:
        b = b.add_extension(extra, True)
    return b.sign(signer or tls_key, hashes.SHA256())


def signed_ext(host: KeyPair, tls_key: ec.EllipticCurvePrivateKey) -> bytes:
    spki = tls_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    sig = nacl.signing.SigningKey(host.seed).sign(quic_tls.SIGNATURE_PREFIX + spki).signature
    return quic_tls.encode_signed_key(keys.encode_public_key(host.public.raw), sig)


def refused(chain: list[x509.Certificate], match: str, expected: KeyPair | None = None) -> None:
    with pytest.raises(HandshakeError, match=match):
        quic_tls.verify_chain(chain, NOW, expected.peer_id if expected else None)


def test_genuine_certificate_proves_its_peer_id() -> None:
    cert, _ = quic_tls.make_certificate(kp(1), NOW)
    assert quic_tls.verify_chain([cert], NOW) == kp(1).peer_id
    assert quic_tls.verify_chain([cert], NOW, kp(1).peer_id) == kp(1).peer_id
    # The same check through a DER round trip (what arrives on the wire).
    der = cert.public_bytes(serialization.Encoding.DER)
    assert quic_tls.verify_chain([x509.load_der_x509_certificate(der)], NOW) == kp(1).peer_id


def test_wrong_peer_is_refused() -> None:
    cert, _ = quic_tls.make_certificate(kp(1), NOW)
    refused([cert], "but .* answered", expected=kp(2))


def test_forged_extension_signed_for_another_tls_key_is_refused() -> None:
    # A thief copies a genuine SignedKey of kp(1) into a certificate on its own TLS key.
    genuine_tls = ec.generate_private_key(ec.SECP256R1())
    thief_tls = ec.generate_private_key(ec.SECP256R1())
    cert = build(signed_ext(kp(1), genuine_tls), tls_key=thief_tls)
    refused([cert], "identity signature does not verify")


def test_extension_signed_by_a_key_other_than_the_one_it_names_is_refused() -> None:
    tls_key = ec.generate_private_key(ec.SECP256R1())
    spki = tls_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    sig = nacl.signing.SigningKey(kp(2).seed).sign(quic_tls.SIGNATURE_PREFIX + spki).signature
    ext = quic_tls.encode_signed_key(keys.encode_public_key(kp(1).public.raw), sig)
    refused([build(ext, tls_key=tls_key)], "identity signature does not verify")


def test_missing_or_malformed_extension_is_refused() -> None:
    refused([build(None)], "lacks the libp2p public key extension")
    refused([build(b"\x30\x03\x04\x01")], "runs past its end")
    refused([build(b"\x04\x00")], "expected DER tag 0x30")
    tls_key = ec.generate_private_key(ec.SECP256R1())
    good = signed_ext(kp(1), tls_key)
    refused([build(good + b"\x00", tls_key=tls_key)], "trailing bytes")


def test_non_ed25519_host_key_is_refused() -> None:
    rsa_pb = pb.field_varint(1, 0) + pb.field_bytes(2, b"\x01" * 32)
    ext = quic_tls.encode_signed_key(rsa_pb, b"\x00" * 64)
    refused([build(ext)], "RSA is not supported")


def test_bad_self_signature_chain_length_and_validity_are_refused() -> None:
    tls_key = ec.generate_private_key(ec.SECP256R1())
    other = ec.generate_private_key(ec.SECP256R1())
    refused([build(signed_ext(kp(1), tls_key), tls_key=tls_key, signer=other)],
            "not validly self-signed")
    cert, _ = quic_tls.make_certificate(kp(1), NOW)
    refused([], "no certificate")
    refused([cert, cert], "2 certificates")
    with pytest.raises(HandshakeError, match="not now"):
        quic_tls.verify_chain([cert], NOW + dt.timedelta(days=365 * 200))


def test_unknown_critical_extension_is_refused() -> None:
    tls_key = ec.generate_private_key(ec.SECP256R1())
    extra = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.2.3.4.5"), b"\x05\x00")
    cert = build(signed_ext(kp(1), tls_key), tls_key=tls_key, extra=extra)
    refused([cert], "unknown critical extension")


def test_signed_key_der_round_trip_and_long_lengths() -> None:
    pk, sig = b"k" * 200, b"s" * 64
    assert quic_tls.decode_signed_key(quic_tls.encode_signed_key(pk, sig)) == (pk, sig)
    with pytest.raises(HandshakeError, match="too long"):
        quic_tls.decode_signed_key(b"\x30" + b"\x00" * 5000)
    with pytest.raises(HandshakeError, match="non-minimal"):
        quic_tls.decode_signed_key(b"\x30\x81\x05" + b"\x04\x00\x04\x01\x00")
