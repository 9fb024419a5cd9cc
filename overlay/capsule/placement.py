"""Placement: match a capsule's conditions against resource ads (DESIGN §7).

A pure function. Input: the capsule's `Conditions`, candidates as (peer, `NodeAd`),
which peers hold which input CIDs (data locality), round-trip estimates (network
distance, e.g. from Vivaldi coordinates) and slots this custodian has already leased
to each peer since its ad was made. Output: a `Placement` — candidates ranked best
first, or, when none fits, a reason that says what was asked and why every member
failed: "no node with gpu≥1 and label site=cern (12 members checked: 9 lack gpu,
3 lack label)". Each candidate is charged to its *first* failing check, in the order
of `CHECKS`, so the counts add up to the number checked.

Score (higher is better), each term in [0, 1] times its weight:
  `W_LOCALITY` × fraction of input CIDs the peer already holds (moving compute to data),
  `W_SLOTS`    × free slots after reservations, saturating at 4,
  `W_CPU`      × idle share of its cores (cores − load) / cores,
  −`W_DISTANCE` × rtt / 200 ms, saturating at 1.
Ties break by rendezvous hashing, `peer.key XOR spread_key` (the capsule's key), so
every custodian ranks identically for one capsule while different capsules with equal
scores spread over different executors instead of all landing on the same one.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from overlay.capsule.spec import Conditions, SpecError, parse_mem_mib
from overlay.capsule.trigger_def import TRIGGER_EXECUTOR
from overlay.core.errors import MalformedFrame
from overlay.core.ids import PeerId
from overlay.core.validate import finite

W_LOCALITY = 2.0
W_SLOTS = 1.0
W_CPU = 1.0
W_DISTANCE = 0.5
RTT_SCALE_S = 0.2
SLOT_SATURATION = 4
MAX_LABELS = 64

#: Check names in evaluation order, with the phrase used in cannot-place reasons.
CHECKS: tuple[tuple[str, str], ...] = (
    ("excluded", "excluded"),
    ("executor", "lack executor"),
    ("cpu", "lack cpu"),
    ("mem", "lack mem"),
    ("gpu", "lack gpu"),
    ("label", "lack label"),
    ("location", "wrong location"),
    ("slots", "no free slot"),
)


@dataclass(frozen=True, slots=True)
class NodeAd:
    """What placement needs to know about one node (a view of its signed resource ad)."""

    cpu: float = 0.0
    cpu_load: float = 0.0
    mem_mib: int = 0
    gpu: int = 0
    executors: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    location: str = ""
    free_slots: int = 0

    _KEYS = ("cpu", "cpu_load", "mem_mib", "gpu", "executors", "labels", "location",
             "free_slots")  # fmt: skip

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> NodeAd:
        """Build from a plain dict (keys as the fields; unknown keys are an error)."""
        for k in d:
            if k not in cls._KEYS:
                raise SpecError(f"unknown ad field {k}")

        def num(k: str) -> float:
            v = d.get(k, 0)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not finite(v):
                raise SpecError(f"ad field {k} must be a finite number")
            return max(0.0, float(v))

        labels = d.get("labels", {})
        if not isinstance(labels, Mapping) or len(labels) > MAX_LABELS:
            raise SpecError("ad labels must be a table")
        execs = d.get("executors", ())
        if isinstance(execs, str) or not all(isinstance(x, str) for x in execs):
            raise SpecError("ad executors must be a list of strings")
        loc = d.get("location", "")
        if not isinstance(loc, str):
            raise SpecError("ad location must be a string")
        return cls(
            cpu=num("cpu"),
            cpu_load=num("cpu_load"),
            mem_mib=parse_mem_mib(d.get("mem_mib", 0), "mem_mib"),
            gpu=int(num("gpu")),
            executors=tuple(sorted(execs)),
            labels=tuple(sorted((str(k), str(v)) for k, v in labels.items())),
            location=loc,
            free_slots=int(num("free_slots")),
        )

    def to_wire(self) -> dict[str, Any]:
        return {
            "cpu": self.cpu,
            "load": self.cpu_load,
            "mem": self.mem_mib,
            "gpu": self.gpu,
            "x": list(self.executors),
            "lb": dict(self.labels),
            "loc": self.location,
            "slots": self.free_slots,
        }

    @classmethod
    def from_wire(cls, obj: Any) -> NodeAd:
        keys = {"cpu", "load", "mem", "gpu", "x", "lb", "loc", "slots"}
        if not isinstance(obj, dict) or set(obj) != keys:
            raise MalformedFrame("node ad has the wrong fields")
        try:
            return cls.from_dict(
                {
                    "cpu": obj["cpu"],
                    "cpu_load": obj["load"],
                    "mem_mib": obj["mem"],
                    "gpu": obj["gpu"],
                    "executors": obj["x"] if isinstance(obj["x"], list) else "",
                    "labels": obj["lb"],
                    "location": obj["loc"],
                    "free_slots": obj["slots"],
                }
            )
        except SpecError as e:
            raise MalformedFrame(str(e)) from None


@dataclass(frozen=True, slots=True)
class Scored:
    peer: PeerId
    score: float
    locality: float


@dataclass(frozen=True, slots=True)
class Placement:
    """`ranked` best first; when empty, `reason` says why nothing fits."""

    ranked: tuple[Scored, ...]
    reason: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.ranked)


def first_failure(
    cond: Conditions, ad: NodeAd, reserved: int = 0, excluded: bool = False
) -> str | None:
    """Name of the first check in `CHECKS` that `ad` fails, or None if it fits."""
    if excluded:
        return "excluded"
    if cond.executor and cond.executor not in ad.executors:
        return "executor"
    if cond.cpu and ad.cpu < cond.cpu:
        return "cpu"
    if cond.mem_mib and ad.mem_mib < cond.mem_mib:
        return "mem"
    if cond.gpu and ad.gpu < cond.gpu:
        return "gpu"
    if cond.labels:
        have = dict(ad.labels)
        if any(have.get(k) != v for k, v in cond.labels):
            return "label"
    if cond.location and ad.location != cond.location:
        return "location"
    if ad.free_slots - reserved <= 0 and cond.executor != TRIGGER_EXECUTOR:
        return "slots"  # a trigger's lease uses no slot (it fires, it does not run)
    return None


def place(
    cond: Conditions,
    candidates: Sequence[tuple[PeerId, NodeAd | None]],
    *,
    inputs: Sequence[str] = (),
    holders: Mapping[str, Collection[PeerId]] | None = None,
    rtt_s: Mapping[PeerId, float] | None = None,
    reserved: Mapping[PeerId, int] | None = None,
    exclude: Collection[PeerId] = (),
    spread_key: int = 0,
) -> Placement:
    """Rank `candidates` for a capsule with conditions `cond` (see module docstring)."""
    holders = holders or {}
    rtt_s = rtt_s or {}
    reserved = reserved or {}
    fails: dict[str, int] = {}
    no_ad = 0
    ranked: list[tuple[float, int, Scored]] = []
    for peer, ad in candidates:
        if ad is None:
            no_ad += 1
            continue
        res = reserved.get(peer, 0)
        why = first_failure(cond, ad, res, peer in exclude)
        if why is not None:
            fails[why] = fails.get(why, 0) + 1
            continue
        loc = 0.0
        if inputs:
            loc = sum(1 for c in inputs if peer in holders.get(c, ())) / len(inputs)
        slots = min(ad.free_slots - res, SLOT_SATURATION) / SLOT_SATURATION
        idle = max(0.0, ad.cpu - ad.cpu_load) / ad.cpu if ad.cpu > 0 else 0.0
        dist = min(rtt_s.get(peer, 0.0) / RTT_SCALE_S, 1.0)
        score = W_LOCALITY * loc + W_SLOTS * slots + W_CPU * idle - W_DISTANCE * dist
        ranked.append((-score, peer.key ^ spread_key, Scored(peer, score, loc)))
    if ranked:
        ranked.sort(key=lambda t: (t[0], t[1]))
        return Placement(tuple(s for _, _, s in ranked))
    return Placement((), cannot_place_reason(cond, len(candidates), fails, no_ad))


def cannot_place_reason(
    cond: Conditions, checked: int, fails: Mapping[str, int], no_ad: int
) -> str:
    if checked == 0:
        return f"no node with {cond.describe()} (no live members known)"
    parts = [f"{fails[name]} {phrase}" for name, phrase in CHECKS if fails.get(name)]
    if no_ad:
        parts.append(f"{no_ad} without a resource ad")
    noun = "member" if checked == 1 else "members"
    return f"no node with {cond.describe()} ({checked} {noun} checked: {', '.join(parts)})"
