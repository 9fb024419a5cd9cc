"""`colony colony create NAME`, `colony colony status`: found a colony, see its trust state.

A colony is an owner key (DESIGN §3, docs/trust.md). `create` makes that key on this
node (mode 0600, `<home>/trust/owner.key`) and gives this node an owner-signed
certificate with every role; `status` shows the colony, this node's certificate, the
members with their roles, and peers refused or expelled (with the reason).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING, Any

from overlay.cli.fmt import Subparsers, help_command

if TYPE_CHECKING:
    from overlay.runtime.services.trust_state import (
        Trust,
    )

HELP = """\
A colony is an owner key: it signs membership certificates, and in a colony only
certified nodes gossip, get capsules and private blocks (docs/trust.md). A node
without a colony runs in open mode: anyone may join it.

three machines, alpha founding:
  alpha$ colony init && colony colony create lab && colony daemon --detach
  beta$  colony init && colony id                  # send the printed id to alpha
  alpha$ colony cert issue <beta id> --roles member,submit,execute --out beta.token
  beta$  colony join beta.token && colony daemon --detach
  (gamma as beta)
  alpha$ colony colony status                      # members, roles, refusals + reasons
  alpha$ colony cert revoke <gamma id>             # every member drops gamma
"""


def _create(args: argparse.Namespace) -> int:
    from overlay.runtime.process.identity import KEY_FILE, load_identity
    from overlay.runtime.services.trust_state import (
        DEFAULT_CERT_LIFETIME_S,
        Trust,
        colony_id,
        human_time,
        parse_duration,
        serial,
    )

    node = load_identity(args.home / KEY_FILE)
    lifetime = parse_duration(args.expires) if args.expires else DEFAULT_CERT_LIFETIME_S
    t = Trust.create_colony(args.home, args.name, node, time.time(), lifetime)
    cid = colony_id(t.require_colony())
    if args.json:
        json.dump({"colony": str(cid), "name": args.name, "serial": serial(t.own_chain[0])},
                  sys.stdout)  # fmt: skip
        print()
        return 0
    print(f"created colony {args.name!r}")
    print(f"colony id: {cid}")
    print(f"owner key: {t.dir / 'owner.key'} (mode 0600 — keep it safe; it signs certificates)")
    print(f"this node ({node.peer_id}) holds roles {', '.join(t.own_chain[0].roles)} "
          f"until {human_time(t.own_chain[0].expires)}")  # fmt: skip
    print("next: on another machine run `colony id`, then here "
          "`colony cert issue PEERID --roles member,submit,execute` and give it the token")
    return 0


def _status(args: argparse.Namespace) -> int:
    from overlay.client import ApiUnavailable, Colony
    from overlay.runtime.services.trust_state import Trust, human_time

    try:
        client = Colony.for_home(args.home, timeout_s=10)
        st = client.trust()
        if st.get("enabled"):
            st["grants"] = client.grants()  # docs/federation.md
    except ApiUnavailable:
        st = _offline_status(Trust(args.home))
    if args.json:
        json.dump(st, sys.stdout, indent=1)
        print()
        return 0
    if not st.get("enabled"):
        print("open mode: this node is not in a colony (anyone may join its gossip)")
        print("found one with `colony colony create NAME`, or join with `colony join TOKEN`")
        return 0
    print(f"colony {st['name']!r}  id {st['colony']}")
    if st.get("owner_key_here"):
        print("owner key: on this node")
    for c in st["chain"]:
        print(f"  cert {c['serial'][:16]}  {c['subject']}  roles {','.join(c['roles'])}  "
              f"expires {human_time(c['expires'])}  {c['status']}")  # fmt: skip
    if "members" in st:
        print(f"members ({len(st['members'])}):")
        for m in st["members"]:
            note = f"  PROBLEM: {m['problem']}" if m.get("problem") else ""
            exp = human_time(m["expires"]) if m.get("expires") else "-"
            print(f"  {m['id']}  {m['state']}  roles {','.join(m['roles']) or '-'}  "
                  f"cert expires {exp}{note}")  # fmt: skip
    else:
        print("(daemon not running: members unknown)")
    if st.get("refused"):
        print("refused / expelled peers (newest last):")
        for r in st["refused"]:
            what = "expelled" if r["expelled"] else "refused"
            print(f"  {human_time(r['time'])}  {r['peer']}  {what}: {r['reason']}")
    _print_grants(st.get("grants") or {})
    return 0


def _print_grants(g: dict[str, Any]) -> None:
    """Grants given (with today's usage against each quota) and held (federation)."""
    for row in g.get("given", []):
        u, q = row.get("usage") or {}, row.get("quota") or {}
        used = ", ".join(f"{k} {u.get(k, 0):,.0f}" + (f" of {q[k]:,}" if k in q else "")
                         for k in ("capsules", "cpu_s", "bytes"))  # fmt: skip
        print(f"grant given {row['serial'][:12]} to {row['grantee']}  "
              f"{','.join(row['roles'])}  {row['status']}  today: {used}")  # fmt: skip
    for row in g.get("held", []):
        print(f"grant held  {row['serial'][:12]} from {row['colony']}  "
              f"{','.join(row['roles'])}  {row['status']}  quota {row.get('quota') or 'none'}")


def _private(args: argparse.Namespace) -> int:
    from overlay.client import ApiUnavailable, Colony
    from overlay.core.cid import Cid
    from overlay.runtime.process.identity import KEY_FILE, load_identity
    from overlay.runtime.services.trust_state import Trust

    t = Trust(args.home)
    t.require_colony()
    if args.cid is None:
        roots = [str(r) for r in t.private_roots()]
        for line in [json.dumps(roots)] if args.json else roots:
            print(line)
        return 0
    try:
        res = Colony.for_home(args.home, timeout_s=60).set_private(args.cid, not args.public)
    except ApiUnavailable:
        cid = str(Cid.parse(args.cid))
        if args.public:
            me = load_identity(args.home / KEY_FILE).peer_id
            why = t.may_unmark(cid, me, time.time())
            if why is not None:
                print(f"error: {why}", file=sys.stderr)
                return 1
        t.set_private(cid, not args.public)
        if args.json:
            print(json.dumps({"cid": cid, "private": not args.public, "private_blocks": None,
                              "daemon": False}))
            return 0
        print(f"{args.cid}: {'public' if args.public else 'private'} "
              "(daemon not running: takes effect when it starts)")  # fmt: skip
        return 0
    if args.json:
        print(json.dumps({**res, "daemon": True}))
        return 0
    state = "private (members only)" if res["private"] else "public"
    print(f"{res['cid']}: {state}; {res['private_blocks']} private blocks on this node")
    return 0


def _offline_status(t: Trust) -> dict[str, Any]:
    from overlay.runtime.services.trust_state import colony_id

    if not t.enabled:
        return {"enabled": False}
    now = time.time()
    from overlay.runtime.services.federation_state import grant_json
    from overlay.runtime.services.grant_store import GrantStore
    from overlay.runtime.services.trust import cert_json

    store = GrantStore(t)
    return {
        "enabled": True, "colony": str(colony_id(t.require_colony())), "name": t.name,
        "owner_key_here": t.owner_key is not None,
        "chain": [cert_json(c, now, t) for c in t.own_chain], "refused": [],
        "grants": {"given": [grant_json(g, t, now) for g in store.given()],
                   "held": [grant_json(h.grant, t, now) for h in store.held()]},
    }  # fmt: skip


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "colony", parents=[common], help="found a colony (owner key) or show its trust state",
        description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    csub = p.add_subparsers(dest="colony_command", metavar="SUBCOMMAND")
    c = csub.add_parser(
        "create", parents=[common], help="make an owner key and certify this node",
        description="Create a new colony: an Ed25519 owner key stored (mode 0600) in "
        "<home>/trust/owner.key, and an owner-signed certificate for this node with all "
        "roles (member, submit, execute, admit). Prints the colony id (the owner key as "
        "a peer id). Run `colony init` first.",
    )
    c.add_argument("name", help="a name for people (the id is the owner key)")
    c.add_argument("--expires", default="365d",
                   help="lifetime of this node's certificate (default 365d; e.g. 30d, 12h)")
    c.add_argument("--json", action="store_true", help="print the result as JSON")
    c.set_defaults(func=_create)
    s = csub.add_parser(
        "status", parents=[common], help="colony id, this node's certificate, members, refusals",
        description="Show the colony this node belongs to, its certificate chain, and "
        "(from the running daemon) members with their roles and peers refused or expelled "
        "with the reason.",
    )
    s.add_argument("--json", action="store_true", help="print the raw status as JSON")
    s.set_defaults(func=_status)

    pv = csub.add_parser(
        "private", parents=[common], help="serve a DAG to colony members only",
        description="Mark the DAG under CID (already imported or fetched here) as "
        "private: this node serves its blocks over Bitswap only to members of the "
        "colony, while other data stays servable to anyone when [trust] serve_public = "
        "true. Without CID, list the private roots.",
    )
    pv.add_argument("cid", nargs="?", metavar="CID")
    pv.add_argument("--public", action="store_true", help="undo: serve it to anyone again")
    pv.add_argument("--json", action="store_true", help="print the result as JSON")
    pv.set_defaults(func=_private)

    p.set_defaults(func=help_command(p))
