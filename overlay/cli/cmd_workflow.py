"""`colony workflow submit FILE`: a DAG of capsules whose parents' outputs feed children."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from overlay.cli.cmd_capsule import describe, load_document
from overlay.cli.fmt import Subparsers

if TYPE_CHECKING:
    pass

DESCRIPTION = """\
Submit a workflow: named capsules whose `dependencies` name other capsules of the same
file. Custody starts a capsule only after every capsule it depends on succeeded (one
that failed fails its dependants, naming the step). A child finds each parent's
outputs, fetched by CID, at inputs/<parent name>/<output path> (a function parent's
return value is result.json); $COLONY_DEP_OUTPUTS also lists them as inputs/<cid>, one
per line, in dependency order. ColonyOS workflow JSON (a list of function specs with
nodename and conditions.dependencies) is accepted too.

example (pipeline.toml):
  name = "pipeline"
  [[capsules]]
  name = "make"
  command = ["sh", "-c", "seq 1 100 > numbers.txt"]
  outputs = ["numbers.txt"]
  [[capsules]]
  name = "sum"
  dependencies = ["make"]
  command = ["sh", "-c", "awk '{s+=$1} END {print s}' inputs/make/numbers.txt > sum.txt"]
  outputs = ["sum.txt"]

  colony workflow submit pipeline.toml --wait
"""


def _submit(args: argparse.Namespace) -> int:
    from overlay.client import Colony

    wf = load_document(args.file)
    colony = Colony.for_home(args.home, timeout_s=120.0)
    r = colony.submit_workflow(wf)
    if not args.wait:
        if args.json:
            json.dump(r, sys.stdout, indent=2)
            print()
        else:
            for item in r["capsules"]:
                print(f"{item['id']}  {item['name']}")
        return 0
    finals = []
    for item in r["capsules"]:
        if not args.json:
            print(f"{item['id']}  {item['name']}", flush=True)
        final: dict[str, Any] = {}
        for ev in colony.watch(item["id"]):
            final = ev
        final["name"] = item["name"]
        finals.append(final)
    if args.json:
        json.dump({"workflow": r["workflow"], "capsules": finals}, sys.stdout, indent=2)
        print()
    else:
        for f in finals:
            print()
            print(describe(f))
    return 0 if all(f.get("state") == "succeeded" for f in finals) else 1


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("workflow", parents=[common], help="submit a DAG of capsules",
                       description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ws = p.add_subparsers(dest="workflow_cmd", metavar="SUBCOMMAND", required=True)
    q = ws.add_parser("submit", parents=[common], help="sign and submit every capsule of FILE",
                      description=DESCRIPTION,
                      formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    q.add_argument("file", metavar="FILE", help="workflow file (.toml or .json), or -")
    q.add_argument("--wait", action="store_true",
                   help="wait for every capsule; exit 0 only if all succeeded")
    q.add_argument("--json", action="store_true", help="machine-readable output")
    q.set_defaults(func=_submit)
