"""Every member-state transition: alive, suspect, dead, left, refute (SWIM §4.2,
Lifeguard §IV-B and §IV-C, with signatures). Every rule that affects the member state
machine lives in this file (as h11's _state.py; memberlist state.go).

States and the claims that move a member between them (`m` is the member's entry,
`inc` its incarnation = max(alive.incarnation, accusation.incarnation)):

    (unknown) ──alive (admitted)──────────────────► ALIVE      MemberJoined
    any ──alive, inc' > inc───────────────────────► ALIVE      refuted or rejoined
    any ──suspect/dead/left, inc' > inc───────────► SUSPECT / DEAD / LEFT
    ALIVE ──suspect/dead/left, inc' = inc─────────► SUSPECT / DEAD / LEFT
    SUSPECT ──suspect, inc' = inc, new accuser────► SUSPECT    confirmation, shorter timeout
    SUSPECT ──dead/left, inc' = inc───────────────► DEAD / LEFT
    SUSPECT ──("suspect", peer) timer expires─────► DEAD       signed by us
    DEAD ──left, inc' = inc───────────────────────► LEFT
    self ──suspect/dead/left about us, inc' ≥ ours,
           or a past life's alive─────────────────► refute: ours = max(ours, inc') + 1
    self ──Leave──────────────────────────────────► left, signed by us

Leaving the table is not a state: DEAD/LEFT members are reaped after `tombstone_s`
(`MemberTable.reap`, on the push-pull tick) and leave a tombstone: an alive claim no
newer than it is refused (`stale_alive_reaped`), so an old signed claim replayed later
cannot bring the member back; a restarted member learns its tombstone from push-pull
and refutes it like any accusation about itself and, in colony mode, a member whose chain
expired or was revoked is expelled in any state (`ColonyGate.to_expel`); `Swim`
carries both out and calls `forget` here.

A remote dead notice merged by push-pull becomes our own suspicion (see Trust below);
a left notice needs no rate-limit token (only the subject signs it).

A failed probe makes the prober sign a suspicion. It expires into a death notice after
a timeout that starts at `suspicion_max_timeout_mult × min` and shrinks with each
independent signed confirmation down to `min = suspicion_mult × log10(N) ×
probe_interval` (pure maths in gossip/suspicion.py). Only the subject can refute, by
signing a higher incarnation; being suspected also raises our own health score
(gossip/awareness.py). `lifeguard=False` gives plain SWIM: a fixed `min` timeout.

Bounds: an incarnation is accepted only below `COUNTER_LIMIT` (2^62) and, for an
accusation (or a past life's alive) about a member we know — ourselves included — at
most `MAX_COUNTER_JUMP` (2^32) above the incarnation we hold (overlay/core/validate.py,
`counter_step_ok`); anything else is dropped unverified and counted
(`incarnation_out_of_range`). So a refutation, ≤ 2^62, always fits the wire's 63 bits,
and one signed accusation cannot push us to the edge: observers apply the same jump
limit against an incarnation no newer than the subject's own, so whatever they accept
the subject accepts too and can refute.

Trust: stale claims are dropped unverified; an accusation is checked for news before
its accuser's rate limit and its signature, so the many gossiped copies of one
accusation cost neither; accusers must be known members and pass a per-accuser token
bucket (gossip/claim_verifier.py). Remote suspect/dead notices learned by push-pull
become suspicions signed by us (memberlist mergeState), so the target always gets a
full timeout to refute. Colony mode: a new or newer alive is admitted only with a
valid certificate chain (gossip/colony_gate.py).

Invariants: our incarnation never decreases; a member's incarnation never decreases
while it is in the table; a SUSPECT member has exactly one suspicion and one
`("suspect", peer)` timer; `len(suspicions) ≤ len(table)`. The table's books (live
count, probe order) are kept by gossip/member_table.py.
"""

from __future__ import annotations

from gossip.awareness import Awareness
from gossip.broadcast_queue import BroadcastQueue
from gossip.cell import Cell
from gossip.cells import CellId, cell_key
from gossip.claim_verifier import AccuserLimiter, Verifier
from gossip.counters import count
from gossip.events import MemberFailed, MemberJoined, MemberLeft, MemberSuspected, MemberUpdated
from gossip.members import LIVE, Member, MemberState
from gossip.messages import KIND_ACCUSE, KIND_ALIVE, Accuse, AccuseKind, Alive
from gossip.suspicion import Suspicion, suspicion_timeout_s
from overlay.core.effects import CancelTimer, Effect, Emit, SetTimer
from overlay.core.ids import PeerId
from overlay.core.validate import counter_step_ok


class Transitions:
    """The member state machine (see module docstring). Effects are appended to `out`;
    new states are queued for gossip on the broadcast queue."""

    __slots__ = ("awareness", "bq", "cell", "config", "gate", "limiter", "local", "rng",
                 "stats", "suspicions", "table", "verifier")  # fmt: skip

    def __init__(
        self, cell: Cell, *, bq: BroadcastQueue, awareness: Awareness, verifier: Verifier
    ) -> None:
        self.local, self.table, self.gate = cell.local, cell.table, cell.gate
        self.config, self.rng, self.stats = cell.config, cell.rng, cell.stats
        self.bq = bq
        self.awareness = awareness
        self.verifier = verifier
        #: Tier-1 cell (gossip/cells.py): new members must have a key inside it.
        self.cell: CellId | None = None
        config = cell.config
        self.limiter = AccuserLimiter(
            config.accuse_burst,
            config.accuse_refill_per_probe / config.probe_interval_s,
            config.max_accusers,
        )
        #: Open suspicions, one per SUSPECT member.
        self.suspicions: dict[PeerId, Suspicion] = {}

    # ------------------------------------------------------------ alive

    def on_alive(self, a: Alive, now: float, out: list[Effect]) -> None:
        peer = a.peer
        if self.table.alive_of(peer) is a:
            # The very claim we hold (push-pull resends every record, and the simulator
            # passes claims by reference): it passed every check below when we took it
            # and the table never holds ourselves, so this is the stale path, cheaply.
            count(self.stats, "stale_alive")
            return
        me = self.local
        if peer == me.me:
            if a.env.signature != me.alive.env.signature and a.incarnation >= me.incarnation:
                if not counter_step_ok(a.incarnation, me.incarnation):
                    count(self.stats, "incarnation_out_of_range")
                    return
                self.verifier.check(a.env, KIND_ALIVE)
                if not me.leaving:
                    self.refute(a.incarnation)  # a previous life of ours
            return
        if not counter_step_ok(a.incarnation, None):
            count(self.stats, "incarnation_out_of_range")
            return
        m = self.table.get(peer)
        if m is not None and a.incarnation <= m.incarnation:
            count(self.stats, "stale_alive")
            return
        if m is None and self._buried(a):
            count(self.stats, "stale_alive_reaped")
            return
        if m is None and self.cell is not None and not self.cell.contains(cell_key(peer)):
            count(self.stats, "outside_cell")
            return
        if m is None and len(self.table) >= self.config.max_members:
            count(self.stats, "members_full")
            return
        self.verifier.check(a.env, KIND_ALIVE)
        valid_until = self.gate.admit_claim(a, now, out)
        if valid_until is None:
            return
        if m is None:
            m = self.table.add(a, now, self.rng)
            out.append(Emit(MemberJoined(peer, a.incarnation, a.addrs)))
        else:
            rejoined = m.state not in LIVE
            if self.suspicions.pop(peer, None) is not None:
                out.append(CancelTimer(("suspect", peer)))
            self.table.set_state(m, MemberState.ALIVE, now)
            m.alive, m.accuse = a, None
            if rejoined:
                out.append(Emit(MemberJoined(peer, a.incarnation, a.addrs)))
            else:
                out.append(Emit(MemberUpdated(peer, a.incarnation, m.ad)))
        m.valid_until = valid_until
        self.gate.track_expiry(valid_until, out)
        self.bq.queue(("m", peer), a)

    def _buried(self, a: Alive) -> bool:
        """Is `a` no newer than the member's tombstone (a replay of a past life)?"""
        tomb = self.table.tombstone(a.peer)
        if tomb is None:
            return False
        inc = tomb.alive.incarnation
        if tomb.accuse is not None:
            inc = max(inc, tomb.accuse.incarnation)
        return a.incarnation <= inc

    def refute(self, incarnation: int) -> None:
        """Someone claims we are suspect/dead/left (or we see a past life): outbid it."""
        me = self.local
        me.incarnation = max(me.incarnation, incarnation) + 1
        me.alive = Alive.create(me.keys, me.incarnation, me.addrs, me.chain)
        self.bq.queue(("m", me.me), me.alive)
        self.awareness.apply_delta(1)  # Lifeguard: being suspected hints we are slow
        count(self.stats, "refuted")

    def leave(self) -> Accuse:
        """`Leave`: we sign our own leave notice (alive → left) and queue it."""
        me = self.local
        me.leaving = True
        me.left = Accuse.create(me.keys, me.me, me.incarnation, AccuseKind.LEFT)
        self.bq.queue(("m", me.me), me.left)
        return me.left

    # ------------------------------------------------------------ accusations

    def on_accuse(self, acc: Accuse, now: float, out: list[Effect], *, merge: bool) -> None:
        target = acc.target
        me = self.local
        if target == me.me:
            if me.leaving or acc.incarnation < me.incarnation:
                count(self.stats, "stale_accusation")
                return
            if not counter_step_ok(acc.incarnation, me.incarnation):
                count(self.stats, "incarnation_out_of_range")
                return
            if acc.accuser != me.me and not self._accuser_ok(acc, now):
                return
            self.verifier.check(acc.env, KIND_ACCUSE)
            self.refute(acc.incarnation)
            return
        m = self.table.get(target)
        if m is None:
            count(self.stats, "accusation_unknown_target")
            return
        inc = m.incarnation
        if acc.incarnation < inc or (acc.incarnation == inc and not self._news(acc, m)):
            count(self.stats, "stale_accusation")
            return
        if not counter_step_ok(acc.incarnation, inc):
            count(self.stats, "incarnation_out_of_range")
            return
        if acc.kind is not AccuseKind.LEFT and not self._accuser_ok(acc, now):
            return
        self.verifier.check(acc.env, KIND_ACCUSE)
        if acc.kind is AccuseKind.SUSPECT or (merge and acc.kind is AccuseKind.DEAD):
            if merge and acc.accuser != me.me:
                # memberlist mergeState: remote suspect/dead becomes *our* suspicion,
                # so the target gets a full suspicion timeout to refute.
                if m.state is MemberState.SUSPECT and acc.incarnation == inc:
                    return
                own = Accuse.create(me.keys, target, acc.incarnation, AccuseKind.SUSPECT)
                self._apply_suspect(m, own, now, out)
            else:
                self._apply_suspect(m, acc, now, out)
        else:
            self._apply_dead(m, acc, now, out)

    def probe_failed(self, target: PeerId, now: float, out: list[Effect]) -> None:
        """No ack by the end of the probe interval: we sign a suspicion (SWIM §4.2)."""
        m = self.table.get(target)
        if m is None or m.state not in LIVE:
            return
        count(self.stats, "probe_failed")
        acc = Accuse.create(self.local.keys, target, m.incarnation, AccuseKind.SUSPECT)
        self._apply_suspect(m, acc, now, out)

    def suspicion_expired(self, target: PeerId, now: float, out: list[Effect]) -> None:
        """The `("suspect", target)` timer: unrefuted, the suspect is declared dead."""
        s = self.suspicions.get(target)
        m = self.table.get(target)
        if s is None or m is None or m.state is not MemberState.SUSPECT:
            return
        if s.deadline() > now + 1e-9:  # stale timer (should not happen; be safe)
            out.append(SetTimer(("suspect", target), s.deadline()))
            return
        acc = Accuse.create(self.local.keys, target, m.incarnation, AccuseKind.DEAD)
        self._apply_dead(m, acc, now, out)

    def forget(self, peer: PeerId, out: list[Effect]) -> None:
        """`peer` left the table: drop its suspicion and timer."""
        if self.suspicions.pop(peer, None) is not None:
            out.append(CancelTimer(("suspect", peer)))

    def _apply_suspect(self, m: Member, acc: Accuse, now: float, out: list[Effect]) -> None:
        """Start (or confirm) a suspicion; `acc` is already verified."""
        target = acc.target
        s = self.suspicions.get(target)
        if m.state is MemberState.SUSPECT and s is not None and acc.incarnation == m.incarnation:
            if s.confirm(acc.accuser):
                out.append(SetTimer(("suspect", target), s.deadline()))
                self.bq.queue(("m", target), acc)
            return
        c = self.config
        self.table.set_state(m, MemberState.SUSPECT, now)
        n_live = self.table.n_live
        m.accuse = acc
        k = min(c.indirect_checks, max(0, n_live - 2)) if c.lifeguard else 0
        min_s = suspicion_timeout_s(c.suspicion_mult, n_live, c.probe_interval_s)
        max_s = min_s * c.suspicion_max_timeout_mult if c.lifeguard else min_s
        s = self.suspicions[target] = Suspicion(acc.accuser, k, min_s, max_s, now)
        out.append(SetTimer(("suspect", target), s.deadline()))
        out.append(Emit(MemberSuspected(target, acc.incarnation, acc.accuser)))
        self.bq.queue(("m", target), acc)

    def _apply_dead(self, m: Member, acc: Accuse, now: float, out: list[Effect]) -> None:
        target = acc.target
        if self.suspicions.pop(target, None) is not None:
            out.append(CancelTimer(("suspect", target)))
        left = acc.kind is AccuseKind.LEFT
        self.table.set_state(m, MemberState.LEFT if left else MemberState.DEAD, now)
        m.accuse = acc
        if left:
            out.append(Emit(MemberLeft(target, acc.incarnation)))
        else:
            out.append(Emit(MemberFailed(target, acc.incarnation, acc.accuser)))
        self.bq.queue(("m", target), acc)

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
            s = self.suspicions.get(acc.target)
            return s is None or (acc.accuser not in s.accusers and s.confirmations < s.k)
        # dead: only a leave notice adds information
        return m.state is MemberState.DEAD and acc.kind is AccuseKind.LEFT

    def _accuser_ok(self, acc: Accuse, now: float) -> bool:
        if acc.accuser != self.local.me:
            am = self.table.get(acc.accuser)
            if am is None or am.state is MemberState.LEFT:
                count(self.stats, "accusation_from_non_member")
                return False
        if not self.limiter.allow(acc.accuser, now):
            count(self.stats, "accusation_rate_limited")
            return False
        return True
