"""Colony membership gate: who may be a gossip member (DESIGN §3, docs/trust.md).

A colony is an owner key. In colony mode every alive claim carries its subject's
certificate chain (gossip/messages.py); `Admission.check` says whether that chain lets
the subject hold role ``member`` now, and until when. The rules themselves live in
`overlay.core.certs.verify_chain`; this module adds what a gossip core needs around
them:

- a bounded cache keyed by the leaf certificate's signature, so a member's chain is
  verified once, not at every incarnation or every forwarder;
- the revocations known to this node (`RevocationList` for the rule, the signed
  envelopes to forward them in push-pull), bounded, pruned once the certificate they
  name would be expired anyway;
- `generation`, bumped whenever a revocation is added, so the core knows to re-check
  its current members.

No gate (``Swim(admission=None)``) is open mode: anyone with a valid signature joins,
exactly as before colonies existed.

Invariants: `check` never raises for bad peer input (it returns the reason);
`len(cache) ≤ max_cache`; `len(revocations) ≤ max_revocations`.
"""

from __future__ import annotations

import math

from gossip.messages import Alive, Revoke
from overlay.core.certs import Certificate, Revocation, RevocationList, Role, verify_chain
from overlay.core.crypto import Envelope
from overlay.core.errors import RemoteProtocolError
from overlay.core.ids import PeerId
from overlay.core.multiformats import multihash_sha256


def who(peer: PeerId) -> str:
    """A peer id as the certificate checks print it ("12D3…xyz123")."""
    text = peer.to_base58()
    return f"{text[:4]}…{text[-6:]}" if len(text) > 12 else text


class Admission:
    __slots__ = (
        "_authority",
        "_cache",
        "_peer_leaf",
        "_revs",
        "colony_owner",
        "generation",
        "max_cache",
        "max_revocations",
        "revocations",
    )

    def __init__(
        self,
        colony_owner: bytes,
        revocations: RevocationList | None = None,
        *,
        max_cache: int = 4096,
        max_revocations: int = 4096,
    ) -> None:
        if len(colony_owner) != 32:
            raise ValueError("colony owner must be a 32-byte Ed25519 public key")
        self.colony_owner = bytes(colony_owner)
        self.max_revocations = max(1, max_revocations)
        self.revocations = (
            revocations
            if revocations is not None  # an empty list is falsy: test for None
            else RevocationList(colony_owner, self.max_revocations)
        )
        self.max_cache = max(1, max_cache)
        # leaf signature -> (subject, chain, not_before, valid_until)
        self._cache: dict[bytes, tuple[PeerId, tuple[Certificate, ...], float, float]] = {}
        # peer -> leaf signature of its last admitted chain (same bound as the cache)
        self._peer_leaf: dict[PeerId, bytes] = {}
        # certificate id -> keys with authority to revoke it, from chains we verified
        self._authority: dict[bytes, frozenset[bytes]] = {}
        # (cert id, revoker key) -> revocation, in arrival order
        self._revs: dict[tuple[bytes, bytes], Revocation] = {}
        self.generation = 0

    # ------------------------------------------------------------ members

    def check(self, alive: Alive, now: float) -> float | str:
        """`valid_until` (earliest expiry in the chain) if `alive.peer` may be a member
        at `now`; otherwise the reason it may not, naming the peer and the rule."""
        if not alive.chain:
            return f"no colony certificate presented by {who(alive.peer)}"
        leaf_sig = alive.chain[-1].signature
        hit = self._cache.get(leaf_sig)
        if hit is not None and hit[0] == alive.peer and hit[2] <= now < hit[3]:
            if [c.envelope for c in hit[1]] == list(alive.chain):
                return hit[3]
        try:
            certs = tuple(Certificate.from_envelope(e) for e in alive.chain)
            verify_chain(certs, self.colony_owner, alive.peer, Role.MEMBER, now, self.revocations)
        except RemoteProtocolError as e:
            return str(e)
        not_before = max(c.issued for c in certs)
        valid_until = min(c.expires for c in certs)
        if len(self._cache) >= self.max_cache:
            del self._cache[next(iter(self._cache))]
        self._cache[leaf_sig] = (alive.peer, certs, not_before, valid_until)
        self._peer_leaf.pop(alive.peer, None)
        if len(self._peer_leaf) >= self.max_cache:
            del self._peer_leaf[next(iter(self._peer_leaf))]
        self._peer_leaf[alive.peer] = leaf_sig
        signers: list[bytes] = []
        for c in certs:  # who may revoke each link: its issuer and those above
            signers.append(c.envelope.signer)
            if len(self._authority) >= 3 * self.max_cache:
                del self._authority[next(iter(self._authority))]
            self._authority[c.cert_id] = frozenset(signers)
        return valid_until

    def note_authority(self, object_id: bytes, signers: frozenset[bytes]) -> None:
        """Keys with authority to revoke `object_id` beyond the owner (a grant's signer
        and its chain, overlay/core/grants.py), so a peer's revocation by one of them
        is taken like one of a certificate seen in a verified chain."""
        if len(self._authority) >= 3 * self.max_cache:
            del self._authority[next(iter(self._authority))]
        self._authority[object_id] = signers

    def chain_of(self, alive: Alive) -> tuple[Certificate, ...] | None:
        """The verified chain of an alive claim that passed `check` (cached)."""
        hit = self._cache.get(alive.chain[-1].signature) if alive.chain else None
        return None if hit is None or hit[0] != alive.peer else hit[1]

    def chain_for(self, peer: PeerId) -> tuple[Certificate, ...] | None:
        """The last chain `peer` was admitted with (for role checks by other layers;
        the caller re-verifies it against the time and revocations)."""
        sig = self._peer_leaf.get(peer)
        hit = None if sig is None else self._cache.get(sig)
        return None if hit is None or hit[0] != peer else hit[1]

    # ------------------------------------------------------------ revocations

    def knows(self, r: Revoke) -> bool:
        return (r.cert_id, r.env.signer) in self._revs

    def add_revocation(self, r: Revoke, now: float, *, trusted: bool = True) -> Revocation | str:
        """Verify and record a revocation. Returns it if it is new and in force,
        else the reason it was not added. Raises nothing for bad peer input.

        From a peer (`trusted=False`), a revocation is taken only when signed by the
        owner or by an issuer we have seen in a chain above that very certificate:
        otherwise any member could fill the bounded list with junk and push real
        revocations out. (One we refuse now comes again in later push-pulls, once
        we know the chain it is about.)"""
        if r.colony != self.colony_owner:
            return "revocation for another colony"
        if self.knows(r):
            return "revocation already known"
        signer = r.env.signer
        if not trusted and signer != self.colony_owner and signer not in self._authority.get(
            r.cert_id, ()
        ):
            return "revocation signed by a key with no known authority over that certificate"
        try:
            rev = Revocation.from_envelope(r.env)
        except RemoteProtocolError as e:
            return f"bad revocation: {e}"
        if not self.revocations.add(rev, now):
            return "revocation for an expired certificate"
        if len(self._revs) >= self.max_revocations:
            self.prune(now)
        while len(self._revs) >= self.max_revocations:
            del self._revs[next(iter(self._revs))]
        self._revs[(rev.cert_id, rev.revoker)] = rev
        # Cached verdicts predate this revocation. Chains stay known (`chain_for`)
        # until re-checked; callers re-verify them with the revocations anyway.
        self._cache = {k: (v[0], v[1], v[2], -math.inf) for k, v in self._cache.items()}
        self.generation += 1
        return rev

    def prune(self, now: float) -> None:
        self.revocations.prune(now)
        for k in [k for k, r in self._revs.items() if r.cert_expires <= now]:
            del self._revs[k]

    def revocation_naming(self, chain: tuple[Envelope, ...]) -> Revoke | None:
        """A known revocation of one of the certificates in `chain`, if any."""
        ids = {multihash_sha256(e.to_bytes()) for e in chain}
        for (cert_id, _), rev in self._revs.items():
            if cert_id in ids:
                return Revoke(rev.envelope, rev.colony, rev.cert_id)
        return None

    def known_revocations(self, limit: int) -> tuple[Revoke, ...]:
        """Newest first, at most `limit`, as gossip updates."""
        out: list[Revoke] = []
        for rev in reversed(self._revs.values()):
            if len(out) >= limit:
                break
            out.append(Revoke(rev.envelope, rev.colony, rev.cert_id))
        return tuple(out)

    def __len__(self) -> int:
        return len(self._cache)

