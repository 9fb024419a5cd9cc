"""The executor's sans-IO half: accept or refuse leases, heartbeat, sign receipts.

The trio runtime only runs processes: it starts one on `RunRequested`, stops it on
`KillRequested`, and reports `CapsuleExited` when it ends. Everything else is here:

- A `LeaseOffer` is accepted when the capsule's conditions fit what is *left* of this
  node's `ExecutorConfig` capacity (slots, cpu, memory, gpus; executor kind, labels,
  location) and its token is higher than any this node has seen for the capsule
  (fencing on the executor side too). An offer with a higher token for a capsule we
  still run means custody gave our lease up: the old attempt is killed first.
- While running, a `Heartbeat(capsule, token)` goes to every custodian in our view
  every `heartbeat_s` (so a new leader already knows we are alive); `maxexectime_s`
  is enforced locally with a `KillRequested`.
- On exit we sign a `Receipt` and send it to every custodian (of the *current* view),
  re-sending until the lease is settled: the leader answers `ReceiptReply`, or a
  custodian revokes the lease (`LeaseRevoked` with its token). Re-sends back off from
  `receipt_retry_s`, doubling, up to `lease_timeout_s - heartbeat_s` of the lease's
  timing: a custodian that takes over a leader that died gives the lease a fresh
  `lease_timeout_s`, and a receipt must reach it within that window or it re-leases
  the capsule (which would run it again). Bounded: after `receipt_give_up_s` without
  an answer the receipt is abandoned (counted, `ReceiptSettled` with accepted=False).
- `LeaseRevoked` with our current token stops the attempt (or settles its receipt).

Bounded: at most `slots` running leases, `max_outbox` unsettled receipts (oldest
abandoned, counted), each re-sent for at most `receipt_give_up_s`, and `max_tokens`
remembered highest tokens (oldest forgotten).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from overlay.capsule import events as ev
from overlay.capsule.members import MemberView
from overlay.capsule.messages import (
    Heartbeat,
    LeaseOffer,
    LeaseReply,
    LeaseRevoked,
    ReceiptMsg,
    ReceiptReply,
)
from overlay.capsule.placement import NodeAd, first_failure
from overlay.capsule.receipts import Receipt
from overlay.capsule.spec import Capsule, Conditions
from overlay.capsule.trigger_def import TRIGGER_FUNCTION
from overlay.core.crypto import KeyPair
from overlay.core.effects import CancelTimer, Effect, Emit, Send, SetTimer
from overlay.core.ids import PeerId


@dataclass(frozen=True, slots=True)
class ExecutorConfig:
    slots: int = 4
    cpu: float = 4.0
    mem_mib: int = 8192
    gpu: int = 0
    executors: tuple[str, ...] = ("subprocess",)
    labels: tuple[tuple[str, str], ...] = ()
    location: str = ""
    receipt_retry_s: float = 2.0
    #: Re-send a receipt until settled or revoked, for at most this long: longer than
    #: any takeover (gossip's death verdict, the takeover sync) takes.
    receipt_give_up_s: float = 900.0
    max_outbox: int = 1024
    max_tokens: int = 65536

    def ad(self, used_slots: int = 0, cpu_load: float = 0.0) -> NodeAd:
        """What to advertise (the node puts this in its signed resource ad)."""
        return NodeAd(cpu=self.cpu, cpu_load=cpu_load, mem_mib=self.mem_mib, gpu=self.gpu,
                      executors=self.executors, labels=self.labels, location=self.location,
                      free_slots=max(0, self.slots - used_slots))  # fmt: skip


@dataclass(frozen=True, slots=True)
class CapsuleExited:
    """Command from the runtime: the process of lease `token` ended."""

    capsule_id: str
    token: int
    exit_status: int
    outputs: tuple[str, ...] = ()
    log_cid: str = ""
    started: float = 0.0
    finished: float = 0.0
    reason: str = ""


@dataclass(slots=True)
class _Run:
    capsule: Capsule
    token: int
    heartbeat_s: float
    lease_timeout_s: float = 6.0
    #: A lease of another colony's capsule (a guest lease): the custodians its offer
    #: named; empty for our own colony's (custodians come from our view).
    custodians: tuple[PeerId, ...] = ()


@dataclass(slots=True)
class _Unsettled:
    """A receipt waiting for its lease to be settled (accepted, rejected or revoked)."""

    receipt: Receipt
    key: int
    since: float
    interval: float
    max_interval: float
    custodians: tuple[PeerId, ...] = ()


class Executor:
    def __init__(
        self,
        me: PeerId,
        keypair: KeyPair,
        view: MemberView,
        config: ExecutorConfig | None = None,
        k_c: int = 3,
    ) -> None:
        self.me = me
        self.keypair = keypair
        self.view = view
        self.config = config or ExecutorConfig()
        self.k_c = k_c
        self.running: dict[str, _Run] = {}
        self._outbox: dict[str, _Unsettled] = {}
        self._highest: dict[str, int] = {}
        self.stats: dict[str, int] = {}

    def _count(self, name: str) -> None:
        self.stats[name] = self.stats.get(name, 0) + 1

    def _working(self) -> list[_Run]:
        """Runs that use a slot: every lease but a trigger's (it fires, it runs nothing)."""
        return [r for r in self.running.values() if r.capsule.spec.function != TRIGGER_FUNCTION]

    def ad(self) -> NodeAd:
        return self.config.ad(len(self._working()))

    def _custodians(self, key: int, named: tuple[PeerId, ...] = ()) -> list[PeerId]:
        """Where heartbeats and receipts go, and who may revoke: the custodians a guest
        lease's offer named, else the k_c closest members of our view."""
        return list(named) if named else self.view.closest(key, self.k_c)

    def _remember(self, cid: str, token: int) -> None:
        self._highest.pop(cid, None)
        if len(self._highest) >= self.config.max_tokens:
            del self._highest[next(iter(self._highest))]
        self._highest[cid] = token

    def relabel(self, labels: tuple[tuple[str, str], ...]) -> None:
        """The node's labels changed: later offers are checked against these."""
        self.config = replace(self.config, labels=labels)

    def capacity_problem(self, cond: Conditions, replacing: str | None = None) -> str | None:
        """Why `cond` does not fit what is left, or None."""
        cfg = self.config
        runs = [r for r in self._working() if r.capsule.id != replacing]
        used_cpu = sum(r.capsule.spec.conditions.cpu for r in runs)
        used_mem = sum(r.capsule.spec.conditions.mem_mib for r in runs)
        used_gpu = sum(r.capsule.spec.conditions.gpu for r in runs)
        left = NodeAd(cpu=cfg.cpu - used_cpu, mem_mib=cfg.mem_mib - used_mem,
                      gpu=cfg.gpu - used_gpu, executors=cfg.executors, labels=cfg.labels,
                      location=cfg.location, free_slots=cfg.slots - len(runs))  # fmt: skip
        why = first_failure(cond, left)
        if why is None:
            return None
        return {
            "executor": f"no {cond.executor} executor here",
            "cpu": f"only {left.cpu:g} of {cond.cpu:g} cpu free",
            "mem": f"only {left.mem_mib} of {cond.mem_mib} MiB free",
            "gpu": f"only {left.gpu} of {cond.gpu} gpu free",
            "label": "labels do not match",
            "location": f"location is {cfg.location or 'unset'}",
            "slots": f"all {cfg.slots} slots busy",
        }.get(why, why)

    # ------------------------------------------------------------ inputs

    def on_offer(self, peer: PeerId, msg: LeaseOffer, now: float) -> list[Effect]:
        cap = msg.capsule
        cid = cap.id
        run = self.running.get(cid)
        if run is not None and run.token == msg.token:
            # The leader asks again (our accept and heartbeats may all have been lost).
            self._count("offers_repeated")
            return [Send(peer, LeaseReply(cid, msg.token, True))]
        highest = self._highest.get(cid, 0)
        if msg.token <= highest:
            self._count("offers_stale")
            # Name our highest: a leader whose custody lost every copy adopts it as its
            # floor, so its next offer (to us or anyone) is above every earlier lease.
            return [Send(peer, LeaseReply(cid, msg.token, False, "stale token", highest))]
        out: list[Effect] = []
        why = self.capacity_problem(cap.spec.conditions, replacing=cid)
        if why is not None:
            self._count("offers_refused")
            return [Send(peer, LeaseReply(cid, msg.token, False, why))]
        old = self.running.pop(cid, None)
        if old is not None:  # custody re-leased it: our attempt is fenced off
            out += self._stop(cid, old.token, f"superseded by lease {msg.token}")
        self._remember(cid, msg.token)
        self.running[cid] = _Run(cap, msg.token, msg.timing.heartbeat_s,
                                 msg.timing.lease_timeout_s, msg.custodians)  # fmt: skip
        self._count("offers_accepted")
        out.append(Send(peer, LeaseReply(cid, msg.token, True)))
        out.append(Emit(ev.RunRequested(cap, msg.token, cap.spec.maxexectime_s,
                                        msg.parent_outputs)))  # fmt: skip
        out.append(SetTimer(("x.hb", cid), now + msg.timing.heartbeat_s))
        if cap.spec.maxexectime_s > 0:
            out.append(SetTimer(("x.kill", cid, msg.token), now + cap.spec.maxexectime_s))
        return out

    def on_revoked(self, peer: PeerId, msg: LeaseRevoked, now: float) -> list[Effect]:
        run = self.running.get(msg.capsule_id)
        if run is None or run.token != msg.token:
            return self._revoked_receipt(peer, msg)
        if peer not in self._custodians(run.capsule.key, run.custodians):
            self._count("revoke_from_non_custodian")
            return []
        del self.running[msg.capsule_id]
        self._count("leases_revoked")
        return self._stop(msg.capsule_id, msg.token, msg.reason or "lease revoked")

    def _revoked_receipt(self, peer: PeerId, msg: LeaseRevoked) -> list[Effect]:
        """A revocation of a finished attempt whose receipt is unsettled: stop re-sending."""
        item = self._outbox.get(msg.capsule_id)
        if item is None or item.receipt.token != msg.token:
            return []
        if peer not in self._custodians(item.key, item.custodians):
            self._count("revoke_from_non_custodian")
            return []
        del self._outbox[msg.capsule_id]
        self._count("receipts_revoked")
        why = f"lease revoked: {msg.reason}" if msg.reason else "lease revoked"
        return [CancelTimer(("x.receipt", msg.capsule_id)),
                Emit(ev.ReceiptSettled(msg.capsule_id, msg.token, False, why))]  # fmt: skip

    def _stop(self, cid: str, token: int, reason: str) -> list[Effect]:
        return [
            CancelTimer(("x.hb", cid)),
            CancelTimer(("x.kill", cid, token)),
            Emit(ev.KillRequested(cid, token, reason)),
        ]

    def on_exited(self, cmd: CapsuleExited, now: float) -> list[Effect]:
        run = self.running.get(cmd.capsule_id)
        if run is None or run.token != cmd.token:
            self._count("exits_ignored")  # killed or superseded: custody moved on
            return []
        del self.running[cmd.capsule_id]
        receipt = Receipt.sign(self.keypair, cmd.capsule_id, cmd.token, cmd.exit_status,
                               cmd.outputs, cmd.log_cid, cmd.started, cmd.finished,
                               cmd.reason)  # fmt: skip
        out: list[Effect] = [CancelTimer(("x.hb", cmd.capsule_id)),
                             CancelTimer(("x.kill", cmd.capsule_id, cmd.token))]  # fmt: skip
        if cmd.capsule_id not in self._outbox and len(self._outbox) >= self.config.max_outbox:
            victim = next(iter(self._outbox))
            old = self._outbox.pop(victim)
            self._count("receipts_abandoned")
            out.append(CancelTimer(("x.receipt", victim)))
            why = "receipt outbox full"
            out.append(Emit(ev.ReceiptSettled(victim, old.receipt.token, False, why)))
        cap = max(run.heartbeat_s, run.lease_timeout_s - run.heartbeat_s)
        first = min(self.config.receipt_retry_s, cap)
        item = _Unsettled(receipt, run.capsule.key, now, first, cap, run.custodians)
        self._outbox[cmd.capsule_id] = item
        out += self._send_receipt(item, now)
        return out

    def _send_receipt(self, item: _Unsettled, now: float) -> list[Effect]:
        msg = ReceiptMsg(item.receipt)
        out: list[Effect] = [Send(p, msg) for p in self._custodians(item.key, item.custodians)]
        out.append(SetTimer(("x.receipt", item.receipt.capsule_id), now + item.interval))
        item.interval = min(item.interval * 2, item.max_interval)
        return out

    def on_receipt_reply(self, peer: PeerId, msg: ReceiptReply, now: float) -> list[Effect]:
        item = self._outbox.get(msg.capsule_id)
        if item is None or item.receipt.token != msg.token:
            return []
        del self._outbox[msg.capsule_id]
        self._count("receipts_accepted" if msg.accepted else "receipts_rejected")
        return [
            CancelTimer(("x.receipt", msg.capsule_id)),
            Emit(ev.ReceiptSettled(msg.capsule_id, msg.token, msg.accepted, msg.reason)),
        ]

    def on_timer(self, timer: tuple[Any, ...], now: float) -> list[Effect]:
        kind, cid = timer[0], timer[1]
        if kind == "x.hb":
            run = self.running.get(cid)
            if run is None:
                return []
            hb = Heartbeat(cid, run.token)
            out: list[Effect] = [Send(p, hb)
                                 for p in self._custodians(run.capsule.key, run.custodians)]
            out.append(SetTimer(("x.hb", cid), now + run.heartbeat_s))
            return out
        if kind == "x.kill":
            run = self.running.get(cid)
            if run is None or run.token != timer[2]:
                return []
            # Keep the lease: the runtime reports the killed process via CapsuleExited.
            self._count("maxexectime_kills")
            return [Emit(ev.KillRequested(cid, run.token, "maxexectime exceeded"))]
        if kind == "x.receipt":
            item = self._outbox.get(cid)
            if item is None:
                return []
            if now - item.since >= self.config.receipt_give_up_s:
                del self._outbox[cid]
                self._count("receipts_abandoned")
                why = f"no custodian answered in {self.config.receipt_give_up_s:g} s"
                return [Emit(ev.ReceiptSettled(cid, item.receipt.token, False, why))]
            self._count("receipt_resends")
            return self._send_receipt(item, now)
        return []
