"""Signed execution receipts (DESIGN §7).

An executor that finishes an attempt signs a receipt (Envelope kind ``receipt``)::

    {"capsule": id, "token": fencing token of its lease, "exit": exit status,
     "outputs": [CID…], "log": CID or "", "started": t, "finished": t, "reason": text}

`Receipt.from_envelope` verifies the signature before parsing. Whether custody
*accepts* a receipt is decided by `check_receipt`: the signer must be the lease's
executor and the token must equal the current lease token (fencing: a receipt from an
attempt whose lease was re-offered is stale and rejected). Exactly one receipt is
accepted per capsule; custody records it in the replicated state, so a later receipt
(duplicate or otherwise) finds the capsule finished and is rejected.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from overlay.capsule.spec import SpecError, check_capsule_id, check_cid
from overlay.core.crypto import Envelope, KeyPair
from overlay.core.errors import MalformedFrame, RemoteProtocolError
from overlay.core.ids import PeerId
from overlay.core.validate import finite

RECEIPT_KIND = "receipt"
MAX_OUTPUTS = 1024
MAX_REASON = 1024


class ReceiptRejected(RemoteProtocolError):
    """A well-signed receipt that custody will not accept (stale token, wrong signer)."""


@dataclass(frozen=True, slots=True)
class Receipt:
    capsule_id: str
    token: int
    exit_status: int
    outputs: tuple[str, ...]
    log_cid: str
    started: float
    finished: float
    reason: str
    envelope: Envelope

    @property
    def executor(self) -> PeerId:
        return self.envelope.signer_id

    @property
    def succeeded(self) -> bool:
        return self.exit_status == 0

    @property
    def failure(self) -> str:
        """The record's reason once custody accepts it: empty when it succeeded."""
        if self.succeeded:
            return ""
        return f"exit status {self.exit_status}" + (f": {self.reason}" if self.reason else "")

    @classmethod
    def sign(
        cls,
        keypair: KeyPair,
        capsule_id: str,
        token: int,
        exit_status: int,
        outputs: Sequence[str] = (),
        log_cid: str = "",
        started: float = 0.0,
        finished: float = 0.0,
        reason: str = "",
    ) -> Receipt:
        body = {
            "capsule": capsule_id,
            "token": token,
            "exit": exit_status,
            "outputs": list(outputs),
            "log": log_cid,
            "started": started,
            "finished": finished,
            "reason": reason[:MAX_REASON],
        }
        return cls.from_envelope(keypair.seal(RECEIPT_KIND, body))

    @classmethod
    def from_envelope(cls, env: Envelope) -> Receipt:
        body = env.open(RECEIPT_KIND)
        keys = {"capsule", "token", "exit", "outputs", "log", "started", "finished", "reason"}
        if not isinstance(body, dict) or set(body) != keys:
            raise MalformedFrame("receipt body has the wrong fields")
        token, status = body["token"], body["exit"]
        if isinstance(token, bool) or not isinstance(token, int) or not 0 < token < 1 << 63:
            raise MalformedFrame("receipt token must be a positive integer")
        if isinstance(status, bool) or not isinstance(status, int) or abs(status) >= 1 << 31:
            raise MalformedFrame("receipt exit status must be a 32-bit integer")
        outputs = body["outputs"]
        if not isinstance(outputs, list) or len(outputs) > MAX_OUTPUTS:
            raise MalformedFrame(f"receipt outputs must be a list of at most {MAX_OUTPUTS}")
        times = []
        for k in ("started", "finished"):
            t = body[k]
            if isinstance(t, bool) or not isinstance(t, (int, float)) or not finite(t):
                raise MalformedFrame(f"receipt {k} must be a finite number")
            times.append(float(t))
        reason = body["reason"]
        if not isinstance(reason, str) or len(reason) > MAX_REASON:
            raise MalformedFrame("receipt reason must be a short string")
        try:
            outs = tuple(check_cid(c, "receipt output") for c in outputs)
            log = body["log"]
            if log != "":
                check_cid(log, "receipt log")
        except SpecError as e:
            raise MalformedFrame(str(e)) from None
        return cls(
            check_capsule_id(body["capsule"]),
            token,
            status,
            outs,
            log,
            times[0],
            times[1],
            reason,
            env,
        )

    def to_wire(self) -> list[Any]:
        return self.envelope.to_wire()

    @classmethod
    def from_wire(cls, obj: Any) -> Receipt:
        return cls.from_envelope(Envelope.from_wire(obj))


def check_receipt(
    receipt: Receipt,
    capsule_id: str,
    token: int,
    executor: PeerId | None,
    finished: bool,
    lease_live: bool = True,
) -> None:
    """Raise ReceiptRejected unless custody may accept `receipt` for the current lease."""
    if receipt.capsule_id != capsule_id:
        raise ReceiptRejected(f"receipt is for {receipt.capsule_id}, not {capsule_id}")
    if finished:
        raise ReceiptRejected(f"capsule {capsule_id} already has an accepted receipt or ended")
    if receipt.token != token or not lease_live:
        if receipt.token == token:
            raise ReceiptRejected(
                f"stale token {token} for capsule {capsule_id}: the lease was withdrawn"
            )
        raise ReceiptRejected(
            f"stale token {receipt.token} for capsule {capsule_id}; current lease is {token}"
        )
    if executor is None or receipt.executor != executor:
        raise ReceiptRejected(
            f"receipt signed by {receipt.executor.short()}, but lease {token} is held by "
            f"{executor.short() if executor else 'nobody'}"
        )
