"""Colony mode in the gossip core: who may be a member, refusals, revocations.

DESIGN §3, docs/trust.md. With an `Admission` gate (gossip/admission.py) an alive claim
is accepted only with a certificate chain granting ``member`` in this colony; messages
from peers that are not members are refused — unless they carry the sender's own
certified claim (a push-pull record: how a node joins; or a piggybacked alive: a
member's first pings to a peer that has not talked to it yet carry its alive first,
`_introduce`). Nothing is sent to a non-member except a joiner's own claim to its seeds.
Members whose chain expires (`cert-expiry` timer) or is revoked are expelled.
Revocations travel as signed updates and on the first push-pull page; from a peer they
are taken only when signed by the owner or an issuer seen above that certificate in a
verified chain. Every refusal is counted and reported (`MemberRefused`) once per peer
and reason per `refuse_report_interval_s`. In open mode (`admission is None`) nothing
here filters: `_introduce` passes updates through, a gossiped revocation is counted
and ignored, and `PublishRevocation` is a `LocalProtocolError`.
"""

from __future__ import annotations

import math
from typing import Any

from gossip.admission import who
from gossip.events import MemberExpelled, MemberRefused, RevocationLearned
from gossip.messages import Alive, PushPull, Revoke, Update
from gossip.swim_state import LIVE
from gossip.user_event_gossip import UserEventGossip
from overlay.core.crypto import Envelope
from overlay.core.effects import CancelTimer, Effect, Emit, SetTimer
from overlay.core.errors import LocalProtocolError, WireError
from overlay.core.ids import PeerId


class ColonyGate(UserEventGossip):
    """Admission glue between the gossip core and `gossip.admission.Admission`."""

    def _publish_revocation(self, env: Envelope, now: float, out: list[Effect]) -> None:
        if self.admission is None:
            raise LocalProtocolError("revocations need colony mode (an Admission gate)")
        try:
            r = Revoke.from_envelope(env)
        except WireError as e:
            raise LocalProtocolError(f"not a revocation: {e}") from None
        refused = self._on_revoke(r, now, out, local=True)
        if refused is not None:
            raise LocalProtocolError(f"revocation refused: {refused}")

    def _admit_sender(self, peer: PeerId, msg: Any, now: float, out: list[Effect]) -> bool:
        """A message from a non-member: admit the sender through its own alive claim
        in it (a push-pull record, or a piggybacked update), if it carries one."""
        if isinstance(msg, PushPull):
            own = next((r.alive for r in msg.states if r.alive.peer == peer), None)
        else:
            own = next((u for u in getattr(msg, "updates", ())
                        if isinstance(u, Alive) and u.peer == peer), None)  # fmt: skip
        if own is None:
            return False
        # Its revocations wait until it is admitted (`_on_push_pull`): an outsider
        # must not be able to fill the bounded revocation list.
        self._apply_update(own, now, out, merge=True)
        return peer in self.members

    def _introduce(self, target: PeerId, updates: tuple[Update, ...]) -> tuple[Update, ...]:
        """Colony mode: until `target` has talked to us, our pings to it carry our own
        certified alive first. It may have heard of us only from others, or not at all
        yet (joins race); without the claim it would refuse the ping and we would
        suspect a healthy member."""
        if self.admission is None:
            return updates
        if target not in self.members or target in self._heard:
            return updates
        return (self._alive, *(u for u in updates if u is not self._alive))

    def _refusal_reason(self, peer: PeerId) -> str:
        """Why a non-member's message is refused: the last reason its claim was
        refused for (expired, revoked, …), else that it is not a member."""
        last = self._refused.get(peer)
        return last[0] if last else f"{who(peer)} is not a member of this colony"

    def _refuse(self, peer: PeerId, reason: str, now: float, out: list[Effect]) -> None:
        """Report a refusal once per peer and reason per `refuse_report_interval_s`."""
        last = self._refused.pop(peer, None)
        interval = self.config.refuse_report_interval_s
        if last is None or last[0] != reason or now - last[1] >= interval:
            out.append(Emit(MemberRefused(peer, reason)))
            last = (reason, now)
        if len(self._refused) >= self.config.max_refused:
            del self._refused[next(iter(self._refused))]
        self._refused[peer] = last

    def _on_revoke(
        self, r: Revoke, now: float, out: list[Effect], *, local: bool = False
    ) -> str | None:
        """Record a revocation if new and valid, gossip it on, re-check members.
        Returns None if it is (now or already) in force, else why not. `local`: from
        this node's operator, taken without the known-authority filter."""
        adm = self.admission
        if adm is None:
            self._count("revocation_ignored_open_mode")
            return "open mode: no colony"
        if adm.knows(r):
            self._count("revocation_duplicate")
            return None
        verdict = adm.add_revocation(r, now, trusted=local)
        if isinstance(verdict, str):
            self._count("revocation_refused")
            return verdict
        self._count("revocation_learned")
        self._bq.queue(("rv", r.cert_id, r.env.signer), r)
        out.append(Emit(RevocationLearned(r.cert_id, r.env.signer_id, r.env)))
        self._recheck_members(now, out, only_expired=False)
        return None

    def _recheck_members(self, now: float, out: list[Effect], *, only_expired: bool) -> None:
        """Expel members whose chain expired (timer) or no longer verifies (after a
        revocation), then re-arm the expiry timer at the earliest remaining expiry."""
        adm = self.admission
        if adm is None:
            return
        expel: list[tuple[PeerId, str]] = []
        for p, m in self.members.items():
            if only_expired and m.valid_until > now:
                continue
            verdict = adm.check(m.alive, now)
            if isinstance(verdict, str):
                expel.append((p, verdict))
            else:
                m.valid_until = verdict
        for p, reason in expel:
            self._expel(p, reason, now, out)
        nxt = min((m.valid_until for m in self.members.values()), default=math.inf)
        if nxt < math.inf and nxt != self._expiry_at:
            self._expiry_at = nxt
            out.append(SetTimer("cert-expiry", nxt))

    def _expel(self, peer: PeerId, reason: str, now: float, out: list[Effect]) -> None:
        m = self.members.pop(peer)
        self._heard.discard(peer)
        if m.state in LIVE:
            self._n_live -= 1
        if self._suspicions.pop(peer, None) is not None:
            out.append(CancelTimer(("suspect", peer)))
        self._coords.pop(peer, None)
        self._rtt.pop(peer, None)
        self._ids = [p for p in self._ids if p != peer]
        self._probe_idx = min(self._probe_idx, len(self._ids))
        self._count("expelled")
        self._refused[peer] = (reason, now)  # reported now, by MemberExpelled
        out.append(Emit(MemberExpelled(peer, reason)))
