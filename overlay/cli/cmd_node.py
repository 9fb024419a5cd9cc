"""`colony init`, `colony id`, `colony config`: create and inspect a node's identity."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from overlay.cli.fmt import Subparsers
from overlay.core.errors import ConfigError

if TYPE_CHECKING:
    from overlay.core.crypto import KeyPair


def init_home(home: Path, *, quiet: bool = False, profile: str = "lan") -> KeyPair:
    """Create the data dir, identity key and commented config; refuse to overwrite."""
    from overlay.core.crypto import KeyPair
    from overlay.runtime.process import config as cfg
    from overlay.runtime.process.identity import KEY_FILE, write_identity

    template = cfg.template_for(profile)  # an unknown profile fails before any write
    key_path = home / KEY_FILE
    if key_path.exists():
        raise ConfigError(f"{home} already holds a node (identity {key_path}); not overwriting")
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    kp = KeyPair.generate()
    write_identity(key_path, kp)
    conf = home / cfg.CONFIG_FILE
    if not conf.exists():
        conf.write_text(template)
    if not quiet:
        print(f"initialised colony node in {home}")
        print(f"peer id: {kp.peer_id}")
    return kp


def _init(args: argparse.Namespace) -> int:
    kp = init_home(args.home, profile=args.profile, quiet=args.json)
    if args.json:
        json.dump({"home": str(args.home), "id": str(kp.peer_id), "profile": args.profile},
                  sys.stdout)
        print()
    return 0


def _id(args: argparse.Namespace) -> int:
    from overlay.runtime.process.identity import KEY_FILE, load_identity

    kp = load_identity(args.home / KEY_FILE)
    if args.json:
        json.dump({"id": str(kp.peer_id), "public_key": kp.public.raw.hex()}, sys.stdout)
        print()
    else:
        print(kp.peer_id)
    return 0


def _config(args: argparse.Namespace) -> int:
    from overlay.runtime.process import config as cfg

    conf = cfg.load(args.home)
    if args.default:
        sys.stdout.write(cfg.TEMPLATE)
    else:
        json.dump(conf, sys.stdout, indent=2)
        print()
    return 0


#: `sorted(config.NODE_PROFILES)`, spelled out so that building the parser does not
#: import the config module and tomllib (a unit test keeps the two equal).
PROFILES = ("edge", "lan", "wan")


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "init",
        parents=[common],
        help="create a node: data dir, Ed25519 identity (mode 0600) and config.toml",
        description="Create a node's data directory with a new Ed25519 identity key "
        "(mode 0600) and a commented config.toml.\nRefuses to overwrite an existing node.\n\n"
        "--profile edge writes the preset for small devices behind NATs (Raspberry-Pi\n"
        "class): slower gossip, fewer parallel DHT queries, smaller caches (docs/edge.md).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--profile", choices=PROFILES, default="lan",
                   help="preset written into config.toml as [node] profile (default: lan)")
    p.add_argument("--json", action="store_true", help="print home, id and profile as JSON")
    p.set_defaults(func=_init)

    p = sub.add_parser("id", parents=[common], help="print this node's libp2p peer id")
    p.add_argument("--json", action="store_true", help="print id and public key as JSON")
    p.set_defaults(func=_id)

    p = sub.add_parser(
        "config", parents=[common], help="show the effective configuration",
        description="Print the configuration after merging defaults, config.toml and "
        "COLONY_<SECTION>_<KEY> environment variables.",
    )
    p.add_argument("--default", action="store_true", help="print the commented default file")
    p.set_defaults(func=_config)
