"""`colony cert issue|ls|show|revoke`: membership certificates (DESIGN §3, docs/trust.md).

`issue` signs a certificate for a peer id (as printed by `colony id` on the new
machine) and prints a join token — colony id, the certificate chain, bootstrap
addresses — for `colony join` there. It signs with the owner key when this node has
it, otherwise as a delegate: this node's own certificate must grant `admit` and the
roles asked for, and the new certificate may not outlive it (chains ≤ 3 links).
`revoke` signs a revocation; the running daemon gossips it and stores it in the DHT.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from overlay.cli.fmt import Subparsers, help_command
from overlay.core.errors import ColonyError, ConfigError, RemoteProtocolError

if TYPE_CHECKING:
    from overlay.core.certs import Certificate
    from overlay.core.ids import PeerId
    from overlay.runtime.services.trust_state import (
        Trust,
    )


def _peer(text: str) -> PeerId:
    from overlay.core.ids import PeerId

    try:
        return PeerId.from_base58(text.strip())
    except (ColonyError, ValueError):
        raise ConfigError(
            f"{text!r} is not a peer id; run `colony id` on the machine to admit"
        ) from None


def _bootstrap_addrs(args: argparse.Namespace) -> list[str]:
    """--bootstrap, else this node's own addresses from its running daemon."""
    from overlay.client import Colony

    if args.bootstrap:
        return list(args.bootstrap)
    try:
        ident = Colony.for_home(args.home, timeout_s=5).id().raw
    except ColonyError:
        print("warning: daemon not running, the token holds no bootstrap address; "
              "pass --bootstrap /ip4/…/tcp/…/p2p/… or set [network] bootstrap on the "
              "joining node", file=sys.stderr)  # fmt: skip
        return []
    me = ident["id"]
    addrs = [a if "/p2p/" in a else f"{a}/p2p/{me}" for a in ident.get("addrs", [])]
    return [a for a in addrs if "/ip4/0.0.0.0/" not in a][:8]


def _issue(args: argparse.Namespace) -> int:
    from overlay.runtime.process.identity import KEY_FILE, load_identity
    from overlay.runtime.services.trust_state import Trust, human_time, parse_duration, serial

    node = load_identity(args.home / KEY_FILE)
    t = Trust(args.home)
    subject = _peer(args.peer)
    roles = sorted({r.strip() for r in args.roles.split(",") if r.strip()})
    chain = t.issue(node, subject, roles, parse_duration(args.expires), time.time())
    token = t.token_for(chain, _bootstrap_addrs(args))
    leaf = chain[-1]
    if args.out:
        Path(args.out).write_text(token + "\n")
        print(f"join token written to {args.out}", file=sys.stderr)
    if args.json:
        print(json.dumps({"token": None if args.out else token, "out": args.out,
                          "serial": serial(leaf), "subject": str(subject),
                          "roles": list(leaf.roles), "expires": leaf.expires,
                          "chain": len(chain)}))
        return 0
    if not args.out:
        print(token)
    print(f"certificate {serial(leaf)[:16]} for {subject}: roles {','.join(leaf.roles)}, "
          f"expires {human_time(leaf.expires)}, chain of {len(chain)}",
          file=sys.stderr)  # fmt: skip
    print("on that machine: `colony join TOKEN`, then `colony daemon`", file=sys.stderr)
    return 0


def _cert_row(c: Certificate, t: Trust, now: float, what: str) -> dict[str, Any]:
    from overlay.runtime.services.trust_state import serial

    status = "valid"
    if now >= c.expires:
        status = "expired"
    elif t.revocations is not None and t.revocations.revokers(c.cert_id):
        status = "revoked"
    return {"serial": serial(c), "kind": what, "subject": str(c.subject),
            "issuer": str(c.issuer), "roles": list(c.roles), "issued": c.issued,
            "expires": c.expires, "status": status}  # fmt: skip


def _ls(args: argparse.Namespace) -> int:
    from overlay.runtime.services.trust_state import Trust, human_time

    t = Trust(args.home)
    t.require_colony()
    now = time.time()
    rows = [_cert_row(c, t, now, "own chain") for c in t.own_chain]
    own = {c.cert_id for c in t.own_chain}
    rows += [_cert_row(c, t, now, "issued") for c in t.issued() if c.cert_id not in own]
    if args.json:
        json.dump(rows, sys.stdout, indent=1)
        print()
        return 0
    print(f"{'SERIAL':16}  {'KIND':9}  {'SUBJECT':52}  {'ROLES':27}  {'EXPIRES':20}  STATUS")
    for r in rows:
        print(f"{r['serial'][:16]}  {r['kind']:9}  {r['subject']:52}  "
              f"{','.join(r['roles']):27}  {human_time(r['expires']):20}  "
              f"{r['status']}")  # fmt: skip
    return 0


def _show(args: argparse.Namespace) -> int:
    from overlay.core.certs import verify_chain
    from overlay.runtime.services.trust_state import Trust, human_time, load_token

    t = Trust(args.home)
    now = time.time()
    if args.what is None:
        owner = t.require_colony()
        chain, what = t.own_chain, "this node's chain"
    elif len(args.what) > 120 or Path(args.what).is_file():
        tok = load_token(args.what)
        owner, chain, what = tok.colony_owner, tok.chain, "join token"
    else:
        owner = t.require_colony()
        found = t.find_issued(args.what)
        if not found:
            raise ConfigError(f"no issued certificate matches {args.what!r} (see `colony cert ls`)")
        c = found[-1]
        chain, what = (c,), "issued certificate"
        if t.own_chain and c.issuer == t.own_chain[-1].subject and t.owner_key is None:
            chain = (*t.own_chain, c)
    rows = [_cert_row(c, t, now, what) for c in chain]
    verdict = "valid"
    try:
        verify_chain(chain, owner, chain[-1].subject, chain[-1].roles[0], now, t.revocations)
    except RemoteProtocolError as e:
        verdict = f"INVALID: {e}"
    if args.json:
        json.dump({"what": what, "chain": rows, "verdict": verdict}, sys.stdout, indent=1)
        print()
        return 0
    print(f"{what}: {len(chain)} link(s), {verdict}")
    for i, r in enumerate(rows):
        print(f"  [{i}] serial  {r['serial']}")
        print(f"      subject {r['subject']}")
        print(f"      issuer  {r['issuer']}")
        print(f"      roles   {','.join(r['roles'])}")
        print(f"      valid   {human_time(r['issued'])} .. {human_time(r['expires'])}  "
              f"({r['status']})")  # fmt: skip
    return 0 if verdict == "valid" else 1


def _revoke(args: argparse.Namespace) -> int:
    from overlay.client import ApiUnavailable, Colony
    from overlay.runtime.process.identity import KEY_FILE, load_identity
    from overlay.runtime.services.trust_state import Trust, serial

    node = load_identity(args.home / KEY_FILE)
    t = Trust(args.home)
    t.require_colony()
    found = t.find_issued(args.what)
    if not found:
        raise ConfigError(
            f"no certificate issued here matches {args.what!r}; give a serial (≥ 6 hex "
            "digits) or a peer id from `colony cert ls`"
        )
    now = time.time()
    rows: list[dict[str, Any]] = []
    say = (lambda text: None) if args.json else print
    for c in found:
        rev = t.revoke(node, c, now)
        row: dict[str, Any] = {"serial": serial(c), "subject": str(c.subject),
                               "gossiped": False, "dht_key": None, "dht_acks": None}
        rows.append(row)
        say(f"revoked certificate {serial(c)[:16]} of {c.subject}")
        try:
            res = Colony.for_home(args.home, timeout_s=60).revoke(rev.envelope.to_bytes().hex())
        except ApiUnavailable:
            say("  daemon not running: saved here; it is gossiped when the daemon starts "
                "(and reaches members through push-pull)")  # fmt: skip
            continue
        row.update(gossiped=True, dht_key=res["dht_key"], dht_acks=res["dht_acks"])
        say(f"  gossiped to the colony; stored in the DHT under {res['dht_key']} "
            f"({res['dht_acks']} acks)")  # fmt: skip
    if args.json:
        print(json.dumps(rows))
    return 0


#: `overlay.core.certs.ALL_ROLES`, spelled out so that building the parser does not
#: import the certificate code and its crypto (a unit test keeps the two equal).
ROLES = ("admit", "execute", "member", "submit")


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "cert", parents=[common], help="issue, list, show and revoke membership certificates",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    csub = p.add_subparsers(dest="cert_command", metavar="SUBCOMMAND")
    i = csub.add_parser(
        "issue", parents=[common], help="certify a peer id; prints a join token",
        description="Sign a membership certificate for PEERID (from `colony id` on that "
        "machine) and print a join token for `colony join`. Roles: "
        f"{', '.join(ROLES)} (member: gossip membership; submit: submit capsules; "
        "execute: run capsules; admit: certify others). Without the owner key, this node "
        "delegates: it needs `admit`, may grant only its own roles, and the certificate "
        "must expire before its own.",
    )
    i.add_argument("peer", metavar="PEERID", help="the peer id to certify")
    i.add_argument("--roles", default="member,submit,execute",
                   help="comma-separated roles (default member,submit,execute)")
    i.add_argument("--expires", default="30d", help="lifetime, e.g. 30d, 12h, 90m (default 30d)")
    i.add_argument("--bootstrap", action="append", metavar="MULTIADDR",
                   help="address the new node dials first (repeatable; default: this "
                   "node's addresses from its running daemon)")
    i.add_argument("--out", metavar="FILE", help="write the token to FILE instead of stdout")
    i.add_argument("--json", action="store_true",
                   help="print token, serial, subject, roles and expiry as JSON")
    i.set_defaults(func=_issue)

    s = csub.add_parser("ls", parents=[common],
                        help="this node's chain and the certificates it issued")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_ls)

    s = csub.add_parser(
        "show", parents=[common], help="show and verify a chain",
        description="Show and verify this node's chain (no argument), an issued "
        "certificate (serial prefix or peer id), or a join token (inline or a file).",
    )
    s.add_argument("what", nargs="?", metavar="SERIAL|PEERID|TOKEN|FILE")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_show)

    r = csub.add_parser(
        "revoke", parents=[common], help="revoke a certificate (signed, gossiped, put in the DHT)",
        description="Sign a revocation of a certificate this node issued (by serial "
        "prefix or subject peer id). With the owner key it is signed by the owner. The "
        "running daemon gossips it to the colony — members drop the revoked peer — and "
        "stores it in the DHT under /colony/revoke/<certificate id>.",
    )
    r.add_argument("what", metavar="SERIAL|PEERID")
    r.add_argument("--json", action="store_true", help="print what was revoked as JSON")
    r.set_defaults(func=_revoke)

    p.set_defaults(func=help_command(p))
