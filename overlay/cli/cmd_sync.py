"""`colony sync push|pull|status LABEL DIR`: directories by signed, mutable labels.

Thin: parse, call the local daemon's API (overlay/runtime/api/routes_sync.py), render.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from overlay.cli.fmt import Command, Subparsers

if TYPE_CHECKING:
    from overlay.client import Colony

_FMT = argparse.RawDescriptionHelpFormatter

DESCRIPTION = """\
A label is a signed record in the DHT naming the current version (a CID) of a
directory: the colony's mutable names, as IPNS names are a key's. Any member with the
submit role may move a label of its colony (in open mode, anyone).

  pull LABEL DIR     fetch the label's version (only blocks this node lacks) into DIR,
                     a new directory; remembers it as DIR's base
  push LABEL DIR     import DIR (unchanged files cost nothing: same blocks), provide it
                     and move the label from DIR's base to it
  status LABEL [DIR] the label's version, sequence number, writer; DIR's base

When the label moved since DIR's base (someone else pushed), --conflict decides:
  keep-newest  (default) your push wins; the version it replaced is kept as the
               record's prev, and stays in the store of the node that pushed it
  fail         refuse, naming both versions; your version stays pinned here
  both         push your tree plus .conflict-<their cid>/ holding theirs

examples:
  colony sync push results ./results
  colony sync pull results ./copy
  colony sync push results ./copy --conflict fail
  colony sync status results ./copy

Paths are on the daemon's host (as for publish). See docs/sync.md.
"""


def _colony(args: argparse.Namespace) -> Colony:
    from overlay.client import Colony

    return Colony.for_home(args.home, timeout_s=600.0)


def _out(args: argparse.Namespace, obj: dict[str, Any], text: str) -> None:
    if args.json:
        json.dump(obj, sys.stdout, indent=2)
        print()
    else:
        print(text)


def _pull(args: argparse.Namespace) -> int:
    r = _colony(args).sync_pull(args.label, Path(args.dir))
    _out(args, r, f"{r['label']} seq {r['seq']} → {r['cid']} written to {r['dir']}")
    return 0


def _push(args: argparse.Namespace) -> int:
    r = _colony(args).sync_push(args.label, Path(args.dir), base=args.base,
                                conflict=args.conflict)
    note = f" (conflict: {r['conflict']})" if r.get("conflict") else ""
    _out(args, r, f"{r['label']} seq {r['seq']} → {r['cid']}{note}")
    return 0


def _status(args: argparse.Namespace) -> int:
    r = _colony(args).sync_status(args.label, Path(args.dir) if args.dir else None)
    if r.get("cid") is None:
        _out(args, r, f"{r['label']}: not set")
        return 0
    lines = [f"label:   {r['label']}", f"version: {r['cid']} (seq {r['seq']})",
             f"writer:  {r.get('writer')}"]
    if r.get("prev"):
        lines.append(f"prev:    {r['prev']}")
    if args.dir:
        lines.append(f"dir:     {args.dir}: {r['state']}"
                     + (f" (base {r['base']})" if r.get("base") else ""))
    _out(args, r, "\n".join(lines))
    return 0


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("sync", parents=[common], formatter_class=_FMT,
                       help="directories by signed, mutable labels: push, pull, status",
                       description=DESCRIPTION)  # fmt: skip
    cs = p.add_subparsers(dest="sync_cmd", metavar="SUBCOMMAND", required=True)

    def cmd(name: str, help_: str, func: Command) -> argparse.ArgumentParser:
        q: argparse.ArgumentParser = cs.add_parser(name, parents=[common], help=help_,
                                                   description=help_, formatter_class=_FMT)
        q.add_argument("--json", action="store_true", help="machine-readable output")
        q.add_argument("label", metavar="LABEL")
        q.set_defaults(func=func)
        return q

    q = cmd("pull", "write the label's current version into DIR (a new directory)", _pull)
    q.add_argument("dir", metavar="DIR")
    q = cmd("push", "import DIR and move the label to it", _push)
    q.add_argument("dir", metavar="DIR")
    q.add_argument("--conflict", choices=["keep-newest", "fail", "both"], default="keep-newest",
                   help="when the label moved since DIR's base (default keep-newest)")
    q.add_argument("--base", metavar="CID", help="the version DIR was made from "
                   "(default: what this node last pulled or pushed at DIR)")
    q = cmd("status", "the label's current version; DIR's base", _status)
    q.add_argument("dir", metavar="DIR", nargs="?")
