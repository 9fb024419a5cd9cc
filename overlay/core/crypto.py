"""Ed25519 keys and domain-separated signed envelopes (DESIGN §3).

Every signed object in Colony (resource ads, DHT records, capsules, certificates,
receipts) is an `Envelope`: a canonical CBOR body, the signer's public key and an
Ed25519 signature over `b"colony/v1/<kind>\\0" + body`. The domain prefix means a
signature made for one kind can never be replayed as another.

Verify-or-raise, as pynacl and pyca/cryptography do: `Envelope.open(kind)` returns the
decoded body only when the signature holds; callers verify before changing state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import nacl.exceptions
import nacl.signing

from overlay.core.errors import BadSignature, MalformedFrame
from overlay.core.ids import PeerId
from overlay.core.wire import cbor_decode, cbor_encode

DOMAIN_PREFIX = b"colony/v1/"


def signing_input(kind: str, body: bytes) -> bytes:
    if "\0" in kind or not kind:
        raise ValueError("signature kind must be a non-empty string without NUL")
    return DOMAIN_PREFIX + kind.encode() + b"\0" + body


class PublicKey:
    """An Ed25519 verification key."""

    __slots__ = ("_vk", "raw")

    def __init__(self, raw: bytes) -> None:
        if len(raw) != 32:
            raise MalformedFrame("an Ed25519 public key is 32 bytes")
        self.raw = bytes(raw)
        try:
            self._vk = nacl.signing.VerifyKey(self.raw)
        except Exception as e:
            raise MalformedFrame(f"invalid Ed25519 public key: {e}") from None

    @property
    def peer_id(self) -> PeerId:
        return PeerId.from_ed25519(self.raw)

    def verify(self, kind: str, body: bytes, signature: bytes) -> None:
        """Raise BadSignature unless `signature` signs (kind, body) under this key."""
        if len(signature) != 64:
            raise BadSignature("an Ed25519 signature is 64 bytes")
        try:
            self._vk.verify(signing_input(kind, body), signature)
        except nacl.exceptions.BadSignatureError:
            raise BadSignature(f"signature on {kind!r} does not verify") from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(self.raw)


class KeyPair:
    """An Ed25519 signing key. Never serialised except by the identity file code."""

    __slots__ = ("_sk", "peer_id", "public")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != 32:
            raise ValueError("an Ed25519 seed is 32 bytes")
        self._sk = nacl.signing.SigningKey(seed)
        self.public = PublicKey(bytes(self._sk.verify_key))
        self.peer_id = self.public.peer_id

    @classmethod
    def generate(cls) -> KeyPair:
        """A fresh key from the OS CSPRNG (not from a seeded rng: keys must be secret)."""
        return cls(bytes(nacl.signing.SigningKey.generate()))

    @classmethod
    def from_rng_seed(cls, seed: bytes) -> KeyPair:
        """Deterministic key for simulations and tests only."""
        return cls(seed)

    @property
    def seed(self) -> bytes:
        return bytes(self._sk)

    def sign_raw(self, kind: str, body: bytes) -> bytes:
        return self._sk.sign(signing_input(kind, body)).signature

    def seal(self, kind: str, value: Any) -> Envelope:
        """Sign `value` (encoded as canonical CBOR) as an envelope of `kind`."""
        body = cbor_encode(value)
        return Envelope(kind, body, self.public.raw, self.sign_raw(kind, body))


@dataclass(frozen=True, slots=True)
class Envelope:
    """A signed object: kind, canonical CBOR body, signer key, signature."""

    kind: str
    body: bytes
    signer: bytes
    signature: bytes

    @property
    def signer_id(self) -> PeerId:
        return PeerId.from_ed25519(self.signer)

    def verify(self, kind: str) -> None:
        if self.kind != kind:
            raise BadSignature(f"expected a {kind!r} envelope, got {self.kind!r}")
        PublicKey(self.signer).verify(kind, self.body, self.signature)

    def open(self, kind: str) -> Any:
        """Verify, then decode the body. Raises BadSignature or a WireError."""
        self.verify(kind)
        return cbor_decode(self.body)

    def to_wire(self) -> list[Any]:
        return [self.kind, self.body, self.signer, self.signature]

    @classmethod
    def from_wire(cls, obj: Any) -> Envelope:
        if not (isinstance(obj, list) and len(obj) == 4):
            raise MalformedFrame("envelope must be a 4-element array")
        kind, body, signer, sig = obj
        if not isinstance(kind, str) or not kind or "\0" in kind:
            raise MalformedFrame("envelope kind must be a non-empty string")
        if not isinstance(body, bytes):
            raise MalformedFrame("envelope body must be bytes")
        if not isinstance(signer, bytes) or len(signer) != 32:
            raise MalformedFrame("envelope signer must be a 32-byte Ed25519 key")
        if not isinstance(sig, bytes) or len(sig) != 64:
            raise MalformedFrame("envelope signature must be 64 bytes")
        return cls(kind, body, signer, sig)

    def to_bytes(self) -> bytes:
        return cbor_encode(self.to_wire())

    @classmethod
    def from_bytes(cls, data: bytes) -> Envelope:
        return cls.from_wire(cbor_decode(data))
