"""`colony topic sub|pub|ls`: publish/subscribe over the tier-2 overlay.

Thin: parse, call the local daemon's API (overlay/runtime/api/routes_topics.py), render.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from typing import TYPE_CHECKING, Any

from overlay.cli.fmt import Command, Subparsers

if TYPE_CHECKING:
    from overlay.client import Colony

_FMT = argparse.RawDescriptionHelpFormatter

DESCRIPTION = """\
Topics carry small messages (≤ 60 KiB) from any publisher to every subscriber of the
topic, across the colony: each topic is a HyParView swarm with a Plumtree broadcast
tree over it (docs/gossip.md "Topics in the daemon"). Messages are signed by the
publishing node; each subscriber gets each message once, in its publisher's order
(a `gap` says how many of that publisher's messages were lost before it).

  sub TOPIC          print the topic's messages as they come (Ctrl-C to stop)
  pub TOPIC MESSAGE  publish MESSAGE (or stdin with -)
  ls                 topics this node is in: neighbours, counters

In a colony, publishing needs the certificate role `submit` and subscribing `member`
(changed per topic in [topics] of config.toml).

examples:
  colony topic sub alerts
  colony topic sub alerts --json            # NDJSON, first line {"subscribed": true}
  colony topic pub alerts "disk full on n3"
  tail -n1 build.log | colony topic pub builds -
"""


def _colony(args: argparse.Namespace) -> Colony:
    from overlay.client import Colony  # the SDK loads only when a command runs

    return Colony.for_home(args.home, timeout_s=30.0)


def _line(m: dict[str, Any]) -> str:
    when = datetime.datetime.fromtimestamp(float(m["time"])).strftime("%H:%M:%S")
    pub = str(m["publisher"])
    gap = f" (after {m['gap']} lost)" if m.get("gap") else ""
    return f"{when} {pub[:6]}…{pub[-6:]} #{m['seq']}{gap}: {m['data']}"


def _sub(args: argparse.Namespace) -> int:
    seen = 0
    for item in _colony(args).topic_subscribe(args.topic, base64_data=args.base64):
        if args.json:
            print(json.dumps(item), flush=True)
        elif item.get("subscribed"):
            print(f"subscribed to {args.topic}; Ctrl-C to stop", file=sys.stderr, flush=True)
        else:
            print(_line(item), flush=True)
        if not item.get("subscribed"):
            seen += 1
            if args.count and seen >= args.count:
                return 0
    return 0


def _pub(args: argparse.Namespace) -> int:
    data: bytes | str = sys.stdin.buffer.read() if args.message == "-" else args.message
    r = _colony(args).topic_publish(args.topic, data)
    if args.json:
        print(json.dumps(r, indent=2))
    else:
        print(f"published to {r['topic']}: #{r['seq']}, {r['bytes']} bytes, id {r['id'][:16]}…")
    return 0


def _ls(args: argparse.Namespace) -> int:
    rows = _colony(args).topics()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no topics (colony topic sub TOPIC joins one)")
        return 0
    print(f"{'TOPIC':24} {'SUBS':>4} {'ACTIVE':>6} {'PASSIVE':>7} {'EAGER':>5} {'LAZY':>4} "
          f"{'DELIVERED':>9} {'PUBLISHED':>9}")
    for r in rows:
        print(f"{r['topic'][:24]:24} {r['subscribers']:>4} {len(r['active']):>6} "
              f"{r['passive']:>7} {r['eager']:>5} {r['lazy']:>4} {r['delivered']:>9} "
              f"{r['published']:>9}")
    return 0


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("topic", parents=[common], formatter_class=_FMT,
                       help="publish/subscribe to topics: sub, pub, ls",
                       description=DESCRIPTION)  # fmt: skip
    cs = p.add_subparsers(dest="topic_cmd", metavar="SUBCOMMAND", required=True)

    def cmd(name: str, help_: str, func: Command) -> argparse.ArgumentParser:
        q: argparse.ArgumentParser = cs.add_parser(name, parents=[common], help=help_,
                                                   description=help_, formatter_class=_FMT)
        q.add_argument("--json", action="store_true", help="machine-readable output")
        q.set_defaults(func=func)
        return q

    q = cmd("sub", "print a topic's messages as they come", _sub)
    q.add_argument("topic", metavar="TOPIC")
    q.add_argument("--count", type=int, default=0, metavar="N",
                   help="exit after N messages (default: never)")
    q.add_argument("--base64", action="store_true", help="message data as base64")
    q = cmd("pub", "publish a message to a topic", _pub)
    q.add_argument("topic", metavar="TOPIC")
    q.add_argument("message", metavar="MESSAGE", help="the message, or - to read stdin")
    cmd("ls", "topics this node is in", _ls)
