"""Events the capsule cores emit (`Emit(event)`), past tense, for the node and the API.

Custody (on the leading custodian, after the change is replicated to a majority):
`CapsuleAccepted`, `CapsuleWaiting`, `CapsuleLeased`, `CapsuleStarted`,
`CapsuleRequeued`, `ReceiptAccepted`, `CapsuleFinished`, `CustodyTakenOver`,
`ProvidersWanted` (ask the DHT who holds these input CIDs; answer with `LocalityHint`).
Origin (the node a user submitted through): `SubmissionAccepted`, `SubmissionRejected`,
`CapsuleStatusKnown`. Executor: `RunRequested` (the runtime starts the process),
`KillRequested` (stop it), `ReceiptSettled` (custody accepted or rejected our receipt).
Persistence (every custodian, see overlay/capsule/durable.py): `CustodyRecordChanged`
comes before any effect that acts on the change; the runtime writes it to disk while
carrying out the Emit. `CustodyRecordSkipped`: `restore` refused a stored record.
`OutcomeSuperseded`: a finished copy this node held, never known committed, was
replaced by a later epoch's copy (a deposed leader's run; docs/capsules.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from overlay.capsule.dataflow import ParentOutput
from overlay.capsule.receipts import Receipt
from overlay.capsule.spec import Capsule
from overlay.core.ids import PeerId


@dataclass(frozen=True, slots=True)
class CapsuleAccepted:
    capsule_id: str
    origin: PeerId


@dataclass(frozen=True, slots=True)
class CapsuleWaiting:
    capsule_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class CapsuleLeased:
    capsule_id: str
    token: int
    executor: PeerId


@dataclass(frozen=True, slots=True)
class CapsuleStarted:
    capsule_id: str
    token: int
    executor: PeerId


@dataclass(frozen=True, slots=True)
class CapsuleRequeued:
    capsule_id: str
    token: int
    attempts: int
    reason: str


@dataclass(frozen=True, slots=True)
class ReceiptAccepted:
    capsule_id: str
    token: int
    receipt: Receipt


@dataclass(frozen=True, slots=True)
class CapsuleFinished:
    capsule_id: str
    state: str
    reason: str
    receipt: Receipt | None


@dataclass(frozen=True, slots=True)
class CustodyTakenOver:
    capsule_id: str
    state: str
    token: int


@dataclass(frozen=True, slots=True)
class ProvidersWanted:
    capsule_id: str
    cids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SubmissionAccepted:
    capsule_id: str


@dataclass(frozen=True, slots=True)
class SubmissionRejected:
    capsule_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class CapsuleStatusKnown:
    capsule_id: str
    state: str
    reason: str
    outputs: tuple[str, ...]
    exit_status: int | None


@dataclass(frozen=True, slots=True)
class RunRequested:
    """Start lease `token` of `capsule`.

    `parent_outputs` are the outputs of the capsule's finished dependencies: the runtime
    materialises each at ``work/inputs/<p.path>`` (``<parent name>/<output name>``)
    besides the spec's own inputs at ``work/inputs/<cid>``; `input_cids` lists every
    CID the attempt needs locally (fetch these first).
    """

    capsule: Capsule
    token: int
    maxexectime_s: float
    parent_outputs: tuple[ParentOutput, ...] = ()

    @property
    def input_cids(self) -> tuple[str, ...]:
        cids = dict.fromkeys(self.capsule.spec.inputs)
        cids.update(dict.fromkeys(p.cid for p in self.parent_outputs))
        return tuple(cids)


@dataclass(frozen=True, slots=True)
class KillRequested:
    capsule_id: str
    token: int
    reason: str


@dataclass(frozen=True, slots=True)
class ReceiptSettled:
    capsule_id: str
    token: int
    accepted: bool
    reason: str


@dataclass(frozen=True, slots=True)
class CustodyRecordChanged:
    """Persist this custody record now (write-ahead), before the effects that follow.

    `capsule_id` is the key to store under (`durable.record_key`: the capsule id's
    ASCII bytes); `record` is `DurableRecord.to_bytes()`, or None: delete the record.
    """

    capsule_id: bytes
    record: bytes | None


@dataclass(frozen=True, slots=True)
class CustodyRecordSkipped:
    """`CapsuleCore.restore` skipped a stored record it could not use, and why."""

    capsule_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class OutcomeSuperseded:
    """A finished copy this node held but never knew committed (`state`, lease `token`,
    written in `epoch`) was replaced by the copy of a later epoch (`by_epoch`, now in
    `by_state`): its outcome was never the capsule's (a deposed leader's run)."""

    capsule_id: str
    state: str
    token: int
    epoch: int
    by_epoch: int
    by_state: str
