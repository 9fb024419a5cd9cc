"""`colony join TOKEN`: install a join token so the next `colony daemon` joins a colony.

The token (from `colony cert issue` on an admin's node) carries the colony id (owner
key), this node's certificate chain and bootstrap addresses. `join` checks that the
chain really certifies *this* node's peer id, now, before writing anything.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING

from overlay.cli.fmt import Subparsers

if TYPE_CHECKING:
    pass


def _join(args: argparse.Namespace) -> int:
    from overlay.runtime.process.identity import KEY_FILE, load_identity
    from overlay.runtime.services.trust_state import Trust, colony_id, human_time, load_token

    node = load_identity(args.home / KEY_FILE)
    text = sys.stdin.read() if args.token == "-" else args.token
    token = load_token(text)
    t = Trust.join(args.home, token, node, time.time(), force=args.force)
    leaf = t.own_chain[-1]
    print(f"joined colony {colony_id(t.require_colony())}")
    print(f"this node ({node.peer_id}): roles {','.join(leaf.roles)}, certificate expires "
          f"{human_time(min(c.expires for c in t.own_chain))}")  # fmt: skip
    if t.bootstrap:
        print(f"bootstrap: {len(t.bootstrap)} address(es) saved")
    else:
        print("no bootstrap address in the token: set [network] bootstrap in config.toml")
    print("restart `colony daemon` to take effect")
    return 0


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "join", parents=[common], help="join a colony with a token from `colony cert issue`",
        description="Install a join token made by a colony admin with `colony cert issue "
        "PEERID` (PEERID being this node's `colony id`): it holds the colony id, this "
        "node's certificate chain and bootstrap addresses. The chain is verified against "
        "this node's identity first. The next `colony daemon` gossips only with members "
        "of that colony.",
    )
    p.add_argument("token", metavar="TOKEN", help="the token, a file holding it, or - for stdin")
    p.add_argument("--force", action="store_true",
                   help="leave the colony this node is in for the token's colony")
    p.set_defaults(func=_join)
