"""Content identifiers (multiformats CID spec, github.com/multiformats/cid).

Two forms are produced and parsed:

- CIDv0: the bare sha2-256 multihash of a dag-pb block, written in base58btc
  (``Qm…``, 46 characters). Binary form: ``0x12 0x20 <32-byte digest>``.
- CIDv1: ``<varint version=1><varint codec><multihash>``, written by default in
  lower-case base32 with the multibase prefix ``b`` (``bafy…`` for dag-pb, ``bafk…``
  for raw); `Cid.encode` also writes base58btc (``z``) and base36 (``k``).

Parsed: multibase base32 (``b``/``B``), base58btc (``z`` and bare ``Qm…`` v0),
base36 (``k``/``K``); any codec (raw, dag-pb, dag-cbor, dag-json and libp2p-key have
names in `CODEC_NAMES`); any well-formed multihash of at most `MAX_DIGEST_BYTES`. So
CIDs met in CAR files and gateways pass through. Only sha2-256 and identity can be
*verified*: `verify` of any other multihash raises `UnverifiableHash` naming it, so
nothing is stored under a hash we cannot check. An identity CID carries its data in
its digest; the block store serves it without a stored block.

The multihash is what the block store keys blocks by (as kubo does since 0.12), so
the same bytes under a v0 and a v1 CID are stored once.

Invariant: ``Cid.parse(c.encode(base)) == c`` for every base, and
``Cid.from_bytes(c.to_bytes()) == c``, for every `Cid` this module constructs; a
sha2-256 CID's bytes and text are exactly those of before other hashes were accepted.
Every parse failure raises `InvalidCid` with a message that quotes the offending text.

Block exchange works on raw CID bytes instead (the functions at the end): Bitswap
carries CIDs as bytes and blocks as (prefix, data), and a remote peer may want CIDs of
any codec. The receiver rebuilds the CID from the prefix and the data's hash, so a peer
can only ever send a block that is what its CID says. Malformed wire bytes raise
`MalformedFrame` there, as any other undecodable frame does (spec: ipfs/specs
BITSWAP.md).

This is the one CID module: the store (keys blocks by `Cid.multihash`), block exchange,
the runtime and the CLI all import it; it imports only overlay.core.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from overlay.core.errors import InvalidCid, MalformedFrame, WireError
from overlay.core.multiformats import (
    IDENTITY,
    SHA2_256,
    b32decode_lower,
    b32encode_lower,
    b36decode,
    b36encode_lower,
    b58decode,
    b58encode,
    decode_varint,
    encode_varint,
)

RAW = 0x55
DAG_PB = 0x70
DAG_CBOR = 0x71
DAG_JSON = 0x0129
LIBP2P_KEY = 0x72
CODEC_NAMES = {RAW: "raw", DAG_PB: "dag-pb", DAG_CBOR: "dag-cbor", DAG_JSON: "dag-json",
               LIBP2P_KEY: "libp2p-key"}
#: Multihash names (multicodec table) used in messages; only the first two verify.
HASH_NAMES = {IDENTITY: "identity", SHA2_256: "sha2-256", 0x13: "sha2-512",
              0x14: "sha3-512", 0x16: "sha3-256", 0x1B: "keccak-256", 0x1E: "blake3",
              0xB220: "blake2b-256", 0xB260: "blake2s-256"}
#: Longest digest accepted (identity CIDs inline at most this many bytes, as kubo).
MAX_DIGEST_BYTES = 128
_MH_PREFIX = b"\x12\x20"  # sha2-256, 32 bytes
_V1_PREFIX = {RAW: b"\x01\x55" + _MH_PREFIX, DAG_PB: b"\x01\x70" + _MH_PREFIX}
#: Longest CID string accepted; an identity CID of 128 bytes in base36 is 207 characters.
MAX_CID_CHARS = 256
BASES = ("base32", "base58btc", "base36")


class UnverifiableHash(InvalidCid):
    """A well-formed CID whose multihash this node cannot check (not sha2-256/identity)."""


def _quote(text: str) -> str:
    return repr(text if len(text) <= 80 else text[:77] + "...")


def hash_name(code: int) -> str:
    return HASH_NAMES.get(code, "unknown")


@dataclass(frozen=True, slots=True)
class Cid:
    """A parsed CID. Compares by (version, codec, digest, hash code)."""

    version: int
    codec: int
    digest: bytes  # the multihash's digest (32 bytes for sha2-256)
    hash_code: int = SHA2_256

    def __post_init__(self) -> None:
        if self.version not in (0, 1):
            raise InvalidCid(f"unsupported CID version {self.version}")
        if self.codec < 0 or self.hash_code < 0:
            raise InvalidCid("negative codec or multihash code")
        if self.version == 0 and (self.codec != DAG_PB or self.hash_code != SHA2_256):
            raise InvalidCid("a CIDv0 is always dag-pb with a sha2-256 multihash")
        if self.hash_code == SHA2_256:
            if len(self.digest) != 32:
                raise InvalidCid(f"a sha2-256 digest is 32 bytes, not {len(self.digest)}")
        elif len(self.digest) > MAX_DIGEST_BYTES:
            raise InvalidCid(
                f"multihash {self.hash_code:#x} ({hash_name(self.hash_code)}) digest of "
                f"{len(self.digest)} bytes; at most {MAX_DIGEST_BYTES}"
            )

    # ------------------------------------------------------------ construction

    @classmethod
    def of(cls, codec: int, data: bytes | bytearray | memoryview, version: int = 1) -> Cid:
        """The sha2-256 CID of `data` (hashed here, once)."""
        return cls(version, codec, hashlib.sha256(data).digest())

    @classmethod
    def identity(cls, codec: int, data: bytes) -> Cid:
        """The identity CID inlining `data` (at most `MAX_DIGEST_BYTES`)."""
        return cls(1, codec, bytes(data), IDENTITY)

    @classmethod
    def from_multihash(cls, mh: bytes, codec: int = DAG_PB, version: int = 1) -> Cid:
        if len(mh) == 34 and mh.startswith(_MH_PREFIX):
            return cls(version, codec, bytes(mh[2:]))
        try:
            code, i = decode_varint(mh)
            length, i = decode_varint(mh, i)
        except WireError as e:
            raise InvalidCid(f"multihash {mh.hex()}: {e}") from None
        if len(mh) - i != length:
            raise InvalidCid(f"multihash {mh.hex()}: digest length does not match")
        return cls(version, codec, bytes(mh[i:]), code)

    @classmethod
    def from_bytes(cls, raw: bytes | memoryview) -> Cid:
        """Parse binary CID bytes (v0: a bare multihash; v1: version+codec+multihash)."""
        raw = bytes(raw)
        if len(raw) == 34 and raw.startswith(_MH_PREFIX):
            return cls(0, DAG_PB, raw[2:])
        try:
            version, i = decode_varint(raw)
            if version != 1:
                raise InvalidCid(f"CID bytes {raw.hex()}: unsupported version {version}")
            codec, i = decode_varint(raw, i)
            code, i = decode_varint(raw, i)
            length, i = decode_varint(raw, i)
        except WireError as e:
            raise InvalidCid(f"CID bytes {raw.hex()}: {e}") from None
        if code == SHA2_256 and length != 32:
            raise InvalidCid(
                f"CID bytes {raw.hex()}: multihash {code:#x}/{length} is not sha2-256"
            )
        if len(raw) - i != length:
            raise InvalidCid(f"CID bytes {raw.hex()}: digest length does not match")
        try:
            return cls(1, codec, raw[i:], code)
        except InvalidCid as e:
            raise InvalidCid(f"CID bytes {raw.hex()[:80]}: {e}") from None

    @classmethod
    def parse(cls, text: str) -> Cid:
        """Parse a CID string: ``Qm…`` (v0) or multibase ``b…``/``z…``/``k…`` (v1)."""
        if not isinstance(text, str):
            raise InvalidCid(f"a CID must be a string, not {type(text).__name__}")
        s = text.strip()
        if not s or len(s) > MAX_CID_CHARS:
            raise InvalidCid(f"invalid CID {_quote(text)}: empty or too long")
        try:
            if len(s) == 46 and s.startswith("Qm"):
                raw = b58decode(s)
            elif s[0] == "b" or s[0] == "B":
                raw = b32decode_lower(s[1:].lower())
            elif s[0] == "z":
                raw = b58decode(s[1:])
            elif s[0] == "k" or s[0] == "K":
                raw = b36decode(s[1:])
            else:
                raise InvalidCid(
                    f"invalid CID {_quote(text)}: expected Qm… (v0) or b…/z…/k… (v1 in "
                    "base32, base58btc or base36)"
                )
        except WireError as e:
            raise InvalidCid(f"invalid CID {_quote(text)}: {e}") from None
        try:
            cid = cls.from_bytes(raw)
        except InvalidCid as e:
            raise InvalidCid(f"invalid CID {_quote(text)}: {e}") from None
        if cid.version == 0 and not (len(s) == 46 and s.startswith("Qm")):
            raise InvalidCid(f"invalid CID {_quote(text)}: a CIDv0 must be written Qm…")
        return cid

    # ------------------------------------------------------------ views

    @property
    def multihash(self) -> bytes:
        """The block store key: ``<code><length><digest>`` (``0x12 0x20 …`` for sha2-256)."""
        if self.hash_code == SHA2_256:
            return _MH_PREFIX + self.digest
        return encode_varint(self.hash_code) + encode_varint(len(self.digest)) + self.digest

    def to_bytes(self) -> bytes:
        if self.version == 0:
            return _MH_PREFIX + self.digest
        pfx = _V1_PREFIX.get(self.codec) if self.hash_code == SHA2_256 else None
        if pfx is not None:
            return pfx + self.digest
        return b"\x01" + encode_varint(self.codec) + self.multihash

    def __str__(self) -> str:
        if self.version == 0:
            return b58encode(self.to_bytes())
        return "b" + b32encode_lower(self.to_bytes())

    def encode(self, base: str = "base32") -> str:
        """The CID in multibase `base` (one of `BASES`); a v0 CID is always ``Qm…``."""
        if self.version == 0 or base == "base32":
            return str(self)
        if base == "base58btc":
            return "z" + b58encode(self.to_bytes())
        if base == "base36":
            return "k" + b36encode_lower(self.to_bytes())
        raise ValueError(f"unknown multibase {base!r}; one of {', '.join(BASES)}")

    def __repr__(self) -> str:
        return f"Cid({self})"

    @property
    def codec_name(self) -> str:
        return CODEC_NAMES.get(self.codec, f"codec-{self.codec:#x}")

    @property
    def is_identity(self) -> bool:
        return self.hash_code == IDENTITY

    @property
    def verifiable(self) -> bool:
        return self.hash_code in (SHA2_256, IDENTITY)

    def to_v1(self) -> Cid:
        return Cid(1, self.codec, self.digest, self.hash_code)

    def with_version(self, version: int) -> Cid:
        return Cid(version, self.codec, self.digest, self.hash_code)

    def verify(self, data: bytes | bytearray | memoryview) -> bool:
        """True when `data` hashes to this CID's digest; `UnverifiableHash` for a
        multihash other than sha2-256 and identity."""
        if self.hash_code == SHA2_256:
            return hashlib.sha256(data).digest() == self.digest
        if self.hash_code == IDENTITY:
            return bytes(data) == self.digest
        raise UnverifiableHash(
            f"cannot verify multihash {self.hash_code:#x} ({hash_name(self.hash_code)}) "
            f"of {self}: only sha2-256 and identity are checked"
        )


# ---------------------------------------------------------------- raw CID bytes (Bitswap)


def parse_bytes(cid: bytes) -> tuple[int, int, int, bytes]:
    """(version, codec, multihash code, digest) of binary CID bytes, any codec."""
    if len(cid) == 34 and cid[0] == 0x12 and cid[1] == 0x20:
        return 0, DAG_PB, SHA2_256, cid[2:]
    version, i = decode_varint(cid)
    if version != 1:
        raise MalformedFrame(f"unsupported CID version {version}")
    codec, i = decode_varint(cid, i)
    code, i = decode_varint(cid, i)
    length, i = decode_varint(cid, i)
    digest = cid[i:]
    if len(digest) != length:
        raise MalformedFrame("CID multihash length mismatch")
    return 1, codec, code, digest


def block_prefix(cid: bytes) -> bytes:
    """Bitswap 1.1+ block prefix: version, codec, multihash code and length."""
    version, codec, code, digest = parse_bytes(cid)
    return encode_varint(version) + encode_varint(codec) + encode_varint(code) + encode_varint(
        len(digest)
    )


def from_block_prefix(pfx: bytes, data: bytes | memoryview) -> bytes:
    """Compute the CID bytes of `data` under `pfx` (hashing it). Only sha2-256 is accepted."""
    version, i = decode_varint(pfx)
    codec, i = decode_varint(pfx, i)
    code, i = decode_varint(pfx, i)
    length, i = decode_varint(pfx, i)
    if i != len(pfx):
        raise MalformedFrame("trailing bytes in block prefix")
    if code != SHA2_256 or length != 32:
        raise MalformedFrame(f"unsupported multihash {code:#x}/{length} in block prefix")
    digest = hashlib.sha256(data).digest()
    if version == 0:
        if codec != DAG_PB:
            raise MalformedFrame("CIDv0 must be dag-pb")
        return _MH_PREFIX + digest
    if version != 1:
        raise MalformedFrame(f"unsupported CID version {version} in block prefix")
    return b"\x01" + encode_varint(codec) + _MH_PREFIX + digest


def verify_bytes(cid: bytes, data: bytes | memoryview) -> bool:
    """True when `data` hashes to the binary CID `cid` (sha2-256 only)."""
    try:
        _, _, code, digest = parse_bytes(cid)
    except MalformedFrame:
        return False
    return code == SHA2_256 and hashlib.sha256(data).digest() == digest


def sha256_multihash(cid: bytes) -> bytes | None:
    """The multihash (block store key) of binary CID bytes when they are a sha2-256
    CIDv0, or a sha2-256 CIDv1 of raw or dag-pb; None for anything else (parse those
    with `Cid.from_bytes`). The bulk paths' fast lane: a `Cid` per link of every
    dag-pb block and per block served was a measurable share of the fetcher's and
    the provider's interpreter time (issue #16)."""
    if len(cid) == 34:
        return cid if cid[0] == 0x12 and cid[1] == 0x20 else None
    if len(cid) == 36 and cid[0] == 1 and (cid[1] == RAW or cid[1] == DAG_PB) \
            and cid[2] == 0x12 and cid[3] == 0x20:
        return cid[2:]
    return None
