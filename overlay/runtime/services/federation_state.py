"""What a node remembers for federation (services/federation.py, docs/federation.md).

- `sessions`: peer of another colony → the grants it proved (verified once, when it
  presented them) and `chains`: the chain it proved itself with; each use re-checks
  the grants' expiry and revocation (`live_grants`) and the chain against its
  colony's revocations as this node knows them, so a revoked grant or member stops
  working at the first message after the revocation arrived.
  At most `max_sessions` peers (oldest forgotten: it proves itself again).
- `label_roots`: grant serial → the current roots of labels under its prefix that a
  grantee asked for; `blocks`: grant serial → (when computed, block multihashes of
  the granted DAGs held here).
- `capsules`: capsule id → the colony (owner key) it was submitted for/by, so a
  grantee's other members may read its record through this node.
- `runs` / `outputs` (executor side): another colony's capsules run here and the
  output and log roots of each, readable by its submitter while it holds a grant
  giving `submit` (in memory: lost when the executor restarts).
- `ledger`: the quota counts of this node (overlay/core/quota.py), saved in
  `<home>/trust/federation_usage.json` at every capsule charge and at most every
  `SAVE_EVERY_S` for bytes (a crash loses at most that much byte accounting).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from overlay.core.certs import Certificate
from overlay.core.cid import Cid
from overlay.core.errors import ConfigError
from overlay.core.grants import Grant
from overlay.core.ids import PeerId
from overlay.core.quota import QuotaLedger
from overlay.runtime.jsontypes import JsonObject
from overlay.runtime.services.grant_store import USAGE_FILE, GrantStore, Held, grant_status
from overlay.runtime.services.trust_state import Trust, colony_id, write_atomic

SAVE_EVERY_S = 5.0
MAX_CAPSULES = 10_000
#: Output and log roots remembered per submitter of another colony (newest kept).
MAX_OUTPUT_ROOTS = 256


def grant_json(g: Grant, t: Trust, now: float) -> JsonObject:
    return {
        "serial": g.serial, "colony": str(colony_id(g.colony)),
        "grantee": str(colony_id(g.grantee)), "issuer": str(g.issuer),
        "roles": list(g.roles), "roots": [str(c) for c in g.roots], "prefix": g.prefix,
        "quota": dict(g.quota), "issued": g.issued, "expires": g.expires,
        "status": grant_status(g, t, now),
    }  # fmt: skip


def held_for(store: GrantStore, colony: bytes, role: str | None, now: float) -> Held:
    """The newest valid grant colony `colony` gave this one (giving `role`, if set)."""
    fits = [h for h in store.held() if h.grant.colony == colony and h.grant.expires > now
            and (role is None or h.grant.gives(role))]  # fmt: skip
    if not fits:
        what = f" giving {role}" if role else ""
        raise ConfigError(f"this node holds no valid grant{what} from colony {colony_id(colony)}"
                          " (install one with `colony grant accept TOKEN`)")  # fmt: skip
    return max(fits, key=lambda h: h.grant.issued)


class FederationState:
    def __init__(self, tdir: Path, trust: Trust) -> None:
        self.path = tdir / USAGE_FILE
        self.trust = trust
        self.ledger = QuotaLedger()
        if self.path.exists():
            try:
                self.ledger = QuotaLedger.from_json(json.loads(self.path.read_text()))
            except (OSError, ValueError):
                self.ledger = QuotaLedger()  # counts restart at zero: said in the docs
        self.sessions: dict[PeerId, dict[str, Grant]] = {}
        #: The chain each session's peer proved itself with (re-checked against its
        #: colony's revocations: services/federation_revocations.py).
        self.chains: dict[PeerId, tuple[Certificate, ...]] = {}
        self.label_roots: dict[str, list[Cid]] = {}
        self.blocks: dict[str, tuple[float, frozenset[bytes]]] = {}
        self.capsules: dict[str, bytes] = {}
        #: Executor side: capsule id → its submitter, for runs of another colony's
        #: capsules here; then submitter → the output and log roots of its runs.
        self.runs: dict[str, PeerId] = {}
        self.outputs: dict[PeerId, list[str]] = {}
        #: Guest executor → (capsule id, its input and parent-output roots) of the
        #: lease it proved (custody side; one lease per guest remembered).
        self.leases: dict[PeerId, tuple[str, list[str]]] = {}
        self._dirty = False
        self._saved_at = 0.0

    # ------------------------------------------------------------ sessions

    def open_session(self, peer: PeerId, grants: Sequence[Grant], roots: dict[str, list[Cid]],
                     max_sessions: int, chain: Sequence[Certificate]) -> None:  # fmt: skip
        s = self.sessions.pop(peer, {})
        s.update({g.serial: g for g in grants})
        while len(self.sessions) >= max_sessions:
            self.end_session(next(iter(self.sessions)))
        self.sessions[peer] = s
        self.chains[peer] = tuple(chain)
        for serial, cids in roots.items():
            known = self.label_roots.setdefault(serial, [])
            known.extend(c for c in cids if c not in known)
            del known[:-64]
            self.blocks.pop(serial, None)

    def live_grants(self, peer: PeerId, now: float,
                    in_force: Callable[[Grant, float], bool]) -> list[Grant]:  # fmt: skip
        """The grants of `peer`'s session still in force (expired or revoked ones are
        dropped from it)."""
        s = self.sessions.get(peer)
        if not s:
            return []
        for serial in [k for k, g in s.items() if not in_force(g, now)]:
            del s[serial]
        if not s:
            self.end_session(peer)
        return list(s.values())

    def end_session(self, peer: PeerId) -> bool:
        """Forget `peer`'s session (it proves itself again); whether it had one."""
        self.chains.pop(peer, None)
        return self.sessions.pop(peer, None) is not None

    def session_count(self) -> int:
        return len(self.sessions)

    # ------------------------------------------------------------ capsules

    def note_capsule(self, capsule_id: str, colony: bytes) -> None:
        if len(self.capsules) >= MAX_CAPSULES:
            del self.capsules[next(iter(self.capsules))]
        self.capsules[capsule_id] = colony

    def capsule_colony(self, capsule_id: str) -> bytes | None:
        return self.capsules.get(capsule_id)

    def note_run(self, capsule_id: str, submitter: PeerId) -> None:
        if len(self.runs) >= MAX_CAPSULES:
            del self.runs[next(iter(self.runs))]
        self.runs[capsule_id] = submitter

    def note_lease(self, peer: PeerId, capsule_id: str, roots: list[str]) -> None:
        if peer not in self.leases and len(self.leases) >= MAX_CAPSULES:
            del self.leases[next(iter(self.leases))]
        self.leases[peer] = (capsule_id, roots[:MAX_OUTPUT_ROOTS])
        self.blocks.pop(f"lease:{peer}", None)

    def note_outputs(self, capsule_id: str, cids: Sequence[str]) -> PeerId | None:
        """The outputs of a run of another colony's capsule: readable by its submitter."""
        who = self.runs.get(capsule_id)
        if who is None:
            return None
        if who not in self.outputs and len(self.outputs) >= MAX_CAPSULES:
            del self.outputs[next(iter(self.outputs))]
        roots = self.outputs.setdefault(who, [])
        roots.extend(c for c in cids if c not in roots)
        del roots[:-MAX_OUTPUT_ROOTS]
        return who

    # ------------------------------------------------------------ ledger

    def dirty(self) -> None:
        self._dirty = True
        if time.monotonic() - self._saved_at >= SAVE_EVERY_S:
            self.save()

    def save(self) -> None:
        if not self.trust.enabled:
            return
        write_atomic(self.path, json.dumps(self.ledger.to_json()).encode())
        self._dirty = False
        self._saved_at = time.monotonic()


__all__ = ["FederationState", "grant_json", "held_for"]
