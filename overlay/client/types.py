"""Typed results of the SDK: frozen dataclasses built from the API's JSON.

Each keeps the JSON it came from in `raw`, so a caller that wants a field the
dataclass does not name yet (or the CLI's `--json`) loses nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

JsonDict = dict[str, Any]

#: Capsule states after which nothing changes.
END_STATES = frozenset({"succeeded", "failed", "cancelled", "expired"})


@dataclass(frozen=True, slots=True)
class NodeId:
    id: str
    addrs: list[str]
    raw: JsonDict = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, d: JsonDict) -> NodeId:
        return cls(str(d["id"]), list(d.get("addrs") or []), d)


@dataclass(frozen=True, slots=True)
class Member:
    id: str
    state: str
    incarnation: int
    addrs: list[str]
    rtt_ms: float | None
    is_self: bool
    labels: dict[str, str]
    raw: JsonDict = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, d: JsonDict) -> Member:
        ad = d.get("ad") or {}
        return cls(str(d["id"]), str(d["state"]), int(d["incarnation"]), list(d["addrs"]),
                   d.get("rtt_ms"), bool(d.get("self")), dict(ad.get("labels") or {}), d)


@dataclass(frozen=True, slots=True)
class Progress:
    """One progress item of a publish or fetch stream."""

    done: bool
    bytes: int
    raw: JsonDict = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, d: JsonDict) -> Progress:
        got = d.get("bytes_fetched", d.get("bytes", d.get("size", 0)))
        return cls(bool(d.get("done")), int(got or 0), d)


@dataclass(frozen=True, slots=True)
class Published:
    cid: str
    size: int
    blocks: int
    raw: JsonDict = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, d: JsonDict) -> Published:
        return cls(str(d["cid"]), int(d.get("size", 0)), int(d.get("blocks", 0)), d)


@dataclass(frozen=True, slots=True)
class Fetched:
    cid: str
    blocks_fetched: int
    bytes_fetched: int
    blocks_local: int
    providers: dict[str, int]
    raw: JsonDict = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, cid: str, d: JsonDict) -> Fetched:
        return cls(cid, int(d.get("blocks_fetched", 0)), int(d.get("bytes_fetched", 0)),
                   int(d.get("blocks_local", 0)), dict(d.get("providers") or {}), d)


@dataclass(frozen=True, slots=True)
class Capsule:
    """One capsule as `capsule get`/`ps`/`wait` report it."""

    id: str
    state: str
    name: str | None
    exit_status: int | None
    executor: str | None
    raw: JsonDict = field(repr=False, compare=False)

    @property
    def finished(self) -> bool:
        return self.state in END_STATES

    @classmethod
    def from_json(cls, d: JsonDict) -> Capsule:
        return cls(str(d["id"]), str(d.get("state", "")), d.get("name"),
                   d.get("exit_status"), d.get("executor"), d)


@dataclass(frozen=True, slots=True)
class Submitted:
    id: str
    placement: str | None
    raw: JsonDict = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, d: JsonDict) -> Submitted:
        return cls(str(d["id"]), d.get("placement"), d)
