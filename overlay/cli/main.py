"""Entry point of the `colony` console script.

Commands live in `overlay/cli/cmd_*.py`; each module exposes
`register(subparsers, common)` and sets `func(args) -> int` on its parsers. They are
discovered by name, so adding a command never edits a shared file.

Start-up time: building the parser imports every `cmd_*` module, so those import only
argparse and light modules at their top; a command's handler imports its heavy
dependencies (the store, the SDK with anyio/trio, structlog...) when it runs.
tests/unit/cli/test_cli_startup.py guards it; bench/cli.py measures it.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import overlay
import overlay.cli
from overlay.core.errors import ColonyError
from overlay.runtime.process import logs

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


def _common_parser(completion: bool) -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    home = common.add_argument(
        "--home",
        type=Path,
        # SUPPRESS: an option given before the subcommand must survive the
        # subcommand's copy of this parser (argparse would reset it to the default).
        default=argparse.SUPPRESS,
        help="node data directory (default: $COLONY_HOME or $XDG_DATA_HOME/colony)",
    )
    if completion:  # shtab costs ~30 ms to import: only for `colony completion`
        import shtab

        home.complete = shtab.DIRECTORY  # type: ignore[attr-defined]  # shtab reads it
    common.add_argument(
        "--log-level",
        choices=logs.LEVELS,
        default=argparse.SUPPRESS,
        help="log verbosity (default: warning for commands, info for the daemon)",
    )
    return common


def _command_modules() -> list[str]:
    """The `cmd_*` module names, sorted. A plain directory listing: pkgutil.iter_modules
    imports inspect (~4 ms), a tenth of the whole start-up."""
    names = {
        entry.name.removesuffix(".py")
        for where in overlay.cli.__path__
        for entry in os.scandir(where)
        if entry.name.startswith("cmd_") and entry.name.endswith(".py")
    }
    return sorted(names)


def build_parser(completion: bool = False) -> argparse.ArgumentParser:
    """The whole `colony` parser; `completion=True` adds shtab's completion hints."""
    common = _common_parser(completion)
    parser = argparse.ArgumentParser(
        prog="colony",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"colony {overlay.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _command_modules():
        importlib.import_module(f"overlay.cli.{name}").register(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if getattr(args, "home", None) is None:
        from overlay.runtime.process.config import default_home

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
