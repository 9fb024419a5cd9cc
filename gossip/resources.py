"""Resource advertisements: what a node offers, and queries over the local view.

An ad is a plain value (`ResourceAd`); on the wire it travels inside an envelope of
kind "resource-ad" signed by the advertised node, versioned so that newer replaces
older. A *delta* carries only the changed fields plus the version it applies to
(`base`); a receiver applies it only on top of exactly that version, so a chain
full-ad → delta → delta is as authentic as the full ad (every link is signed by the
owner). Small deltas ride on gossip; full ads go by push-pull (and on gossip too when
they are small, `ad_gossip_max_bytes`).

Queries ("cpu ≥ 4, gpu ≥ 1, label site=x") are evaluated against the local view only:
`Query.matches(ad)`; `parse_query("cpu>=4 gpu>=1 site=x")` accepts the CLI form.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from overlay.core.errors import MalformedFrame
from overlay.core.validate import finite, string, strings, uint

MAX_STR = 256
MAX_ITEMS = 64

# wire key -> attribute name; keys are short because ads ride in every gossip budget.
_KEYS: dict[str, str] = {
    "c": "cpu_cores",
    "l": "cpu_load",
    "m": "mem_bytes",
    "mf": "mem_free_bytes",
    "d": "disk_bytes",
    "df": "disk_free_bytes",
    "g": "gpus",
    "gk": "gpu_kinds",
    "x": "executors",
    "lb": "labels",
    "loc": "location",
    "bw": "bandwidth_bps",
    "t": "tags",
    # "public", "nat", "nat/<mapping>" or absent (unknown): overlay/p2p/reachability.py
    "r": "reachability",
    # Capsules this node leads that wait for a slot (cell digests sum it: backlog).
    "q": "queued",
}
_ATTRS = {v: k for k, v in _KEYS.items()}


def _uint(v: Any, what: str) -> int:
    return uint(v, what, exact=True, message="ad field {what} must be an unsigned integer")


def _str(v: Any, what: str) -> str:
    return string(v, what, limit=MAX_STR,
                  message="ad field {what} must be a string of at most {limit} chars")


def _strs(v: Any, what: str) -> tuple[str, ...]:
    return strings(v, what, max_items=MAX_ITEMS, limit=MAX_STR, tuples=False, item_what=what,
                   message="ad field {what} must be a list of at most {max_items} strings",
                   item_message="ad field {what} must be a string of at most {limit} chars")


def _decode_field(attr: str, v: Any) -> Any:
    if attr == "cpu_load":
        if type(v) not in (int, float) or not finite(v) or v < 0:
            raise MalformedFrame("ad field cpu_load must be a finite non-negative number")
        return float(v)
    if attr in ("gpu_kinds", "executors", "tags"):
        return _strs(v, attr)
    if attr in ("location", "reachability"):
        return _str(v, attr)
    if attr == "labels":
        if not isinstance(v, dict) or len(v) > MAX_ITEMS:
            raise MalformedFrame(f"ad labels must be a map of at most {MAX_ITEMS} entries")
        return tuple(sorted((_str(k, "label"), _str(x, "label")) for k, x in v.items()))
    return _uint(v, attr)


@dataclass(frozen=True, slots=True)
class ResourceAd:
    """What a node offers. Labels are sorted (key, value) pairs so ads are hashable."""

    cpu_cores: int = 0
    cpu_load: float = 0.0
    mem_bytes: int = 0
    mem_free_bytes: int = 0
    disk_bytes: int = 0
    disk_free_bytes: int = 0
    gpus: int = 0
    gpu_kinds: tuple[str, ...] = ()
    executors: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    location: str = ""
    bandwidth_bps: int = 0
    tags: tuple[str, ...] = ()
    #: How peers can reach this node: "public", "nat[/endpoint-independent|/symmetric]",
    #: "" while unknown (decided by dial-back checks and STUN probes).
    reachability: str = ""
    #: Capsules this node leads as custodian that wait for an executor (placement
    #: across cells reads the cell's sum: free capacity alone hides a queue).
    queued: int = 0

    @classmethod
    def make(cls, *, labels: dict[str, str] | None = None, **kw: Any) -> ResourceAd:
        return cls(labels=tuple(sorted((labels or {}).items())), **kw)

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)

    @property
    def free_cpu(self) -> float:
        return max(0.0, self.cpu_cores - self.cpu_load)

    def to_body(self) -> dict[str, Any]:
        """Wire form: only fields that differ from the default are present."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if v != f.default:
                out[_ATTRS[f.name]] = _encode_value(f.name, v)
        return out

    @classmethod
    def from_body(cls, body: Any) -> ResourceAd:
        return cls().apply(body)

    def apply(self, body: Any) -> ResourceAd:
        """This ad with the fields in `body` (a wire map) replaced; validates all."""
        if not isinstance(body, dict) or len(body) > len(_KEYS):
            raise MalformedFrame("ad body must be a map of known fields")
        changes: dict[str, Any] = {}
        for k, v in body.items():
            attr = _KEYS.get(k) if isinstance(k, str) else None
            if attr is None:
                raise MalformedFrame(f"unknown ad field {k!r}")
            changes[attr] = _decode_field(attr, v)
        return replace(self, **changes) if changes else self

    def delta_from(self, old: ResourceAd) -> dict[str, Any]:
        """Wire map of fields that differ from `old` (defaults included explicitly)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if v != getattr(old, f.name):
                out[_ATTRS[f.name]] = _encode_value(f.name, v)
        return out


def _encode_value(attr: str, v: Any) -> Any:
    if attr == "labels":
        return dict(v)
    if isinstance(v, tuple):
        return list(v)
    return v


@dataclass(frozen=True, slots=True)
class Query:
    """A conjunction of conditions on an ad; unset conditions match anything."""

    min_cpu: int = 0
    min_free_cpu: float = 0.0
    min_mem_bytes: int = 0
    min_mem_free_bytes: int = 0
    min_disk_free_bytes: int = 0
    min_gpus: int = 0
    min_bandwidth_bps: int = 0
    executor: str | None = None
    location_prefix: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    tags: tuple[str, ...] = ()

    def matches(self, ad: ResourceAd | None) -> bool:
        if ad is None:
            return False
        if (
            ad.cpu_cores < self.min_cpu
            or ad.free_cpu < self.min_free_cpu
            or ad.mem_bytes < self.min_mem_bytes
            or ad.mem_free_bytes < self.min_mem_free_bytes
            or ad.disk_free_bytes < self.min_disk_free_bytes
            or ad.gpus < self.min_gpus
            or ad.bandwidth_bps < self.min_bandwidth_bps
        ):
            return False
        if self.executor is not None and self.executor not in ad.executors:
            return False
        if self.location_prefix is not None and not ad.location.startswith(self.location_prefix):
            return False
        if self.labels:
            have = ad.label_map
            if any(have.get(k) != v for k, v in self.labels.items()):
                return False
        return all(t in ad.tags for t in self.tags)


_NUMERIC = {
    "cpu": ("min_cpu", int),
    "free_cpu": ("min_free_cpu", float),
    "mem": ("min_mem_bytes", int),
    "mem_free": ("min_mem_free_bytes", int),
    "disk_free": ("min_disk_free_bytes", int),
    "gpu": ("min_gpus", int),
    "bandwidth": ("min_bandwidth_bps", int),
}


def parse_query(text: str) -> Query:
    """Parse "cpu>=4 gpu>=1 site=x executor=slurm tag=fast location=eu/" (AND of terms).

    `name>=n` for numbers, `executor=`, `location=` (prefix), `tag=`, and any other
    `key=value` is a label condition. Raises ValueError on a malformed term.
    """
    kw: dict[str, Any] = {}
    labels: dict[str, str] = {}
    tags: list[str] = []
    for term in text.replace(",", " ").split():
        if ">=" in term:
            name, _, num = term.partition(">=")
            if name not in _NUMERIC:
                raise ValueError(f"unknown numeric condition {name!r}")
            attr, typ = _NUMERIC[name]
            kw[attr] = typ(num)
        elif "=" in term:
            key, _, value = term.partition("=")
            if not key:
                raise ValueError(f"malformed condition {term!r}")
            if key == "executor":
                kw["executor"] = value
            elif key == "location":
                kw["location_prefix"] = value
            elif key == "tag":
                tags.append(value)
            else:
                labels[key.removeprefix("label:")] = value
        else:
            raise ValueError(f"malformed condition {term!r}; use name>=n or key=value")
    return Query(labels=labels, tags=tuple(tags), **kw)
