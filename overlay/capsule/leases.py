"""Capsule lifecycle states, the transition table and the replicated custody record.

Every rule about which state may follow which lives in `TRANSITIONS` (h11 style)::

    submitted ──offer──► leased(token, executor) ──accept/heartbeat──► running
        ▲                    │ refused / no answer / lease expired         │
        └────────────────────┴──────────────── lease expired ◄────────────┘
    submitted | leased | running ──► succeeded | failed | cancelled   (terminal)

A `CustodyRecord` is what the leading custodian replicates to the others: the signed
capsule, the state, the *fencing token* of the latest lease and its executor, the
number of expired leases, the accepted receipt, a reason and a `version` that grows by
one on every change, and the custody `epoch` and configuration (`config`, leader
first) that wrote it (replication.py). Custodians keep the copy of highest `order`
`(epoch, leader, version)` they have seen; a new leader adopts the newest copy a
majority of the configuration holds. Committed tokens only grow: each offer uses
`max(token, max_token, epoch << EPOCH_SHIFT) + 1`, so a token is never reused across
leaders or epochs (the property test checks this). A decoded record's version, token
and attempts are below 2^62 (`COUNTER_LIMIT`, overlay/core/validate.py), so the `+ 1` a
leader derives from a received record still fits the wire's 63 bits.

A record of a capsule with dependencies also carries `parent_outputs` once every
parent has succeeded (None until then): the parents' output CIDs by name, which the
lease offer hands to the executor (overlay/capsule/dataflow.py).

Times are not replicated as absolute clock readings (nodes' clocks differ): the
record carries `wait_elapsed_s`, the seconds the capsule had been waiting for an
executor when the version was made; a receiver turns it into a local start time.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from overlay.capsule.dataflow import ParentOutput, parent_outputs_from_wire, parent_outputs_to_wire
from overlay.capsule.receipts import Receipt
from overlay.capsule.spec import Capsule
from overlay.core.errors import LocalProtocolError, MalformedFrame
from overlay.core.ids import PeerId
from overlay.core.validate import COUNTER_LIMIT, finite, uint

MAX_EXCLUDED = 16
MAX_REASON = 512
MAX_CONFIG = 16
#: Earlier configurations a record may still name as joint (a liveness bound only:
#: a leader that would exceed it waits instead of dropping one).
MAX_JOINT = 32
#: Bits of a fencing token below the epoch: `token = epoch << EPOCH_SHIFT | n`.
EPOCH_SHIFT = 22

#: A custody ballot `(epoch, leader id bytes)`, totally ordered (docs/capsules.md,
#: "Custody epochs"); `NO_BALLOT` is below every real one.
Ballot = tuple[int, bytes]
NO_BALLOT: Ballot = (0, b"")


def ballot_from_wire(epoch: Any, leader: Any, what: str) -> Ballot:
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch < 1 << 41:
        raise MalformedFrame(f"{what} epoch must be an integer below 2^41")
    if not isinstance(leader, bytes) or len(leader) > 64:
        raise MalformedFrame(f"{what} leader must be peer id bytes")
    return (epoch, leader)


class State(StrEnum):
    SUBMITTED = "submitted"
    LEASED = "leased"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL: frozenset[State] = frozenset({State.SUCCEEDED, State.FAILED, State.CANCELLED})
#: States in which an executor holds the lease (its heartbeats keep it).
LIVE = (State.LEASED, State.RUNNING)
_ENDS = (State.SUCCEEDED, State.FAILED, State.CANCELLED)

#: state -> states it may move to. Receipts may arrive while `leased` (the executor's
#: accept crossed the leader's offer timeout), so leased may finish directly.
TRANSITIONS: dict[State, tuple[State, ...]] = {
    State.SUBMITTED: (State.LEASED, State.FAILED, State.CANCELLED),
    State.LEASED: (State.RUNNING, State.SUBMITTED, *_ENDS),
    State.RUNNING: (State.SUBMITTED, *_ENDS),
    State.SUCCEEDED: (),
    State.FAILED: (),
    State.CANCELLED: (),
}


@dataclass(frozen=True, slots=True)
class LeaseTiming:
    """Lease clock parameters, sent with each offer so executor and custody agree."""

    lease_timeout_s: float = 6.0
    heartbeat_s: float = 2.0
    offer_timeout_s: float = 3.0

    def __post_init__(self) -> None:
        if not 0 < self.heartbeat_s * 2 <= self.lease_timeout_s:
            raise ValueError("lease_timeout_s must allow at least two heartbeats")
        if self.offer_timeout_s <= 0:
            raise ValueError("offer_timeout_s must be positive")

    def lease_deadline(self, last_heartbeat: float) -> float:
        return last_heartbeat + self.lease_timeout_s


@dataclass(frozen=True, slots=True)
class CustodyRecord:
    capsule: Capsule
    origin: PeerId
    state: State = State.SUBMITTED
    version: int = 1
    token: int = 0
    executor: PeerId | None = None
    attempts: int = 0
    excluded: tuple[PeerId, ...] = ()
    receipt: Receipt | None = None
    reason: str = ""
    wait_elapsed_s: float = 0.0
    parent_outputs: tuple[ParentOutput, ...] | None = None
    #: The custody epoch this version belongs to and its configuration, the k_c
    #: custodians its leader chose (leader first). Epoch 0: not yet activated.
    epoch: int = 0
    config: tuple[PeerId, ...] = ()
    #: The earlier configurations while this epoch's activation is not known to have
    #: committed on a majority of each (joint): a phase 1 that finds this copy needs a
    #: majority of every one, because an earlier epoch may still be acting, and the
    #: next activation carries them on (an activation that never committed does not
    #: retire the configuration before it).
    joint: tuple[tuple[PeerId, ...], ...] = ()

    @property
    def ballot(self) -> Ballot:
        """`(epoch, leader)` of the epoch that wrote this version."""
        return (self.epoch, self.config[0].raw if self.config else b"")

    @property
    def order(self) -> tuple[int, bytes, int]:
        """Newer-than order of copies: ballot first, then version."""
        return (self.epoch, self.config[0].raw if self.config else b"", self.version)

    @property
    def capsule_id(self) -> str:
        return self.capsule.id

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    def advance(self, state: State, **changes: Any) -> CustodyRecord:
        """The next version in `state`; LocalProtocolError if the table forbids it."""
        if state is not self.state and state not in TRANSITIONS[self.state]:
            raise LocalProtocolError(f"capsule may not go from {self.state.value} to {state.value}")
        if "token" in changes and changes["token"] < self.token:
            raise LocalProtocolError("fencing tokens never decrease")
        if "reason" in changes:
            changes["reason"] = changes["reason"][:MAX_REASON]
        return replace(self, state=state, version=self.version + 1, **changes)

    def bumped(self, min_version: int = 0) -> CustodyRecord:
        """Same state, a version above both this one and `min_version` (takeover)."""
        return replace(self, version=max(self.version, min_version) + 1)

    def to_wire(self) -> list[Any]:
        return [
            self.capsule.to_wire(),
            self.origin.raw,
            self.state.value,
            self.version,
            self.token,
            self.executor.raw if self.executor else b"",
            self.attempts,
            [p.raw for p in self.excluded],
            self.receipt.to_wire() if self.receipt else None,
            self.reason,
            self.wait_elapsed_s,
            parent_outputs_to_wire(self.parent_outputs),
            self.epoch,
            [p.raw for p in self.config],
            [[p.raw for p in c] for c in self.joint],
        ]

    @classmethod
    def from_wire(cls, obj: Any) -> CustodyRecord:
        if isinstance(obj, list) and len(obj) == 12:  # written before custody epochs
            obj = [*obj, 0, []]
        if isinstance(obj, list) and len(obj) == 14:  # written before joint copies
            obj = [*obj, []]
        if not isinstance(obj, list) or len(obj) != 15:
            raise MalformedFrame("custody record must be a 15-element array")
        epoch, _ = ballot_from_wire(obj[12], b"", "record")
        cfg, joint = obj[13], obj[14]
        if not isinstance(joint, list) or len(joint) > MAX_JOINT:
            raise MalformedFrame(f"record joint holds at most {MAX_JOINT} configurations")
        for what, peers in (("config", cfg), *(("joint", c) for c in joint)):
            if not isinstance(peers, list) or len(peers) > MAX_CONFIG:
                raise MalformedFrame(f"record {what} holds at most {MAX_CONFIG} peers")
            if not all(isinstance(p, bytes) for p in peers):
                raise MalformedFrame(f"record {what} peers must be bytes")
        cap, origin, state, version, token, executor, attempts, excl, rcpt, reason, waited = obj[
            :11
        ]
        parents = parent_outputs_from_wire(obj[11], optional=True)
        if not isinstance(state, str) or state not in State._value2member_map_:
            raise MalformedFrame(f"unknown capsule state {state!r}")
        # Below COUNTER_LIMIT (2^62), not only 2^63: a leader derives the next version
        # and lease token from these by `+ 1`, which must still fit the wire.
        for name, v in (("version", version), ("token", token), ("attempts", attempts)):
            uint(v, f"record {name}", limit=COUNTER_LIMIT,
                 message="{what} must be a non-negative integer below 2^62")
        if version < 1:
            raise MalformedFrame("record version starts at 1")
        if not isinstance(origin, bytes) or not isinstance(executor, bytes):
            raise MalformedFrame("record peers must be bytes")
        if not isinstance(excl, list) or len(excl) > MAX_EXCLUDED:
            raise MalformedFrame(f"record excludes at most {MAX_EXCLUDED} peers")
        if not all(isinstance(p, bytes) for p in excl):
            raise MalformedFrame("record excluded peers must be bytes")
        if not isinstance(reason, str) or len(reason) > MAX_REASON:
            raise MalformedFrame("record reason must be a short string")
        if isinstance(waited, bool) or not isinstance(waited, (int, float)):
            raise MalformedFrame("record wait_elapsed_s must be a number")
        if not finite(waited) or waited < 0:
            raise MalformedFrame("record wait_elapsed_s must be finite and ≥ 0")
        capsule = Capsule.from_wire(cap)
        receipt = None if rcpt is None else Receipt.from_wire(rcpt)
        st = State(state)
        if receipt is not None and (st not in TERMINAL or receipt.capsule_id != capsule.id):
            raise MalformedFrame("a receipt belongs only to a finished record of its capsule")
        return cls(
            capsule,
            PeerId.from_bytes(origin),
            st,
            version,
            token,
            PeerId.from_bytes(executor) if executor else None,
            attempts,
            tuple(PeerId.from_bytes(p) for p in excl),
            receipt,
            reason,
            float(waited),
            parents,
            epoch,
            tuple(PeerId.from_bytes(p) for p in cfg),
            tuple(tuple(PeerId.from_bytes(p) for p in c) for c in joint),
        )
