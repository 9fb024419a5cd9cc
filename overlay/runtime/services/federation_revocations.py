"""Colony B's revocations, carried to colony A (docs/federation.md, "B's revocations
reach A").

A verifies a B member's proof against B's owner key; B's revocations are gossiped
inside B only. So:

- **B publishes** (`publish`, run by `run_publisher`): a node of B that can sign for B —
  it holds the owner key, or its own chain gives ``admit`` — puts B's live revocations
  in the DHT under `/colony/revlist/<B>` (dht/revlists.py: signed, sequence number,
  expiry), at once when it learns a revocation (after `COALESCE_S`, so a burst makes
  one record), and every `REPUBLISH_S` (records expire after `RECORD_TTL_S`). It first
  reads the record in the DHT and merges it, so two publishers cannot drop each
  other's revocations for longer than one republish.
- **A keeps** (`RemoteRevocations`, sans-IO): per grantee colony, the union of every
  list it verified — a revocation stays until its certificate expires, so a stale or
  rolled-back record is only late, never a pardon — with the highest `seq` seen and
  when it last looked. A record that does not verify (a forged list: not signed by
  B's owner or a holder of B's admit) is refused and counted (`refused`).
- **A looks up** (`refresh`): before it verifies a proof of colony B when its copy is
  older than `recheck_s`; and FederationService re-checks every open session every
  `recheck_s` after looking up each session's colony (federation.py `run`).

Bound: a member B revoked loses every session in A within `recheck_s` + one DHT
lookup (≤ `LOOKUP_TIMEOUT_S`) after B's publisher put the list, which it does
`COALESCE_S` + one DHT put after it learned the revocation.

Bounds on state: `MAX_COLONIES` grantee colonies remembered (the one looked at least
recently is forgotten first; it is looked up again at its next proof), each list as
bounded as `RevocationList`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import structlog
import trio

from dht.api import GetValue, PutValue, Stored, Value, result_as
from dht.revlists import (
    MAX_REVLIST_ENTRIES,
    RevListRecord,
    make_revlist_record,
    parse_revlist_record,
    revlist_key,
)
from gossip.events import RevocationLearned
from overlay.core.certs import Certificate, Revocation, RevocationList, Role
from overlay.core.crypto import KeyPair
from overlay.core.errors import ColonyError, RemoteProtocolError
from overlay.runtime.context import DhtCalls
from overlay.runtime.jsontypes import JsonObject
from overlay.runtime.services.trust_state import Trust, colony_id

log = structlog.get_logger("colony.federation")

MAX_COLONIES = 256
#: Each DHT get or put here gives up after this long.
LOOKUP_TIMEOUT_S = 10.0
#: A proof waits at most this long for a stale list's lookup (the prover's own request
#: times out after 5 s): past it the lookup is cancelled, the proof is judged on what
#: this node knows, and the next re-check (`recheck_s`) looks again.
PROOF_LOOKUP_BUDGET_S = 2.0
#: A publisher waits this long after a revocation before it publishes (a burst of
#: revocations becomes one record).
COALESCE_S = 0.2
#: A publisher republishes at most this long after its last record (and first this long
#: after it starts), so the record outlives no publisher by more than `RECORD_TTL_S`.
REPUBLISH_S = 3600.0
FIRST_PUBLISH_S = 30.0
RECORD_TTL_S = 24 * 3600.0


@dataclass(slots=True)
class _Known:
    revs: RevocationList
    seq: int = -1
    checked: float = -1e18


class RemoteRevocations:
    """A's copy of other colonies' revocations (sans-IO: callers pass `now`)."""

    def __init__(self, max_colonies: int = MAX_COLONIES) -> None:
        self.max_colonies = max(1, max_colonies)
        self._known: dict[bytes, _Known] = {}
        #: Records refused (forged, malformed, expired, another colony's key).
        self.refused = 0
        #: Revocations learned from records (new to this node).
        self.learned = 0

    def get(self, colony: bytes) -> RevocationList | None:
        k = self._known.get(colony)
        return k.revs if k is not None else None

    def seq(self, colony: bytes) -> int:
        k = self._known.get(colony)
        return k.seq if k is not None else -1

    def stale(self, colony: bytes, now: float, max_age_s: float) -> bool:
        k = self._known.get(colony)
        return k is None or now - k.checked >= max_age_s

    def _entry(self, colony: bytes) -> _Known:
        k = self._known.pop(colony, None)
        if k is None:
            k = _Known(RevocationList(colony))
            while len(self._known) >= self.max_colonies:
                del self._known[next(iter(self._known))]
        self._known[colony] = k  # most recently looked at last
        return k

    def mark_checked(self, colony: bytes, now: float) -> None:
        self._entry(colony).checked = now

    def apply(self, colony: bytes, value: bytes, now: float) -> int:
        """Verify a record of `colony`'s list and merge it; return how many revocations
        were new. Raises RemoteProtocolError (counted) if it does not verify."""
        try:
            rec = parse_revlist_record(revlist_key(colony_id(colony)), value, now)
        except RemoteProtocolError:
            self.refused += 1
            raise
        k = self._entry(colony)
        new = 0
        for rev in rec.revs:
            if rev.revoker not in k.revs.revokers(rev.cert_id) and k.revs.add(rev, now):
                new += 1
        k.seq = max(k.seq, rec.seq)
        self.learned += new
        return new

    def colonies(self) -> list[bytes]:
        return list(self._known)

    def stats(self) -> dict[str, int]:
        return {"colonies": len(self._known), "refused": self.refused,
                "learned": self.learned}  # fmt: skip


class FederatedRevocations:
    """Both ends: B's publisher and A's lookups."""

    def __init__(self, trust: Trust, *, keypair: KeyPair, dht: DhtCalls,
                 recheck_s: float) -> None:  # fmt: skip
        if not recheck_s > 0:
            raise ValueError("[federation] recheck_s must be positive")
        self.trust = trust
        self.keypair = keypair
        self.dht = dht
        self.recheck_s = recheck_s
        self.remote = RemoteRevocations()
        self._wake = trio.Event()
        self._seq = -1
        self.published = 0
        self.lookup_failures = 0

    # ------------------------------------------------------------ A: lookups

    async def refresh(self, colony: bytes, *, force: bool = False) -> RevocationList | None:
        """`colony`'s revocations as this node knows them, looked up in the DHT first
        if the copy is older than `recheck_s` (or `force`)."""
        now = time.time()
        if force or self.remote.stale(colony, now, self.recheck_s):
            self.remote.mark_checked(colony, now)  # concurrent callers use the old copy
            await self._lookup(colony)
        return self.remote.get(colony)

    async def _lookup(self, colony: bytes) -> None:
        key = revlist_key(colony_id(colony))
        try:
            ev = await self.dht.call(partial(GetValue, key=key), timeout_s=LOOKUP_TIMEOUT_S)
            payload = result_as(ev, Value).value
        except ColonyError as e:
            self.lookup_failures += 1
            log.info("federation_revlist_lookup_failed", colony=str(colony_id(colony)),
                     error=str(e))  # fmt: skip
            return
        if not payload:
            return  # that colony published no revocation (or its record expired)
        try:
            new = self.remote.apply(colony, payload, time.time())
        except RemoteProtocolError as e:
            log.warning("federation_revlist_refused", colony=str(colony_id(colony)),
                        reason=str(e), refused=self.remote.refused)  # fmt: skip
            return
        if new:
            log.info("federation_revlist_learned", colony=str(colony_id(colony)), new=new,
                     seq=self.remote.seq(colony))  # fmt: skip

    # ------------------------------------------------------------ B: publishing

    def on_event(self, ev: object) -> None:
        if isinstance(ev, RevocationLearned):
            self._wake.set()

    def signer(self, now: float) -> tuple[KeyPair, tuple[Certificate, ...]] | None:
        """The key this node signs its colony's list with, and the chain that lets it
        (the owner key: none), or None if it may not."""
        t = self.trust
        if not t.enabled:
            return None
        if t.owner_key is not None:
            return t.owner_key, ()
        if t.own_chain and t.check(self.keypair.peer_id, Role.ADMIT, now) is None:
            return self.keypair, tuple(t.own_chain)
        return None

    def _own_revocations(self, now: float) -> list[Revocation]:
        owner = self.trust.require_colony()
        return [r for r in self.trust.saved_revocations()
                if r.colony == owner and r.cert_expires > now]  # fmt: skip

    async def publish(self) -> JsonObject:
        """Merge this node's revocations of its colony with the list in the DHT and put
        the result (when it adds something, or the record is half-way to expiry)."""
        now = time.time()
        who = self.signer(now)
        if who is None:
            return {"published": False, "reason": "this node may not sign for its colony"}
        mine = self._own_revocations(now)
        if not mine:  # nothing to add (what others published stays theirs to renew)
            return {"published": False, "reason": "no live revocation held", "entries": 0}
        owner = self.trust.require_colony()
        key = revlist_key(colony_id(owner))
        current: RevListRecord | None = None
        try:
            ev = await self.dht.call(partial(GetValue, key=key), timeout_s=LOOKUP_TIMEOUT_S)
            payload = result_as(ev, Value).value
            if payload:
                current = parse_revlist_record(key, payload, now)
        except (ColonyError, RemoteProtocolError) as e:
            log.info("federation_revlist_read_failed", error=str(e))
        have = {r.envelope.to_bytes(): r for r in (current.revs if current else ())}
        merged = dict(have)
        merged.update((r.envelope.to_bytes(), r) for r in mine)
        if (current is not None and merged.keys() == have.keys()
                          and current.expires - now > RECORD_TTL_S / 2):  # fmt: skip
            return {"published": False, "reason": "the list in the DHT is up to date",
                    "entries": len(merged)}  # fmt: skip
        live = sorted((r for r in merged.values() if r.cert_expires > now),
                      key=lambda r: (-r.issued, r.envelope.signature))[:MAX_REVLIST_ENTRIES]
        self._seq = max(self._seq, current.seq if current else -1) + 1
        kp, chain = who
        key, value = make_revlist_record(kp, colony_id(owner), _oldest_first(live), self._seq,
                                         now + RECORD_TTL_S, chain)  # fmt: skip
        try:  # a record our own DHT core refuses would be a local bug: never put one
            parse_revlist_record(key, value, now)
        except RemoteProtocolError as e:
            log.warning("federation_revlist_not_signed", reason=str(e))
            return {"published": False, "reason": str(e)}
        ev = await self.dht.call(lambda rid: PutValue(rid, key, value),
                                 timeout_s=LOOKUP_TIMEOUT_S)  # fmt: skip
        acks = result_as(ev, Stored).acks
        self.published += 1
        log.info("federation_revlist_published", seq=self._seq, entries=len(live), acks=acks,
                 error=ev.error)  # fmt: skip
        return {"published": True, "seq": self._seq, "entries": len(live), "acks": acks,
                "error": ev.error}  # fmt: skip

    async def run_publisher(self) -> None:
        """Publish when a revocation arrives, and every `REPUBLISH_S`."""
        wait = FIRST_PUBLISH_S
        while True:
            with trio.move_on_after(wait):
                await self._wake.wait()
            wait = REPUBLISH_S
            self._wake = trio.Event()
            if self.signer(time.time()) is None:
                continue
            await trio.sleep(COALESCE_S)
            try:
                await self.publish()
            except ColonyError as e:  # the DHT timed out: the next revocation or republish
                log.warning("federation_revlist_publish_failed", error=str(e))

    def stats(self) -> dict[str, int]:
        return {**self.remote.stats(), "published": self.published,
                "lookup_failures": self.lookup_failures}  # fmt: skip


def _oldest_first(revs: Sequence[Revocation]) -> list[Revocation]:
    return sorted(revs, key=lambda r: (r.issued, r.envelope.signature))


__all__ = ["FederatedRevocations", "RemoteRevocations"]
