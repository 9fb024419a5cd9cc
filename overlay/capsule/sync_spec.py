"""A capsule's sync directives: directories moved by label before and after a run.

``sync = [{label, dir, on_start = "pull", on_exit = "push", conflict = "keep-newest"}]``
in a spec (ColonyOS's `fs` sync directives, on colony labels instead of a file
server): before the run the executor writes the label's current version at
``work/<dir>`` (an empty directory if the label is new); after a successful run it
imports ``work/<dir>`` and moves the label to it from the version it pulled, the
`conflict` rule deciding if the label moved meanwhile (docs/sync.md). A push the rule
refuses fails the attempt (`EXIT_SYNC_FAILED`), so nothing is silently lost.

Pure parsing and wire form; `ValueError` names what is wrong (spec.py turns it into
its `SpecError`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MAX_SYNC = 16
RULES = ("keep-newest", "fail", "both")
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True, slots=True)
class SyncDirective:
    label: str
    dir: str
    on_start: str = "pull"  # "pull" or "" (start from an empty directory)
    on_exit: str = "push"  # "push" or ""
    conflict: str = "keep-newest"

    def __post_init__(self) -> None:
        if not _LABEL.match(self.label):
            raise ValueError(f"sync label {self.label!r}: 1..128 of A-Z a-z 0-9 . _ -")
        parts = self.dir.split("/")
        if not self.dir or self.dir.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"sync dir {self.dir!r} must be a relative path inside the "
                             "work directory (no '..', no leading '/')")
        if parts[0] == "inputs":
            raise ValueError("sync dir must not be under inputs/ (the executor's inputs)")
        if self.on_start not in ("pull", ""):
            raise ValueError(f"sync on_start must be \"pull\" or \"\", not {self.on_start!r}")
        if self.on_exit not in ("push", ""):
            raise ValueError(f"sync on_exit must be \"push\" or \"\", not {self.on_exit!r}")
        if self.conflict not in RULES:
            raise ValueError(f"sync conflict must be one of {', '.join(RULES)}")

    @classmethod
    def from_dict(cls, d: Any) -> SyncDirective:
        if not isinstance(d, Mapping):
            raise ValueError("each sync directive is a table {label, dir, ...}")
        unknown = set(d) - {"label", "dir", "on_start", "on_exit", "conflict"}
        if unknown:
            raise ValueError(f"unknown sync keys: {', '.join(sorted(unknown))}")
        vals = {k: d[k] for k in ("label", "dir", "on_start", "on_exit", "conflict") if k in d}
        if not all(isinstance(v, str) for v in vals.values()):
            raise ValueError("sync directive values are strings")
        if "label" not in vals or "dir" not in vals:
            raise ValueError("a sync directive needs label and dir")
        return cls(**vals)

    def to_wire(self) -> list[str]:
        return [self.label, self.dir, self.on_start, self.on_exit, self.conflict]

    @classmethod
    def from_wire(cls, obj: Any) -> SyncDirective:
        if not isinstance(obj, list) or len(obj) != 5 or not all(isinstance(x, str) for x in obj):
            raise ValueError("a sync directive on the wire is 5 strings")
        return cls(*obj)


def parse_sync(v: Any) -> tuple[SyncDirective, ...]:
    if v is None:
        return ()
    if not isinstance(v, list) or len(v) > MAX_SYNC:
        raise ValueError(f"sync must be a list of at most {MAX_SYNC} directives")
    out = tuple(SyncDirective.from_dict(d) for d in v)
    dirs = [s.dir for s in out]
    if len(set(dirs)) != len(dirs):
        raise ValueError("two sync directives name the same dir")
    return out
