"""Cell digests: what crosses cells instead of per-node claims (DESIGN §6).

A digest summarises one cell from one member's SWIM view: the live member count and,
per *resource class*, how many live members offer it and how much of it is free:

    cpu          members with CPU cores;        free = Σ max(0, cores − load)
    mem          members with memory;           free = Σ free bytes
    gpu          members with GPUs;             free = Σ GPUs (ads carry no GPU usage)
    gpu:<kind>   the same per GPU kind (the first kind of each ad)
    exec:<kind>  members running that executor; free = free CPUs of those members
    label:<k>=<v> members carrying that label;  free = free CPUs of those members
    loc:<where>  members at that location;      free = free CPUs of those members

and the cell's *backlog*: capsules its members lead that wait for an executor (Σ of
the ads' `queued`). Free capacity alone cannot tell two saturated cells apart (both
show 0 free); the backlog can.

Placement across cells reads digests to find candidate cells (then probes two of them,
power of two choices); push-sum (gossip/pushsum.py) gives colony-wide totals. A digest
is O(classes), never O(members): at most `MAX_CLASSES` classes (the largest by member
count are kept, ties by name). Wire: `[41, cell name, issued, members,
[[class, members, free]…]]`, then the backlog when it is not 0 (so digests of cells
with none keep their old form), decoded with full validation (`WireError` only).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from gossip.cells import CellId
from gossip.resources import ResourceAd
from overlay.core.errors import MalformedFrame
from overlay.core.validate import finite

TAG = 41
MAX_CLASSES = 32
MAX_CLASS_CHARS = 64
#: A backlog above this is reported as this (a digest stays small and bounded).
MAX_BACKLOG = 2**32 - 1


@dataclass(frozen=True, slots=True)
class ClassCapacity:
    name: str
    members: int
    free: float


@dataclass(frozen=True, slots=True)
class CellDigest:
    cell: CellId
    issued: float
    members: int
    classes: tuple[ClassCapacity, ...] = ()
    #: Capsules the cell's members lead that wait for an executor.
    backlog: int = 0

    def capacity(self, name: str) -> ClassCapacity | None:
        for c in self.classes:
            if c.name == name:
                return c
        return None

    @classmethod
    def of(cls, cell: CellId, ads: Iterable[ResourceAd | None], issued: float) -> CellDigest:
        """The digest of `cell` from its live members' ads (None: no ad yet)."""
        members = backlog = 0
        acc: dict[str, list[float]] = {}

        def add(name: str, free: float) -> None:
            slot = acc.setdefault(name[:MAX_CLASS_CHARS], [0, 0.0])
            slot[0] += 1
            slot[1] += free

        for ad in ads:
            members += 1
            if ad is None:
                continue
            backlog += ad.queued
            if ad.cpu_cores:
                add("cpu", ad.free_cpu)
            if ad.mem_bytes:
                add("mem", float(ad.mem_free_bytes))
            if ad.gpus:
                add("gpu", float(ad.gpus))
                if ad.gpu_kinds:
                    add(f"gpu:{ad.gpu_kinds[0]}", float(ad.gpus))
            for ex in ad.executors:
                add(f"exec:{ex}", ad.free_cpu)
            # Labels and location: what capsule conditions pin (placement across cells
            # keeps only the cells that have them, overlay/capsule/cell_placement.py).
            for k, v in ad.labels:
                add(f"label:{k}={v}", ad.free_cpu)
            if ad.location:
                add(f"loc:{ad.location}", ad.free_cpu)
        ranked = sorted(acc.items(), key=lambda kv: (-kv[1][0], kv[0]))[:MAX_CLASSES]
        classes = tuple(ClassCapacity(k, int(v[0]), v[1]) for k, v in sorted(ranked))
        return cls(cell, issued, members, classes, min(backlog, MAX_BACKLOG))

    def to_wire(self) -> list[Any]:
        out = [TAG, self.cell.name(), self.issued, self.members,
               [[c.name, c.members, c.free] for c in self.classes]]  # fmt: skip
        if self.backlog:
            out.append(self.backlog)
        return out

    @classmethod
    def from_wire(cls, obj: Any) -> CellDigest:
        if not (isinstance(obj, list) and len(obj) in (5, 6) and obj[0] == TAG):
            raise MalformedFrame(
                "cell digest must be [41, cell, issued, members, classes(, backlog)]")
        _, name, issued, members, classes = obj[:5]
        backlog = obj[5] if len(obj) == 6 else 0
        if type(backlog) is not int or not 0 <= backlog <= MAX_BACKLOG:
            raise MalformedFrame(f"cell digest backlog must be an integer in 0..{MAX_BACKLOG}")
        if not isinstance(name, str) or len(name) > 128:
            raise MalformedFrame("cell digest names its cell")
        try:
            cell = CellId.parse(name)
        except ValueError as e:
            raise MalformedFrame(str(e)) from None
        if type(issued) not in (int, float) or not finite(issued) or issued < 0:
            raise MalformedFrame("cell digest time must be a finite number ≥ 0")
        if type(members) is not int or not 0 <= members < 2**32:
            raise MalformedFrame("cell digest member count must be a small integer")
        if not isinstance(classes, list) or len(classes) > MAX_CLASSES:
            raise MalformedFrame(f"cell digest holds at most {MAX_CLASSES} classes")
        out = []
        for c in classes:
            if not (isinstance(c, list) and len(c) == 3 and isinstance(c[0], str)
                    and 0 < len(c[0]) <= MAX_CLASS_CHARS and type(c[1]) is int
                    and 0 <= c[1] <= members and type(c[2]) in (int, float)
                    and finite(c[2]) and c[2] >= 0):  # fmt: skip
                raise MalformedFrame("cell digest class must be [name, members ≤ total, free ≥ 0]")
            out.append(ClassCapacity(c[0], c[1], float(c[2])))
        if len({c.name for c in out}) != len(out):
            raise MalformedFrame("cell digest classes must be distinct")
        return cls(cell, float(issued), members, tuple(out), backlog)
