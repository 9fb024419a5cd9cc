"""`colony cells`: the gossip cells this node knows (tier 1, docs/gossip.md "Cells").

Thin: parse, call the local daemon's API (overlay/runtime/api/routes_cells.py), render.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from overlay.cli.fmt import Subparsers
from overlay.cli.fmt import human_bytes as _human

DESCRIPTION = """\
Gossip membership is full inside a cell (SWIM); a cell over `[cell] cap` members
splits in two by the members' key prefix. Each cell's digest (members, and per
resource class the members offering it and its free capacity) is found through the
DHT. This lists the current cells this node knows, its own marked with *.

examples:
  colony cells
  colony cells --json
"""


def _free(name: str, free: float) -> str:
    return _human(int(free)) if name == "mem" else f"{free:g}"


def _row(c: dict[str, Any]) -> str:
    classes = c.get("classes") or {}
    parts = [f"{k} {v['members']}/{_free(k, float(v['free']))} free"
             for k, v in sorted(classes.items())]
    mark = "*" if c.get("mine") else " "
    return (f"{mark} {c['cell']:<16} {c['members']:>6} members  "
            f"{'; '.join(parts) or '-'}  (heard {c.get('age_s', 0):.0f} s ago)")


def _cells(args: argparse.Namespace) -> int:
    from overlay.client import Colony  # the SDK loads only when a command runs

    out = Colony.for_home(args.home, timeout_s=30.0).cells()
    if args.json:
        json.dump(out, sys.stdout, indent=2)
        print()
        return 0
    cells = out.get("cells") or []
    print(f"this node: cell {out['cell']} (cap {out['cap']}"
          f"{', publishes its digest' if out.get('publisher') else ''}); "
          f"{len(cells)} cell(s) known")
    for c in cells:
        print(_row(c))
    return 0


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("cells", parents=[common], help="list the gossip cells this node knows",
                       description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cells)
