"""`colony grant issue|accept|ls|show|revoke|submit|get`: grants between colonies
(docs/federation.md).

On colony A: `issue COLONY_B_ID` signs a grant (with A's owner key, or as a member
holding `admit`) giving B's members scoped roles — `read` of DAG roots (`--root`)
and/or sync labels under a prefix (`--prefix`), `submit` capsules, `execute` —, daily
quotas and an expiry, and prints a grant token for B's admin. The running daemon
keeps it and puts it in the DHT under /colony/grant/<A>/<B>. `revoke` signs a
revocation of it; the daemon gossips it in A and puts it in the DHT.

On colony B: `accept TOKEN` installs it on a node; that node then proves itself to
A's nodes with its own chain plus the grant when it fetches from them, and `submit
COLONY_A_ID SPEC` runs a capsule in A; `get COLONY_A_ID ID` reads its record there;
`label COLONY_A_ID LABEL` resolves a label of A under the grant's prefix (then
`colony fetch CID` reads it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from overlay.cli.cmd_capsule import describe, load_document
from overlay.cli.fmt import Subparsers, help_command
from overlay.core.errors import ConfigError, RemoteProtocolError

if TYPE_CHECKING:  # the handlers import these when they run (docs/cli.md start-up rule)
    from overlay.client import Colony
    from overlay.core.grants import Grant, GrantToken
    from overlay.runtime.services.trust_state import Trust

#: `overlay.core.grants.GRANT_ROLES`, spelled out so that building the parser does not
#: load the crypto stack (a unit test keeps the two equal).
ROLES = ("execute", "read", "submit")


def _daemon(args: argparse.Namespace, timeout_s: float = 60.0) -> Colony:
    from overlay.client import Colony

    return Colony.for_home(args.home, timeout_s=timeout_s)


def _own_addrs(args: argparse.Namespace) -> list[str]:
    from overlay.client import ApiUnavailable

    if args.bootstrap:
        return list(args.bootstrap)
    try:
        ident = _daemon(args, 5).id().raw
    except ApiUnavailable:
        return []
    me = ident["id"]
    addrs = [a if "/p2p/" in a else f"{a}/p2p/{me}" for a in ident.get("addrs", [])]
    return [a for a in addrs if "/ip4/0.0.0.0/" not in a][:8]


def _quota(args: argparse.Namespace) -> dict[str, int]:
    q = {"capsules": args.capsules, "cpu_s": args.cpu_s, "bytes": args.bytes}
    return {k: int(v) for k, v in q.items() if v is not None}


def grant_row(g: Grant, t: Trust, now: float, kind: str) -> dict[str, Any]:
    from overlay.runtime.services.grant_store import grant_status
    from overlay.runtime.services.trust_state import colony_id

    return {
        "serial": g.serial, "kind": kind, "colony": str(colony_id(g.colony)),
        "grantee": str(colony_id(g.grantee)), "issuer": str(g.issuer),
        "roles": list(g.roles), "roots": [str(c) for c in g.roots], "prefix": g.prefix,
        "quota": dict(g.quota), "issued": g.issued, "expires": g.expires,
        "status": grant_status(g, t, now),
    }  # fmt: skip


def _issue(args: argparse.Namespace) -> int:
    from overlay.client import ApiUnavailable
    from overlay.core.grants import GrantToken, colony_name
    from overlay.runtime.process.identity import KEY_FILE, load_identity
    from overlay.runtime.services.grant_store import GrantStore
    from overlay.runtime.services.trust_state import Trust, human_time, parse_duration

    node = load_identity(args.home / KEY_FILE)
    t = Trust(args.home)
    store = GrantStore(t)
    roles = sorted({r.strip() for r in args.roles.split(",") if r.strip()})
    g = store.issue(node, args.colony, roles, parse_duration(args.expires), time.time(),
                    roots=args.root or [], prefix=args.prefix, quota=_quota(args))  # fmt: skip
    token = GrantToken(g, tuple(_own_addrs(args))).encode()
    published: dict[str, Any] | None = None
    try:
        published = _daemon(args).publish_grant(g.to_bytes().hex())
    except ApiUnavailable:
        print("daemon not running: the grant is kept here; it is put in the DHT when you "
              "run `colony grant issue` with the daemon up", file=sys.stderr)  # fmt: skip
    if args.out:
        Path(args.out).write_text(token + "\n")
    if args.json:
        print(json.dumps({**grant_row(g, t, time.time(), "given"),
                          "token": None if args.out else token, "out": args.out,
                          "dht": published}))  # fmt: skip
        return 0
    if not args.out:
        print(token)
    print(f"grant {g.serial[:16]} to colony {colony_name(g.grantee)}: {','.join(g.roles)}, "
          f"quota {dict(g.quota) or 'none'}, expires {human_time(g.expires)}",
          file=sys.stderr)  # fmt: skip
    print("on a node of that colony: `colony grant accept TOKEN`", file=sys.stderr)
    return 0


def _load_token(text: str) -> GrantToken:
    from overlay.core.grants import GrantToken

    text = text.strip()
    try:
        p = Path(text).expanduser()
        if len(text) < 4096 and p.is_file():
            text = p.read_text().strip()
    except OSError:
        pass
    try:
        return GrantToken.decode(text)
    except RemoteProtocolError as e:
        raise ConfigError(f"not a valid grant token: {e}") from None


def _accept(args: argparse.Namespace) -> int:
    from overlay.runtime.services.grant_store import GrantStore
    from overlay.runtime.services.trust_state import Trust, colony_id, human_time

    t = Trust(args.home)
    held = GrantStore(t).accept(_load_token(args.token), time.time())
    g = held.grant
    if args.json:
        print(json.dumps({**grant_row(g, t, time.time(), "held"), "addrs": list(held.addrs)}))
        return 0
    print(f"grant {g.serial[:16]} from colony {colony_id(g.colony)} installed: "
          f"{','.join(g.roles)}, expires {human_time(g.expires)}; "
          f"{len(held.addrs)} address(es) of its nodes")  # fmt: skip
    return 0


def _rows(t: Trust) -> list[dict[str, Any]]:
    from overlay.runtime.services.grant_store import GrantStore

    store, now = GrantStore(t), time.time()
    rows = [grant_row(g, t, now, "given") for g in store.given()]
    return rows + [grant_row(h.grant, t, now, "held") for h in store.held()]


def _ls(args: argparse.Namespace) -> int:
    from overlay.runtime.services.trust_state import Trust, human_time

    t = Trust(args.home)
    t.require_colony()
    rows = _rows(t)
    if args.json:
        json.dump(rows, sys.stdout, indent=1)
        print()
        return 0
    print(f"{'SERIAL':16}  {'KIND':5}  {'OTHER COLONY':52}  {'ROLES':20}  {'EXPIRES':20}  STATUS")
    for r in rows:
        other = r["grantee"] if r["kind"] == "given" else r["colony"]
        print(f"{r['serial'][:16]}  {r['kind']:5}  {other:52}  {','.join(r['roles']):20}  "
              f"{human_time(r['expires']):20}  {r['status']}")  # fmt: skip
    return 0


def _find(t: Trust, what: str) -> Grant:
    from overlay.runtime.services.grant_store import GrantStore

    if len(what) > 120 or Path(what).is_file():
        return _load_token(what).grant
    found = GrantStore(t).find(what)
    if not found:
        raise ConfigError(f"no grant matches {what!r} (see `colony grant ls`)")
    return found[-1]


def _show(args: argparse.Namespace) -> int:
    from overlay.runtime.services.trust_state import Trust, human_time

    t = Trust(args.home)
    g = _find(t, args.what)
    row = grant_row(g, t, time.time(), "grant")
    if args.json:
        json.dump(row, sys.stdout, indent=1)
        print()
    else:
        for k in ("serial", "colony", "grantee", "issuer", "roles", "roots", "prefix", "quota"):
            print(f"{k:8} {row[k]}")
        print(f"valid    {human_time(g.issued)} .. {human_time(g.expires)}  ({row['status']})")
    return 0 if row["status"] == "valid" else 1


def _revoke(args: argparse.Namespace) -> int:
    from overlay.client import ApiUnavailable
    from overlay.core.grants import colony_name
    from overlay.runtime.process.identity import KEY_FILE, load_identity
    from overlay.runtime.services.grant_store import GrantStore
    from overlay.runtime.services.trust_state import Trust

    node = load_identity(args.home / KEY_FILE)
    t = Trust(args.home)
    store = GrantStore(t)
    found = [g for g in store.find(args.what) if g.colony == t.require_colony()]
    if not found:
        raise ConfigError(f"no grant given by this colony matches {args.what!r}")
    rows = []
    for g in found:
        rev = store.revoke(node, g, time.time())
        row: dict[str, Any] = {"serial": g.serial, "gossiped": False, "dht_key": None}
        try:
            res = _daemon(args).revoke(rev.envelope.to_bytes().hex())
            row.update(gossiped=True, dht_key=res["dht_key"], dht_acks=res["dht_acks"])
        except ApiUnavailable:
            pass
        rows.append(row)
        if not args.json:
            where = (f"gossiped in the colony, DHT key {row['dht_key']}" if row["gossiped"]
                     else "daemon not running: gossiped when it starts")
            print(f"revoked grant {g.serial[:16]} to {colony_name(g.grantee)} ({where})")
    if args.json:
        print(json.dumps(rows))
    return 0


def _submit(args: argparse.Namespace) -> int:
    spec = load_document(args.spec)
    r = _daemon(args, 120).fed_submit(args.colony, spec)
    if args.json:
        print(json.dumps(r))
    else:
        print(r["id"])
    return 0


def _get(args: argparse.Namespace) -> int:
    row = _daemon(args).fed_capsule(args.colony, args.id)
    if args.json:
        print(json.dumps(row))
    else:
        print(describe(row))
    return 0


def _label(args: argparse.Namespace) -> int:
    r = _daemon(args).fed_label(args.colony, args.label)
    if args.json:
        print(json.dumps(r))
    else:
        print(r["cid"])
        print(f"label {args.label} of colony {args.colony}: seq {r['seq']}; "
              f"`colony fetch {r['cid']}` reads it", file=sys.stderr)  # fmt: skip
    return 0


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("grant", parents=[common], help="grants between colonies (federation)",
                       description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    gsub = p.add_subparsers(dest="grant_command", metavar="SUBCOMMAND")
    i = gsub.add_parser("issue", parents=[common], help="give another colony scoped roles",
                        description="Sign a grant to colony COLONY (its id, 12D3Koo…): roles "
                        f"{', '.join(ROLES)}, daily quotas, expiry. Prints a grant "
                        "token for that colony's admin.")  # fmt: skip
    i.add_argument("colony", metavar="COLONY", help="the grantee colony's id")
    i.add_argument("--roles", default="read", help="comma-separated: read,submit,execute")
    i.add_argument("--root", action="append", metavar="CID", help="a DAG `read` covers")
    i.add_argument("--prefix", default="", help="sync labels under this prefix `read` covers")
    i.add_argument("--capsules", type=int, help="capsules accepted per UTC day")
    i.add_argument("--cpu-s", dest="cpu_s", type=int, help="CPU-seconds per UTC day")
    i.add_argument("--bytes", type=int, help="bytes served per UTC day (per serving node)")
    i.add_argument("--expires", default="30d", help="lifetime, e.g. 30d, 12h (default 30d)")
    i.add_argument("--bootstrap", action="append", metavar="MULTIADDR",
                   help="address of this colony the grantee dials (default: this node's)")
    i.add_argument("--out", metavar="FILE", help="write the token to FILE")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=_issue)

    a = gsub.add_parser("accept", parents=[common], help="install a grant given to this colony")
    a.add_argument("token", metavar="TOKEN|FILE")
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=_accept)

    s = gsub.add_parser("ls", parents=[common], help="grants given and held")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_ls)

    s = gsub.add_parser("show", parents=[common],
                        help="show and verify a grant (exit 1: not valid)")
    s.add_argument("what", metavar="SERIAL|COLONY|TOKEN|FILE")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_show)

    r = gsub.add_parser("revoke", parents=[common], help="revoke a grant (gossiped, in the DHT)")
    r.add_argument("what", metavar="SERIAL|COLONY")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=_revoke)

    s = gsub.add_parser("submit", parents=[common],
                        help="run a capsule in another colony through a held grant")
    s.add_argument("colony", metavar="COLONY", help="the granting colony's id")
    s.add_argument("spec", metavar="SPEC", help="spec file (.toml or .json), or -")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_submit)

    s = gsub.add_parser("get", parents=[common], help="a capsule's record in another colony")
    s.add_argument("colony", metavar="COLONY")
    s.add_argument("id", metavar="ID")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_get)

    s = gsub.add_parser("label", parents=[common],
                        help="the current root of another colony's label a held grant covers")
    s.add_argument("colony", metavar="COLONY")
    s.add_argument("label", metavar="LABEL")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=_label)

    p.set_defaults(func=help_command(p))
