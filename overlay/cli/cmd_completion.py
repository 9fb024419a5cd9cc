"""`colony completion bash|zsh|tcsh`: print a static shell completion script.

The script is generated once from the argparse parser by shtab, so pressing <TAB>
runs no Python at all (an `argcomplete`-style hook would start the interpreter and
import every command module on each keypress). Regenerate after upgrading colony.
"""

from __future__ import annotations

import argparse
import sys

from overlay.cli.fmt import Subparsers

SHELLS = ("bash", "zsh", "tcsh")
HELP = """\
examples:
  colony completion bash > ~/.local/share/bash-completion/completions/colony
  colony completion zsh > "${fpath[1]}/_colony"      # then: compinit
"""


def _completion(args: argparse.Namespace) -> int:
    import shtab

    from overlay.cli.main import build_parser  # the whole tree, every command module

    sys.stdout.write(shtab.complete(build_parser(completion=True), shell=args.shell))
    return 0


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("completion", parents=[common], epilog=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       help="print a shell completion script (bash, zsh, tcsh)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("shell", choices=SHELLS)
    p.set_defaults(func=_completion)
