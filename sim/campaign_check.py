"""The fault campaign's invariant checker (sim/campaign.py feeds it every event).

Safety invariants are checked at the event that could break them, i.e. after every
step of the simulation; liveness and convergence at their stated deadlines:

- `one_receipt`: at most one receipt accepted per capsule. Custody may accept the
  *same* receipt twice (a new leader after a takeover, the executor re-sending it):
  one outcome. Two receipts with different (token, executor) are two runs settled.
- `token_increase`: every new lease of a capsule carries a token above every earlier
  one, whichever custodian issued it. The same (token, executor) announced again by a
  new leader is the same lease, not a new one.
- `liveness`: every capsule whose submission custody acknowledged ends (succeeded,
  failed or cancelled) by `quiet_at + liveness_bound_s` — unless a majority of a
  configuration it needs lost their disks after it was submitted (they abstain:
  overlay/capsule/amnesia.py), which blocks it by design, as a Raft group that lost a
  majority; those are counted in `blocked`, not violations (nor is their copy a
  `stale_copy`).
- `membership`: every live node's gossip view equals the set of live nodes by
  `quiet_at + converge_bound_s` (all nodes are up after `quiet_at`).
- `reported_outcome`: every outcome a live node reports (`Custody.report`: the copy it
  knows committed) is one custody committed: its state a `CapsuleFinished` of the
  capsule, its receipt an accepted (or, after a takeover, re-announced) one. Checked
  every `REPORT_EVERY_S` (a deposed leader's own run must never be reported;
  docs/capsules.md, "Deposed copies").
- `stale_copy`: by `quiet_at + liveness_bound_s`, no live node still *holds* a
  finished copy whose outcome custody never committed (a deposed leader's copy left
  unrepaired after the heal).
- `bounded`: the seed's run ends within `CampaignConfig.max_events_per_node` events per
  node (a message storm, two custodians handing a receipt back and forth at message
  speed, otherwise stalls the campaign on that seed without a word: seed 414, stop 40).
- `member_only`: every accepted submission and receipt was signed by a member of the
  colony. The campaign runs in open mode, where every node with a key is a member:
  the check is the trivial one (signers are campaign nodes), kept so colony mode
  plugs in; it does not exercise certificate admission.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass, field

from overlay.core.ids import PeerId

INVARIANTS = ("one_receipt", "token_increase", "liveness", "membership", "member_only",
              "reported_outcome", "stale_copy", "bounded")
#: Seconds of simulated time between two `reported_outcome` checks.
REPORT_EVERY_S = 2.0
#: An outcome: (state, receipt token, receipt executor); no receipt: (state, 0, None).
Outcome = tuple[str, int, PeerId | None]


@dataclass(frozen=True, slots=True)
class Violation:
    kind: str
    t: float
    detail: str

    def line(self) -> str:
        return f"{self.kind} at t={self.t:.2f}: {self.detail}"


@dataclass(slots=True)
class Checker:
    members: frozenset[PeerId]
    violations: list[Violation] = field(default_factory=list)
    submitted: dict[str, float] = field(default_factory=dict)
    acked: dict[str, float] = field(default_factory=dict)
    finished: dict[str, tuple[float, str]] = field(default_factory=dict)
    receipts: dict[str, dict[tuple[int, PeerId], None]] = field(default_factory=dict)
    leases: dict[str, dict[tuple[int, PeerId], None]] = field(default_factory=dict)
    max_token: dict[str, int] = field(default_factory=dict)
    #: Committed outcomes per capsule (every CapsuleFinished: a leader's commit of the
    #: end, and a takeover's of a finished record).
    outcomes: dict[str, dict[Outcome, None]] = field(default_factory=dict)
    converged_at: float | None = None
    #: Acknowledged, unfinished capsules a majority of whose configuration lost their
    #: disks (exempt from `liveness`): capsule id -> time of the check.
    blocked: dict[str, float] = field(default_factory=dict)
    #: Violations per kind are capped (a broken invariant repeats; the first few tell).
    cap: int = 5
    _seen: dict[str, int] = field(default_factory=dict)

    def _fail(self, kind: str, t: float, detail: str) -> None:
        n = self._seen.get(kind, 0)
        self._seen[kind] = n + 1
        if n < self.cap:
            self.violations.append(Violation(kind, t, detail))

    def counts(self) -> dict[str, int]:
        return {k: self._seen.get(k, 0) for k in INVARIANTS}

    # ------------------------------------------------------------ safety, per event

    def on_accepted_submission(self, t: float, cid: str, submitter: PeerId) -> None:
        if submitter not in self.members:
            self._fail("member_only", t, f"capsule {cid[:16]} from non-member {submitter}")

    def on_leased(self, t: float, cid: str, token: int, executor: PeerId) -> None:
        seen = self.leases.setdefault(cid, {})
        if (token, executor) in seen:
            return  # the same lease announced again (takeover): not a new one
        top = self.max_token.get(cid, 0)
        if token <= top:
            self._fail("token_increase", t, f"capsule {cid[:16]} leased with token {token} "
                       f"to {executor} after token {top}")  # fmt: skip
        seen[(token, executor)] = None
        self.max_token[cid] = max(top, token)

    def on_receipt(self, t: float, node: PeerId, cid: str, token: int, executor: PeerId) -> None:
        if executor not in self.members:
            self._fail("member_only", t, f"receipt for {cid[:16]} from non-member {executor}")
        got = self.receipts.setdefault(cid, {})
        if (token, executor) in got:
            return
        got[(token, executor)] = None
        if len(got) > 1:
            runs = ", ".join(f"token {tk} by {ex}" for tk, ex in got)
            self._fail("one_receipt", t, f"capsule {cid[:16]}: {len(got)} receipts accepted "
                       f"({runs}); the last by custodian {node}")  # fmt: skip

    def ran_out(self, t: float, events: int, received: list[int]) -> None:
        """The run used its whole event budget before its end (`bounded`); `received`:
        messages per node slot, to name the busiest."""
        top = max(range(len(received)), key=received.__getitem__)
        self._fail("bounded", t, f"{events:,} events (the budget) by t={t:.2f} s; node {top} "
                   f"received {received[top]:,} messages")  # fmt: skip

    def on_finished(self, t: float, cid: str, state: str,
                    outcome: Outcome | None = None) -> None:  # fmt: skip
        if outcome is not None:
            self.outcomes.setdefault(cid, {})[outcome] = None
        if cid in self.submitted and cid not in self.finished:
            self.finished[cid] = (t, state)

    def committed(self, cid: str, outcome: Outcome) -> bool:
        """Custody committed this outcome of `cid` (a CapsuleFinished said it)."""
        return outcome in self.outcomes.get(cid, {})

    def check_reports(self, t: float, node: PeerId, cid: str, outcome: Outcome) -> None:
        """`node` reports `outcome` as the capsule's (its copy known committed)."""
        if not self.committed(cid, outcome):
            state, token, ex = outcome
            self._fail("reported_outcome", t, f"node {node} reports capsule {cid[:16]} "
                       f"{state} (token {token} by {ex}), an outcome never committed")

    def check_held(self, t: float, node: PeerId, cid: str, outcome: Outcome) -> None:
        """At the deadline: `node` still holds this finished copy (committed or not)."""
        if not self.committed(cid, outcome):
            state, token, ex = outcome
            self._fail("stale_copy", t, f"node {node} still holds capsule {cid[:16]} "
                       f"{state} (token {token} by {ex}), never committed, after the heal")

    # ------------------------------------------------------------ deadlines

    def check_liveness(self, t: float, bound_s: float, held: Container[str] | None = None,
                       blocked: Container[str] = ()) -> None:  # fmt: skip
        """`held`: the capsules some live node holds a copy of; one acknowledged but
        held by none was lost (a durability failure, reported as such). `blocked`:
        those a majority of whose configuration lost their disks (exempt)."""
        for cid, t0 in self.acked.items():
            if cid in blocked and cid not in self.finished:
                self.blocked[cid] = t
            elif cid not in self.finished:
                gone = held is not None and cid not in held
                lost = "; no live node holds a copy: lost" if gone else ""
                self._fail("liveness", t, f"capsule {cid[:16]} acknowledged at t={t0:.2f} "
                           f"not finished {bound_s:g} s after faults stopped{lost}")  # fmt: skip

    def check_membership(self, t: float, bound_s: float, wrong: list[str]) -> None:
        if self.converged_at is None:
            self._fail("membership", t, f"views not converged {bound_s:g} s after heal: "
                       + "; ".join(wrong[:4]))  # fmt: skip
