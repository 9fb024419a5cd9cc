"""A custodian that lost its custody store but kept its identity must not vote as itself.

Custody is Paxos per capsule (docs/capsules.md, "Custody epochs"): safety rests on
every acceptor remembering its promises and acceptances. A node that comes back with
an empty custody store under the same peer id has forgotten them; if it voted again,
a leader of a lower ballot could commit with its vote after a higher ballot had
counted its promise — two receipts (found by the fault campaign: 8 of 40 seeds).

Vertical Paxos and Raft treat such a node as a *new* acceptor. Here configurations
name peers, not incarnations, so the node abstains instead: for every capsule that
may have existed before it lost its store — submitted before `forgot_before`, plus
`clock_margin_s` for a submitter whose clock runs ahead — it neither promises, nor
acks a replicated version at its ballot, nor counts itself towards a quorum when it
leads. It still stores copies, answers with them (a copy is data, not a vote),
forwards receipts and leads (counting only the others), so capsules whose majority
of custodians is intact keep going. Capsules submitted after it came back are
unaffected: it cannot have promised anything for them before.

The margin is the stated assumption: a submitter's clock more than `clock_margin_s`
ahead of the custodian's lets a capsule submitted before the loss look newer. A
majority of a configuration losing their stores still blocks its capsules (as a Raft
group that lost a majority).
"""

from __future__ import annotations

from dataclasses import dataclass

from overlay.capsule.leases import CustodyRecord


@dataclass(frozen=True, slots=True)
class Amnesia:
    #: Wall-clock time the custody store was found lost (None: it never was).
    forgot_before: float | None = None
    clock_margin_s: float = 600.0

    def abstains(self, rec: CustodyRecord) -> bool:
        """True when this node may have voted on `rec`'s capsule before it forgot."""
        if self.forgot_before is None:
            return False
        return rec.capsule.submitted_at < self.forgot_before + self.clock_margin_s
