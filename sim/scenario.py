"""Scenario files (TOML): parsing and validation with the offending line in every error.

A scenario names the population, the protocols each node runs, the network, churn,
faults and workloads; docs/simulation.md documents every field and sim/scenarios/
holds the bundled ones. `load(path)` returns a validated `Scenario` or raises
`ScenarioError` ("file.toml:12: [network] loss: must be in [0, 1], got 1.5").

tomllib reports syntax errors with a line but keeps no positions for keys, so
`locate` finds a key's line in the source text itself: it follows table headers
(`[a.b]`, `[[a.b]]` with their index) and returns the line of `key =` inside the
right table (or the table's header when the key is missing).
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from overlay.core.errors import ConfigError
from sim.capsule_config import CapsuleSimConfig
from sim.churn import KINDS, PRESETS, ChurnConfig, Dist
from sim.network import DEFAULT_REGIONS, NetworkConfig, Partition, Region

PROTOCOLS = ("gossip", "dht", "capsule")
WORKLOADS = ("lookup", "provide", "get_providers", "user_event", "kill", "leave", "fetch",
             "capsule", "trigger", "trigger_event")  # fmt: skip


class ScenarioError(ConfigError):
    """An invalid scenario file; the message names the file, line, table and key."""


# ---------------------------------------------------------------- locating keys

_ARRAY_HDR = re.compile(r"^\s*\[\[\s*([^\]]+?)\s*\]\]")
_TABLE_HDR = re.compile(r"^\s*\[\s*([^\]]+?)\s*\]")


def locate(source: str, table: tuple[str | int, ...], key: str | None) -> int:
    """1-based line of `key` in `table` (e.g. ("workload", 2) for the third
    `[[workload]]`), else the table's header line, else 1."""
    names = [t for t in table if isinstance(t, str)]
    want = ".".join(names)
    want_idx = next((t for t in table if isinstance(t, int)), None)
    counts: dict[str, int] = {}
    inside = not want  # the root table starts at line 1
    header_line = 1
    key_re = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*[=.]") if key else None
    for i, line in enumerate(source.splitlines(), 1):
        m = _ARRAY_HDR.match(line)
        hdr = None
        if m:
            hdr = m.group(1).replace(" ", "")
            idx = counts.get(hdr, 0)
            counts[hdr] = idx + 1
            inside = hdr == want and (want_idx is None or want_idx == idx)
        else:
            m = _TABLE_HDR.match(line)
            if m:
                hdr = m.group(1).replace(" ", "")
                inside = hdr == want
        if hdr is not None:
            if inside:
                header_line = i
            continue
        if inside and key_re is not None and key_re.match(line):
            return i
    return header_line


# ---------------------------------------------------------------- the result


@dataclass(frozen=True, slots=True)
class Workload:
    kind: str
    #: Poisson rate of operations (whole network), or 0 for one-shot workloads.
    rate_per_s: float = 0.0
    start_s: float = 0.0
    end_s: float = float("inf")
    #: One-shot: when, and how many (kills, leaves, CIDs to provide).
    at_s: float = 0.0
    count: int = 1
    #: Bulk transfer size (fetch).
    size_bytes: int = 0
    payload_bytes: int = 64
    #: Rate workloads: stop after this many operations (0 = no limit).
    limit: int = 0


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    duration_s: float
    seed: int
    nodes: int
    protocols: tuple[str, ...]
    sample_interval_s: float = 10.0
    join_spread_s: float = 10.0
    seeds: int = 3
    gossip_profile: str = "lan"
    gossip_overrides: dict[str, Any] = field(default_factory=dict)
    #: Timers snapped to a round grid (lockstep rounds, for the round-based analyses).
    lockstep: bool = False
    dht_overrides: dict[str, Any] = field(default_factory=dict)
    #: DHT peers also learn of members from gossip (production wiring).
    dht_from_gossip: bool = True
    network: NetworkConfig = field(default_factory=NetworkConfig)
    partitions: tuple[Partition, ...] = ()
    churn: ChurnConfig | None = None
    workloads: tuple[Workload, ...] = ()
    #: Nodes whose views are sampled for the convergence curve (bounded cost).
    view_sample: int = 64
    #: `[capsule]`: the capsule simulation's settings (protocol "capsule").
    capsule: CapsuleSimConfig = field(default_factory=CapsuleSimConfig)
    path: str = "<memory>"

    def with_(self, **changes: Any) -> Scenario:
        return dataclasses.replace(self, **changes)


# ---------------------------------------------------------------- validation


class _Checker:
    """Pulls typed values out of one table and reports errors with a line number."""

    def __init__(self, src: str, path: str, table: tuple[str | int, ...], data: Any) -> None:
        self.src, self.path, self.table = src, path, table
        if not isinstance(data, dict):
            self.fail(None, "must be a table")
        self.data: dict[str, Any] = dict(data)
        self.used: set[str] = set()

    def where(self) -> str:
        parts: list[str] = []
        for t in self.table:
            if isinstance(t, int):
                parts[-1] += f"[{t}]"
            else:
                parts.append(t)
        return "[" + ".".join(parts) + "]" if parts else "(top level)"

    def fail(self, key: str | None, problem: str) -> None:
        line = locate(self.src, self.table, key)
        what = f"{self.where()} {key}" if key else self.where()
        raise ScenarioError(f"{self.path}:{line}: {what}: {problem}")

    def get(
        self,
        key: str,
        kind: type,
        default: Any = None,
        *,
        required: bool = False,
        check: Callable[[Any], bool] | None = None,
        rule: str = "",
    ) -> Any:
        self.used.add(key)
        if key not in self.data:
            if required:
                self.fail(None, f"missing required key {key!r}")
            return default
        v = self.data[key]
        ok = isinstance(v, kind) and not (kind is not bool and isinstance(v, bool))
        if kind is float and isinstance(v, int) and not isinstance(v, bool):
            v, ok = float(v), True
        if not ok:
            self.fail(key, f"must be {_type_name(kind)}, got {_type_name(type(v))} {v!r}")
        if check is not None and not check(v):
            self.fail(key, f"{rule}, got {v!r}")
        return v

    def finish(self, extra_ok: tuple[str, ...] = ()) -> None:
        for k in self.data:
            if k not in self.used and k not in extra_ok:
                known = sorted(self.used | set(extra_ok))
                self.fail(k, f"unknown key; known keys here: {', '.join(known)}")


def _type_name(t: type) -> str:
    return {float: "a number", int: "an integer", str: "a string", bool: "true or false",
            list: "a list", dict: "a table"}.get(t, t.__name__)


def _pos(v: float) -> bool:
    return v > 0


def _nonneg(v: float) -> bool:
    return v >= 0


def _prob(v: float) -> bool:
    return 0.0 <= v <= 1.0


def _overrides(c: _Checker, cls: type, skip: tuple[str, ...]) -> dict[str, Any]:
    """Keys of the table that override fields of config dataclass `cls`."""
    out: dict[str, Any] = {}
    types = {f.name: f.default for f in dataclasses.fields(cls)}
    for k in list(c.data):
        if k in skip:
            continue
        if k not in types:
            c.fail(k, f"unknown key; {cls.__name__} fields are: {', '.join(sorted(types))}")
        d = types[k]
        out[k] = c.get(k, type(d))
    try:
        cls(**out)
    except (ConfigError, ValueError, TypeError) as e:
        bad = next((k for k in out if k in str(e)), None)
        c.fail(bad, str(e))
    return out


def _dist(c: _Checker) -> Dist:
    kind = c.get("kind", str, required=True, check=lambda v: v in KINDS,
                 rule=f"must be one of {', '.join(KINDS)}")
    median = c.get("median_s", float, required=True, check=_pos, rule="must be positive")
    shape = c.get("shape", float, 1.0 if kind != "pareto" else 2.0, check=_pos,
                  rule="must be positive")
    if kind == "pareto" and shape <= 1.0:
        c.fail("shape", f"pareto shape must be > 1 (finite mean), got {shape!r}")
    c.finish()
    return Dist(kind, median, shape)


def parse(source: str, path: str = "<memory>") -> Scenario:
    """Parse and validate scenario TOML text."""
    try:
        doc = tomllib.loads(source)
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(f"{path}: not valid TOML: {e}") from None
    root = _Checker(source, path, (), doc)
    for k in doc:
        if k not in ("scenario", "nodes", "gossip", "dht", "network", "churn", "workload",
                     "capsule"):
            root.fail(k, "unknown table; expected scenario, nodes, gossip, dht, network, "
                         "churn, workload, capsule")

    s = _Checker(source, path, ("scenario",), doc.get("scenario", {}))
    name = s.get("name", str, Path(path).stem)
    description = s.get("description", str, "")
    duration = s.get("duration_s", float, required=True, check=_pos, rule="must be positive")
    seed = s.get("seed", int, 1)
    sample = s.get("sample_interval_s", float, 10.0, check=_pos, rule="must be positive")
    view_sample = s.get("view_sample", int, 64, check=_nonneg, rule="must be ≥ 0")
    s.finish()

    n = _Checker(source, path, ("nodes",), doc.get("nodes", {}))
    count = n.get("count", int, required=True, check=lambda v: 1 <= v <= 10_000_000,
                  rule="must be between 1 and 10^7")
    protocols = n.get("protocols", list, ["gossip", "dht"],
                      check=lambda v: bool(v) and all(p in PROTOCOLS for p in v),
                      rule=f"must be a non-empty list of {', '.join(PROTOCOLS)}")
    join_spread = n.get("join_spread_s", float, 10.0, check=_nonneg, rule="must be ≥ 0")
    seeds = n.get("seeds", int, 3, check=lambda v: v >= 1, rule="must be ≥ 1")
    if "capsule" in protocols and len(protocols) > 1:
        n.fail("protocols", "capsule runs alone (membership comes from an oracle of the "
                            "live set, see docs/simulation.md); drop gossip and dht")
    n.finish()
    capsule = CapsuleSimConfig()
    if "capsule" in doc:
        cc = _Checker(source, path, ("capsule",), doc["capsule"])
        capsule = CapsuleSimConfig(**_overrides(cc, CapsuleSimConfig, ()))

    g = _Checker(source, path, ("gossip",), doc.get("gossip", {}))
    profile = g.get("profile", str, "lan", check=lambda v: v in ("lan", "wan", "edge"),
                    rule="must be lan, wan or edge")
    lockstep = g.get("lockstep", bool, False)
    from gossip.profiles import SwimConfig

    gossip_overrides = _overrides(g, SwimConfig, ("profile", "lockstep"))

    dht_overrides: dict[str, Any] = {}
    dht_from_gossip = True
    if "dht" in doc:
        d = _Checker(source, path, ("dht",), doc["dht"])
        dht_from_gossip = d.get("from_gossip", bool, True)
        from dht.api import KadConfig

        dht_overrides = _overrides(d, KadConfig, ("from_gossip",))

    network, partitions = _network(source, path, doc.get("network", {}))
    churn = _churn(source, path, doc["churn"]) if "churn" in doc else None

    workloads: list[Workload] = []
    raw = doc.get("workload", [])
    if not isinstance(raw, list):
        root.fail("workload", "must be an array of tables: write [[workload]]")
    for i, w in enumerate(raw):
        workloads.append(_workload(_Checker(source, path, ("workload", i), w), protocols))
    return Scenario(
        name=name, description=description, duration_s=duration, seed=seed, nodes=count,
        protocols=tuple(p for p in PROTOCOLS if p in protocols), sample_interval_s=sample,
        join_spread_s=join_spread, seeds=seeds, gossip_profile=profile,
        gossip_overrides=gossip_overrides, lockstep=lockstep, dht_overrides=dht_overrides,
        dht_from_gossip=dht_from_gossip, network=network, partitions=tuple(partitions),
        churn=churn, workloads=tuple(workloads), view_sample=view_sample, capsule=capsule,
        path=path,
    )


def _network(src: str, path: str, data: Any) -> tuple[NetworkConfig, list[Partition]]:
    c = _Checker(src, path, ("network",), data)
    names = c.get("regions", list, list(DEFAULT_REGIONS),
                  check=lambda v: bool(v) and all(r in DEFAULT_REGIONS for r in v),
                  rule=f"must be a non-empty list of {', '.join(DEFAULT_REGIONS)}")
    weights = c.get("region_weights", list, [1.0] * len(names),
                    check=lambda v: len(v) == len(names) and all(
                        isinstance(x, (int, float)) and x >= 0 for x in v) and sum(v) > 0,
                    rule="must list one non-negative weight per region")
    regions = tuple(Region(r, *DEFAULT_REGIONS[r], float(w)) for r, w in zip(names, weights,
                                                                             strict=True))
    out = _overrides(c, NetworkConfig, ("regions", "region_weights", "partition"))
    for k in ("loss", "lossy_fraction", "lossy_extra_loss", "nat_fraction", "jitter_frac"):
        if k in out and not _prob(out[k]):
            c.fail(k, f"must be in [0, 1], got {out[k]!r}")
    for k, v in out.items():
        if isinstance(v, float) and v < 0:
            c.fail(k, f"must be ≥ 0, got {v!r}")
    cfg = NetworkConfig(regions=regions, **out)
    parts: list[Partition] = []
    raw = c.data.get("partition", [])
    if not isinstance(raw, list):
        c.fail("partition", "must be an array of tables: write [[network.partition]]")
    for i, p in enumerate(raw):
        pc = _Checker(src, path, ("network", "partition", i), p)
        start = pc.get("start_s", float, required=True, check=_nonneg, rule="must be ≥ 0")
        end = pc.get("end_s", float, required=True)
        if end <= start:
            pc.fail("end_s", f"must be after start_s, got {end!r}")
        groups = pc.get("groups", list, [], check=lambda v: all(
            isinstance(grp, list) and all(r in names for r in grp) for grp in v),
            rule="must be a list of lists of region names used by [network] regions")
        fraction = pc.get("fraction", float, 0.0, check=lambda v: 0.0 < v < 1.0,
                          rule="must be in (0, 1)")
        if bool(groups) == bool(fraction):
            pc.fail(None, "give exactly one of groups (region lists) or fraction")
        pc.finish()
        parts.append(Partition(start, end, tuple(tuple(grp) for grp in groups), fraction))
    return cfg, parts


def _churn(src: str, path: str, data: Any) -> ChurnConfig:
    c = _Checker(src, path, ("churn",), data)
    preset = c.get("preset", str, None, check=lambda v: v in PRESETS,
                   rule=f"must be one of {', '.join(PRESETS)}")
    session = downtime = None
    if preset is not None:
        session, downtime = PRESETS[preset]
    c.used.update(("session", "downtime"))
    if "session" in c.data:
        session = _dist(_Checker(src, path, ("churn", "session"), c.data["session"]))
    if "downtime" in c.data:
        downtime = _dist(_Checker(src, path, ("churn", "downtime"), c.data["downtime"]))
    if session is None or downtime is None:
        c.fail(None, "give a preset or both [churn.session] and [churn.downtime]")
    graceful = c.get("graceful_fraction", float, 0.5, check=_prob, rule="must be in [0, 1]")
    start = c.get("start_s", float, 0.0, check=_nonneg, rule="must be ≥ 0")
    same = c.get("same_identity", bool, True)
    c.finish()
    assert session is not None and downtime is not None
    return ChurnConfig(session, downtime, graceful, start, same)


_NEEDS = {"lookup": "dht", "provide": "dht", "get_providers": "dht", "fetch": "dht",
          "user_event": "gossip", "capsule": "capsule", "trigger": "capsule",
          "trigger_event": "capsule"}


def _workload(c: _Checker, protocols: list[str]) -> Workload:
    kind = c.get("kind", str, required=True, check=lambda v: v in WORKLOADS,
                 rule=f"must be one of {', '.join(WORKLOADS)}")
    need = _NEEDS.get(kind)
    if need is not None and need not in protocols:
        c.fail("kind", f"workload {kind!r} needs protocol {need!r} in [nodes] protocols")
    rate = c.get("rate_per_s", float, 0.0, check=_nonneg, rule="must be ≥ 0")
    start = c.get("start_s", float, 0.0, check=_nonneg, rule="must be ≥ 0")
    end = c.get("end_s", float, float("inf"), check=lambda v: bool(v > start),
                rule="must be after start_s")
    at = c.get("at_s", float, 0.0, check=_nonneg, rule="must be ≥ 0")
    count = c.get("count", int, 1, check=lambda v: v >= 1, rule="must be ≥ 1")
    size = c.get("size_bytes", int, 1 << 20 if kind == "fetch" else 0, check=_nonneg,
                 rule="must be ≥ 0")
    payload = c.get("payload_bytes", int, 64, check=lambda v: 0 <= v <= 8192,
                    rule="must be in [0, 8192]")
    limit = c.get("limit", int, 0, check=_nonneg, rule="must be ≥ 0")
    if kind in ("lookup", "get_providers", "user_event", "fetch", "capsule",
                "trigger_event") and rate == 0 \
            and "at_s" not in c.data:
        c.fail("rate_per_s", f"workload {kind!r} needs rate_per_s > 0 (or a one-shot at_s)")
    c.finish()
    return Workload(kind, rate, start, end, at, count, size, payload, limit)


def load(path: str | Path) -> Scenario:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ScenarioError(f"cannot read scenario {p}: {e.strerror or e}") from None
    return parse(text, str(p))


def bundled_dir() -> Path:
    return Path(__file__).with_name("scenarios")


def bundled() -> list[Path]:
    return sorted(bundled_dir().glob("*.toml"))


def resolve(name: str) -> Path:
    """A path, or the name of a bundled scenario (with or without .toml)."""
    p = Path(name)
    if p.exists():
        return p
    cand = bundled_dir() / (name if name.endswith(".toml") else name + ".toml")
    if cand.exists():
        return cand
    known = ", ".join(q.stem for q in bundled())
    raise ScenarioError(f"no scenario file {name!r} (bundled scenarios: {known})")
