"""Capsules in the daemon: the glue between the capsule core and the real world.

The sans-IO `CapsuleCore` (overlay/capsule) decides custody, placement, leases and
receipts. This module gives it what it cannot do itself (DESIGN §7, docs/capsules.md):

- wire: `/colony/capsule/1.0.0`, one-way CBOR frames like gossip (`send` / `on_message`);
- members: the live gossip set with resource ads → `MembersChanged` (`members_changed`,
  wired in overlay.node.build_node on every membership event);
- locality: `ProvidersWanted` → a DHT provider lookup per input CID → `LocalityHint`;
- execution: `RunRequested` / `KillRequested` → `Attempts` (overlay/runtime/executors);
  inputs missing locally are fetched by CID over the block exchange; a workflow child
  also gets its parents' outputs as inputs (see `_resolve_dependencies`); outputs and
  logs are imported and pinned by the executor and then provided in the DHT here;
- custody persistence: `CustodyRecordChanged` → `CustodyStore` (committed before the
  effects that act on it run, since the driver carries effects out in order);
- reads for the API: `/colony/capsule-info/1.0.0`, request/response, answers "your copy
  of this capsule's custody record" and "bytes of a running attempt's log from offset N".
  These are reads of state the core already keeps; they change nothing.

Authorisation is read in one place, `load_authority`: open mode (every member may
submit and execute) until a colony owner is configured.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
import trio

from dht.api import GetProviders, Provide
from gossip.events import UpdateAd
from gossip.members import MemberState
from gossip.resources import ResourceAd
from overlay.capsule import events as cev
from overlay.capsule.core import CancelCapsule, CapsuleCore, SubmitCapsule
from overlay.capsule.custody import CustodyConfig, LocalityHint
from overlay.capsule.executor import CapsuleExited, ExecutorConfig
from overlay.capsule.leases import TERMINAL, CustodyRecord
from overlay.capsule.messages import MESSAGE_TYPES, decode_message
from overlay.capsule.part import (
    Activate,
    CapsulePart,
    RefreshMembers,
    RestoreCustody,
    executor_config,
)
from overlay.capsule.spec import Capsule, capsule_key, check_capsule_id
from overlay.core.certs import Certificate
from overlay.core.cid import Cid
from overlay.core.crypto import KeyPair
from overlay.core.effects import Received
from overlay.core.errors import ColonyError, RemoteProtocolError, WireError
from overlay.core.ids import PeerId
from overlay.runtime.executors import (
    EXIT_CANCELLED,
    EXIT_SETUP_FAILED,
    Attempts,
    ExecContext,
    available_kinds,
    executor_for,
)
from overlay.runtime.executors.base import LOG_NAME
from overlay.runtime.net.transport import Codec
from overlay.runtime.services.custody_store import CustodyStore
from store.importer import ImportOptions

if TYPE_CHECKING:
    from overlay.runtime.daemon import Daemon

log = structlog.get_logger("colony.capsules")

PROTO_CAPSULE = "/colony/capsule/1.0.0"
PROTO_CAPSULE_INFO = "/colony/capsule-info/1.0.0"
CAPSULE_MESSAGES: tuple[type, ...] = tuple(MESSAGE_TYPES)
RUNS_DIR = "runs"
INFO_TIMEOUT_S = 3.0
#: Reads ask this many members beyond the k_c closest (views differ during churn).
READ_EXTRA = 2
REFRESH_MEMBERS_S = 2.0
#: The resource ad is re-read this often and re-gossiped when the load per core moved
#: by AD_LOAD_STEP or free memory by the fraction AD_MEM_STEP.
AD_REFRESH_S = 15.0
AD_LOAD_STEP = 0.25
AD_MEM_STEP = 0.2
#: Activation waits for the member count to stay unchanged this long (at most MAX).
SETTLE_QUIET_S = 1.0
SETTLE_MAX_S = 5.0
#: Largest log piece one info request returns (well under the 4 MiB frame limit).
LOG_CHUNK_BYTES = 256 * 1024
#: Capsules remembered for `ps` (submitted through this node); oldest forgotten.
MAX_KNOWN = 10_000
MAX_PROVIDERS = 8
FETCH_STALL_S = 60.0
DEP_RESOLVE_TRIES = 10
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


def load_authority(home: Path, conf: dict[str, dict[str, Any]]) -> Authority:
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


# ---------------------------------------------------------------- JSON views


def record_json(rec: CustodyRecord) -> dict[str, Any]:
    spec = rec.capsule.spec
    r = rec.receipt
    return {
        "id": rec.capsule_id,
        "name": spec.name,
        "state": rec.state.value,
        "reason": rec.reason,
        "version": rec.version,
        "token": rec.token,
        "executor": str(rec.executor) if rec.executor else None,
        "attempts": rec.attempts,
        "submitter": str(rec.capsule.submitter),
        "origin": str(rec.origin),
        "submitted_at": rec.capsule.submitted_at,
        "command": list(spec.command),
        "function": spec.function,
        "inputs": list(spec.inputs),
        "declared_outputs": list(spec.outputs),
        "dependencies": list(spec.dependencies),
        "exit_status": r.exit_status if r else None,
        "outputs": list(r.outputs) if r else [],
        "log_cid": (r.log_cid or None) if r else None,
        "receipt_executor": str(r.executor) if r else None,
        "started": r.started if r else None,
        "finished": r.finished if r else None,
    }


@dataclass
class Known:
    """What this node knows of a capsule submitted through it (for `ps`)."""

    capsule: Capsule
    state: str = "submitting"
    reason: str = ""
    outputs: tuple[str, ...] = ()
    exit_status: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {"id": self.capsule.id, "name": self.capsule.spec.name, "state": self.state,
                "reason": self.reason, "outputs": list(self.outputs),
                "exit_status": self.exit_status,
                "submitted_at": self.capsule.submitted_at}  # fmt: skip


# ---------------------------------------------------------------- the service


@dataclass(frozen=True, slots=True)
class CapsuleSetup:
    """What the daemon needs before it builds its node: the executor kinds that work
    here, this node's executor capacity, its trust settings and the capsule core."""

    kinds: tuple[str, ...]
    executor: ExecutorConfig
    authority: Authority
    core: CapsuleCore

    def ad_fields(self) -> dict[str, Any]:
        """Keyword arguments for host_ad.local_ad (what gossip advertises)."""
        x = self.executor
        return {"executors": self.kinds, "slots": x.slots, "labels": x.labels,
                "location": x.location}  # fmt: skip


async def prepare_capsules(
    home: Path, conf: dict[str, dict[str, Any]], keypair: KeyPair
) -> CapsuleSetup:
    """Detect executor kinds (Slurm needs a controller that answers) and build the core."""
    configured = conf.get("capsule", {}).get("executors", [])
    kinds = await available_kinds(SLURM_DETECT_TIMEOUT_S)
    if configured:  # an operator may offer fewer kinds than work here, never more
        kinds = tuple(k for k in kinds if k in configured)
    authority = load_authority(home, conf)
    executor = executor_config(conf, kinds)
    core = CapsuleCore(keypair.peer_id, keypair,
                       custody=CustodyConfig(colony_owner=authority.colony_owner),
                       executor=executor, rng=random.Random())  # fmt: skip
    log.info("capsules_ready", executors=list(kinds), slots=executor.slots,
             open_mode=authority.colony_owner is None)  # fmt: skip
    return CapsuleSetup(kinds, executor, authority, core)


class CapsuleService:
    def __init__(self, d: Daemon, setup: CapsuleSetup) -> None:
        self.d = d
        self.core = setup.core
        self.kinds = setup.kinds
        self.authority = setup.authority
        self.setup = setup
        self.runs_dir = d.home / RUNS_DIR
        self.runs_dir.mkdir(exist_ok=True)
        self.custody_store = CustodyStore.open(d.home)
        opts = ImportOptions(cid_version=int(d.conf["store"]["cid_version"]))
        ctx = ExecContext(store=d.store, workdir_root=self.runs_dir, import_options=opts)
        self.attempts = Attempts(ctx, {k: executor_for(k) for k in self.kinds},
                                 on_exit=self._on_exit, fetch=self.fetch_input)  # fmt: skip
        self.known: dict[str, Known] = {}
        self._changed = trio.Event()
        #: Attempts of workflow children waiting for their parents' outputs.
        self._resolving: dict[tuple[str, int], trio.CancelScope] = {}
        self.activated = trio.Event()
        self.stats: dict[str, int] = {}

    def _count(self, name: str) -> None:
        self.stats[name] = self.stats.get(name, 0) + 1

    # ------------------------------------------------------------ wiring

    def register(self) -> None:
        t = self.d.t
        t.set_handler(PROTO_CAPSULE, on_message=self.on_message, codec=Codec.CBOR)
        t.set_handler(PROTO_CAPSULE_INFO, on_request=self.on_info_request, codec=Codec.CBOR)

    def _check_member(self, peer: PeerId) -> None:
        """Colony mode: capsule traffic only from members gossip admitted (DESIGN §3).
        Open mode: anyone; the core still verifies every signature and fencing token."""
        if self.authority.colony_owner is None:
            return
        m = self.d.swim.members.get(peer)
        if m is None or m.state not in (MemberState.ALIVE, MemberState.SUSPECT):
            self._count("refused_non_member")
            raise RemoteProtocolError(f"{peer.short()} is not a member of this colony")

    def on_message(self, peer: PeerId, obj: Any) -> None:
        self._check_member(peer)
        try:
            msg = decode_message(obj)
        except WireError as e:
            raise RemoteProtocolError(f"bad capsule message: {e}") from None
        self.d.driver.submit(Received(peer, msg))

    def send(self, peer: PeerId, msg: Any) -> None:
        self.d.t.post(peer, PROTO_CAPSULE, msg.to_wire())

    async def restore(self) -> int:
        """Hand persisted custody records back to the core before any other input
        (overlay/capsule/durable.py), then give it its first view of the members."""
        part = self.d.node.parts["capsule"]
        assert isinstance(part, CapsulePart)
        part.is_connected = self.d.t.is_connected
        self.part = part
        records = tuple(self.custody_store.load())
        if records:
            await self.d.driver.submit_wait(RestoreCustody(records))
            log.info("custody_restored", records=len(records),
                     supported=hasattr(self.core, "restore"))  # fmt: skip
        self.d.nursery.start_soon(self._activate_when_joined)
        return len(records)

    async def _activate_when_joined(self) -> None:
        """Start the capsule layer once the daemon joined and membership settled."""
        await self.d.started.wait()
        last, stable_since = -1, trio.current_time()
        with trio.move_on_after(SETTLE_MAX_S):
            while trio.current_time() - stable_since < SETTLE_QUIET_S:
                n = len(self.d.swim.list_members())
                if n != last:
                    last, stable_since = n, trio.current_time()
                await trio.sleep(0.1)
        # The core's first view; later views come from gossip membership events
        # (wired in overlay.node.build_node) and the refresher.
        await self.d.driver.submit_wait(Activate())
        self.activated.set()
        log.info("capsules_active", members=len(self.d.swim.list_members()))
        self.d.nursery.start_soon(self._refresh_members)
        self.d.nursery.start_soon(self._refresh_ad)

    async def _refresh_members(self) -> None:
        while True:
            await trio.sleep(REFRESH_MEMBERS_S)
            await self.d.driver.submit_wait(RefreshMembers())

    async def _refresh_ad(self) -> None:
        """Keep the gossiped ad's load and free memory current (placement scores idle
        cores), re-advertising only on a real change so gossip is not flooded."""
        from overlay.runtime.services.host_ad import local_ad

        while True:
            await trio.sleep(AD_REFRESH_S)
            old = self.d.swim.ad
            machine = local_ad(self.d.home, **self.setup.ad_fields())
            if old is None or not _ad_moved(old, machine):
                continue
            # Only the machine's changing state: every other field of the ad (e.g. the
            # reachability that its own service publishes) is kept as it is.
            fresh = replace(old, cpu_load=machine.cpu_load,
                            mem_free_bytes=machine.mem_free_bytes,
                            disk_free_bytes=machine.disk_free_bytes)  # fmt: skip
            # Read-modify-write with no checkpoint in between (handle_now, not a queued
            # submit): a queued update built from an older ad would undo the
            # reachability service's field, and vice versa.
            self.d.driver.handle_now(UpdateAd(fresh))

    # ------------------------------------------------------------ events from the core

    def on_event(self, ev: Any) -> None:
        """Called by the daemon for every event the node core emits (in order)."""
        if type(ev).__name__ == "CustodyRecordChanged":
            # Durable before the effects that follow it in this effect list run.
            self.custody_store.apply(ev.capsule_id, ev.record)
            return
        if isinstance(ev, cev.RunRequested):
            parents = getattr(ev, "parent_outputs", ())
            if parents:  # the core already learnt the parents' outputs from custody
                self.attempts.handle(self.d.nursery, with_inputs(ev, [p.cid for p in parents]))
            elif ev.capsule.spec.dependencies:
                self._start_resolving(ev)
            else:
                self.attempts.handle(self.d.nursery, ev)
        elif isinstance(ev, cev.KillRequested):
            scope = self._resolving.pop((ev.capsule_id, ev.token), None)
            if scope is not None:
                scope.cancel()
                self._report_unstarted(ev.capsule_id, ev.token, EXIT_CANCELLED,
                                       f"killed while resolving dependencies: {ev.reason}")
            else:
                self.attempts.handle(self.d.nursery, ev)
        elif isinstance(ev, cev.ProvidersWanted):
            self.d.nursery.start_soon(self._locate, ev.cids)
        else:
            _log_event(ev)
            self._note(ev)

    def _note(self, ev: Any) -> None:
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
        self.d.driver.submit(exited)
        cids = [c for c in (*exited.outputs, exited.log_cid) if c]
        if cids:
            self.d.nursery.start_soon(self._provide, cids)

    async def _provide(self, cids: list[str]) -> None:
        keys: list[bytes] = []
        for text in cids:
            try:
                keys.extend(dag_multihashes(self.d, Cid.parse(text)))
            except ColonyError as e:
                log.warning("capsule_output_not_provided", cid=text, error=str(e))
        if not keys:
            return
        try:
            await self.d.dht(lambda rid: Provide(rid, tuple(keys)), timeout_s=120)
        except ColonyError as e:
            log.warning("capsule_provide_failed", error=str(e), blocks=len(keys))

    def _report_unstarted(self, capsule_id: str, token: int, status: int, why: str) -> None:
        now = time.time()
        self.d.driver.submit(CapsuleExited(capsule_id, token, status, (), "", now, now, why))

    def _start_resolving(self, ev: cev.RunRequested) -> None:
        key = (ev.capsule.id, ev.token)
        if key in self._resolving:
            return
        scope = trio.CancelScope()
        self._resolving[key] = scope
        self.d.nursery.start_soon(self._resolve_dependencies, ev, scope)

    async def _resolve_dependencies(self, ev: cev.RunRequested, scope: trio.CancelScope) -> None:
        """A workflow child runs with its parents' outputs as extra inputs.

        The signed spec names parents by capsule id only (their outputs did not exist
        when it was signed). Custody places the child only after every parent
        succeeded; when the core's `RunRequested` does not carry the parents' outputs
        itself, we read each parent's accepted receipt from its custodians and run
        the spec with those output CIDs as extra inputs (`with_inputs`).
        """
        key = (ev.capsule.id, ev.token)
        spec = ev.capsule.spec
        extra: list[str] = []  # parents' output CIDs, in dependency order
        why = ""
        with scope:
            for dep in spec.dependencies:
                rec = None
                for attempt in range(DEP_RESOLVE_TRIES):
                    rec = await self.find_record(dep)
                    if rec is not None and rec.receipt is not None:
                        break
                    await trio.sleep(min(2.0, 0.2 * 2**attempt))
                if rec is None or rec.receipt is None or not rec.receipt.succeeded:
                    why = f"dependency {dep}: no successful receipt found"
                    break
                extra.extend(rec.receipt.outputs)
        if scope.cancelled_caught:
            return  # KillRequested reported it already
        if self._resolving.pop(key, None) is None:
            return
        if why:
            self._report_unstarted(key[0], key[1], EXIT_SETUP_FAILED, why)
            return
        self.attempts.handle(self.d.nursery, with_inputs(ev, extra))

    async def fetch_input(self, cid_text: str) -> None:
        """Fetch a whole DAG by CID from the colony into the local store."""
        await fetch_dag(self.d, Cid.parse(cid_text))

    async def _locate(self, cids: tuple[str, ...]) -> None:
        for text in cids:
            try:
                cid = Cid.parse(text)
                ev = await self.d.dht(partial(GetProviders, key=cid.multihash), timeout_s=30)
            except ColonyError as e:
                log.debug("capsule_locality_lookup_failed", cid=text, error=str(e))
                continue
            peers = tuple(p.peer for p in ev.result.providers)
            if self.d.store.has(cid) and self.d.me not in peers:
                peers = (*peers, self.d.me)
            await self.d.driver.submit_wait(LocalityHint(text, peers))

    # ------------------------------------------------------------ submitting (API)

    def remember(self, capsule: Capsule) -> Known:
        k = self.known.get(capsule.id)
        if k is None:
            while len(self.known) >= MAX_KNOWN:
                del self.known[next(iter(self.known))]
            k = self.known[capsule.id] = Known(capsule)
        return k

    async def submit(self, capsule: Capsule, timeout_s: float = 40.0) -> Known:
        """Submit through this node; return once custody acknowledged or refused it."""
        with trio.move_on_after(timeout_s):
            await self.activated.wait()
        k = self.remember(capsule)
        if k.state in ("submitting", "rejected"):
            k.state, k.reason = "submitting", ""
            await self.d.driver.submit_wait(SubmitCapsule(capsule, self.authority.chain))
        with trio.move_on_after(timeout_s):
            while k.state == "submitting":
                await self.changed(1.0)
        if k.state == "submitting":
            k.state, k.reason = "rejected", f"no custodian answered within {timeout_s:g} s"
        return k

    async def cancel(self, capsule_id: str, reason: str) -> None:
        await self.d.driver.submit_wait(CancelCapsule(capsule_id, reason))

    # ------------------------------------------------------------ reading state

    def local_record(self, capsule_id: str) -> CustodyRecord | None:
        return self.core.custody.record(capsule_id)

    async def find_record(self, capsule_id: str) -> CustodyRecord | None:
        """The newest custody record among this node and the capsule's custodians."""
        best = self.local_record(capsule_id)
        # Ask beyond the custodians of our own view: the core hides a peer for a while
        # after a dropped connection, and views differ while membership settles.
        key = capsule_key(capsule_id)
        live = sorted((m.peer for m in self.d.swim.list_members()), key=lambda p: p.key ^ key)
        peers = [p for p in live[: self.core.custody.config.k_c + READ_EXTRA] if p != self.d.me]
        found: list[CustodyRecord] = []

        async def ask(peer: PeerId) -> None:
            try:
                reply = await self.d.t.request(
                    peer, PROTO_CAPSULE_INFO, {"op": "status", "id": capsule_id},
                    timeout=INFO_TIMEOUT_S,
                )
                if isinstance(reply, dict) and reply.get("record") is not None:
                    rec = CustodyRecord.from_wire(reply["record"])
                    if rec.capsule_id == capsule_id:
                        found.append(rec)
            except (ColonyError, KeyError, TypeError) as e:
                log.debug("capsule_info_failed", peer=str(peer), error=str(e))

        async with trio.open_nursery() as n:
            for p in peers:
                n.start_soon(ask, p)
        for rec in found:
            if best is None or rec.version > best.version:
                best = rec
        return best

    async def read_log(self, executor: PeerId, capsule_id: str, token: int,
                       offset: int) -> tuple[bytes, bool]:  # fmt: skip
        """Bytes of a running attempt's log from `offset`; (data, gone) — gone when the
        run directory no longer exists (the attempt ended; its log is in the store)."""
        if executor == self.d.me:
            return read_run_log(self.runs_dir, capsule_id, token, offset)
        reply = await self.d.t.request(
            executor, PROTO_CAPSULE_INFO,
            {"op": "log", "id": capsule_id, "token": token, "offset": offset},
            timeout=INFO_TIMEOUT_S,
        )
        if not isinstance(reply, dict) or not isinstance(reply.get("data"), bytes):
            raise ColonyError(f"bad log reply from {executor.short()}")
        return reply["data"], bool(reply.get("gone"))

    async def on_info_request(self, peer: PeerId, obj: Any) -> Any:
        self._check_member(peer)
        if not isinstance(obj, dict):
            raise RemoteProtocolError("capsule info request must be a map")
        op = obj.get("op")
        try:
            cid = check_capsule_id(obj.get("id"))
        except WireError as e:
            raise RemoteProtocolError(str(e)) from None
        if op == "status":
            rec = self.local_record(cid)
            return {"record": rec.to_wire() if rec else None}
        if op == "log":
            token, offset = _uint(obj.get("token")), _uint(obj.get("offset"))
            data, gone = read_run_log(self.runs_dir, cid, token, offset)
            return {"data": data, "gone": gone}
        raise RemoteProtocolError(f"unknown capsule info op {op!r}")


# ---------------------------------------------------------------- helpers


def _ad_moved(old: ResourceAd, new: ResourceAd) -> bool:
    if abs(new.cpu_load - old.cpu_load) >= AD_LOAD_STEP:
        return True
    base = max(old.mem_free_bytes, 1)
    return abs(new.mem_free_bytes - old.mem_free_bytes) / base >= AD_MEM_STEP


def _log_event(ev: Any) -> None:
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
    elif type(ev).__name__ == "CustodyRecordSkipped":
        log.warning("custody_record_skipped", capsule=str(getattr(ev, "capsule_id", "")),
                    reason=str(getattr(ev, "reason", "")))  # fmt: skip


def _uint(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 1 << 62:
        raise RemoteProtocolError("log token and offset must be non-negative integers")
    return v


def with_inputs(ev: cev.RunRequested, extra: list[str]) -> cev.RunRequested:
    """`ev` for a local run whose spec also lists `extra` (parents' outputs) as inputs.

    They are fetched and materialised like any input, at ``inputs/<cid>``, and listed
    in order, one path per line, in `COLONY_DEP_OUTPUTS` (relative to the work dir).
    The signed capsule, and so its id, is unchanged; only this run sees the extra
    inputs.
    """
    spec = ev.capsule.spec
    inputs = tuple(dict.fromkeys((*spec.inputs, *extra)))
    env = dict(spec.env)
    env.setdefault("COLONY_DEP_OUTPUTS", "\n".join(f"inputs/{c}" for c in extra))
    local = replace(spec, inputs=inputs, env=tuple(sorted(env.items())))
    return replace(ev, capsule=replace(ev.capsule, spec=local))


def read_run_log(runs_dir: Path, capsule_id: str, token: int, offset: int) -> tuple[bytes, bool]:
    path = runs_dir / f"{capsule_id}.{token}" / LOG_NAME
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(LOG_CHUNK_BYTES), False
    except FileNotFoundError:
        return b"", True


def dag_multihashes(d: Daemon, root: Cid) -> list[bytes]:
    """Every block of a stored DAG (from the reference index), root first."""
    out: list[bytes] = []
    seen: set[bytes] = set()
    stack = [root.multihash]
    with d.store.reader() as r:
        while stack:
            mh = stack.pop()
            if mh in seen:
                continue
            seen.add(mh)
            out.append(mh)
            stack.extend(Cid.from_bytes(c).multihash for c in r.links(mh) or [])
    return out


async def fetch_dag(d: Daemon, cid: Cid) -> None:
    """Fetch `cid` (and everything below it) from its DHT providers, else from
    connected peers (as Bitswap broadcasts wants); ColonyError when it cannot."""
    from overlay.runtime.services.host_ad import str_addrs

    ev = await d.dht(lambda rid: GetProviders(rid, cid.multihash), timeout_s=30)
    providers = [p.peer for p in ev.result.providers if p.peer != d.me]
    for p in ev.result.providers:
        if p.addrs and p.peer != d.me:
            d.t.add_addrs(p.peer, str_addrs(p.addrs))
    if not providers:
        providers = [p for p in d.t.connected_peers() if p != d.me]
    if not providers:
        raise ColonyError(f"no providers for {cid} and no peers connected")
    session = d.start_fetch(cid, providers[:MAX_PROVIDERS])
    last, last_change = -1, trio.current_time()
    while not session.progress.done:
        await trio.sleep(0.02)
        got = session.progress.blocks_fetched
        if got != last:
            last, last_change = got, trio.current_time()
        elif trio.current_time() - last_change > FETCH_STALL_S:
            d.cancel_fetch(session)
            raise ColonyError(f"fetch of {cid} stalled: no block for {FETCH_STALL_S:.0f} s")
    d.writer.flush()
    if session.progress.error:
        raise ColonyError(str(session.progress.error))
