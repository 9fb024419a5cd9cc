"""Entry point of the `colony` console script.

Commands live in `overlay/cli/cmd_*.py`; each module exposes
`register(subparsers, common)` and sets `func(args) -> int` on its parsers. They are
discovered by name, so adding a command never edits a shared file.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence
from pathlib import Path

import shtab

import overlay
import overlay.cli
from overlay.core.errors import ColonyError
from overlay.runtime.process import logs
from overlay.runtime.process.config import default_home

DESCRIPTION = """\
Colony: a peer-to-peer overlay node. Nodes join a Kademlia DHT, gossip membership and
resources (SWIM + Lifeguard), keep content-addressed blocks in LMDB, and run signed
task capsules — with no central server.

Start here:
  colony init                 create a node (key, config, block store) in $COLONY_HOME
  colony add FILE             import a file; prints its CID
  colony cat CID              read it back
  colony demo                 run the end-to-end demo on a throw-away node
"""


def _common_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    home = common.add_argument(
        "--home",
        type=Path,
        # SUPPRESS: an option given before the subcommand must survive the
        # subcommand's copy of this parser (argparse would reset it to the default).
        default=argparse.SUPPRESS,
        help="node data directory (default: $COLONY_HOME or $XDG_DATA_HOME/colony)",
    )
    home.complete = shtab.DIRECTORY  # type: ignore[attr-defined]  # shtab reads it
    common.add_argument(
        "--log-level",
        choices=logs.LEVELS,
        default=argparse.SUPPRESS,
        help="log verbosity (default: warning for commands, info for the daemon)",
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common_parser()
    parser = argparse.ArgumentParser(
        prog="colony",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"colony {overlay.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in sorted(pkgutil.iter_modules(overlay.cli.__path__), key=lambda m: m.name):
        if mod.name.startswith("cmd_"):
            importlib.import_module(f"overlay.cli.{mod.name}").register(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if getattr(args, "home", None) is None:
        args.home = default_home()
    default_level = getattr(args, "default_log_level", "warning")
    logs.configure(getattr(args, "log_level", None) or default_level)
    try:
        return int(args.func(args) or 0)
    except ColonyError as e:
        print(f"colony: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("colony: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
