"""Placement across cells in the daemon: probe two cells, forward the capsule.

The decisions are the sans-IO `CellPlacer`'s (overlay/capsule/cell_placement.py); this
service does their I/O (docs/gossip.md "Capsules across cells"):

- `route(capsule, chain)`, called by `CapsuleService.submit` before a capsule of this
  node enters custody: reads the current cells (`CellService.current_reports`, the
  same as `GET /v1/cells`), asks the placer for a plan, probes the two cells it names
  concurrently (`CellService.probe`: a seed's `/colony/cells/1.0.0` report, fresh to
  a second), and forwards when the plan says so. Returns None to submit here.
- forwarding: `/colony/capsule-forward/1.0.0`, request `{"capsule", "chain"}` to a
  seed of the chosen cell (in the placer's random order, until one answers); the
  seed submits the capsule in its own cell, as its origin (custody unchanged: its
  custodians verify the submitter's signature and chain, rank with full knowledge of
  that cell, and the receipt goes to them), and answers `{"state", "reason",
  "cell"}` once its custody acknowledged or refused it. A forwarded capsule is never
  forwarded again. The submitting node remembers the seed (`CapsuleReads.remote`):
  `colony capsule status|wait|ps` here read the record through it.
- serving: only the submitter may forward its own capsule (the signer is the
  requester); in colony mode its chain must make it a member (learned, so its later
  status reads are answered); at most `MAX_SERVING` forwarded submissions at once.
- cancelling: `{"cancel": id, "reason"}` on the same protocol, from the submitter to
  the seed that took its capsule; the seed cancels it as its origin in that cell.

Every refusal and failure is counted (`stats`, /v1/stats "capsules" "cross_cell")
and logged with its reason. A forward that no seed accepts falls back to this cell,
where custody waits with its reason as for any capsule nothing here can run.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import structlog
import trio

from gossip.cell_digest import CellDigest
from gossip.cell_directory import CellReport
from gossip.cells import CellId
from overlay.capsule.cell_placement import CellPlacer, Forward, Local, Probe
from overlay.capsule.spec import Capsule
from overlay.core.certs import Certificate, chain_from_wire, chain_to_wire
from overlay.core.errors import ColonyError, RemoteProtocolError, WireError
from overlay.runtime.net.transport_types import Codec

if TYPE_CHECKING:
    from overlay.core.ids import PeerId
    from overlay.runtime.context import Network
    from overlay.runtime.services.capsule_info import Known
    from overlay.runtime.services.trust_state import Trust

log = structlog.get_logger("colony.capsules")

PROTO_CAPSULE_FORWARD = "/colony/capsule-forward/1.0.0"
PROBE_TIMEOUT_S = 3.0
#: The seed answers once its custody acknowledged (it waits up to SUBMIT_WAIT_S).
SUBMIT_WAIT_S = 30.0
FORWARD_TIMEOUT_S = SUBMIT_WAIT_S + 5.0
MAX_SERVING = 64
#: Seeds tried per forward before falling back to this cell.
MAX_TRIES = 3


class Cells(Protocol):
    """What placement across cells reads of the cell service."""

    @property
    def cell(self) -> CellId: ...

    def current_reports(self) -> list[CellReport]: ...

    async def probe(self, rep: CellReport, timeout_s: float) -> CellDigest | None: ...


#: Submit a capsule in this node's cell: (capsule, chain, timeout) → what became of it.
SubmitHere = Callable[[Capsule, Sequence[Certificate], float], Awaitable["Known"]]
#: Cancel a capsule forwarded here: (requester, capsule id, reason) → refusal or None.
CancelHere = Callable[["PeerId", str, str], Awaitable[str | None]]


@dataclass(frozen=True, slots=True)
class Routed:
    """A capsule forwarded to `via`, a member of `cell`, and what its custody said."""

    via: PeerId
    cell: str
    state: str
    reason: str


class CrossCell:
    def __init__(self, placer: CellPlacer, cells: Cells, network: Network, trust: Trust,
                 submit_here: SubmitHere, cancel_here: CancelHere) -> None:
        self.placer = placer
        self.cells = cells
        self.net = network
        self.trust = trust
        self.submit_here = submit_here
        self.cancel_here = cancel_here
        self.stats: dict[str, int] = {}
        self._serving = 0

    def _count(self, name: str) -> None:
        self.stats[name] = self.stats.get(name, 0) + 1

    def register(self) -> None:
        self.net.set_handler(PROTO_CAPSULE_FORWARD, on_request=self._serve, codec=Codec.CBOR)

    def stats_json(self) -> dict[str, int]:
        return {**self.placer.stats, **self.stats}

    # ------------------------------------------------------------ the submitting side

    async def route(self, capsule: Capsule, chain: Sequence[Certificate]) -> Routed | None:
        """Forward `capsule` to a better cell (the `Routed` result) or None: submit here."""
        own = self.cells.cell
        t0 = trio.current_time()
        plan = self.placer.plan(capsule.id, capsule.spec.conditions, own,
                                self.cells.current_reports(), t0)
        if isinstance(plan, Probe):
            answers: dict[CellId, CellDigest | None] = {}

            async def ask(rep: CellReport) -> None:
                answers[rep.cell] = await self.cells.probe(rep, PROBE_TIMEOUT_S)

            async with trio.open_nursery() as n:
                for rep in plan.cells:
                    n.start_soon(ask, rep)
            plan = self.placer.probed(capsule.id, own, answers, trio.current_time())
        if isinstance(plan, Local):
            log.debug("capsule_cell_local", capsule=capsule.id, reason=plan.reason)
            return None
        assert isinstance(plan, Forward)
        routed = await self._forward(capsule, chain, plan)
        if routed is not None:
            log.info("capsule_forwarded", capsule=capsule.id, cell=routed.cell,
                     via=str(routed.via), state=routed.state, reason=plan.reason,
                     took_s=round(trio.current_time() - t0, 3))  # fmt: skip
        return routed

    async def _forward(self, capsule: Capsule, chain: Sequence[Certificate],
                       plan: Forward) -> Routed | None:
        req: dict[str, object] = {"capsule": capsule.to_wire()}
        if chain:
            req["chain"] = chain_to_wire(tuple(chain))
        for seed in plan.seeds[:MAX_TRIES]:
            self.net.add_addrs(seed.peer, seed.addrs)
            try:
                reply = await self.net.request(seed.peer, PROTO_CAPSULE_FORWARD, req,
                                               timeout=FORWARD_TIMEOUT_S)
                if not isinstance(reply, dict) or not isinstance(reply.get("state"), str) \
                        or not isinstance(reply.get("reason", ""), str):
                    raise RemoteProtocolError("capsule forward reply must be {state, reason}")
            except (ColonyError, OSError, trio.TooSlowError) as e:
                self._count("forward_failed")
                log.warning("capsule_forward_failed", capsule=capsule.id,
                            cell=plan.cell.name(), peer=str(seed.peer), error=str(e))
                continue
            state, reason = str(reply["state"]), str(reply.get("reason", ""))
            if state == "rejected":
                self._count("forward_rejected")
                log.warning("capsule_forward_rejected", capsule=capsule.id,
                            cell=plan.cell.name(), peer=str(seed.peer), reason=reason)
                if reason.startswith("forward refused"):
                    continue  # that seed would not take it: try another
            else:
                self._count("forwarded")
            return Routed(seed.peer, str(reply.get("cell", plan.cell.name())), state, reason)
        self._count("forward_fallback_local")
        log.warning("capsule_forward_fell_back", capsule=capsule.id, cell=plan.cell.name(),
                    reason="no seed of the chosen cell took the capsule")
        return None

    async def cancel(self, via: PeerId, capsule_id: str, reason: str) -> None:
        """Ask `via`, which took our capsule into its cell, to cancel it there (it is
        the capsule's origin in that cell; it retries until the capsule ended)."""
        try:
            reply = await self.net.request(via, PROTO_CAPSULE_FORWARD,
                                           {"cancel": capsule_id, "reason": reason},
                                           timeout=FORWARD_TIMEOUT_S)
            why = reply.get("refused") if isinstance(reply, dict) else "bad reply"
        except (ColonyError, OSError, trio.TooSlowError) as e:
            why = str(e) or type(e).__name__
        if why:
            self._count("cancel_failed")
            log.warning("capsule_forward_cancel_failed", capsule=capsule_id, via=str(via),
                        reason=str(why))  # fmt: skip

    # ------------------------------------------------------------ the receiving side

    async def _serve(self, peer: PeerId, obj: object) -> object:
        if isinstance(obj, dict) and "cancel" in obj:
            return await self._serve_cancel(peer, obj)
        try:
            if not isinstance(obj, dict):
                raise RemoteProtocolError("capsule forward must be a map")
            capsule = Capsule.from_wire(obj.get("capsule"))
            raw = obj.get("chain")
            chain = chain_from_wire(raw) if raw else ()
        except (WireError, RemoteProtocolError) as e:
            self._count("refused_malformed")
            raise RemoteProtocolError(f"bad capsule forward: {e}") from None
        why = self._refusal(peer, capsule, chain)
        if why is not None:
            self._count("refused")
            log.warning("capsule_forward_refused", capsule=capsule.id, peer=str(peer),
                        reason=why)  # fmt: skip
            return {"state": "rejected", "reason": f"forward refused: {why}"}
        self._serving += 1
        try:
            k = await self.submit_here(capsule, chain, SUBMIT_WAIT_S)
        finally:
            self._serving -= 1
        self._count("served")
        log.info("capsule_forward_taken", capsule=capsule.id, peer=str(peer), state=k.state)
        return {"state": k.state, "reason": k.reason, "cell": self.cells.cell.name()}

    async def _serve_cancel(self, peer: PeerId, obj: dict[object, object]) -> object:
        cid, reason = obj.get("cancel"), obj.get("reason", "")
        if not isinstance(cid, str) or not isinstance(reason, str) or len(cid) > 128:
            self._count("refused_malformed")
            raise RemoteProtocolError("capsule forward cancel must be {cancel: id, reason}")
        why = await self.cancel_here(peer, cid, reason[:200])
        if why is not None:
            self._count("cancel_refused")
            log.warning("capsule_forward_cancel_refused", capsule=cid, peer=str(peer),
                        reason=why)  # fmt: skip
            return {"refused": why}
        self._count("cancels_served")
        return {}

    def _refusal(self, peer: PeerId, capsule: Capsule,
                 chain: Sequence[Certificate]) -> str | None:
        if capsule.submitter != peer or capsule.derived is not None:
            return "only a submitter forwards its own capsule"
        if capsule.spec.dependencies:
            return "workflow capsules are placed in their submitter's cell"
        if self._serving >= MAX_SERVING:
            return f"{MAX_SERVING} forwarded submissions in flight here"
        if self.trust.colony_owner is not None:
            now = time.time()
            why = self.trust.learn(peer, chain, now)
            if why is not None:
                return why
            return self.trust.check(peer, "member", now)
        return None
