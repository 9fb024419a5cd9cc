"""Grants kept in `<home>/trust/` (docs/federation.md; codec in overlay/core/grants.py).

Files (written atomically, like the rest of trust/):

    trust/grants_given.cbor     grants this colony gave, signed here  [envelope…]
    trust/grants_held.cbor      grants other colonies gave this one   [{"g", "a"}…]
    trust/federation_usage.json quota usage counted by this node (services/federation.py)

`GrantStore` signs (`issue`: with the owner key when it is here, else as a delegate
whose own chain grants `admit`, the chain going inside the grant), lists, finds and
revokes given grants, and installs held ones (`accept`: only a grant whose grantee is
this colony). Revocations go through `Trust.add_revocation`, so they land in
`revocations.cbor` next to certificate revocations and are gossiped by the daemon.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from overlay.core.certs import Certificate, Revocation, Revoked, Role, verify_chain
from overlay.core.cid import Cid
from overlay.core.crypto import KeyPair
from overlay.core.errors import ColonyError, ConfigError, RemoteProtocolError, WireError
from overlay.core.grants import (
    GRANT_ROLES,
    QUOTA_KEYS,
    Grant,
    GrantToken,
    parse_grant,
    revoke_grant,
    verify_grant,
)
from overlay.core.wire import cbor_decode, cbor_encode
from overlay.runtime.services.trust_state import Trust, colony_id, parse_colony_id, write_atomic

GIVEN_FILE = "grants_given.cbor"
HELD_FILE = "grants_held.cbor"
USAGE_FILE = "federation_usage.json"
#: Grants kept per file (oldest forgotten first).
MAX_GRANTS = 4096


@dataclass(frozen=True, slots=True)
class Held:
    """A grant to this colony and where the granting colony's nodes listen."""

    grant: Grant
    addrs: tuple[str, ...]


def grant_status(g: Grant, t: Trust, now: float) -> str:
    """"valid", "expired", "revoked" (by a key with authority) or "invalid: …" as seen
    from this node (held grants: A's revocations reach B only through the DHT)."""
    if now >= g.expires:
        return "expired"
    revs = t.revocations if t.colony_owner == g.colony else None
    try:
        verify_grant(g, g.colony, now, revs)
    except Revoked as e:
        return "revoked" if str(e).startswith("grant ") else f"invalid: {e}"
    except RemoteProtocolError as e:
        return f"invalid: {e}"
    return "valid"


class GrantStore:
    def __init__(self, trust: Trust) -> None:
        self.trust = trust
        self.dir = trust.dir

    # ------------------------------------------------------------ files

    def _read(self, name: str) -> list[object]:
        path = self.dir / name
        if not path.exists():
            return []
        try:
            obj = cbor_decode(path.read_bytes())
        except WireError as e:
            raise ConfigError(f"{path} is corrupt ({e}); restore it or delete it") from None
        return list(obj) if isinstance(obj, list) else []

    def given(self) -> list[Grant]:
        out = []
        for raw in self._read(GIVEN_FILE):
            try:
                out.append(parse_grant(raw))
            except RemoteProtocolError:
                continue  # a damaged entry costs only itself
        return out

    def held(self) -> list[Held]:
        out = []
        for item in self._read(HELD_FILE):
            try:
                if not isinstance(item, dict):
                    continue
                out.append(Held(parse_grant(item["g"]),
                                tuple(str(a) for a in item.get("a", []))[:16]))  # fmt: skip
            except (RemoteProtocolError, KeyError, TypeError):
                continue
        return out

    def add_given(self, grant: Grant) -> bool:
        """Keep a grant of this colony (signed here or published through the daemon)."""
        if grant.colony != self.trust.require_colony():
            raise ConfigError("that grant was not given by this colony")
        known = self.given()
        if any(g.grant_id == grant.grant_id for g in known):
            return False
        envs = [g.to_bytes() for g in known] + [grant.to_bytes()]
        write_atomic(self.dir / GIVEN_FILE, cbor_encode(envs[-MAX_GRANTS:]))
        return True

    def accept(self, token: GrantToken, now: float) -> Held:
        """Install a grant given to this colony (its signature was checked at decode)."""
        owner = self.trust.require_colony()
        g = token.grant
        if g.grantee != owner:
            raise ConfigError("that grant is for another colony, not this one")
        if now >= g.expires:
            raise ConfigError("that grant has expired")
        try:
            verify_grant(g, g.colony, now)
        except RemoteProtocolError as e:
            raise ConfigError(f"that grant is not valid: {e}") from None
        rest = [h for h in self.held() if h.grant.grant_id != g.grant_id]
        held = Held(g, token.addrs)
        items = [{"g": h.grant.to_bytes(), "a": list(h.addrs)} for h in [*rest, held]]
        write_atomic(self.dir / HELD_FILE, cbor_encode(items[-MAX_GRANTS:]))
        return held

    # ------------------------------------------------------------ CLI operations

    def issue(
        self,
        node: KeyPair,
        grantee: str,
        roles: Sequence[str],
        lifetime_s: float,
        now: float,
        *,
        roots: Sequence[str] = (),
        prefix: str = "",
        quota: Mapping[str, int] | None = None,
    ) -> Grant:
        """Sign a grant to colony `grantee` (its id, 12D3Koo…) and keep it."""
        owner = self.trust.require_colony()
        bad = [r for r in roles if r not in GRANT_ROLES]
        if bad or not roles:
            raise ConfigError(f"unknown grant role(s) {', '.join(bad) or '(none given)'}; "
                              f"roles are {', '.join(GRANT_ROLES)}")  # fmt: skip
        if quota and any(k not in QUOTA_KEYS for k in quota):
            raise ConfigError(f"quotas are {', '.join(QUOTA_KEYS)}")
        try:
            cids = [Cid.parse(r) for r in roots]
        except ColonyError as e:
            raise ConfigError(f"bad root: {e}") from None
        chain: tuple[Certificate, ...] = ()
        if self.trust.owner_key is not None:
            issuer = self.trust.owner_key
        else:
            chain = self.trust.own_chain
            try:
                verify_chain(chain, owner, node.peer_id, Role.ADMIT, now, self.trust.revocations)
            except RemoteProtocolError as e:
                raise ConfigError(f"this node may not give grants: {e}") from None
            limit = min(c.expires for c in chain)
            if now + lifetime_s > limit:
                raise ConfigError("a delegate's grant must expire before its certificate "
                                  f"(in {(limit - now) / 86400:.1f} days): use a shorter "
                                  "--expires")  # fmt: skip
            issuer = node
        try:
            g = Grant.issue(issuer, owner, parse_colony_id(grantee), roles, now,
                            now + lifetime_s, roots=cids, prefix=prefix, quota=quota,
                            chain=chain)  # fmt: skip
        except ValueError as e:
            raise ConfigError(str(e)) from None
        verify_grant(g, owner, now, self.trust.revocations)
        self.add_given(g)
        return g

    def find(self, what: str) -> list[Grant]:
        """Given or held grants whose serial starts with `what` (≥ 6 hex digits) or
        whose grantee / granting colony is `what`."""
        what = what.strip()
        out = []
        for g in [*self.given(), *(h.grant for h in self.held())]:
            if (len(what) >= 6 and g.serial.startswith(what.lower())) or what in (
                    _cid(g.grantee), _cid(g.colony)):
                out.append(g)
        return out

    def revoke(self, node: KeyPair, grant: Grant, now: float) -> Revocation:
        """Sign a revocation of `grant` (owner key if here, else this node's key: in
        force only if it signed the grant or is above its signer) and keep it."""
        if grant.colony != self.trust.require_colony():
            raise ConfigError("only the colony that gave a grant can revoke it")
        rev = revoke_grant(self.trust.owner_key or node, grant, now)
        self.trust.add_revocation(rev.envelope, now)
        return rev


def _cid(owner: bytes) -> str:
    return str(colony_id(owner))


__all__ = ["GIVEN_FILE", "HELD_FILE", "USAGE_FILE", "GrantStore", "Held", "grant_status"]
