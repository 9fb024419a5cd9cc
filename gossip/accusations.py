"""Suspicion, death and refutation: SWIM §4.2 with Lifeguard §IV-B and §IV-C.

A failed probe makes the prober sign a suspicion. It expires into a death notice after
a timeout that starts at `suspicion_max_timeout_mult × min` and shrinks with each
independent signed confirmation down to `min = suspicion_mult × log10(N) ×
probe_interval` (pure maths in gossip/suspicion.py). Only the subject can refute, by
signing a higher incarnation; being suspected also raises our own health score
(gossip/awareness.py). `lifeguard=False` gives plain SWIM: a fixed `min` timeout.

Trust: an accusation is checked for news before its accuser's rate limit and its
signature, so the many gossiped copies of one accusation cost neither; accusers must be
known members and pass a per-accuser token bucket (gossip/trust.py). Remote
suspect/dead notices learned by push-pull become suspicions signed by us (memberlist
mergeState), so the target always gets a full timeout to refute.
"""

from __future__ import annotations

from gossip.colony_gate import ColonyGate
from gossip.events import MemberFailed, MemberLeft, MemberSuspected
from gossip.members import Member, MemberState
from gossip.messages import KIND_ACCUSE, Accuse, AccuseKind, Alive
from gossip.suspicion import Suspicion, suspicion_timeout_s
from overlay.core.effects import CancelTimer, Effect, Emit, SetTimer
from overlay.core.ids import PeerId


class Accusations(ColonyGate):
    """Suspicions, death notices and refutation (see module docstring)."""

    def _apply_suspect(self, m: Member, acc: Accuse, now: float, out: list[Effect]) -> None:
        """Start (or confirm) a suspicion; `acc` is already verified."""
        target = acc.target
        s = self._suspicions.get(target)
        if m.state is MemberState.SUSPECT and s is not None and acc.incarnation == m.incarnation:
            if s.confirm(acc.accuser):
                out.append(SetTimer(("suspect", target), s.deadline()))
                self._bq.queue(("m", target), acc)
            return
        c = self.config
        self._set_state(m, MemberState.SUSPECT, now)
        m.accuse = acc
        k = min(c.indirect_checks, max(0, self._n_live - 2)) if c.lifeguard else 0
        min_s = suspicion_timeout_s(c.suspicion_mult, self._n_live, c.probe_interval_s)
        max_s = min_s * c.suspicion_max_timeout_mult if c.lifeguard else min_s
        s = self._suspicions[target] = Suspicion(acc.accuser, k, min_s, max_s, now)
        out.append(SetTimer(("suspect", target), s.deadline()))
        out.append(Emit(MemberSuspected(target, acc.incarnation, acc.accuser)))
        self._bq.queue(("m", target), acc)

    def _suspicion_expired(self, target: PeerId, now: float, out: list[Effect]) -> None:
        s = self._suspicions.get(target)
        m = self.members.get(target)
        if s is None or m is None or m.state is not MemberState.SUSPECT:
            return
        if s.deadline() > now + 1e-9:  # stale timer (should not happen; be safe)
            out.append(SetTimer(("suspect", target), s.deadline()))
            return
        acc = Accuse.create(self.keys, target, m.incarnation, AccuseKind.DEAD)
        self._apply_dead(m, acc, now, out)

    def _apply_dead(self, m: Member, acc: Accuse, now: float, out: list[Effect]) -> None:
        target = acc.target
        if self._suspicions.pop(target, None) is not None:
            out.append(CancelTimer(("suspect", target)))
        left = acc.kind is AccuseKind.LEFT
        self._set_state(m, MemberState.LEFT if left else MemberState.DEAD, now)
        m.accuse = acc
        if left:
            out.append(Emit(MemberLeft(target, acc.incarnation)))
        else:
            out.append(Emit(MemberFailed(target, acc.incarnation, acc.accuser)))
        self._bq.queue(("m", target), acc)

    def _refute(self, incarnation: int) -> None:
        """Someone claims we are suspect/dead/left (or we see a past life): outbid it."""
        self.incarnation = max(self.incarnation, incarnation) + 1
        self._alive = Alive.create(self.keys, self.incarnation, self.addrs, self.chain)
        self._bq.queue(("m", self.me), self._alive)
        self.awareness.apply_delta(1)  # Lifeguard: being suspected hints we are slow
        self._count("refuted")

    def _on_accuse(self, acc: Accuse, now: float, out: list[Effect], *, merge: bool) -> None:
        target = acc.target
        if target == self.me:
            if self.leaving or acc.incarnation < self.incarnation:
                self._count("stale_accusation")
                return
            if acc.accuser != self.me and not self._accuser_ok(acc, now):
                return
            self.verifier.check(acc.env, KIND_ACCUSE)
            self._refute(acc.incarnation)
            return
        m = self.members.get(target)
        if m is None:
            self._count("accusation_unknown_target")
            return
        inc = m.incarnation
        if acc.incarnation < inc or (acc.incarnation == inc and not self._news(acc, m)):
            self._count("stale_accusation")
            return
        if acc.kind is not AccuseKind.LEFT and not self._accuser_ok(acc, now):
            return
        self.verifier.check(acc.env, KIND_ACCUSE)
        if acc.kind is AccuseKind.SUSPECT or (merge and acc.kind is AccuseKind.DEAD):
            if merge and acc.accuser != self.me:
                # memberlist mergeState: remote suspect/dead becomes *our* suspicion,
                # so the target gets a full suspicion timeout to refute.
                if m.state is MemberState.SUSPECT and acc.incarnation == inc:
                    return
                own = Accuse.create(self.keys, target, acc.incarnation, AccuseKind.SUSPECT)
                self._apply_suspect(m, own, now, out)
            else:
                self._apply_suspect(m, acc, now, out)
        else:
            self._apply_dead(m, acc, now, out)

    def _news(self, acc: Accuse, m: Member) -> bool:
        """At equal incarnation: does `acc` say something new about `m`?

        Checked before the rate limit and the signature, so that the many copies of
        one accusation that gossip delivers cost neither tokens nor verifications.
        """
        if m.state is MemberState.ALIVE:
            return True
        if m.state is MemberState.SUSPECT:
            if acc.kind is not AccuseKind.SUSPECT:
                return True
            s = self._suspicions.get(acc.target)
            return s is None or (acc.accuser not in s.accusers and s.confirmations < s.k)
        # dead: only a leave notice adds information
        return m.state is MemberState.DEAD and acc.kind is AccuseKind.LEFT

    def _accuser_ok(self, acc: Accuse, now: float) -> bool:
        if acc.accuser != self.me:
            am = self.members.get(acc.accuser)
            if am is None or am.state is MemberState.LEFT:
                self._count("accusation_from_non_member")
                return False
        if not self._limiter.allow(acc.accuser, now):
            self._count("accusation_rate_limited")
            return False
        return True
