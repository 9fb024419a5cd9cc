"""`CapsuleCore`: one node's capsule layer — origin, custody and executor — as one core.

`core.handle(inp, now) -> list[Effect]` (overlay.core.effects). Inputs:

Commands from the node / control API
    `MembersChanged(members)`      the live set with ads and roles (from gossip)
    `ViewRefreshed()`              a shared `Directory` changed in place (simulators)
    `GuestsChanged(guests)`        other colonies' executors with a grant giving
                                   `execute`: placement candidates, never custodians
    `SubmitCapsule(capsule, chain)` submit through this node (retried until acked)
    `CancelCapsule(capsule_id)`    ask the custodians to cancel (origin/submitter only)
    `QueryCapsule(capsule_id)`     ask the leader; answered by a `CapsuleStatusKnown`
    `LocalityHint(cid, peers)`     DHT providers of an input CID (feeds placement)
    `CapsuleExited(...)`           from the runtime: our process for a lease ended
Inputs from the driver
    `Received(peer, msg)` for the messages in `messages.MESSAGE_TYPES`,
    `TimerFired(timer)`, `PeerUnreachable(peer)` (hides the peer until the next view).

Effects are `Send`, `SetTimer`/`CancelTimer` (ids are tuples whose first element starts
with "o." origin, "c." custody or "x." executor) and `Emit(event)` (overlay.capsule.events).
Persistence: `CustodyRecordChanged` events (one per custody record changed by this
input, latest bytes only) come first in the returned list, before every Send, timer or
other Emit, so the driver writes them to disk before anything acts on them. A
restarted node calls `restore(stored_records, now)` before any other input.

Messages this node addresses to itself (it may be a custodian and the executor of the
same capsule) are handled in place, up to `MAX_LOOPBACK` per input, so a driver never
has to dial itself.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from overlay.capsule import events as ev
from overlay.capsule.custody import Custody, CustodyConfig, LocalityHint
from overlay.capsule.executor import CapsuleExited, Executor, ExecutorConfig
from overlay.capsule.leases import TERMINAL
from overlay.capsule.members import (
    Directory,
    GuestsChanged,
    MembersChanged,
    MemberView,
    ViewRefreshed,
)
from overlay.capsule.messages import (
    CancelRequest,
    Committed,
    Heartbeat,
    LeaseOffer,
    LeaseReply,
    LeaseRevoked,
    ReceiptMsg,
    ReceiptReply,
    Replicate,
    ReplicateAck,
    StatusQuery,
    StatusReply,
    Submit,
    SubmitAck,
    SyncReply,
    SyncRequest,
)
from overlay.capsule.spec import Capsule, capsule_key
from overlay.core.certs import Certificate, RevocationList
from overlay.core.crypto import KeyPair
from overlay.core.effects import (
    CancelTimer,
    Effect,
    Emit,
    PeerUnreachable,
    Received,
    Send,
    SetTimer,
    TimerFired,
)
from overlay.core.errors import LocalProtocolError
from overlay.core.ids import PeerId

MAX_LOOPBACK = 64


@dataclass(frozen=True, slots=True)
class SubmitCapsule:
    capsule: Capsule
    chain: tuple[Certificate, ...] = ()
    #: Another colony's capsule: this colony's grant to it (envelope bytes).
    grant: bytes = b""


@dataclass(frozen=True, slots=True)
class CancelCapsule:
    capsule_id: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class QueryCapsule:
    capsule_id: str


#: Capsule states (StatusReply.state) after which a cancel has nothing left to do.
TERMINAL_NAMES: frozenset[str] = frozenset(s.value for s in TERMINAL)


@dataclass(frozen=True, slots=True)
class OriginConfig:
    submit_retry_s: float = 2.0
    submit_max_tries: int = 15
    max_pending: int = 10_000
    max_watched: int = 100_000


class Origin:
    """The submitting side: retries a Submit until a leader acks it, and a cancel until
    the capsule's end is reported (a lost CancelRequest left it running); reports
    statuses."""

    def __init__(self, me: PeerId, view: MemberView, config: OriginConfig, k_c: int) -> None:
        self.me = me
        self.view = view
        self.config = config
        self.k_c = k_c
        self._pending: dict[str, tuple[Submit, int]] = {}
        #: Cancels not yet seen to end their capsule: capsule id -> (request, key, tries).
        self._cancels: dict[str, tuple[CancelRequest, int, int]] = {}
        self._watched: dict[str, None] = {}
        self.stats: dict[str, int] = {}
        #: Submissions whose initial configuration is not fixed yet: id -> (cmd, tries).
        self._deferred: dict[str, tuple[SubmitCapsule, int]] = {}
        #: Members gossip holds as failed, not yet reaped (`MembersChanged.failed`).
        self.failed = 0

    def _count(self, name: str) -> None:
        self.stats[name] = self.stats.get(name, 0) + 1

    def _watch(self, cid: str) -> None:
        if cid not in self._watched and len(self._watched) >= self.config.max_watched:
            del self._watched[next(iter(self._watched))]
        self._watched[cid] = None

    def submit(self, cmd: SubmitCapsule, now: float) -> list[Effect]:
        cap = cmd.capsule
        busy = len(self._pending) + len(self._deferred)
        if cap.id not in self._pending and busy >= self.config.max_pending:
            self._count("submits_dropped")
            return [Emit(ev.SubmissionRejected(cap.id, "too many submissions in flight"))]
        self._watch(cap.id)
        return self._fix(cmd, 1, now)

    def _fix(self, cmd: SubmitCapsule, tries: int, now: float) -> list[Effect]:
        """Fix the initial configuration and send, once the view reaches a majority of
        the custodians it would pick if every member it lost contact with were back
        (hidden, or failed and not yet reaped); else wait, retrying, and reject after
        `submit_max_tries`.

        A node cut off from its colony would otherwise fix the configuration from the
        few members it still reaches — itself alone, in campaign seed 72 — and
        acknowledge the capsule on that one copy, lost with its disk. Members that left
        or moved to another cell do not count: a colony that shrank is served."""
        cap = cmd.capsule
        config = tuple(self.view.closest(cap.key, self.k_c))
        known = min(len(self.view.directory) + self.failed, self.k_c)
        if len(config) < known // 2 + 1:
            if tries >= self.config.submit_max_tries:
                self._count("submits_unplaced")
                why = (f"only {len(config)} of {known} custodians reachable for "
                       f"{(tries - 1) * self.config.submit_retry_s:g} s (cut off from the colony?)")
                return [Emit(ev.SubmissionRejected(cap.id, why))]
            if tries == 1:
                self._count("submits_deferred")
            self._deferred[cap.id] = (cmd, tries + 1)
            return [SetTimer(("o.fix", cap.id), now + self.config.submit_retry_s)]
        # The initial configuration is fixed here, once: every retry carries the same.
        msg = Submit(cap, cmd.chain, self.me, 0, config, cmd.grant)
        self._pending[cap.id] = (msg, 1)
        return self._send(msg, now)

    def _send(self, msg: Submit, now: float) -> list[Effect]:
        leader = self.view.leader(msg.capsule.key, self.k_c)
        cid = msg.capsule.id
        return [Send(leader, msg), SetTimer(("o.submit", cid), now + self.config.submit_retry_s)]

    def on_ack(self, peer: PeerId, msg: SubmitAck, now: float) -> list[Effect]:
        if self._pending.pop(msg.capsule_id, None) is None:
            return []
        out: list[Effect] = [CancelTimer(("o.submit", msg.capsule_id))]
        if msg.accepted:
            out.append(Emit(ev.SubmissionAccepted(msg.capsule_id)))
        else:
            self._count("submits_rejected")
            out.append(Emit(ev.SubmissionRejected(msg.capsule_id, msg.reason)))
        return out

    def on_timer(self, timer: tuple[Any, ...], now: float) -> list[Effect]:
        if timer[0] == "o.cancel":
            return self._cancel_again(timer[1], now)
        if timer[0] == "o.fix":
            waiting = self._deferred.pop(timer[1], None)
            if waiting is None:
                return []
            return self._fix(waiting[0], waiting[1], now)
        item = self._pending.get(timer[1])
        if item is None:
            return []
        msg, tries = item
        if tries >= self.config.submit_max_tries:
            del self._pending[timer[1]]
            self._count("submits_unanswered")
            why = f"no custodian acknowledged after {tries} tries"
            return [Emit(ev.SubmissionRejected(timer[1], why))]
        self._pending[timer[1]] = (msg, tries + 1)
        self._count("submit_retries")
        return self._send(msg, now)

    def cancel(self, cmd: CancelCapsule, key: int, now: float) -> list[Effect]:
        cid = cmd.capsule_id
        if cid not in self._cancels and len(self._cancels) >= self.config.max_pending:
            self._count("cancels_dropped")  # the API reports the capsule still running
            return []
        msg = CancelRequest(cid, cmd.reason)
        self._cancels[cid] = (msg, key, 1)
        self._watch(cid)
        return self._send_cancel(msg, key, now)

    def _send_cancel(self, msg: CancelRequest, key: int, now: float) -> list[Effect]:
        out: list[Effect] = [Send(p, msg) for p in self.view.closest(key, self.k_c)]
        out.append(SetTimer(("o.cancel", msg.capsule_id), now + self.config.submit_retry_s))
        return out

    def _cancel_again(self, cid: str, now: float) -> list[Effect]:
        item = self._cancels.get(cid)
        if item is None:
            return []
        msg, key, tries = item
        if tries >= self.config.submit_max_tries:
            del self._cancels[cid]
            self._count("cancels_unanswered")
            return []
        self._cancels[cid] = (msg, key, tries + 1)
        self._count("cancel_retries")
        return self._send_cancel(msg, key, now)

    def query(self, cmd: QueryCapsule, key: int) -> list[Effect]:
        self._watch(cmd.capsule_id)
        return [Send(self.view.leader(key, self.k_c), StatusQuery(cmd.capsule_id))]

    def on_status(self, msg: StatusReply) -> list[Effect]:
        if msg.capsule_id not in self._watched:
            return []
        out: list[Effect] = []
        ended = msg.state in TERMINAL_NAMES
        if ended and self._cancels.pop(msg.capsule_id, None) is not None:
            out.append(CancelTimer(("o.cancel", msg.capsule_id)))
        return [*out, Emit(ev.CapsuleStatusKnown(msg.capsule_id, msg.state, msg.reason, msg.outputs,
                                           msg.exit_status))]  # fmt: skip


class CapsuleCore:
    def __init__(
        self,
        me: PeerId,
        keypair: KeyPair,
        *,
        custody: CustodyConfig | None = None,
        executor: ExecutorConfig | None = None,
        origin: OriginConfig | None = None,
        rng: random.Random | None = None,
        revocations: RevocationList | None = None,
        unreachable_ttl_s: float = 30.0,
        directory: Directory | None = None,
    ) -> None:
        """`directory`: a live-member directory shared with other cores (simulators
        only; announce its changes with `ViewRefreshed` instead of `MembersChanged`)."""
        if keypair.peer_id != me:
            raise LocalProtocolError("keypair does not belong to this peer id")
        self.me = me
        self.view = MemberView(me, unreachable_ttl_s, directory)
        cc = custody or CustodyConfig()
        self.custody = Custody(me, self.view, cc, rng, revocations)
        self.executor = Executor(me, keypair, self.view, executor, cc.k_c)
        self.origin = Origin(me, self.view, origin or OriginConfig(), cc.k_c)
        self.loopback_overflow = 0

    def handle(self, inp: Any, now: float) -> list[Effect]:
        out: list[Effect] = []
        queue: deque[Received] = deque()
        self._route(inp, now, out, queue)
        hops = 0
        while queue:
            hops += 1
            if hops > MAX_LOOPBACK:
                self.loopback_overflow += len(queue)
                break
            self._route(queue.popleft(), now, out, queue)
        durable = self.custody.take_durable()
        return durable + out if durable else out

    def restore(self, records: Iterable[bytes], now: float) -> list[Effect]:
        """Reload custody records a previous run persisted; call before any other input.

        Nothing is acted on yet: at the next `MembersChanged` a restored leader re-syncs
        with the other custodians (adopting the highest version, then offering expired
        leases with a token above any it persisted) and a restored follower hands its
        copy to the leader. Returns `CustodyRecordSkipped` events for unusable records.
        """
        out = self.custody.restore(records, now)
        return self.custody.take_durable() + out  # deletes of records evicted to fit

    def _route(self, inp: Any, now: float, out: list[Effect], queue: deque[Received]) -> None:
        for eff in self._dispatch(inp, now):
            if isinstance(eff, Send) and eff.peer == self.me:
                queue.append(Received(self.me, eff.msg))
            else:
                out.append(eff)

    def _dispatch(self, inp: Any, now: float) -> list[Effect]:
        c, x = self.custody, self.executor
        if isinstance(inp, Received):
            peer, msg = inp.peer, inp.msg
            handler = _RECEIVE.get(type(msg))
            if handler is None:
                return []
            result: list[Effect] = handler(self, peer, msg, now)
            return result
        if isinstance(inp, TimerFired):
            t = inp.timer
            if not isinstance(t, tuple) or len(t) < 2 or not isinstance(t[0], str):
                return []
            if t[0].startswith("c."):
                return c.on_timer(t, now)
            if t[0].startswith("x."):
                return x.on_timer(t, now)
            if t[0].startswith("o."):
                return self.origin.on_timer(t, now)
            return []
        if isinstance(inp, MembersChanged):
            self.view.update(inp.members)
            self.origin.failed = inp.failed
            return c.on_members_changed(now)
        if isinstance(inp, ViewRefreshed):
            self.view.refreshed()
            return c.on_members_changed(now)
        if isinstance(inp, GuestsChanged):
            return c.on_members_changed(now) if self.view.set_guests(inp.guests) else []
        if isinstance(inp, PeerUnreachable):
            self.view.expire(now)
            if self.view.mark_unreachable(inp.peer, now):
                return c.on_members_changed(now)
            return []
        if isinstance(inp, SubmitCapsule):
            return self.origin.submit(inp, now)
        if isinstance(inp, CancelCapsule):
            return self.origin.cancel(inp, capsule_key(inp.capsule_id), now)
        if isinstance(inp, QueryCapsule):
            return self.origin.query(inp, capsule_key(inp.capsule_id))
        if isinstance(inp, LocalityHint):
            c.on_locality(inp)
            return []
        if isinstance(inp, CapsuleExited):
            return x.on_exited(inp, now)
        raise LocalProtocolError(f"CapsuleCore does not take {type(inp).__name__}")


def _status(core: CapsuleCore, peer: PeerId, msg: StatusReply, now: float) -> list[Effect]:
    return core.custody.on_status_reply(peer, msg, now) + core.origin.on_status(msg)


_RECEIVE: dict[type, Any] = {
    Submit: lambda k, p, m, n: k.custody.on_submit(p, m, n),
    SubmitAck: lambda k, p, m, n: k.origin.on_ack(p, m, n),
    Replicate: lambda k, p, m, n: k.custody.on_replicate(p, m, n),
    ReplicateAck: lambda k, p, m, n: k.custody.on_replicate_ack(p, m, n),
    SyncRequest: lambda k, p, m, n: k.custody.on_sync_request(p, m, n),
    SyncReply: lambda k, p, m, n: k.custody.on_sync_reply(p, m, n),
    LeaseOffer: lambda k, p, m, n: k.executor.on_offer(p, m, n),
    LeaseReply: lambda k, p, m, n: k.custody.on_lease_reply(p, m, n),
    Heartbeat: lambda k, p, m, n: k.custody.on_heartbeat(p, m, n),
    LeaseRevoked: lambda k, p, m, n: k.executor.on_revoked(p, m, n),
    ReceiptMsg: lambda k, p, m, n: k.custody.on_receipt(p, m, n),
    ReceiptReply: lambda k, p, m, n: k.executor.on_receipt_reply(p, m, n),
    StatusQuery: lambda k, p, m, n: k.custody.on_status_query(p, m, n),
    StatusReply: _status,
    CancelRequest: lambda k, p, m, n: k.custody.on_cancel(p, m, n),
    Committed: lambda k, p, m, n: k.custody.on_committed(p, m, n),
}

#: Command types the node composition routes to this core.
COMMAND_TYPES: tuple[type, ...] = (
    MembersChanged, SubmitCapsule, CancelCapsule, QueryCapsule, LocalityHint, CapsuleExited,
    ViewRefreshed, GuestsChanged,
)  # fmt: skip
