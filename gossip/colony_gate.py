"""Colony mode in the gossip core: who may be a member, refusals, revocations.

DESIGN §3, docs/trust.md. With an `Admission` gate (gossip/admission.py) an alive claim
is accepted only with a certificate chain granting ``member`` in this colony; messages
from peers that are not members are refused — unless they carry the sender's own
certified claim (a push-pull record: how a node joins; or a piggybacked alive: a
member's first pings to a peer that has not talked to it yet carry its alive first,
`introduce`). Nothing is sent to a non-member except a joiner's own claim to its seeds
and a revoked node's revocation (below).
Members whose chain expires (`cert-expiry` timer) or is revoked are expelled.
A revoked node is told: when a peer whose chain we know to be revoked (from its
expelled entry, or the claim in its message) talks to us, we send it the signed
revocation, at most once per `refuse_report_interval_s` (`notice_for`); a node that
learns a valid revocation of its own chain emits `OwnCertificateRevoked`.
Revocations travel as signed updates and on the first push-pull page; from a peer they
are taken only when signed by the owner or an issuer seen above that certificate in a
verified chain. Every refusal is counted and reported (`MemberRefused`) once per peer
and reason per `refuse_report_interval_s`. In open mode (`admission is None`) nothing
here filters: `introduce` passes updates through, `admit_claim` admits until forever,
a gossiped revocation is counted and ignored, and `PublishRevocation` is a
`LocalProtocolError`.

`ColonyGate` decides and reports; it never edits the member table. It returns its
outcomes (a claim's `valid_until` or None, the members to expel, whether a revocation
was learned) and `gossip.swim.Swim` carries them out.

Invariants: `len(refused) ≤ max_refused` (plus expelled members, recorded once each);
`expiry_at` is the deadline of the armed `cert-expiry` timer (inf: none armed).
"""

from __future__ import annotations

import math
from typing import Any

from gossip.admission import Admission, who
from gossip.broadcast_queue import BroadcastQueue
from gossip.counters import count
from gossip.events import (
    MemberExpelled,
    MemberRefused,
    OwnCertificateRevoked,
    RevocationLearned,
)
from gossip.local_node import LocalNode
from gossip.member_table import MemberTable
from gossip.messages import Alive, PushPull, Revoke, Update
from gossip.profiles import SwimConfig
from overlay.core.crypto import Envelope
from overlay.core.effects import Effect, Emit, SetTimer
from overlay.core.errors import LocalProtocolError, WireError
from overlay.core.ids import PeerId


class ColonyGate:
    """Admission glue between the gossip core and `gossip.admission.Admission`."""

    __slots__ = ("admission", "bq", "config", "expiry_at", "heard", "local", "refused",
                 "revoked", "stats", "table")  # fmt: skip

    def __init__(
        self,
        admission: Admission | None,
        local: LocalNode,
        table: MemberTable,
        bq: BroadcastQueue,
        config: SwimConfig,
        stats: dict[str, int],
    ) -> None:
        #: The colony gate (None: open mode).
        self.admission = admission
        self.local = local
        self.table = table
        self.bq = bq
        self.config = config
        self.stats = stats
        #: peer -> (last refusal reason, when it was reported)
        self.refused: dict[PeerId, tuple[str, float]] = {}
        self.expiry_at = math.inf
        #: Colony mode: members a message came from (they know us; `introduce`).
        #: Kept outside `Member` so open mode pays nothing; membership tests only.
        self.heard: set[PeerId] = set()
        #: Refused peers whose chain is revoked (bounded like `refused`): the chain,
        #: and when we last sent them the revocation.
        self.revoked: dict[PeerId, tuple[tuple[Envelope, ...], float]] = {}

    # ------------------------------------------------------------ senders and claims

    def own_claim(self, peer: PeerId, msg: Any) -> Alive | None:
        """A message from a non-member: the sender's own alive claim in it (a
        push-pull record, or a piggybacked update), if it carries one."""
        if isinstance(msg, PushPull):
            return next((r.alive for r in msg.states if r.alive.peer == peer), None)
        return next((u for u in getattr(msg, "updates", ())
                     if isinstance(u, Alive) and u.peer == peer), None)  # fmt: skip

    def introduce(self, target: PeerId, updates: tuple[Update, ...]) -> tuple[Update, ...]:
        """Colony mode: until `target` has talked to us, our pings to it carry our own
        certified alive first. It may have heard of us only from others, or not at all
        yet (joins race); without the claim it would refuse the ping and we would
        suspect a healthy member."""
        if self.admission is None:
            return updates
        if target not in self.table or target in self.heard:
            return updates
        alive = self.local.alive
        return (alive, *(u for u in updates if u is not alive))

    def admit_claim(self, a: Alive, now: float, out: list[Effect]) -> float | None:
        """Until when `a.peer` may be a member (inf in open mode), or None: refused,
        counted and reported."""
        if self.admission is None:
            return math.inf
        verdict = self.admission.check(a, now)
        if isinstance(verdict, str):
            count(self.stats, "alive_refused")
            self.refuse(a.peer, verdict, now, out)
            return None
        return verdict

    def track_expiry(self, valid_until: float, out: list[Effect]) -> None:
        """Arm `cert-expiry` earlier if a newly admitted chain expires sooner."""
        if valid_until < self.expiry_at:
            self.expiry_at = valid_until
            out.append(SetTimer("cert-expiry", valid_until))

    # ------------------------------------------------------------ refusals

    def refusal_reason(self, peer: PeerId) -> str:
        """Why a non-member's message is refused: the last reason its claim was
        refused for (expired, revoked, …), else that it is not a member."""
        last = self.refused.get(peer)
        return last[0] if last else f"{who(peer)} is not a member of this colony"

    def refuse(self, peer: PeerId, reason: str, now: float, out: list[Effect]) -> None:
        """Report a refusal once per peer and reason per `refuse_report_interval_s`."""
        last = self.refused.pop(peer, None)
        interval = self.config.refuse_report_interval_s
        if last is None or last[0] != reason or now - last[1] >= interval:
            out.append(Emit(MemberRefused(peer, reason)))
            last = (reason, now)
        if len(self.refused) >= self.config.max_refused:
            del self.refused[next(iter(self.refused))]
        self.refused[peer] = last

    def notice_for(self, peer: PeerId, msg: Any, now: float) -> Revoke | None:
        """The revocation of refused `peer`'s chain, if we know its chain (expelled
        entry, or the claim in `msg`) and it is revoked; at most once per
        `refuse_report_interval_s` per peer."""
        if self.admission is None:
            return None
        chain, last = self.revoked.pop(peer, ((), -math.inf))
        if not chain:
            own = self.own_claim(peer, msg)
            chain = own.chain if own is not None else ()
        notice = self.admission.revocation_naming(chain) if chain else None
        if notice is None:
            return None
        due = now - last >= self.config.refuse_report_interval_s
        self._remember_revoked(peer, chain, now if due else last)
        return notice if due else None

    def _remember_revoked(self, peer: PeerId, chain: tuple[Envelope, ...], at: float) -> None:
        if len(self.revoked) >= self.config.max_refused:
            del self.revoked[next(iter(self.revoked))]
        self.revoked[peer] = (chain, at)

    # ------------------------------------------------------------ revocations

    def parse_revocation(self, env: Envelope) -> Revoke:
        """The `PublishRevocation` command's envelope; misuse raises."""
        if self.admission is None:
            raise LocalProtocolError("revocations need colony mode (an Admission gate)")
        try:
            return Revoke.from_envelope(env)
        except WireError as e:
            raise LocalProtocolError(f"not a revocation: {e}") from None

    def on_revoke(
        self, r: Revoke, now: float, out: list[Effect], *, local: bool
    ) -> tuple[bool, str | None]:
        """Record a revocation if new and valid, and gossip it on. Returns (learned:
        members must be re-checked, None if it is in force else why not). `local`:
        from this node's operator, taken without the known-authority filter."""
        adm = self.admission
        if adm is None:
            count(self.stats, "revocation_ignored_open_mode")
            return False, "open mode: no colony"
        if adm.knows(r):
            count(self.stats, "revocation_duplicate")
            return False, None
        verdict = adm.add_revocation(r, now, trusted=local)
        if isinstance(verdict, str):
            count(self.stats, "revocation_refused")
            return False, verdict
        count(self.stats, "revocation_learned")
        self.bq.queue(("rv", r.cert_id, r.env.signer), r)
        out.append(Emit(RevocationLearned(r.cert_id, r.env.signer_id, r.env)))
        if adm.revocation_naming(self.local.chain) is not None:
            count(self.stats, "own_certificate_revoked")
            out.append(Emit(OwnCertificateRevoked(r.cert_id, r.env.signer_id, r.env)))
        return True, None

    # ------------------------------------------------------------ expulsion

    def to_expel(self, now: float, *, only_expired: bool) -> list[tuple[PeerId, str]]:
        """Members whose chain expired (`only_expired`: those past `valid_until`) or
        no longer verifies, with the reason; refreshes `valid_until` of the rest."""
        adm = self.admission
        if adm is None:
            return []
        expel: list[tuple[PeerId, str]] = []
        for p, m in self.table.items():
            if only_expired and m.valid_until > now:
                continue
            verdict = adm.check(m.alive, now)
            if isinstance(verdict, str):
                expel.append((p, verdict))
            else:
                m.valid_until = verdict
        return expel

    def expelled(
        self, peer: PeerId, chain: tuple[Envelope, ...], reason: str, now: float,
        out: list[Effect],
    ) -> None:
        """`peer` (presenting `chain`) left the table by expulsion: remember and
        report why."""
        self.heard.discard(peer)
        if self.admission is not None and self.admission.revocation_naming(chain):
            self._remember_revoked(peer, chain, -math.inf)
        count(self.stats, "expelled")
        self.refused[peer] = (reason, now)  # reported now, by MemberExpelled
        out.append(Emit(MemberExpelled(peer, reason)))

    def rearm_expiry(self, out: list[Effect]) -> None:
        """Arm `cert-expiry` at the earliest remaining expiry (colony mode)."""
        if self.admission is None:
            return
        nxt = min((m.valid_until for m in self.table.values()), default=math.inf)
        if nxt < math.inf and nxt != self.expiry_at:
            self.expiry_at = nxt
            out.append(SetTimer("cert-expiry", nxt))
