"""`colony doctor`: is this node healthy and reachable, and what to do if not."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from overlay.cli.fmt import Subparsers
from overlay.core.errors import ColonyError

if TYPE_CHECKING:
    from overlay.runtime.edge import doctor_checks as dc

DESCRIPTION = """\
Check this node and say what to fix, one line per check (✓ fine, ✗ needs a look,
? could not be checked), with advice under each ✗:

  reachability   can other members dial this node back? (public / NAT'd / unknown)
  connections    peers connected directly, over WebRTC, or through a relay
  nat_type       the NAT's mapping behaviour from STUN ([edge] stun): endpoint-
                 independent (hole punching works) or symmetric (needs a relay)
  clock          clock offset against members, measured in dial-back exchanges
  dht_mode       DHT server mode on a NAT'd node (others could not reach it)
  disk, lmdb_map free disk and LMDB map headroom of the block store
  identity, api_loopback, bootstrap, profile, stun_servers   config sanity

With the daemon running it asks the daemon (GET /v1/doctor). Without it, it checks
what it can locally (config, disk, LMDB, a STUN probe) and marks the rest '?'.
Exit status 0 whatever the findings; 1 only when the doctor itself failed.

examples:
  colony doctor
  colony doctor --json | jq '.checks[] | select(.ok | not)'
"""


def _offline_report(home: Path, reason: str, stun: bool) -> dict[str, Any]:
    from overlay.runtime.edge import doctor_checks as dc
    from overlay.runtime.process import config as cfg

    if not (home / "identity.key").exists():
        where = next((p for p in (home, *home.parents) if p.exists()), Path("/"))
        none = [dc.Check("node", False, f"no Colony node at {home}",
                         "create one with `colony init` (`--profile edge` on small "
                         "devices), or point --home / COLONY_HOME at it"),
                dc.disk_check(where)]
        return {"daemon": False, "checks": [c.as_dict() for c in none]}
    checks: list[dc.Check] = [dc.Check("daemon", False, f"daemon not running: {reason}",
                                       "start it with `colony daemon` (or --detach)")]
    try:
        conf = cfg.load(home)
    except ColonyError as e:
        checks.append(dc.Check("config", False, str(e), "fix config.toml"))
        checks.append(dc.disk_check(home))
        return {"daemon": False, "checks": [c.as_dict() for c in checks]}
    checks += dc.config_checks(home, conf)
    map_size = file_size = None
    max_map = 1 << 40
    if (home / "blocks" / "data.mdb").exists():
        try:
            from store.blockstore import MAX_MAP_SIZE, BlockStore

            max_map = MAX_MAP_SIZE
            st = BlockStore(home / "blocks", readonly=True).stat()
            map_size, file_size = st.map_size, st.file_size
        except ColonyError as e:
            checks.append(dc.Check("lmdb_map", False, f"cannot open the block store: {e}"))
    checks += dc.store_checks(home, map_size, file_size, max_map)
    servers = [str(s) for s in conf.get("edge", {}).get("stun", [])]
    stun_result: dict[str, Any] | None = None
    if stun and servers:
        from overlay.runtime.edge.stun_probe import probe_sync

        stun_result = probe_sync(servers).as_dict()
        checks.append(dc.stun_check(stun_result))
    else:
        checks.append(dc.stun_check(None, "no STUN servers configured ([edge] stun)"
                                    if not servers else "skipped (--no-stun)"))
    for name in ("reachability", "connections", "clock"):
        checks.append(dc.Check(name, True, "needs the running daemon", checked=False))
    return {"daemon": False, "stun": stun_result, "checks": [c.as_dict() for c in checks]}


def _mark(c: dict[str, Any]) -> str:
    if not c.get("checked", True):
        return "?"
    return "✓" if c["ok"] else "✗"


def _render(report: dict[str, Any], home: Path) -> None:
    who = report.get("id", "")
    print(f"colony doctor: {home}" + (f" (peer {who})" if who else ""))
    for c in report["checks"]:
        print(f"  {_mark(c)} {c['name']:<14} {c['detail']}")
        if c.get("advice") and (not c["ok"] or not c.get("checked", True)):
            print(f"  {'':16} → {c['advice']}")
    reach = report.get("reachability")
    if reach:
        obs = reach.get("observed_addrs") or {}
        if obs:
            print("  observed addresses (as members see us):")
            for addr, n in obs.items():
                print(f"    {addr}  ({n} member{'s' if n != 1 else ''})")
    conns = report.get("connections")
    if conns and conns.get("peers"):
        print("  connections:")
        for peer, info in conns["peers"].items():
            extra = info.get("remote") or info.get("via") or info.get("detail") or ""
            if str(info.get("detail", "")).startswith("holepunch"):
                extra = f"{extra}  {info['detail']}" if extra != info["detail"] else extra
            print(f"    {peer}  {info.get('kind', '?'):<8} {extra}")
    punch = (conns or {}).get("holepunch")
    if punch and punch.get("attempts"):
        print(f"  hole punching (DCUtR): {punch['successes']}/{punch['attempts']} succeeded"
              + (f"; failures {punch['failures']}" if punch.get("failures") else "")
              + (f"; refused {punch['refusals']}" if punch.get("refusals") else ""))


def _doctor(args: argparse.Namespace) -> int:
    from overlay.client import ApiCallFailed, ApiUnavailable, Colony

    report: dict[str, Any]
    try:
        report = Colony.for_home(args.home, timeout_s=args.timeout).doctor()
    except ApiUnavailable as e:
        report = _offline_report(args.home, str(e), not args.no_stun)
    except ApiCallFailed as e:
        report = _offline_report(args.home, f"the daemon answered {e.status}: {e}",
                                 not args.no_stun)
    except ColonyError as e:  # e.g. a config.toml that does not parse
        report = _offline_report(args.home, str(e), not args.no_stun)
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
    else:
        _render(report, args.home)
    return 0


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "doctor", parents=[common], help="check reachability, NAT, connections, clock, "
        "disk and config; advise", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.add_argument("--no-stun", action="store_true",
                   help="without a daemon: skip the STUN probe (no UDP sent)")
    p.add_argument("--timeout", type=float, default=20.0, metavar="S",
                   help="seconds to wait for the daemon's answer (default 20)")
    p.set_defaults(func=_doctor)
