"""Noise cipher suites Colony speaks and their CipherStates (Noise rev 34 §5.1, §12), sans-IO.

Two suites share one handshake (noise.py: XX, X25519, SHA-256, the libp2p payload);
multistream-select picks one before it starts:

* `/colony/noise-aesgcm/1.0.0`: `Noise_XX_25519_AESGCM_SHA256`, AES-256-GCM, nonce
  = 4 zero bytes ‖ the 64-bit counter **big**-endian (§12.4);
* `/noise` (libp2p): `Noise_XX_25519_ChaChaPoly_SHA256`, ChaCha20-Poly1305, nonce
  = 4 zero bytes ‖ the counter little-endian (§12.3).

Why a second suite: a bulk fetch between colony peers is CPU-bound, and on a CPU
with AES instructions AES-GCM costs ≈ 0.43 CPU s/GiB against ChaCha20-Poly1305's
≈ 1.48 (pyca/cryptography, 64 KiB messages, this EPYC), on each end of every
stream. Without AES instructions (many ARM edge boards) it is the other way round,
so the choice is the node's (`[network] noise_cipher`; `suites_for`). js-libp2p,
helia, go- and rust-libp2p speak only `/noise`: a dialer offers the AES-GCM suite
first and falls back to `/noise` when the listener answers `na`.

Invariants: a CipherState never reuses a nonce (the counter only grows; at the
limit it refuses with DecryptError, the session is dead — libp2p has no rekey);
for AES-GCM the limit is 2^40 messages, i.e. < 2^56 bytes of 65,535-byte messages,
the volume Noise §14 ("Data volumes") says one AES-GCM key should not exceed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from overlay.p2p.errors import DecryptError

TAG_BYTES = 16


class CipherState:
    """A ChaCha20-Poly1305 key with its 64-bit message counter (Noise §5.1, §12.3).

    `AesGcmCipherState` is the same with AES-256-GCM, a big-endian nonce and a lower
    message limit; the hot path (`encrypt_into`/`decrypt_into`) is shared, one AEAD
    call per message whatever the suite.
    """

    __slots__ = ("_aead", "n")

    #: Messages one key may protect: 2^64 − 1 is reserved (Noise §5.1).
    MAX_MESSAGES: ClassVar[int] = 2**64 - 1
    _BYTE_ORDER: ClassVar[Literal["little", "big"]] = "little"

    def __init__(self, key: bytes) -> None:
        self._aead: ChaCha20Poly1305 | AESGCM = self._new_aead(key)
        self.n = 0

    @staticmethod
    def _new_aead(key: bytes) -> ChaCha20Poly1305 | AESGCM:
        return ChaCha20Poly1305(key)

    def nonce(self, n: int) -> bytes:
        """The 12-byte AEAD nonce of message `n` (4 zero bytes, then the counter)."""
        return b"\0\0\0\0" + n.to_bytes(8, self._BYTE_ORDER)

    def _next_nonce(self) -> bytes:
        n = self.n
        if n >= self.MAX_MESSAGES:
            raise DecryptError("Noise nonce exhausted; the session must be rekeyed")
        self.n = n + 1
        return b"\0\0\0\0" + n.to_bytes(8, self._BYTE_ORDER)

    def encrypt(
        self, plaintext: bytes | bytearray | memoryview, ad: bytes | None = None
    ) -> bytes:
        return self._aead.encrypt(self._next_nonce(), plaintext, ad)

    def encrypt_into(self, plaintext: bytes | bytearray | memoryview, out: memoryview) -> None:
        """Encrypt into `out`, exactly `len(plaintext) + TAG_BYTES` long."""
        self._aead.encrypt_into(self._next_nonce(), plaintext, None, out)

    def decrypt(self, ciphertext: bytes | memoryview, ad: bytes | None = None) -> bytes:
        try:
            return self._aead.decrypt(self._next_nonce(), ciphertext, ad)
        except InvalidTag:
            raise DecryptError("Noise message failed authentication") from None

    def decrypt_into(self, ciphertext: bytes | memoryview, out: memoryview) -> None:
        """Decrypt into `out`, exactly `len(ciphertext) - TAG_BYTES` long."""
        try:
            self._aead.decrypt_into(self._next_nonce(), ciphertext, None, out)
        except InvalidTag:
            raise DecryptError("Noise message failed authentication") from None


class AesGcmCipherState(CipherState):
    """AES-256-GCM with 128-bit tags, nonce = 4 zero bytes ‖ n big-endian (Noise §12.4)."""

    __slots__ = ()

    #: 2^40 messages of at most 65,535 bytes stay below the 2^56 bytes per key that
    #: Noise §14 sets for AES-GCM (its security degrades with the volume per key).
    MAX_MESSAGES: ClassVar[int] = 2**40
    _BYTE_ORDER: ClassVar[Literal["little", "big"]] = "big"

    @staticmethod
    def _new_aead(key: bytes) -> ChaCha20Poly1305 | AESGCM:
        return AESGCM(key)


@dataclass(frozen=True, slots=True)
class NoiseSuite:
    """One security protocol: its multistream id, Noise protocol name and cipher."""

    #: `[network] noise_cipher` name of the suite.
    label: str
    protocol_id: str
    #: Mixed into h and ck first (Noise §5.2 InitializeSymmetric), so the two suites
    #: derive different keys from the same DH outputs.
    name: bytes
    cipher: type[CipherState]


CHACHA = NoiseSuite("chacha", "/noise", b"Noise_XX_25519_ChaChaPoly_SHA256", CipherState)
AESGCM_SUITE = NoiseSuite("aesgcm", "/colony/noise-aesgcm/1.0.0",
                          b"Noise_XX_25519_AESGCM_SHA256", AesGcmCipherState)
#: `[network] noise_cipher` values: "auto" offers AES-GCM first where the CPU has
#: AES instructions, "aesgcm" always does, "chacha" speaks plain libp2p `/noise` only.
SETTINGS = ("auto", "aesgcm", "chacha")


def suites_for(setting: str, aes_fast: bool) -> tuple[NoiseSuite, ...]:
    """The suites a node offers (as dialer, in this order) and accepts (as listener).

    `/noise` is always last and always there: every libp2p peer speaks it. A node
    that finds AES slow neither offers nor accepts AES-GCM, so a fast dialer falls
    back to ChaCha20-Poly1305 with it rather than making it encrypt in software.
    """
    if setting not in SETTINGS:
        raise ValueError(f"noise_cipher {setting!r} is not one of {SETTINGS}")
    if setting == "aesgcm" or (setting == "auto" and aes_fast):
        return (AESGCM_SUITE, CHACHA)
    return (CHACHA,)


def suite_of(protocol_id: str, suites: tuple[NoiseSuite, ...]) -> NoiseSuite:
    """The suite multistream-select agreed on (one of `suites`, by its id)."""
    for suite in suites:
        if suite.protocol_id == protocol_id:
            return suite
    raise ValueError(f"{protocol_id!r} is not one of the offered suites")
