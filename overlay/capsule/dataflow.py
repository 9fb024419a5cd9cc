"""Workflow data flow: a parent capsule's outputs become its children's inputs, by name.

A capsule with `dependencies` waits until every parent has finished. Its leading
custodian learns each parent's outputs from the parent's custodians (`StatusReply`
carries the accepted receipt's output CIDs together with their names) and records
them in the child's `CustodyRecord.parent_outputs` (replicated and persisted, so a new
leader does not ask again). The lease offer carries them to the executor, whose
`RunRequested.parent_outputs` tells the runtime what to materialise:

    work/inputs/<parent>/<output name>      (parent = the parent spec's name, or its id)

next to the spec's own inputs (``work/inputs/<cid>``). A failed, cancelled or unknown
parent fails its dependants with the parent's reason instead.

Output names mirror the executors (overlay/runtime/executors/base.py and function.py):
a receipt lists the CIDs of the declared outputs in declaration order, and a function
capsule's ``result.json`` comes first. A receipt with more outputs than names (another
executor's convention) names the extra ones by their CID, so nothing is dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from overlay.capsule.spec import MAX_NAME, CapsuleSpec, SpecError, check_capsule_id, check_cid
from overlay.core.errors import MalformedFrame

#: The function executor's return value, imported ahead of the declared outputs.
FUNCTION_RESULT = "result.json"
#: At most this many parent outputs reach one child (64 parents x 16, say).
MAX_PARENT_OUTPUTS = 1024
MAX_OUTPUT_NAME = 4096


def output_names(spec: CapsuleSpec) -> tuple[str, ...]:
    """The names of a successful receipt's outputs, in order."""
    return (FUNCTION_RESULT, *spec.outputs) if spec.function else spec.outputs


def named_outputs(spec: CapsuleSpec, cids: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """Pair a receipt's output CIDs with their names (extra ones named by their CID)."""
    names = output_names(spec)
    return tuple((names[i] if i < len(names) else cid, cid) for i, cid in enumerate(cids))


def safe_name(v: Any, what: str, limit: int) -> str:
    if not isinstance(v, str) or not v or len(v) > limit:
        raise MalformedFrame(f"{what} must be a non-empty string of at most {limit} characters")
    p = PurePosixPath(v)
    if p.is_absolute() or ".." in p.parts or "\x00" in v:
        raise MalformedFrame(f"{what} {v[:64]!r} must be a relative path without '..'")
    return v


@dataclass(frozen=True, slots=True)
class ParentOutput:
    """One output of a finished parent, as its child receives it."""

    capsule_id: str  # the parent
    parent: str  # the parent spec's name, or its capsule id when it has none
    name: str  # the output's declared path (or "result.json", or its CID)
    cid: str

    @property
    def path(self) -> str:
        """Where the runtime materialises it, relative to the child's inputs dir."""
        return f"{self.parent}/{self.name}"

    def to_wire(self) -> list[str]:
        return [self.capsule_id, self.parent, self.name, self.cid]

    @classmethod
    def from_wire(cls, obj: Any) -> ParentOutput:
        if not isinstance(obj, list) or len(obj) != 4:
            raise MalformedFrame("parent output must be [capsule, parent, name, cid]")
        cap, parent, name, cid = obj
        try:
            return cls(check_capsule_id(cap, "parent capsule"),
                       safe_name(parent, "parent name", MAX_NAME),
                       safe_name(name, "parent output name", MAX_OUTPUT_NAME),
                       check_cid(cid, "parent output"))  # fmt: skip
        except SpecError as e:
            raise MalformedFrame(str(e)) from None


def parent_outputs_to_wire(outs: tuple[ParentOutput, ...] | None) -> list[Any] | None:
    return None if outs is None else [o.to_wire() for o in outs]


def parent_outputs_from_wire(obj: Any, *, optional: bool) -> tuple[ParentOutput, ...] | None:
    if obj is None and optional:
        return None
    if not isinstance(obj, list) or len(obj) > MAX_PARENT_OUTPUTS:
        raise MalformedFrame(f"parent outputs must be a list of at most {MAX_PARENT_OUTPUTS}")
    return tuple(ParentOutput.from_wire(o) for o in obj)


def parent_label(spec: CapsuleSpec, capsule_id: str) -> str:
    """How a parent is named in its children's input paths (a safe path component)."""
    name = spec.name
    if name and "/" not in name and name not in (".", "..") and "\x00" not in name:
        return name
    return capsule_id
