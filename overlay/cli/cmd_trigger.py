"""`colony trigger|cron|generator …`: capsules launched by events and schedules.

Thin: parse, call the local daemon's API (overlay/runtime/api/routes_triggers.py), render.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from overlay.cli.cmd_capsule import load_document
from overlay.cli.fmt import Command, Subparsers

if TYPE_CHECKING:
    from overlay.client import Colony

_FMT = argparse.RawDescriptionHelpFormatter

COMMON_HELP = """\
SPEC is the capsule spec to launch (TOML or JSON, as for `colony capsule submit`), or a
workflow to launch whole, `{"name": …, "capsules": [spec, …]}` with `dependencies` by
name (a generator's batch then feeds one workflow); its strings may use variables,
replaced for each firing:

  ${event.name} ${event.payload} ${event.sender} ${event.lamport} ${event.seq}
  ${tick} ${tick.iso}             the cron tick (POSIX seconds, ISO 8601 UTC)
  ${count} ${payloads}            a generator's batch: size, JSON list of payloads
  ${trigger.id} ${trigger.name}   $$ is a literal $

Every launched capsule also gets COLONY_TRIGGER_ID and COLONY_EVENT (the event or
events as JSON) in its environment. A definition that cannot work (a schedule or
filter that does not parse, an unknown variable, a template that gives no valid
spec) is refused before anything is signed.

Exactly once: a launched capsule's id is derived from (trigger, event), so whatever
the number of nodes that see an event, and across the crash of the node running the
trigger, custody keeps one capsule per event (docs/triggers.md).
"""

TRIGGER_DESC = f"""\
Launch a capsule on every matching user event (`colony events send NAME PAYLOAD`
from any node) or topic message (`--on topic:NAME`; `colony topic pub NAME MESSAGE`).
The trigger is itself a capsule: signed with this node's key, kept by
its custodians, leased to one node that fires it, re-placed if that node dies.

examples:
  colony trigger add --on user:deploy job.toml
  colony trigger add --on user:reading --filter 'json.celsius > 30' alert.toml
  colony trigger add --on topic:uploads job.toml   # each message of topic uploads
  colony trigger ls
  colony trigger show bafkrei…
  colony trigger rm bafkrei…

A filter is an expression over the event: name, payload (text), sender, lamport,
seq, json (the payload parsed as JSON: json.a.b); ==, !=, <, <=, >, >=, in, not in,
and, or, not; string and number literals.

{COMMON_HELP}"""

CRON_DESC = f"""\
Launch a capsule on a schedule: 5 cron fields (minute hour day-of-month month
day-of-week, in UTC), a macro (@hourly, @daily, @weekly, @monthly, @yearly) or
`@every 30s` (5m, 1h30m; counted from the cron's creation). Each tick fires once
colony-wide. Ticks missed while no node ran the cron: --catchup skip (default) fires
only those of the last two minutes (a re-placement gap), --catchup all fires every
missed tick (at most 100).

examples:
  colony cron add '*/5 * * * *' report.toml
  colony cron add '@every 30s' probe.toml --catchup all
  colony cron next bafkrei…

{COMMON_HELP}"""

GENERATOR_DESC = f"""\
Collect matching user events and launch one capsule for a batch: when --count events
were collected, or --within seconds after the first (whichever comes first; at most
64 events or 1 MiB of payloads). The batch is in ${{payloads}} and COLONY_EVENT.

examples:
  colony generator add --on user:reading --count 10 batch.toml
  colony generator add --on user:upload --within 60 index.toml

{COMMON_HELP}"""


def _colony(args: argparse.Namespace) -> Colony:
    from overlay.client import Colony

    return Colony.for_home(args.home, timeout_s=60.0)


def _out(args: argparse.Namespace, obj: object, text: str) -> None:
    if args.json:
        json.dump(obj, sys.stdout, indent=2)
        print()
    else:
        print(text)


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def describe(row: dict[str, Any]) -> str:
    lines = [f"id:       {row['id']}"]
    if row.get("name"):
        lines.append(f"name:     {row['name']}")
    lines.append(f"state:    {row['state']}")
    lines.append(f"on:       {row['on']}" + (f" {row['schedule']!r}" if row.get("schedule")
                                              else ""))  # fmt: skip
    if row.get("filter"):
        lines.append(f"filter:   {row['filter']}")
    if row.get("count", 1) > 1 or row.get("within_s"):
        lines.append(f"batch:    {row['count']} events or {row['within_s']:g} s")
    if row.get("schedule"):
        lines.append(f"catchup:  {row.get('catchup')}")
    for t in row.get("next") or []:
        lines.append(f"next:     {_when(t)}")
    if row.get("fired_here"):
        lines.append(f"fired:    {row['fired_here']} capsules from this node")
    lines.append(f"template: {json.dumps(row.get('template'))}")
    return "\n".join(lines)


def _add(args: argparse.Namespace, on: str, schedule: str | None = None) -> int:
    template = load_document(args.spec)
    row = _colony(args).add_trigger(
        template, on=on, name=args.name, schedule=schedule,
        filter=getattr(args, "filter", None), catchup=getattr(args, "catchup", None),
        count=getattr(args, "count", None), within_s=getattr(args, "within", None))
    _out(args, row, row["id"])
    return 0


def _trigger_add(args: argparse.Namespace) -> int:
    on = args.on if ":" in args.on or args.on == "user" else f"user:{args.on}"
    return _add(args, on)


def _cron_add(args: argparse.Namespace) -> int:
    return _add(args, "cron", args.schedule)


def _ls(kind: str) -> Command:
    def run(args: argparse.Namespace) -> int:
        rows = [r for r in _colony(args).triggers() if _kind_of(r) == kind]
        if args.json:
            _out(args, rows, "")
            return 0
        if not rows:
            print(f"no {kind}s created through or held by this node")
            return 0
        for r in rows:
            what = r["schedule"] if r.get("schedule") else r["on"]
            print(f"{r['id']}  {r['state']:<10} {what:<24} {r.get('name') or ''}")
        return 0

    return run


def _kind_of(row: dict[str, Any]) -> str:
    if row.get("schedule"):
        return "cron"
    if row.get("count", 1) > 1 or row.get("within_s"):
        return "generator"
    return "trigger"


def _show(args: argparse.Namespace) -> int:
    row = _colony(args).trigger(args.id)
    _out(args, row, describe(row))
    return 0


def _next(args: argparse.Namespace) -> int:
    row = _colony(args).trigger(args.id)
    if not row.get("schedule"):
        print(f"{args.id} is not a cron", file=sys.stderr)
        return 1
    ticks = row.get("next") or []
    _out(args, ticks, "\n".join(f"{_when(t)}  (in {t - time.time():.0f} s)" for t in ticks))
    return 0


def _rm(args: argparse.Namespace) -> int:
    out = _colony(args).remove_trigger(args.id)
    _out(args, out, f"{out['id']} {out['state']}")
    return 0


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    for name, help_, desc in (
        ("trigger", "launch capsules on user events: add, ls, show, rm", TRIGGER_DESC),
        ("cron", "launch capsules on a schedule: add, ls, show, next, rm", CRON_DESC),
        ("generator", "launch a capsule per batch of events: add, ls, show, rm", GENERATOR_DESC),
    ):
        p = sub.add_parser(name, parents=[common], formatter_class=_FMT, help=help_,
                           description=desc)  # fmt: skip
        cs = p.add_subparsers(dest=f"{name}_cmd", metavar="SUBCOMMAND", required=True)

        def cmd(verb: str, help_: str, func: Command,
                cs: Any = cs) -> argparse.ArgumentParser:
            q: argparse.ArgumentParser = cs.add_parser(verb, parents=[common], help=help_,
                                                       description=help_, formatter_class=_FMT)
            q.add_argument("--json", action="store_true", help="machine-readable output")
            q.set_defaults(func=func)
            return q

        if name == "cron":
            q = cmd("add", "create a cron: SCHEDULE SPEC", _cron_add)
            q.add_argument("schedule", metavar="SCHEDULE",
                           help="'*/5 * * * *', '@hourly' or '@every 30s' (quote it)")
            q.add_argument("--catchup", choices=["skip", "all"],
                           help="missed ticks: skip (default) or fire all (at most 100)")
        else:
            q = cmd("add", f"create a {name}: --on EVENT SPEC", _trigger_add)
            q.add_argument("--on", required=True, metavar="EVENT",
                           help="user:NAME or NAME (a user event; `user` = any), or topic:NAME")
            q.add_argument("--filter", metavar="EXPR", help="expression the event must match")
            if name == "generator":
                q.add_argument("--count", type=int, help="events per batch (at most 64)")
                q.add_argument("--within", type=float, metavar="SECONDS",
                               help="fire a partial batch this long after its first event")
        q.add_argument("spec", metavar="SPEC", help="capsule spec to launch (.toml/.json, - stdin)")
        q.add_argument("--name", default="", help="a name shown in ls")
        cmd("ls", f"{name}s created through or held by this node", _ls(name))
        q = cmd("show", f"one {name}: definition, state, next ticks", _show)
        q.add_argument("id", metavar="ID")
        if name == "cron":
            q = cmd("next", "the next ticks of a cron", _next)
            q.add_argument("id", metavar="ID")
        q = cmd("rm", f"remove a {name} (from the node it was created through)", _rm)
        q.add_argument("id", metavar="ID")
