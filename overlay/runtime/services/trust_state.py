"""A node's colony trust state, kept in `<home>/trust/` (DESIGN §3, docs/trust.md).

Files (all written atomically; keys mode 0600):

    trust/colony.json       {"name", "colony": owner public key hex, "bootstrap": [addr]}
    trust/owner.key         the colony owner's Ed25519 key — only on the node that ran
                            `colony colony create` (libp2p key format, like identity.key)
    trust/chain.cbor        this node's certificate chain, root first
    trust/issued.cbor       certificates this node signed (for `cert ls` / `cert revoke`)
    trust/revocations.cbor  every revocation this node knows (own and learned)
    trust/private.json      roots of DAGs served to colony members only, with the
                            signed private mark covering each (core/private_mark.py)

No `colony.json` = open mode: the daemon behaves exactly as before colonies existed.

`Trust` is the one object the daemon consults: `enabled`, `own_chain`, the gossip
`admission` gate (which shares `revocations`), `check(peer, role, now)` for the
other layers, `learn(peer, chain)` for chains that arrive outside gossip, and the
storage operations the CLI uses (create, issue, revoke, join). Certificate rules are
not here: they are `overlay.core.certs.verify_chain`.
"""

from __future__ import annotations

import datetime
import json
import os
import re
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from gossip.admission import Admission, who
from gossip.messages import Revoke
from overlay.core.certs import (
    ALL_ROLES,
    MAX_CHAIN_DEPTH,
    Certificate,
    JoinToken,
    Revocation,
    RevocationList,
    Role,
    chain_from_wire,
    chain_to_wire,
    verify_chain,
)
from overlay.core.cid import Cid
from overlay.core.crypto import Envelope, KeyPair, PublicKey
from overlay.core.errors import ColonyError, ConfigError, RemoteProtocolError, WireError
from overlay.core.ids import PeerId
from overlay.core.private_mark import PrivateMark
from overlay.core.wire import cbor_decode, cbor_encode
from overlay.runtime.process.config import Config
from overlay.runtime.process.identity import load_identity, write_identity
from store.blockstore import BlockStore

TRUST_DIR = "trust"
COLONY_FILE = "colony.json"
OWNER_KEY = "owner.key"
CHAIN_FILE = "chain.cbor"
ISSUED_FILE = "issued.cbor"
REVOCATIONS_FILE = "revocations.cbor"
PRIVATE_FILE = "private.json"
#: DAG roots a node may mark private.
MAX_PRIVATE_ROOTS = 16384
#: Certificates this node remembers having issued (oldest forgotten first).
MAX_ISSUED = 10_000
#: Refusals kept for `colony colony status` (newest last).
MAX_REFUSALS = 64
#: Cached positive `check` verdicts (peer, role).
MAX_VERDICTS = 4096
DEFAULT_CERT_LIFETIME_S = 365 * 86400.0

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """"30d", "12h", "90m", "45s", "2w" or plain seconds → seconds."""
    m = _DURATION.match(text)
    if not m or float(m.group(1)) <= 0:
        raise ConfigError(f"duration {text!r} is not like 30d, 12h, 90m, 45s or 2w")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


def human_time(t: float) -> str:
    """Unix seconds → '2026-11-23 16:00:00Z' (UTC), for people."""
    try:
        return datetime.datetime.fromtimestamp(t, tz=datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return f"t={t:g}"


def colony_id(owner: bytes) -> PeerId:
    """A colony is named by its owner key, written as a peer id (12D3Koo…)."""
    return PeerId.from_ed25519(owner)


def parse_colony_id(text: str) -> bytes:
    try:
        raw = PeerId.from_base58(text.strip()).ed25519_public_key()
    except (ValueError, WireError):
        raw = None
    if raw is None:
        raise ConfigError(f"{text!r} is not a colony id (an Ed25519 peer id, 12D3Koo…)")
    return raw


def serial(cert: Certificate) -> str:
    """A certificate's serial: its id (sha2-256 of the envelope) in hex, no prefix."""
    return cert.cert_id[2:].hex()


def _write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


#: For the other files of trust/ (services/grant_store.py).
write_atomic = _write_atomic


def _read_envelopes(path: Path) -> list[Envelope]:
    if not path.exists():
        return []
    try:
        obj = cbor_decode(path.read_bytes())
        if not isinstance(obj, list):
            raise ConfigError("not a list")
        return [Envelope.from_wire(e) for e in obj]
    except (WireError, ConfigError) as e:
        raise ConfigError(f"{path} is corrupt ({e}); restore it or delete it") from None


def _write_envelopes(path: Path, envs: Iterable[Envelope]) -> None:
    _write_atomic(path, cbor_encode([e.to_wire() for e in envs]))


class PrivateFile(TypedDict):
    """<home>/trust/private.json: private DAG roots and the marks learned for others."""

    roots: list[str]
    marks: dict[str, str]


@dataclass(frozen=True, slots=True)
class Refusal:
    """A peer refused by gossip (or expelled), for status displays."""

    time: float
    peer: str
    reason: str
    expelled: bool


class Trust:
    """This node's colony settings and the checks the daemon's layers share."""

    def __init__(self, home: Path, conf: Config | None = None) -> None:
        self.home = home
        self.dir = home / TRUST_DIR
        trust_conf = (conf or {}).get("trust", {})
        #: Serve published (public) blocks over Bitswap to peers outside the colony.
        self.serve_public: bool = bool(trust_conf.get("serve_public", True))
        self.name = ""
        self.colony_owner: bytes | None = None
        self.bootstrap: list[str] = []
        self.own_chain: tuple[Certificate, ...] = ()
        self.owner_key: KeyPair | None = None
        self.revocations: RevocationList | None = None
        self.admission: Admission | None = None
        self._learned: dict[PeerId, tuple[Certificate, ...]] = {}
        self._verdicts: dict[tuple[PeerId, str], tuple[bytes, int, float, float]] = {}
        self.refusals: deque[Refusal] = deque(maxlen=MAX_REFUSALS)
        self._load()

    # ------------------------------------------------------------ loading

    @property
    def enabled(self) -> bool:
        return self.colony_owner is not None

    @property
    def chain_envelopes(self) -> tuple[Envelope, ...]:
        return tuple(c.envelope for c in self.own_chain)

    def _load(self) -> None:
        path = self.dir / COLONY_FILE
        if not path.exists():
            return
        try:
            data = json.loads(path.read_text())
            owner = bytes.fromhex(data["colony"])
            PublicKey(owner)
        except (OSError, ValueError, KeyError, TypeError, WireError) as e:
            raise ConfigError(f"{path} is corrupt ({e}); run `colony join` again") from None
        self.colony_owner = owner
        self.name = str(data.get("name", ""))
        self.bootstrap = [str(a) for a in data.get("bootstrap", [])][:32]
        chain_envs = _read_envelopes(self.dir / CHAIN_FILE)
        try:
            self.own_chain = chain_from_wire([e.to_wire() for e in chain_envs])
        except (WireError, RemoteProtocolError) as e:
            raise ConfigError(f"{self.dir / CHAIN_FILE}: {e}; run `colony join` again") from None
        if (self.dir / OWNER_KEY).exists():
            self.owner_key = load_identity(self.dir / OWNER_KEY)
            if self.owner_key.public.raw != owner:
                raise ConfigError(f"{self.dir / OWNER_KEY} is not the key of this colony")
        self.revocations = RevocationList(owner)
        self.admission = Admission(owner, self.revocations)
        for env in _read_envelopes(self.dir / REVOCATIONS_FILE):
            try:
                # Verified here; ones for long-expired certificates are pruned later.
                self.admission.add_revocation(Revoke.from_envelope(env), now=0.0)
            except WireError:
                continue  # a damaged entry costs only itself

    # ------------------------------------------------------------ checks

    def check(self, peer: PeerId, role: str | Role, now: float) -> str | None:
        """None if `peer` holds `role` in this colony at `now`, else the reason.
        Open mode allows everything."""
        if self.colony_owner is None:
            return None
        chain = self.chain_of(peer)
        if chain is None:
            return f"no certificate known for {who(peer)}"
        # Positive verdicts are cached (Bitswap asks on every message): valid while
        # the chain, the revocation generation and the validity window are unchanged.
        key = (peer, str(role))
        gen = self.admission.generation if self.admission is not None else 0
        hit = self._verdicts.get(key)
        if hit and hit[0] == chain[-1].envelope.signature and hit[1] == gen \
                and hit[2] <= now < hit[3]:
            return None
        try:
            verify_chain(chain, self.colony_owner, peer, role, now, self.revocations)
        except RemoteProtocolError as e:
            return str(e)
        if len(self._verdicts) >= MAX_VERDICTS:
            del self._verdicts[next(iter(self._verdicts))]
        self._verdicts[key] = (chain[-1].envelope.signature, gen,
                               max(c.issued for c in chain), min(c.expires for c in chain))
        return None

    def chain_of(self, peer: PeerId) -> tuple[Certificate, ...] | None:
        if self.own_chain and self.own_chain[-1].subject == peer:
            return self.own_chain
        if self.admission is not None:
            chain = self.admission.chain_for(peer)
            if chain is not None:
                return chain
        return self._learned.get(peer)

    def learn(self, peer: PeerId, chain: Sequence[Certificate], now: float) -> str | None:
        """Remember a chain `peer` showed outside gossip (e.g. with a capsule), if it
        is a valid chain for `peer` (any role); returns the reason otherwise."""
        if self.colony_owner is None:
            return None
        if not chain:
            return f"no certificate presented by {who(peer)}"
        try:
            leaf = verify_chain(tuple(chain), self.colony_owner, peer, chain[-1].roles[0], now,
                                self.revocations)  # fmt: skip
        except RemoteProtocolError as e:
            return str(e)
        if len(self._learned) >= 4096:
            del self._learned[next(iter(self._learned))]
        self._learned[leaf.subject] = tuple(chain)
        return None

    def is_member(self, peer: PeerId, now: float) -> bool:
        return self.check(peer, Role.MEMBER, now) is None

    def note_refusal(self, now: float, peer: PeerId, reason: str, *, expelled: bool) -> None:
        self.refusals.append(Refusal(now, str(peer), reason, expelled))

    # ------------------------------------------------------------ revocations

    def add_revocation(self, env: Envelope, now: float) -> Revocation:
        """Verify, remember and persist a revocation (raises RemoteProtocolError)."""
        if self.colony_owner is None or self.revocations is None:
            raise ConfigError("this node is not in a colony (open mode)")
        rev = Revocation.from_envelope(env)
        if rev.colony != self.colony_owner:
            raise ConfigError("the revocation is for another colony")
        if self.admission is not None:
            self.admission.add_revocation(Revoke.from_envelope(env), now)
        self.revocations.add(rev, now)
        self._persist_revocation(env)
        return rev

    def _persist_revocation(self, env: Envelope) -> None:
        path = self.dir / REVOCATIONS_FILE
        known = _read_envelopes(path)
        if env not in known:
            _write_envelopes(path, [*known, env][-65536:])

    def saved_revocations(self) -> list[Revocation]:
        out = []
        for env in _read_envelopes(self.dir / REVOCATIONS_FILE):
            try:
                out.append(Revocation.from_envelope(env))
            except RemoteProtocolError:
                continue
        return out

    # ------------------------------------------------------------ CLI operations

    def require_colony(self) -> bytes:
        if self.colony_owner is None:
            raise ConfigError(
                f"{self.home} is not in a colony: run `colony colony create NAME` to found "
                "one, or `colony join TOKEN` with a token from a colony admin"
            )
        return self.colony_owner

    def issued(self) -> list[Certificate]:
        out = []
        for env in _read_envelopes(self.dir / ISSUED_FILE):
            try:
                out.append(Certificate.from_envelope(env))
            except RemoteProtocolError:
                continue
        return out

    def issue(
        self,
        node: KeyPair,
        subject: PeerId,
        roles: Sequence[str],
        lifetime_s: float,
        now: float,
    ) -> tuple[Certificate, ...]:
        """Sign a certificate for `subject`; return its whole chain (root first).

        With the owner key here, the certificate is signed by the owner (a 1-link
        chain). Otherwise this node delegates: its own chain must grant `admit` and
        every requested role, and the new certificate may not outlive it.
        """
        owner = self.require_colony()
        bad = [r for r in roles if r not in ALL_ROLES]
        if bad or not roles:
            raise ConfigError(
                f"unknown role(s) {', '.join(bad) or '(none given)'}; "
                f"roles are {', '.join(ALL_ROLES)}"
            )
        expires = now + lifetime_s
        parent: tuple[Certificate, ...] = ()
        if self.owner_key is not None:
            issuer = self.owner_key
        else:
            parent = self.own_chain
            try:
                verify_chain(parent, owner, node.peer_id, Role.ADMIT, now, self.revocations)
            except RemoteProtocolError as e:
                raise ConfigError(f"this node may not admit others: {e}") from None
            if len(parent) >= MAX_CHAIN_DEPTH:
                raise ConfigError(
                    f"this node's chain already has {len(parent)} links; a delegated "
                    f"chain may have at most {MAX_CHAIN_DEPTH} — ask an admin closer to "
                    "the owner"
                )
            missing = [r for r in roles if r not in parent[-1].roles]
            if missing:
                raise ConfigError(
                    f"cannot grant {', '.join(missing)}: this node's certificate only "
                    f"grants {', '.join(parent[-1].roles)}"
                )
            limit = min(c.expires for c in parent)
            if expires > limit:
                left_d = max(0.0, limit - now) / 86400
                raise ConfigError(
                    f"a delegated certificate must expire before its delegator's; this "
                    f"node's certificate expires in {left_d:.1f} days — use a shorter "
                    "--expires"
                )
            issuer = node
        cert = Certificate.issue(issuer, owner, subject, roles, now, expires)
        chain = (*parent, cert)
        verify_chain(chain, owner, subject, cert.roles[0], now, self.revocations)
        issued = _read_envelopes(self.dir / ISSUED_FILE)
        _write_envelopes(self.dir / ISSUED_FILE, [*issued, cert.envelope][-MAX_ISSUED:])
        return chain

    def find_issued(self, what: str) -> list[Certificate]:
        """Issued certificates whose serial starts with `what` or whose subject is it."""
        what = what.strip()
        out = []
        for c in self.issued():
            if (len(what) >= 6 and serial(c).startswith(what.lower())) or str(c.subject) == what:
                out.append(c)
        return out

    def revoke(self, node: KeyPair, cert: Certificate, now: float) -> Revocation:
        """Sign a revocation of `cert` with the owner key if here, else this node's key
        (which has authority only over certificates it or its delegates issued)."""
        self.require_colony()
        signer = self.owner_key or node
        rev = Revocation.issue(signer, cert, now)
        self.add_revocation(rev.envelope, now)
        return rev

    # ------------------------------------------------------------ creating / joining

    @classmethod
    def create_colony(
        cls, home: Path, name: str, node: KeyPair, now: float, lifetime_s: float
    ) -> Trust:
        """Make an owner key; give this node an owner-signed certificate, all roles."""
        tdir = home / TRUST_DIR
        if (tdir / COLONY_FILE).exists():
            t = cls(home)
            raise ConfigError(
                f"{home} is already in colony {t.name!r} ({colony_id(t.require_colony())}); "
                "a node belongs to one colony"
            )
        tdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        owner = KeyPair.generate()
        if (tdir / OWNER_KEY).exists():
            (tdir / OWNER_KEY).unlink()
        write_identity(tdir / OWNER_KEY, owner)
        cert = Certificate.issue(owner, owner.public, node.peer_id, ALL_ROLES, now,
                                 now + lifetime_s)  # fmt: skip
        _write_envelopes(tdir / CHAIN_FILE, [cert.envelope])
        _write_envelopes(tdir / ISSUED_FILE, [cert.envelope])
        cls._write_colony(tdir, name, owner.public.raw, [])
        return cls(home)

    @staticmethod
    def _write_colony(tdir: Path, name: str, owner: bytes, bootstrap: list[str]) -> None:
        data = {"name": name, "colony": owner.hex(), "bootstrap": bootstrap}
        _write_atomic(tdir / COLONY_FILE, (json.dumps(data, indent=1) + "\n").encode())

    @classmethod
    def join(
        cls, home: Path, token: JoinToken, node: KeyPair, now: float, *, force: bool = False
    ) -> Trust:
        """Install a join token: colony id, this node's chain, bootstrap addresses."""
        try:
            token.verify(node.peer_id, now)
        except RemoteProtocolError as e:
            raise ConfigError(f"this join token does not admit this node: {e}") from None
        tdir = home / TRUST_DIR
        if (tdir / COLONY_FILE).exists():
            old = cls(home)
            if old.colony_owner != token.colony_owner and not force:
                raise ConfigError(
                    f"{home} is in colony {old.name!r} ({colony_id(old.require_colony())}); "
                    "pass --force to leave it for the new one"
                )
            if old.colony_owner != token.colony_owner:
                for f in (OWNER_KEY, ISSUED_FILE, REVOCATIONS_FILE):
                    (tdir / f).unlink(missing_ok=True)
        tdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write_envelopes(tdir / CHAIN_FILE, [c.envelope for c in token.chain])
        name = ""
        if (tdir / COLONY_FILE).exists():
            name = json.loads((tdir / COLONY_FILE).read_text()).get("name", "")
        cls._write_colony(tdir, name, token.colony_owner, list(token.bootstrap))
        return cls(home)

    # ------------------------------------------------------------ private data

    def _private_file(self) -> PrivateFile:
        path = self.dir / PRIVATE_FILE
        if not path.exists():
            return {"roots": [], "marks": {}}
        try:
            data = json.loads(path.read_text())
            roots = [str(r) for r in data["roots"]][:MAX_PRIVATE_ROOTS]
            marks = {str(k): str(v) for k, v in dict(data.get("marks", {})).items()}
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"{path} is corrupt ({e}); fix or delete it") from None
        return {"roots": roots, "marks": marks}

    def private_roots(self) -> list[str]:
        """CIDs (text) of the stored DAGs served only to members of the colony: roots
        marked here and roots fetched under a mark (which may lie inside the marked DAG)."""
        return list(self._private_file()["roots"])

    def private_marks(self) -> dict[str, bytes]:
        """Private root (text) → the signed mark covering it (envelope bytes). Roots
        marked before marks existed have none."""
        out = {}
        for root, text in self._private_file()["marks"].items():
            try:
                out[root] = bytes.fromhex(text)
            except ValueError:
                continue  # a damaged entry costs only its mark; the root stays private
        return out

    def set_private(self, cid: str, private: bool, mark: bytes | None = None) -> list[str]:
        """Mark (or unmark) the DAG under `cid` as members-only, keeping `mark` (the
        signed statement that covers it) with it; returns the roots. Who may unmark
        is decided by the caller (services/trust.py)."""
        self.require_colony()
        data = self._private_file()
        roots = [r for r in data["roots"] if r != cid]
        marks = {k: v for k, v in data["marks"].items() if k != cid}
        if private:
            if len(roots) >= MAX_PRIVATE_ROOTS:
                raise ConfigError(f"at most {MAX_PRIVATE_ROOTS} private roots")
            roots.append(cid)
            if mark is not None:
                marks[cid] = mark.hex()
        body = json.dumps({"roots": roots, "marks": marks})
        _write_atomic(self.dir / PRIVATE_FILE, body.encode())
        return roots

    def may_unmark(self, cid: str, me: PeerId, now: float) -> str | None:
        """None if node `me` may make `cid` public again, else why not: only the
        member that signed its mark, or a holder of `admit` (an admin)."""
        data = self.private_marks().get(cid)
        if data is None or self.check(me, Role.ADMIT, now) is None:
            return None
        try:
            marker = PrivateMark.from_bytes(data).marker
        except ColonyError:
            return None  # a damaged mark protects nothing; its root may be unmarked
        if marker == me:
            return None
        return (f"{cid} was marked private by {marker}; only that member or an admin "
                "(role admit) may make it public")

    def token_for(self, chain: Sequence[Certificate], bootstrap: Sequence[str]) -> str:
        return JoinToken(self.require_colony(), tuple(chain), tuple(bootstrap)).encode()


def load_token(text: str) -> JoinToken:
    """A join token given inline, or the path of a file holding one."""
    text = text.strip()
    try:
        path = Path(text).expanduser()
        if path.is_file():
            text = path.read_text().strip()
    except OSError:
        pass  # not a usable path (e.g. a token longer than NAME_MAX): take it as a token
    try:
        return JoinToken.decode(text)
    except (WireError, RemoteProtocolError) as e:
        raise ConfigError(f"not a valid join token: {e}") from None


def private_multihashes(store: BlockStore, roots: Iterable[str]) -> set[bytes]:
    """Every block multihash of the stored DAGs under `roots` (from the store's
    reference index). Blocks not stored yet are not included: mark a DAG private
    after it is imported or fetched (the daemon recomputes on every mark)."""
    out: set[bytes] = set()
    with store.reader() as r:
        for text in roots:
            try:
                stack = [Cid.parse(text).multihash]
            except ColonyError:
                continue
            while stack:
                mh = stack.pop()
                if mh in out:
                    continue
                out.add(mh)
                for link in r.links(mh) or []:
                    try:
                        stack.append(Cid.from_bytes(bytes(link)).multihash)
                    except ColonyError:
                        continue
    return out


def capsule_authority(
    home: Path, conf: Config
) -> tuple[bytes | None, tuple[Certificate, ...]]:
    """The hook overlay/runtime/services/capsules.py reads: (colony owner, own chain).
    Open mode gives (None, ())."""
    t = Trust(home, conf)
    return t.colony_owner, t.own_chain


__all__ = [
    "Refusal",
    "Trust",
    "capsule_authority",
    "chain_to_wire",
    "colony_id",
    "human_time",
    "load_token",
    "parse_colony_id",
    "parse_duration",
    "private_multihashes",
    "serial",
]
