"""Checks `colony doctor` runs on the node's own machine.

Shared by the daemon's `/v1/doctor` route (overlay/runtime/api/routes_doctor.py) and by
`colony doctor` when no daemon answers, so both say the same about the things
that need no network: configuration, identity file, disk, LMDB map headroom, and
the NAT's mapping behaviour from a STUN probe. Each check is a `Check`: ok or not,
one line saying what was found, and advice when something should change.

Thresholds (why): a node needs room to fetch a dataset and to let LMDB grow its map
(it doubles it, sparse, but written pages need disk): below `MIN_DISK_FREE_BYTES`
or `MIN_DISK_FREE_RATIO` a fetch can fail half-way. Clock skew beyond
`MAX_CLOCK_SKEW_S` breaks certificate and record expiry checks (DESIGN §3: signed
objects expire).
"""

from __future__ import annotations

import ipaddress
import os
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from overlay.runtime.jsontypes import JsonObject
from overlay.runtime.process.config import Config

MIN_DISK_FREE_BYTES = 1 << 30
MIN_DISK_FREE_RATIO = 0.05
MAX_CLOCK_SKEW_S = 2.0
#: Map use above which we say the next growth is close (informational).
MAP_USE_WARN_RATIO = 0.9
SMALL_DEVICE_MEM_BYTES = 2 << 30


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str
    advice: str = ""
    #: False: could not be checked (e.g. needs the running daemon); `ok` is then True.
    checked: bool = True

    def as_dict(self) -> JsonObject:
        return asdict(self)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def config_checks(home: Path, conf: Config) -> list[Check]:
    out: list[Check] = []
    key = home / "identity.key"
    if not key.exists():
        out.append(Check("identity", False, f"no identity key at {key}",
                         "run `colony init` (or pass --home)"))
    else:
        mode = key.stat().st_mode & 0o777
        out.append(Check("identity", mode & 0o077 == 0, f"{key} mode {mode:03o}",
                         "" if mode & 0o077 == 0 else f"chmod 600 {key}"))
    api = str(conf["api"]["listen"])
    host = api.rpartition(":")[0]
    out.append(Check("api_loopback", _is_loopback(host), f"control API on {api}",
                     "" if _is_loopback(host) else
                     "keep [api] listen on 127.0.0.1: the token is the only protection"))
    boot = list(conf["network"]["bootstrap"])
    saved = (home / "peers.json").exists()
    out.append(Check("bootstrap", bool(boot) or saved,
                     f"{len(boot)} bootstrap address(es); saved peers: {'yes' if saved else 'no'}",
                     "" if boot or saved else
                     "add [network] bootstrap = [\"/ip4/…/tcp/4001/p2p/12D3…\"] to join a colony"))
    node_profile = str(conf.get("node", {}).get("profile", "lan"))
    gossip_profile = str(conf["gossip"]["profile"])
    mem = _mem_total()
    small = mem is not None and mem < SMALL_DEVICE_MEM_BYTES
    detail = f"node profile {node_profile}, gossip profile {gossip_profile}"
    if mem is not None:
        detail += f", {mem / (1 << 30):.1f} GiB RAM"
    advice = ""
    if small and node_profile != "edge":
        advice = "small device: set [node] profile = \"edge\" (docs/edge.md)"
    elif node_profile != gossip_profile and node_profile != "lan":
        advice = (f"[gossip] profile {gossip_profile} overrides the {node_profile} preset; "
                  "remove it from config.toml unless meant")
    out.append(Check("profile", not advice, detail, advice))
    stun = list(conf.get("edge", {}).get("stun", []))
    out.append(Check("stun_servers", len(stun) >= 2,
                     f"{len(stun)} STUN server(s) configured",
                     "" if len(stun) >= 2 else
                     "set [edge] stun to two servers (different IPs) to learn the NAT type"))
    return out


def _mem_total() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError):
        return None


def disk_check(home: Path) -> Check:
    try:
        du = shutil.disk_usage(home)
    except OSError as e:
        return Check("disk", False, f"cannot read disk usage of {home}: {e}")
    ratio = du.free / du.total if du.total else 0.0
    ok = du.free >= MIN_DISK_FREE_BYTES and ratio >= MIN_DISK_FREE_RATIO
    return Check("disk", ok, f"{_gib(du.free)} free of {_gib(du.total)} ({ratio:.0%}) at {home}",
                 "" if ok else "free some space: fetches and LMDB map growth need it")


def map_check(map_size: int, file_size: int, max_map: int, disk_free: int | None) -> Check:
    """LMDB: the map doubles when full, up to `max_map`; written pages need disk."""
    used = file_size / map_size if map_size else 0.0
    detail = (f"LMDB data {_gib(file_size)} in a {_gib(map_size)} map ({used:.0%}); "
              f"grows ×2 when full, up to {_gib(max_map)}")
    if map_size * 2 > max_map and used > MAP_USE_WARN_RATIO:
        return Check("lmdb_map", False, detail, "the store is at its size limit: run gc")
    if disk_free is not None and used > MAP_USE_WARN_RATIO and disk_free < map_size:
        return Check("lmdb_map", False, detail,
                     "the next map growth may not fit on the disk: free space or run gc")
    return Check("lmdb_map", True, detail)


def store_checks(home: Path, map_size: int | None, file_size: int | None,
                 max_map: int) -> list[Check]:
    disk = disk_check(home)
    out = [disk]
    if map_size is None or file_size is None:
        out.append(Check("lmdb_map", True, "no block store yet (created at first start)",
                         checked=False))
    else:
        try:
            free: int | None = shutil.disk_usage(home).free
        except OSError:
            free = None
        out.append(map_check(map_size, file_size, max_map, free))
    return out


def stun_check(result: Mapping[str, object] | None, error: str = "") -> Check:
    if result is None:
        return Check("nat_type", True, error or "no STUN probe run", checked=False)
    nat = str(result.get("nat_type", "unknown"))
    seen = result.get("mapped")
    mapped = ", ".join(f"{s} saw {m}" for s, m in seen.items()) if isinstance(seen, dict) else ""
    detail = f"NAT mapping: {nat} (local {result.get('local')}; {mapped or 'no answer'})"
    if nat == "symmetric":
        return Check("nat_type", False, detail, "symmetric NAT: direct WebRTC paths will "
                     "mostly fail; peers reach this node through a relay ([relay] on a "
                     "public member)")
    if nat == "unknown":
        return Check("nat_type", False, detail, str(result.get("error") or
                     "STUN servers did not answer: check [edge] stun and UDP egress"))
    return Check("nat_type", True, detail)


def clock_check(offsets: dict[str, float], uncertainty: dict[str, float] | None = None
                ) -> Check:
    """Worst offset of a member's clock from ours; skewed only beyond the error bar."""
    if not offsets:
        return Check("clock", True, "no peer clock sample yet", checked=False)
    unc = uncertainty or {}
    worst_peer, worst = max(offsets.items(), key=lambda kv: abs(kv[1]))
    err = unc.get(worst_peer, 0.0)
    ok = abs(worst) - err <= MAX_CLOCK_SKEW_S
    return Check("clock", ok, f"clock offset vs {len(offsets)} member(s): worst "
                 f"{worst:+.3f} s ± {err:.3f} ({worst_peer[-8:]})",
                 "" if ok else "synchronise the clock (NTP/chrony): signatures and "
                 "records carry expiry times")


def _gib(n: float) -> str:
    if n >= 1 << 40:
        return f"{n / (1 << 40):.1f} TiB"
    if n >= 1 << 30:
        return f"{n / (1 << 30):.1f} GiB"
    return f"{n / (1 << 20):.0f} MiB"
