"""The durable custody record: what a custodian writes to disk so custody survives kill -9.

DESIGN §9: custody state survives `kill -9`. The custody core emits
`CustodyRecordChanged(capsule_id, record)` *before* any Send or timer that acts on the
change (write-ahead: a follower's `ReplicateAck` and a leader's `LeaseOffer` only leave
after the record that justifies them has been handed to the runtime, which persists it
synchronously while carrying out the Emit). A restarted node reads every stored record
back and calls `CapsuleCore.restore(records, now)` before any other input.

Bytes: canonical CBOR of ``["colony/custody/2", record, chain, max_token, promise
epoch, promise leader]`` where

- ``record`` is `CustodyRecord.to_wire()` (signed capsule, origin, state, version,
  fencing token, executor, attempts, excluded executors, accepted receipt, reason,
  wait_elapsed_s), the same form custodians replicate to each other;
- ``chain`` is the submitter's certificate chain when this node received the Submit
  (followers are replicated the record only, so theirs is empty);
- ``max_token`` is the highest fencing token this node ever issued or saw for the
  capsule (≥ the record's token). A leader's next offer uses a token above it, so a
  restarted custody set never reissues a token an executor may still hold;
- the promise is the highest custody ballot `(epoch, leader)` this node promised
  (docs/capsules.md, "Custody epochs"): persisted before the `SyncReply` that
  promises it leaves, so a restarted custodian never accepts a ballot it refused.

Records written before custody epochs (``colony/custody/1``, no promise) still load:
their promise is the record's own ballot.

Records read from disk are untrusted like wire input (a disk may be corrupt, a file
edited): `DurableRecord.from_bytes` checks everything, including the capsule's and the
receipt's signatures, and raises only the `WireError` family.

The custody table marks a capsule dirty on every change to its record or `max_token`;
`changed_events` turns the dirty ids into the `CustodyRecordChanged` events that
`CapsuleCore.handle` puts first. `load_stored` is the decoding half of a restart: it
keeps the highest version per capsule and reports each unusable record with a
`CustodyRecordSkipped` naming why, never raising.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from overlay.capsule import events as ev
from overlay.capsule.leases import NO_BALLOT, Ballot, CustodyRecord, ballot_from_wire
from overlay.core.certs import Certificate, chain_from_wire, chain_to_wire
from overlay.core.effects import Effect, Emit
from overlay.core.errors import ColonyError, MalformedFrame
from overlay.core.wire import cbor_decode, cbor_encode

DURABLE_TAG = "colony/custody/2"
DURABLE_TAG_V1 = "colony/custody/1"
#: A stored record larger than this is refused (a capsule envelope is far smaller).
MAX_DURABLE_BYTES = 4 * 1024 * 1024


def record_key(capsule_id: str) -> bytes:
    """The key the runtime stores a capsule's record under (the id's ASCII bytes)."""
    return capsule_id.encode("ascii")


@dataclass(frozen=True, slots=True)
class DurableRecord:
    record: CustodyRecord
    chain: tuple[Certificate, ...] = ()
    max_token: int = 0
    promise: Ballot = NO_BALLOT

    def __post_init__(self) -> None:
        # A custodian holding a record promised at least the ballot that wrote it.
        if self.promise < self.record.ballot:
            object.__setattr__(self, "promise", self.record.ballot)

    @property
    def capsule_id(self) -> str:
        return self.record.capsule_id

    def to_bytes(self) -> bytes:
        return cbor_encode(self.to_wire())

    def to_wire(self) -> list[Any]:
        chain = chain_to_wire(self.chain) if self.chain else []
        max_token = max(self.max_token, self.record.token)
        return [DURABLE_TAG, self.record.to_wire(), chain, max_token, *self.promise]

    @classmethod
    def from_bytes(cls, data: bytes) -> DurableRecord:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise MalformedFrame("a stored custody record must be bytes")
        if len(data) > MAX_DURABLE_BYTES:
            raise MalformedFrame(
                f"stored custody record of {len(data)} bytes exceeds {MAX_DURABLE_BYTES}"
            )
        obj = cbor_decode(bytes(data))  # raises the WireError family only
        return cls.from_wire(obj)

    @classmethod
    def from_wire(cls, obj: Any) -> DurableRecord:
        if isinstance(obj, list) and len(obj) == 4 and obj[0] == DURABLE_TAG_V1:
            obj = [DURABLE_TAG, *obj[1:], 0, b""]
        if not isinstance(obj, list) or len(obj) != 6 or obj[0] != DURABLE_TAG:
            raise MalformedFrame(f"stored custody record must be [{DURABLE_TAG!r}, record, "
                                 "chain, max_token, promise epoch, promise leader]")  # fmt: skip
        _, rec, chain, max_token, pe, pl = obj
        promise = ballot_from_wire(pe, pl, "stored promise")
        if isinstance(max_token, bool) or not isinstance(max_token, int):
            raise MalformedFrame("stored max_token must be an integer")
        if not 0 <= max_token < 1 << 63:
            raise MalformedFrame("stored max_token out of range")
        record = CustodyRecord.from_wire(rec)
        if max_token < record.token:
            raise MalformedFrame(
                f"stored max_token {max_token} is below the record's token {record.token}"
            )
        certs = chain_from_wire(chain) if chain != [] else ()
        return cls(record, certs, max_token, promise)


def changed_events(
    dirty: Iterable[str], snapshot: Callable[[str], DurableRecord | None]
) -> list[Effect]:
    """One `CustodyRecordChanged` per id in `dirty`, in order; no snapshot means delete."""
    out: list[Effect] = []
    for cid in dirty:
        d = snapshot(cid)
        blob = d.to_bytes() if d else None
        out.append(Emit(ev.CustodyRecordChanged(record_key(cid), blob)))
    return out


def load_stored(blobs: Iterable[bytes]) -> tuple[dict[str, DurableRecord], list[Effect]]:
    """Decode stored records: the highest version of each capsule, and a
    `CustodyRecordSkipped` for every record that does not decode or verify."""
    skipped: list[Effect] = []
    best: dict[str, DurableRecord] = {}
    for i, blob in enumerate(blobs):
        try:
            d = DurableRecord.from_bytes(blob)
        except (ColonyError, ValueError, TypeError, OverflowError, RecursionError) as err:
            why = f"stored custody record #{i} skipped: {err}"
            skipped.append(Emit(ev.CustodyRecordSkipped("", why)))
            continue
        old = best.get(d.capsule_id)
        if old is None or d.record.order > old.record.order:
            best[d.capsule_id] = d
    return best, skipped
