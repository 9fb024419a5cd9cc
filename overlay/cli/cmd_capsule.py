"""`colony capsule …`: submit signed task capsules to the colony and follow them.

Thin: parse, call the local daemon's API (overlay/runtime/api/routes_capsules.py), render.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from overlay.cli.fmt import Command, Subparsers
from overlay.core.errors import ColonyError

if TYPE_CHECKING:
    from overlay.client import Colony

_FMT = argparse.RawDescriptionHelpFormatter

SPEC_HELP = """\
A spec is TOML or JSON (by file extension; `-` reads JSON or TOML from stdin):

  # hello.toml
  name = "hello"
  command = ["sh", "-c", "tr a-z A-Z < inputs/$IN > out.txt"]
  env = { IN = "bafkrei…" }
  inputs = ["bafkrei…"]            # CIDs, fetched and materialised as inputs/<cid>
  outputs = ["out.txt"]            # paths in the work dir, imported as CIDs
  maxexectime_s = 60               # one attempt's limit (0 = none)
  maxwaittime_s = 120              # fail if no executor takes it in time (0 = wait)
  maxretries = 3                   # leases that may be lost before it fails
  [conditions]                     # where it may run
  executor = "subprocess"          # or "function", "slurm"
  cpu = 1
  mem_mib = 512
  labels = { site = "lab" }

A Python function instead of a command: function = "package.module:func",
args = [...], kwargs = {...}; its JSON return value is outputs[0].
ColonyOS function-spec JSON (funcname, args, conditions.executortype, cpu "500m",
mem "2Gi", maxwaittime, maxexectime, maxretries) is accepted as well.
"""

DESCRIPTION = f"""\
Run signed task capsules anywhere in the colony. The local node signs the spec with
its key, the capsule's custodians (the 3 nodes closest to its id in the DHT) place it
on a node whose gossiped resources fit its conditions, and the executor's signed
receipt carries the exit status, the output CIDs and the log CID.

examples:
  colony capsule submit hello.toml --wait     # prints the id, then the outcome
  colony capsule ps
  colony capsule get bafkrei…
  colony capsule logs bafkrei… --follow
  colony capsule wait bafkrei… && colony fetch <output CID> -o out.txt
  colony capsule cancel bafkrei…

{SPEC_HELP}"""

END_STATES = ("succeeded", "failed", "cancelled")


def _colony(args: argparse.Namespace, timeout_s: float = 120.0) -> Colony:
    from overlay.client import Colony

    return Colony.for_home(args.home, timeout_s=timeout_s)


def load_document(path: str) -> Any:
    """A TOML or JSON document from a file (by extension) or stdin (`-`)."""
    import tomllib  # ~3 ms: only for commands that read a spec

    if path == "-":
        text = sys.stdin.read()
        name = "stdin"
    else:
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as e:
            raise ColonyError(f"{path}: {e.strerror or e}") from None
        name = str(p)
    if name.endswith(".toml"):
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ColonyError(f"{name}: not valid TOML: {e}") from None
    try:
        return json.loads(text)
    except ValueError as e:
        if name.endswith(".json"):
            raise ColonyError(f"{name}: not valid JSON: {e}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        raise ColonyError(f"{name}: neither JSON nor TOML") from None


def _json_out(obj: object) -> None:
    json.dump(obj, sys.stdout, indent=2)
    print()


def _short(text: str | None, n: int = 12) -> str:
    if not text:
        return "-"
    return text if len(text) <= n else "…" + text[-n:]


def describe(row: dict[str, Any]) -> str:
    """A capsule record in a few human lines."""
    lines = [f"id:        {row['id']}"]
    if row.get("name"):
        lines.append(f"name:      {row['name']}")
    state = row["state"]
    if row.get("reason"):
        state += f" ({row['reason']})"
    lines.append(f"state:     {state}")
    if row.get("placement"):
        lines.append(f"placement: cannot place now: {row['placement']}")
    if row.get("executor"):
        lines.append(f"executor:  {row['executor']} (lease token {row.get('token')}, "
                     f"{row.get('attempts', 0)} lost before)")  # fmt: skip
    if row.get("exit_status") is not None:
        lines.append(f"exit:      {row['exit_status']}")
    for i, cid in enumerate(row.get("outputs") or []):
        names = row.get("declared_outputs") or []
        label = names[i] if i < len(names) and not row.get("function") else f"output {i}"
        lines.append(f"output:    {cid}  {label}")
    if row.get("log_cid"):
        lines.append(f"log:       {row['log_cid']}")
    if row.get("started") and row.get("finished"):
        lines.append(f"ran:       {row['finished'] - row['started']:.3f} s")
    return "\n".join(lines)


def _follow_wait(items: Iterator[dict[str, Any]], as_json: bool) -> dict[str, Any]:
    final: dict[str, Any] = {}
    for item in items:
        final = item
        if item.get("done"):
            break
        if not as_json:
            extra = f": cannot place now: {item['placement']}" if item.get("placement") else ""
            on = f" on {_short(item.get('executor'), 16)}" if item.get("executor") else ""
            print(f"{item['state']}{on}{extra}", file=sys.stderr, flush=True)
    return final


def _exit_code(row: dict[str, Any]) -> int:
    return 0 if row.get("state") == "succeeded" else 1


# ---------------------------------------------------------------- commands


def _submit(args: argparse.Namespace) -> int:
    spec = load_document(args.spec)
    r = _colony(args).submit(spec, nonce=args.nonce).raw
    if not args.wait:
        if args.json:
            _json_out(r)
        else:
            print(r["id"])
            if r.get("placement"):
                print(f"note: no member can run it now: {r['placement']} "
                      "(it waits for one to appear)", file=sys.stderr)  # fmt: skip
        return 0
    if not args.json:
        print(r["id"], flush=True)
        if r.get("placement"):
            print(f"waiting: {r['placement']}", file=sys.stderr, flush=True)
    final = _wait_for(args, r["id"])
    if args.json:
        _json_out(final)
    else:
        print(describe(final))
    return _exit_code(final)


def _wait_for(args: argparse.Namespace, cid: str) -> dict[str, Any]:
    timeout = getattr(args, "timeout", None) or None
    return _follow_wait(_colony(args).watch(cid, timeout_s=timeout), args.json)


def _wait(args: argparse.Namespace) -> int:
    final = _wait_for(args, args.id)
    if args.json:
        _json_out(final)
    else:
        print(describe(final))
    return _exit_code(final)


def _ps(args: argparse.Namespace) -> int:
    rows = [c.raw for c in _colony(args).ps()]
    if args.json:
        _json_out(rows)
        return 0
    if not rows:
        print("(no capsules submitted through or held by this node)")
        return 0
    print(f"{'ID':<62} {'NAME':<16} {'STATE':<10} {'EXIT':>5} {'EXECUTOR':<14} ROLE")
    for r in rows:
        ex = "-" if r.get("exit_status") is None else str(r["exit_status"])
        print(f"{r['id']:<62} {(r.get('name') or '-')[:16]:<16} {r['state']:<10} {ex:>5} "
              f"{_short(r.get('executor')):<14} {r.get('role', '')}")  # fmt: skip
    return 0


def _get(args: argparse.Namespace) -> int:
    row = _colony(args).capsule(args.id).raw
    if args.json:
        _json_out(row)
    else:
        print(describe(row))
    return 0


def _logs(args: argparse.Namespace) -> int:
    final: dict[str, Any] = {}
    for item in _colony(args).logs(args.id, follow=args.follow):
        if args.json:
            print(json.dumps(item), flush=True)
        elif "data" in item:
            sys.stdout.write(item["data"])
            sys.stdout.flush()
        elif "attempt" in item:
            print(f"[colony] lease re-offered: attempt with token {item['attempt']} on "
                  f"{item['executor']}", file=sys.stderr, flush=True)  # fmt: skip
        if item.get("done"):
            final = item
    if not args.json and final.get("state") not in END_STATES:
        print(f"[colony] capsule is {final.get('state')}; use --follow to wait for more",
              file=sys.stderr)  # fmt: skip
    return 0


def _cancel(args: argparse.Namespace) -> int:
    r = _colony(args).cancel(args.id, args.reason)
    if args.json:
        _json_out(r)
    else:
        print(f"{r['id']}: {r['state']}" + (f" ({r['reason']})" if r.get("reason") else ""))
    return 0 if r["state"] in END_STATES else 1


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("capsule", parents=[common], formatter_class=_FMT,
                       help="run task capsules in the colony: submit, ps, get, logs, wait, cancel",
                       description=DESCRIPTION)  # fmt: skip
    cs = p.add_subparsers(dest="capsule_cmd", metavar="SUBCOMMAND", required=True)

    def cmd(name: str, help_: str, func: Command, desc: str = "") -> argparse.ArgumentParser:
        q: argparse.ArgumentParser = cs.add_parser(
            name, parents=[common], help=help_, description=desc or help_, formatter_class=_FMT)
        q.add_argument("--json", action="store_true", help="machine-readable output")
        q.set_defaults(func=func)
        return q

    q = cmd("submit", "sign a spec with this node's key and submit it", _submit,
            "Sign SPEC with this node's key and hand it to its custodians; prints the "
            "capsule id.\nExit status with --wait: 0 when the capsule succeeded, 1 "
            "otherwise.\n\n" + SPEC_HELP)  # fmt: skip
    q.add_argument("spec", metavar="SPEC", help="spec file (.toml or .json), or - for stdin")
    q.add_argument("--wait", action="store_true", help="wait for the outcome and print it")
    q.add_argument("--nonce", type=int, help="fixed nonce: re-submitting the same spec with "
                   "the same nonce is the same capsule (deduplicated); default random")
    cmd("ps", "capsules submitted through or kept (as custodian) by this node", _ps)
    q = cmd("get", "state, executor, exit status, output and log CIDs of a capsule", _get)
    q.add_argument("id", metavar="ID")
    q = cmd("logs", "print a capsule's stdout+stderr (from its executor while it runs)",
            _logs)  # fmt: skip
    q.add_argument("id", metavar="ID")
    q.add_argument("-f", "--follow", action="store_true",
                   help="keep printing until the capsule ends")
    q = cmd("wait", "wait until a capsule ends; exit 0 if it succeeded", _wait)
    q.add_argument("id", metavar="ID")
    q.add_argument("--timeout", type=float, help="give up after this many seconds")
    q = cmd("cancel", "cancel a capsule (only from the node it was submitted through)",
            _cancel)  # fmt: skip
    q.add_argument("id", metavar="ID")
    q.add_argument("--reason", default="", help="recorded in the capsule's state")
