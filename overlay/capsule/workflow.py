"""Workflow dependencies on the leader: wait for every parent, then place (DESIGN §7).

A submitted capsule whose spec lists `dependencies` (parent capsule ids) is not placed
until each parent has finished. Its leader polls every parent's leader (`StatusQuery`
every `dep_poll_s`; a parent held here and committed terminal is read locally) and
hears back `StatusReply`. A parent that failed, was cancelled or is unknown fails the
child with the parent's reason; once all have succeeded, their outputs become the
child's `parent_outputs` (dataflow.py), recorded by a replicated change (so a new
leader does not ask again) together with a `ProvidersWanted` for those CIDs, and the
child is placed.

Only a record never offered and not yet resolved waits (`token == 0`,
`parent_outputs is None`); the waiting index lives in the custody table
(`CustodyTable.waiters`: parent → children), so a reply reaches every child of that
parent. At most `dataflow.MAX_PARENT_OUTPUTS` outputs may feed one child: more fails it
(the record must stay decodable by peers and on restore).
"""

from __future__ import annotations

from overlay.capsule import events as ev
from overlay.capsule.custody_table import CustodyTable, Entry, status_reply
from overlay.capsule.dataflow import MAX_PARENT_OUTPUTS, ParentOutput
from overlay.capsule.leases import TERMINAL, State
from overlay.capsule.leasing import Leasing
from overlay.capsule.members import MemberView
from overlay.capsule.messages import StatusQuery, StatusReply
from overlay.capsule.replication import Replicator
from overlay.capsule.spec import capsule_key
from overlay.core.effects import CancelTimer, Effect, Emit, Send, SetTimer
from overlay.core.ids import PeerId


class Dependencies:
    """Parents awaited by the records this node leads, and what follows their end."""

    def __init__(
        self,
        view: MemberView,
        table: CustodyTable,
        replicator: Replicator,
        leasing: Leasing,
        *,
        k_c: int,
        dep_poll_s: float,
    ) -> None:
        self.view = view
        self.table = table
        self.replicator = replicator
        self.leasing = leasing
        self.k_c = k_c
        self.dep_poll_s = dep_poll_s

    def index(self, e: Entry) -> None:
        """Note the parents `e` still waits for (nothing once offered or resolved)."""
        rec = e.record
        if rec.state is not State.SUBMITTED or rec.token != 0 or e.deps:
            return
        if rec.parent_outputs is not None:
            return  # resolved before a takeover: nothing to wait for
        for dep in rec.capsule.spec.dependencies:
            e.deps[dep] = None
            self.table.wait_for(dep, rec.capsule_id)

    def poll(self, e: Entry, now: float) -> list[Effect]:
        out: list[Effect] = []
        cid = e.record.capsule_id
        for dep in list(e.deps):
            local = self.table.entries.get(dep)
            settled = local.settled if local is not None else None
            if settled is not None and settled.terminal:
                out.extend(self.done(e, status_reply(settled), now))
                if e.record.terminal or not e.deps:
                    return out
                continue
            out.append(Send(self.view.leader(capsule_key(dep), self.k_c), StatusQuery(dep)))
        if e.deps:
            out.append(SetTimer(("c.deps", cid), now + self.dep_poll_s))
        return out

    def on_status_reply(self, peer: PeerId, msg: StatusReply, now: float) -> list[Effect]:
        """A dependency's state, answering our poll."""
        waiters = self.table.waiters.get(msg.capsule_id)
        if not waiters or msg.state not in (s.value for s in TERMINAL):
            return []
        out: list[Effect] = []
        for cid in list(waiters):
            e = self.table.entries.get(cid)
            if e is not None:
                out.extend(self.done(e, msg, now))
        return out

    def done(self, e: Entry, status: StatusReply, now: float) -> list[Effect]:
        """Parent `status.capsule_id` finished; once all have succeeded, record their
        outputs as this capsule's parent outputs (replicated, persisted) and place it."""
        dep, state, reason = status.capsule_id, status.state, status.reason
        if dep not in e.deps or not e.leading or e.syncing or e.record.terminal:
            return []
        del e.deps[dep]
        self.table.stop_waiting(dep, e.record.capsule_id)
        if state != State.SUCCEEDED.value:
            name = f" ({status.label})" if status.label and status.label != dep else ""
            why = f"dependency {dep}{name} {state}" + (f": {reason}" if reason else "")
            return self.leasing.finish(e, State.FAILED, why, None, now)
        names = status.output_names or status.outputs  # an old peer sends no names
        label = status.label or dep
        e.dep_outputs[dep] = tuple(
            ParentOutput(dep, label, n, c) for n, c in zip(names, status.outputs, strict=True)
        )
        if e.deps:
            return []
        rec = e.record
        outs = tuple(o for d in rec.capsule.spec.dependencies for o in e.dep_outputs.get(d, ()))
        e.dep_outputs = {}
        if len(outs) > MAX_PARENT_OUTPUTS:  # must stay decodable by peers and on restore
            why = (f"dependencies produced {len(outs)} outputs; at most "
                   f"{MAX_PARENT_OUTPUTS} can feed one capsule")  # fmt: skip
            return self.leasing.finish(e, State.FAILED, why, None, now)
        cid = rec.capsule_id
        actions: list[Effect] = []
        if outs:
            actions.append(Emit(ev.ProvidersWanted(cid, tuple(dict.fromkeys(o.cid for o in outs)))))
        out: list[Effect] = [CancelTimer(("c.deps", cid))]
        out += self.replicator.change(e, rec.advance(State.SUBMITTED, parent_outputs=outs), now,
                                      actions)  # fmt: skip
        out += self.leasing.place(e, now)
        return out
