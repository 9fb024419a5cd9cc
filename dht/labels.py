"""`/colony/label/<colony>/<label>`: signed, mutable names for directories (sync labels).

The IPNS idea, owned by a colony rather than by one key: a label names the current
version (a CID) of a directory that capsules and people pull and push
(overlay/runtime/services/sync.py, docs/sync.md). Any member whose chain grants
`submit` in the colony may move it; in open mode (`<colony>` = `open`) anyone may.

The value is an `Envelope` of kind `colony-label` whose body is
`{"name": <the key as text>, "value": <CID text>, "seq": int ≥ 0, "expires": seconds
since the epoch, "prev": <CID text it replaced, or "">, "chain": [certificate…]}`.

Valid when: the signature verifies; the body names this very key (no replay under
another label); `expires` is in the future; in a colony, the chain (inside the signed
body, so it travels with the record) makes the signer a `submit` holder of the colony
named in the key, now (`verify_chain`; revocations are not consulted here: a DHT node
may not know them, and the colony's own nodes check them when they act on a label).

Selector: highest `seq`, then later `expires`, then the larger envelope bytes — a total
order, so every node picks the same record when two writers raced to the same `seq`;
the loser finds out by reading back (the conflict rules live in the sync service).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from dht.grants import GRANT_PREFIX, GrantValidator
from dht.records import UnknownNamespace, Validators, ValidRecord
from dht.revlists import REVLIST_PREFIX, RevListValidator
from overlay.core.certs import (
    Certificate,
    NotAuthorized,
    chain_from_wire,
    chain_to_wire,
    verify_chain,
)
from overlay.core.crypto import Envelope, KeyPair
from overlay.core.errors import BadSignature, ExpiredError, MalformedFrame
from overlay.core.ids import PeerId
from overlay.core.validate import number, uint

LABEL_PREFIX = b"/colony/label/"
LABEL_KIND = "colony-label"
OPEN = "open"
MAX_LABEL = 128
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def check_label(label: str) -> str:
    if not isinstance(label, str) or not 0 < len(label) <= MAX_LABEL or not _LABEL.match(label):
        raise MalformedFrame(f"a label is 1..{MAX_LABEL} of A-Z a-z 0-9 . _ - "
                             f"(starting with a letter or digit), not {label!r}")
    return label


def label_key(colony: PeerId | None, label: str) -> bytes:
    owner = colony.to_base58() if colony is not None else OPEN
    return LABEL_PREFIX + f"{owner}/{check_label(label)}".encode()


@dataclass(frozen=True, slots=True)
class LabelRecord:
    """A verified label record."""

    key: bytes
    value: str  # the CID it names
    seq: int
    expires: float
    prev: str
    writer: PeerId
    envelope: Envelope

    @property
    def label(self) -> str:
        return self.key.decode("ascii").rsplit("/", 1)[1]


def make_label_record(kp: KeyPair, colony: PeerId | None, label: str, value: str, seq: int,
                      expires: float, prev: str = "",
                      chain: Sequence[Certificate] = ()) -> tuple[bytes, bytes]:
    """(key, record value) of a signed label record."""
    key = label_key(colony, label)
    env = kp.seal(LABEL_KIND, {"name": key.decode("ascii"), "value": value, "seq": seq,
                               "expires": expires, "prev": prev,
                               "chain": chain_to_wire(chain) if chain else []})
    return key, env.to_bytes()


def parse_label_record(key: bytes, value: bytes, now: float) -> LabelRecord:
    """Verify a label record for `key`; the WireError family, ExpiredError or
    NotAuthorized name what is wrong."""
    if not key.startswith(LABEL_PREFIX):
        raise UnknownNamespace("not a /colony/label/ key")
    try:
        owner_text, label = key[len(LABEL_PREFIX):].decode("ascii").split("/", 1)
    except (UnicodeDecodeError, ValueError):
        raise MalformedFrame("a label key is /colony/label/<colony>/<label>") from None
    check_label(label)
    env = Envelope.from_bytes(value)
    body = env.open(LABEL_KIND)  # BadSignature unless the signature holds
    if not isinstance(body, dict) or set(body) != {"name", "value", "seq", "expires", "prev",
                                                   "chain"}:
        raise MalformedFrame("label record body must be {name, value, seq, expires, prev, "
                             "chain}")
    if body["name"] != key.decode("ascii"):
        raise BadSignature("label record signed for another key")
    cid, prev = body["value"], body["prev"]
    if not isinstance(cid, str) or not cid or len(cid) > 256:
        raise MalformedFrame("label record value must be a CID")
    if not isinstance(prev, str) or len(prev) > 256:
        raise MalformedFrame("label record prev must be a CID or empty")
    seq = uint(body["seq"], "label record seq", message="{what} must be a non-negative int")
    expires = number(body["expires"], "label record expires", lo=-math.inf,
                     message="{what} must be a finite number")
    if not expires > now:
        raise ExpiredError("label record has expired")
    writer = env.signer_id
    if owner_text != OPEN:
        try:
            colony = PeerId.from_base58(owner_text)
        except ValueError:
            raise MalformedFrame("label key does not name a colony id") from None
        owner_key = colony.ed25519_public_key()
        if owner_key is None:
            raise MalformedFrame("a colony id is an Ed25519 key")
        chain = chain_from_wire(body["chain"]) if body["chain"] else ()
        try:
            verify_chain(chain, owner_key, writer, "submit", now)
        except NotAuthorized as e:
            raise NotAuthorized(f"label {label}: writer {writer.short()}: {e}") from None
    return LabelRecord(key, cid, seq, expires, prev, writer, env)


class LabelValidator:
    """Validator and selector for `/colony/label/` records (dht/records.Validators)."""

    __slots__ = ()

    def validate(self, key: bytes, value: bytes, now: float) -> ValidRecord:
        rec = parse_label_record(key, value, now)
        return ValidRecord(key, value, rec.seq, rec.expires, rec.value.encode())

    def select(self, key: bytes, records: Sequence[ValidRecord]) -> int:
        if not records:
            raise ValueError("select needs at least one record")
        return max(range(len(records)),
                   key=lambda i: (records[i].seq, records[i].expires, records[i].value))


def default_validators() -> Validators:
    """Every namespace a node serves: names, revocations, labels, grants and colonies'
    revocation lists."""
    v = Validators()
    v.register(LABEL_PREFIX, LabelValidator())
    v.register(GRANT_PREFIX, GrantValidator())
    v.register(REVLIST_PREFIX, RevListValidator())
    return v
