"""Capsules in the daemon: the glue between the capsule core and the real world.

The sans-IO `CapsuleCore` (overlay/capsule) decides custody, placement, leases and
receipts. This module gives it what it cannot do itself (DESIGN §7, docs/capsules.md):

- wire: `/colony/capsule/1.0.0`, one-way CBOR frames like gossip (`send` / `on_message`);
- members: the live gossip set with resource ads → `MembersChanged` (`members_changed`,
  wired in overlay.node.build_node on every membership event);
- locality: `ProvidersWanted` → a DHT provider lookup per input CID → `LocalityHint`;
- execution: `RunRequested` / `KillRequested` → `Attempts` (overlay/runtime/executors),
  through `Runs` (services/capsule_runs.py: a workflow child also gets its parents'
  outputs as inputs); inputs missing locally are fetched by CID through `Blocks`;
  outputs and logs are imported and pinned by the executor and then provided in the
  DHT here;
- custody persistence: `CustodyRecordChanged` → `CustodyStore` (committed before the
  effects that act on it run, since the driver carries effects out in order);
- reads for the API: `/colony/capsule-info/1.0.0` (services/capsule_info.py).

The service is built from the narrow interfaces of overlay/runtime/context.py (cores,
network, membership, DHT calls, blocks, spawn) and plain values, never the daemon.
Authorisation is read in one place, `load_authority`: open mode (every member may
submit and execute) until a colony owner is configured.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TypedDict

import structlog
import trio

from dht.api import GetProviders, Provide, Providers, result_as
from gossip.events import UpdateAd
from gossip.resources import ResourceAd
from overlay.capsule import events as cev
from overlay.capsule.amnesia import Amnesia
from overlay.capsule.core import CancelCapsule, CapsuleCore, SubmitCapsule
from overlay.capsule.custody import CustodyConfig, LocalityHint
from overlay.capsule.custody_table import Report
from overlay.capsule.executor import CapsuleExited, ExecutorConfig
from overlay.capsule.leases import TERMINAL, CustodyRecord
from overlay.capsule.messages import MESSAGE_TYPES, decode_message
from overlay.capsule.part import Activate, RefreshMembers, RestoreCustody, executor_config
from overlay.capsule.spec import Capsule
from overlay.capsule.trigger_def import TRIGGER_EXECUTOR, TRIGGER_FUNCTION
from overlay.core.certs import Certificate, RevocationList
from overlay.core.cid import Cid
from overlay.core.crypto import KeyPair
from overlay.core.effects import Received
from overlay.core.errors import ColonyError, LocalProtocolError, RemoteProtocolError, WireError
from overlay.core.ids import PeerId
from overlay.runtime.context import Blocks, Cores, DhtCalls, Membership, Network, Spawn
from overlay.runtime.executors import Attempts, ExecContext, available_kinds, executor_for
from overlay.runtime.net.transport import Codec
from overlay.runtime.process.config import Config
from overlay.runtime.services.capsule_info import (
    PROTO_CAPSULE_INFO,
    CapsuleReads,
    Known,
    MemberGate,
)
from overlay.runtime.services.capsule_runs import Runs
from overlay.runtime.services.cell_forward import CrossCell
from overlay.runtime.services.node_labels import stored_labels
from overlay.runtime.services.trigger_runs import TriggerRuns
from store.custody_store import CustodyStore, amnesia_since
from store.importer import ImportOptions

log = structlog.get_logger("colony.capsules")

PROTO_CAPSULE = "/colony/capsule/1.0.0"
CAPSULE_MESSAGES: tuple[type, ...] = tuple(MESSAGE_TYPES)
RUNS_DIR = "runs"
REFRESH_MEMBERS_S = 2.0
#: The resource ad is re-read this often and re-gossiped when the load per core moved
#: by AD_LOAD_STEP or free memory by the fraction AD_MEM_STEP.
AD_REFRESH_S = 15.0
AD_LOAD_STEP = 0.25
AD_MEM_STEP = 0.2
#: Activation waits for the member count to stay unchanged this long (at most MAX).
SETTLE_QUIET_S = 1.0
SETTLE_MAX_S = 5.0
#: Capsules remembered for `ps` (submitted through this node); oldest forgotten.
MAX_KNOWN = 10_000
#: How long `scontrol ping` may take at start (only asked when sbatch is installed; a
#: loaded machine answered in more than the executors' default 5 s).
SLURM_DETECT_TIMEOUT_S = 15.0


# ---------------------------------------------------------------- authority


@dataclass(frozen=True, slots=True)
class Authority:
    """Who may submit: `colony_owner` None = open mode (every member may submit and
    execute). `chain` is this node's certificate chain, sent with its submissions."""

    colony_owner: bytes | None = None
    chain: tuple[Certificate, ...] = ()


def load_authority(home: Path, conf: Config) -> Authority:
    """The one place the daemon learns its colony's trust settings.

    Until the trust module (overlay/runtime/services/trust_state.py, `colony colony create`, `cert
    issue`, `join`) provides `capsule_authority(home, conf) -> (owner, chain)`, the
    daemon runs in open mode.
    """
    try:
        from overlay.runtime.services import trust_state as trust  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        return Authority()
    fn = getattr(trust, "capsule_authority", None)
    if fn is None:
        return Authority()
    owner, chain = fn(home, conf)
    return Authority(owner, tuple(chain))


# ---------------------------------------------------------------- set-up


@dataclass(frozen=True, slots=True)
class CapsuleSetup:
    """What the daemon needs before it builds its node: the executor kinds that work
    here, this node's executor capacity, its trust settings and the capsule core."""

    kinds: tuple[str, ...]
    executor: ExecutorConfig
    authority: Authority
    core: CapsuleCore

    def ad_fields(self) -> AdFields:
        """Keyword arguments for host_ad.local_ad (what gossip advertises)."""
        x = self.executor
        return {"executors": self.kinds, "slots": x.slots, "labels": x.labels,
                "location": x.location}  # fmt: skip


class AdFields(TypedDict):
    """What the capsule side adds to the resource ad (host_ad.local_ad's keywords)."""

    executors: tuple[str, ...]
    slots: int
    labels: tuple[tuple[str, str], ...]
    location: str


async def prepare_capsules(
    home: Path,
    conf: Config,
    keypair: KeyPair,
    revocations: RevocationList | None = None,
) -> CapsuleSetup:
    """Detect executor kinds (Slurm needs a controller that answers) and build the core.

    `revocations` is the colony's one revocation list (the trust state's): those
    learnt by gossip also bind capsule submitters."""
    configured = conf.get("capsule", {}).get("executors", [])
    kinds = await available_kinds(SLURM_DETECT_TIMEOUT_S)
    if conf.get("capsule", {}).get("slots", 4) > 0:
        kinds = (*kinds, TRIGGER_EXECUTOR)  # holds a trigger's lease; uses no slot
    if configured:  # an operator may offer fewer kinds than work here, never more
        kinds = tuple(k for k in kinds if k in configured)
    authority = load_authority(home, conf)
    executor = executor_config(conf, kinds)
    stored = stored_labels(home)  # changed while running: they replace [capsule] labels
    if stored is not None:
        executor = replace(executor, labels=stored)
    forgot = amnesia_since(home, time.time())
    if forgot is not None:
        log.warning("custody_store_lost", forgot_before=forgot,
                    detail="abstaining from custody votes on capsules submitted before "
                           "(overlay/capsule/amnesia.py)")
    core = CapsuleCore(keypair.peer_id, keypair,
                       custody=CustodyConfig(colony_owner=authority.colony_owner,
                                             amnesia=Amnesia(forgot)),
                       executor=executor, rng=random.Random(),
                       revocations=revocations)  # fmt: skip
    log.info("capsules_ready", executors=list(kinds), slots=executor.slots,
             open_mode=authority.colony_owner is None)  # fmt: skip
    return CapsuleSetup(kinds, executor, authority, core)


# ---------------------------------------------------------------- the service


class CapsuleService:
    """The capsule core's runtime: wire, activation, refreshers, runs, submissions."""

    def __init__(
        self,
        setup: CapsuleSetup,
        *,
        cores: Cores,
        network: Network,
        membership: Membership,
        dht: DhtCalls,
        blocks: Blocks,
        spawn: Spawn,
        started: trio.Event,
        home: Path,
        conf: Config,
    ) -> None:
        self.cores, self.network, self.membership = cores, network, membership
        self.dht, self.blocks, self.spawn, self.started = dht, blocks, spawn, started
        self.home = home
        self.core = setup.core
        self.me = setup.core.me
        self.kinds = setup.kinds
        self.authority = setup.authority
        self.setup = setup
        self.runs_dir = home / RUNS_DIR
        self.runs_dir.mkdir(exist_ok=True)
        self.custody_store = CustodyStore.open(home)
        opts = ImportOptions(cid_version=int(conf["store"]["cid_version"]))
        ctx = ExecContext(store=blocks.store, workdir_root=self.runs_dir, import_options=opts)
        processes = [k for k in self.kinds if k != TRIGGER_EXECUTOR]  # triggers fire here
        self.attempts = Attempts(ctx, {k: executor_for(k) for k in processes},
                                 on_exit=self._on_exit, fetch=self.fetch_input)  # fmt: skip
        self.known: dict[str, Known] = {}
        self._changed = trio.Event()
        self.activated = trio.Event()
        self.stats: dict[str, int] = {}
        self.gate = MemberGate(self.authority.colony_owner, membership, self.stats)
        self.reads = CapsuleReads(self.core, network, membership, self.gate, self.runs_dir)
        self.runs = Runs(self.attempts, cores, spawn, self.reads.find_record)
        #: Colony mode: marks a run's outputs and log private (services/trust.py).
        self.mark_outputs: Callable[[Sequence[str]], None] | None = None
        #: Told (capsule id, outputs and log) of every run here (services/federation.py:
        #: another colony's submitter may read its own capsule's outputs).
        self.on_outputs: Callable[[str, Sequence[str]], None] | None = None
        #: Placement across cells (services/cell_forward.py), set by the daemon.
        self.cross: CrossCell | None = None
        #: Triggers leased to this node (services/trigger_runs.py), set by the daemon.
        self.triggers: TriggerRuns | None = None
        #: Whether a capsule message from a peer that is no member may reach the core
        #: anyway: guest executors of another colony and, at a guest, the nodes of the
        #: colony it executes for (docs/federation.md); set by the daemon.
        self.guest_ok: Callable[[PeerId, object], bool] = lambda peer, msg: False

    # ------------------------------------------------------------ wiring

    def register(self) -> None:
        net = self.network
        net.set_handler(PROTO_CAPSULE, on_message=self.on_message, codec=Codec.CBOR)
        net.set_handler(PROTO_CAPSULE_INFO, on_request=self.reads.on_info_request,
                        codec=Codec.CBOR)  # fmt: skip

    def on_message(self, peer: PeerId, obj: object) -> None:
        member_error = None
        try:
            self.gate.check(peer)
        except RemoteProtocolError as e:
            member_error = e
        try:
            msg = decode_message(obj)
        except WireError as e:
            raise RemoteProtocolError(f"bad capsule message: {e}") from None
        if member_error is not None and not self.guest_ok(peer, msg):
            raise member_error
        self.cores.submit(Received(peer, msg))

    def send(self, peer: PeerId, msg: object) -> None:
        if not isinstance(msg, MESSAGE_TYPES):  # the router routes only these here
            raise LocalProtocolError(f"not a capsule message: {type(msg).__name__}")
        self.network.post(peer, PROTO_CAPSULE, msg.to_wire())

    async def restore(self) -> int:
        """Hand persisted custody records back to the core before any other input
        (overlay/capsule/durable.py), then give it its first view of the members."""
        records = tuple(self.custody_store.load())
        if records:
            await self.cores.submit_wait(RestoreCustody(records))
            log.info("custody_restored", records=len(records),
                     supported=hasattr(self.core, "restore"))  # fmt: skip
        self.spawn(self._activate_when_joined)
        return len(records)

    async def _activate_when_joined(self) -> None:
        """Start the capsule layer once the daemon joined and membership settled."""
        await self.started.wait()
        last, stable_since = -1, trio.current_time()
        with trio.move_on_after(SETTLE_MAX_S):
            while trio.current_time() - stable_since < SETTLE_QUIET_S:
                n = len(self.membership.list_members())
                if n != last:
                    last, stable_since = n, trio.current_time()
                await trio.sleep(0.1)
        # The core's first view; later views come from gossip membership events
        # (wired in overlay.node.build_node) and the refresher.
        await self.cores.submit_wait(Activate())
        self.activated.set()
        log.info("capsules_active", members=len(self.membership.list_members()))
        self.spawn(self._refresh_members)
        self.spawn(self._refresh_ad)

    async def _refresh_members(self) -> None:
        while True:
            await trio.sleep(REFRESH_MEMBERS_S)
            await self.cores.submit_wait(RefreshMembers())

    async def _refresh_ad(self) -> None:
        """Keep the gossiped ad's load and free memory current (placement scores idle
        cores), re-advertising only on a real change so gossip is not flooded."""
        from overlay.runtime.services.host_ad import local_ad

        while True:
            await trio.sleep(AD_REFRESH_S)
            old = self.membership.own_ad()
            machine = local_ad(self.home, **self.setup.ad_fields())
            # Capsules waiting here: cell digests sum them (placement across cells).
            queued = self.core.custody.waiting_led()
            if old is None or not (_ad_moved(old, machine) or queued != old.queued):
                continue
            # Only the machine's changing state: every other field of the ad (e.g. the
            # reachability that its own service publishes) is kept as it is.
            fresh = replace(old, cpu_load=machine.cpu_load,
                            mem_free_bytes=machine.mem_free_bytes,
                            disk_free_bytes=machine.disk_free_bytes, queued=queued)  # fmt: skip
            # Read-modify-write with no checkpoint in between (handle_now, not a queued
            # submit): a queued update built from an older ad would undo the
            # reachability service's field, and vice versa.
            self.cores.handle_now(UpdateAd(fresh))

    # ------------------------------------------------------------ events from the core

    def on_event(self, ev: object) -> None:
        """Called by the daemon for every event the node core emits (in order)."""
        if isinstance(ev, cev.CustodyRecordChanged):
            # Durable before the effects that follow it in this effect list run.
            self.custody_store.apply(ev.capsule_id, ev.record)
            return
        if isinstance(ev, cev.RunRequested):
            if self.triggers is not None and ev.capsule.spec.function == TRIGGER_FUNCTION:
                self.triggers.start(ev)  # a trigger's lease: fire, don't execute
            else:
                self.runs.run(ev)
        elif isinstance(ev, cev.KillRequested):
            if self.triggers is None or not self.triggers.kill(ev):
                self.runs.kill(ev)
        elif isinstance(ev, cev.ProvidersWanted):
            self.spawn(self._locate, ev.cids)
        else:
            _log_event(ev)
            self._note(ev)

    def _note(self, ev: object) -> None:
        cid = getattr(ev, "capsule_id", None)
        k = self.known.get(cid) if isinstance(cid, str) else None
        if k is None:
            return
        if isinstance(ev, cev.SubmissionAccepted):
            if k.state == "submitting":
                k.state = "submitted"
        elif isinstance(ev, cev.SubmissionRejected):
            k.state, k.reason = "rejected", ev.reason
        elif isinstance(ev, cev.CapsuleStatusKnown):
            if k.state not in (s.value for s in TERMINAL):
                k.state, k.reason = ev.state, ev.reason
                k.outputs, k.exit_status = ev.outputs, ev.exit_status
        else:
            return
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def changed(self, timeout_s: float) -> None:
        """Wait until some capsule of this node changed, or `timeout_s`."""
        with trio.move_on_after(timeout_s):
            await self._changed.wait()

    # ------------------------------------------------------------ execution

    def _on_exit(self, exited: CapsuleExited) -> None:
        cids = [c for c in (*exited.outputs, exited.log_cid) if c]
        if cids and self.mark_outputs is not None:
            self.mark_outputs(cids)  # colony mode: members only, before the receipt names them
        if cids and self.on_outputs is not None:
            self.on_outputs(exited.capsule_id, cids)
        self.cores.submit(exited)
        if cids:
            self.spawn(self._provide, cids)

    async def _provide(self, cids: list[str]) -> None:
        keys: list[bytes] = []
        for text in cids:
            try:
                keys.extend(self.blocks.dag_multihashes(Cid.parse(text)))
            except ColonyError as e:
                log.warning("capsule_output_not_provided", cid=text, error=str(e))
        if not keys:
            return
        try:
            await self.dht.call(lambda rid: Provide(rid, tuple(keys)), timeout_s=120)
        except ColonyError as e:
            log.warning("capsule_provide_failed", error=str(e), blocks=len(keys))

    async def fetch_input(self, cid_text: str) -> None:
        """Fetch a whole DAG by CID from the colony into the local store."""
        await self.blocks.fetch_dag(Cid.parse(cid_text))

    async def _locate(self, cids: tuple[str, ...]) -> None:
        for text in cids:
            try:
                cid = Cid.parse(text)
                ev = await self.dht.call(partial(GetProviders, key=cid.multihash), timeout_s=30)
            except ColonyError as e:
                log.debug("capsule_locality_lookup_failed", cid=text, error=str(e))
                continue
            peers = tuple(p.peer for p in result_as(ev, Providers).providers)
            if self.blocks.store.has(cid) and self.me not in peers:
                peers = (*peers, self.me)
            await self.cores.submit_wait(LocalityHint(text, peers))

    # ------------------------------------------------------------ submitting (API)

    def remember(self, capsule: Capsule) -> Known:
        k = self.known.get(capsule.id)
        if k is None:
            while len(self.known) >= MAX_KNOWN:
                del self.known[next(iter(self.known))]
            k = self.known[capsule.id] = Known(capsule)
        return k

    async def submit(self, capsule: Capsule, timeout_s: float = 40.0, *,
                     chain: Sequence[Certificate] | None = None, grant: bytes = b"",
                     cross_cell: bool = True) -> Known:
        """Submit through this node; return once custody acknowledged or refused it.
        Another colony's capsule carries its submitter's `chain` and this colony's
        `grant` to it (services/federation.py); our own carry this node's chain, and
        may be placed in another cell (`cross`; not when `cross_cell` is False: a
        workflow's capsules stay where their custodians poll each other)."""
        with trio.move_on_after(timeout_s):
            await self.activated.wait()
        k = self.remember(capsule)
        if k.state in ("submitting", "rejected"):
            k.state, k.reason = "submitting", ""
            own = self.authority.chain if chain is None else tuple(chain)
            routed = None
            if self.cross is not None and cross_cell and chain is None and not grant \
                    and _may_cross(capsule):
                routed = await self.cross.route(capsule, own)
            if routed is not None:  # placed in another cell (services/cell_forward.py)
                k.state, k.reason, k.cell = routed.state, routed.reason, routed.cell
                self.reads.follow(capsule.id, routed.via)
                self._wake()
                return k
            await self.cores.submit_wait(SubmitCapsule(capsule, own, grant))
        with trio.move_on_after(timeout_s):
            while k.state == "submitting":
                await self.changed(1.0)
        if k.state == "submitting":
            k.state, k.reason = "rejected", f"no custodian answered within {timeout_s:g} s"
        return k

    async def submit_forwarded(self, capsule: Capsule, chain: Sequence[Certificate],
                               timeout_s: float) -> Known:
        """A capsule another cell's member forwarded here (services/cell_forward.py):
        submitted in this cell with its submitter's chain, never forwarded again."""
        return await self.submit(capsule, timeout_s, chain=chain, cross_cell=False)

    async def cancel(self, capsule_id: str, reason: str) -> None:
        via = self.reads.remote.get(capsule_id)
        if via is not None and self.cross is not None:  # placed in another cell
            await self.cross.cancel(via, capsule_id, reason)
            return
        await self.cores.submit_wait(CancelCapsule(capsule_id, reason))

    async def cancel_forwarded(self, peer: PeerId, capsule_id: str, reason: str) -> str | None:
        """`peer` asks to cancel a capsule it forwarded here; the reason it may not."""
        k = self.known.get(capsule_id)
        if k is None:
            return f"capsule {capsule_id} was not forwarded here"
        if k.capsule.submitter != peer:
            return "only its submitter may cancel a forwarded capsule"
        await self.cancel(capsule_id, reason)
        return None

    # ------------------------------------------------------------ reading state

    def local_record(self, capsule_id: str) -> CustodyRecord | None:
        return self.reads.local_record(capsule_id)

    async def find_record(self, capsule_id: str) -> CustodyRecord | None:
        """The copy to act on among this node and the capsule's custodians: the newest
        committed one (never an uncommitted outcome; capsule_info.acted_on)."""
        return await self.reads.find_record(capsule_id)

    async def find_report(self, capsule_id: str) -> Report | None:
        """The newest committed copy and a newer pending one (capsule_info.py)."""
        return await self.reads.find_report(capsule_id)

    async def read_log(self, executor: PeerId, capsule_id: str, token: int,
                       offset: int) -> tuple[bytes, bool]:  # fmt: skip
        """Bytes of a running attempt's log from `offset`; (data, gone)."""
        return await self.reads.read_log(executor, capsule_id, token, offset)


# ---------------------------------------------------------------- helpers


def _may_cross(capsule: Capsule) -> bool:
    """Own plain capsules only: a trigger fires where it is leased, a workflow member's
    custodians poll its parents in their own cell."""
    spec = capsule.spec
    return capsule.derived is None and not spec.dependencies \
        and spec.function != TRIGGER_FUNCTION

def _ad_moved(old: ResourceAd, new: ResourceAd) -> bool:
    # The ad's load is in cores; the step is per core.
    if abs(new.cpu_load - old.cpu_load) >= AD_LOAD_STEP * max(1, new.cpu_cores):
        return True
    base = max(old.mem_free_bytes, 1)
    return abs(new.mem_free_bytes - old.mem_free_bytes) / base >= AD_MEM_STEP


def _log_event(ev: object) -> None:
    """The capsule lifecycle in the daemon log (structlog events with fields)."""
    if isinstance(ev, cev.SubmissionRejected):
        log.warning("capsule_submission_rejected", capsule=ev.capsule_id, reason=ev.reason)
    elif isinstance(ev, cev.CapsuleWaiting):
        log.info("capsule_waiting", capsule=ev.capsule_id, reason=ev.reason)
    elif isinstance(ev, cev.CapsuleRequeued):
        log.info("capsule_requeued", capsule=ev.capsule_id, token=ev.token,
                 attempts=ev.attempts, reason=ev.reason)  # fmt: skip
    elif isinstance(ev, cev.CapsuleFinished):
        log.info("capsule_finished", capsule=ev.capsule_id, state=ev.state, reason=ev.reason)
    elif isinstance(ev, cev.CustodyTakenOver):
        log.info("capsule_custody_taken_over", capsule=ev.capsule_id, state=ev.state,
                 token=ev.token)  # fmt: skip
    elif isinstance(ev, cev.ReceiptSettled) and not ev.accepted:
        log.warning("capsule_receipt_not_accepted", capsule=ev.capsule_id, token=ev.token,
                    reason=ev.reason)  # fmt: skip
    elif isinstance(ev, cev.OutcomeSuperseded):
        log.warning("capsule_outcome_superseded", capsule=ev.capsule_id, state=ev.state,
                    token=ev.token, epoch=ev.epoch, by_epoch=ev.by_epoch,
                    by_state=ev.by_state)  # fmt: skip
    elif type(ev).__name__ == "CustodyRecordSkipped":
        log.warning("custody_record_skipped", capsule=str(getattr(ev, "capsule_id", "")),
                    reason=str(getattr(ev, "reason", "")))  # fmt: skip
