"""Events the capsule cores emit (`Emit(event)`), past tense, for the node and the API.

Custody (on the leading custodian, after the change is replicated to a majority):
`CapsuleAccepted`, `CapsuleWaiting`, `CapsuleLeased`, `CapsuleStarted`,
`CapsuleRequeued`, `ReceiptAccepted`, `CapsuleFinished`, `CustodyTakenOver`,
`ProvidersWanted` (ask the DHT who holds these input CIDs; answer with `LocalityHint`).
Origin (the node a user submitted through): `SubmissionAccepted`, `SubmissionRejected`,
`CapsuleStatusKnown`. Executor: `RunRequested` (the runtime starts the process),
`KillRequested` (stop it), `ReceiptSettled` (custody accepted or rejected our receipt).
"""

from __future__ import annotations

from dataclasses import dataclass

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
    capsule: Capsule
    token: int
    maxexectime_s: float


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
