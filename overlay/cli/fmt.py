"""Shared output formatting and parser types for the `colony` commands."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeAlias

#: What each `cmd_*.register` gets: the result of `parser.add_subparsers(...)`.
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
#: A command, set as `func` on its parser: the parsed arguments in, the exit status out.
Command: TypeAlias = Callable[[argparse.Namespace], int]


def help_command(parser: argparse.ArgumentParser) -> Command:
    """The `func` of a command group run without a subcommand: print its help, exit 2."""

    def run(args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    return run


def human_bytes(n: float) -> str:
    """1536 → '1.5 KiB'; whole bytes below 1 KiB ('512 B')."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.0f} B"
