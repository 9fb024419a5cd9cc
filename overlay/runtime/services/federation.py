"""Federation in the daemon, the granting colony's end (docs/federation.md; the
grantee's end is services/federation_grantee.py).

Colony A gave colony B a grant (overlay/core/grants.py). Gossip membership stays per
colony; federation rides direct connections and the DHT, on one protocol,
`/colony/federation/1.0.0` (request/response, canonical CBOR):

    {"op": "prove", "chain", "grants": [grant…], "labels": [name…]}
        B → A, before B fetches from A (again after `REPROVE_S`): B's node shows its chain
        to B's owner and the grants it holds (none: A looks the grant up in the DHT
        under /colony/grant/<A>/<B>). A's node verifies each (`read`, else the role
        it gives) and
        remembers (peer → grants, chain) in `sessions` — until the grant expires or is
        revoked (A's revocations), or the chain expires or is revoked (B's, from B's
        list in the DHT: federation_revocations.py), checked at every use and, for
        B's, every `recheck_s` (`run`). Labels under a grant's prefix are resolved
        (DHT) and their current roots readable too.
        → {"accepted": [serial…], "refused": [reason…]}
    {"op": "submit", "proof", "capsule"}   B → A: run a capsule in A.
    {"op": "admit", "proof", "capsule"}    A → A: the entry node hands it to the
        grant's *quota holder*, the live member closest to the grant id (XOR).
        → {"accepted", "id", "state", "reason"}
    {"op": "status", "proof", "id"}        B → A: the custody record (receipt).
    {"op": "usage", "serials"} (A's members) / {"op": "usage", "proof"} (B):
        what this node counted today (quota.py), summed over A's members by the
        asked node for B.
    {"op": "offer-executor", "proof", "ad"}  B → A: B's node offers to run A's
        capsules under a grant giving `execute` (federation_guests.py).

Enforcement at A (each A node, `filter_bitswap` replacing the trust service's as the
router's filter): a peer with a session gets the blocks of the DAGs its grants cover
(`read`: roots, labels) — private or not, whatever `serve_public` — within the grant's
daily byte quota counted at this node; everything else goes through the members /
outsiders rule of services/trust.py. Custody (overlay/capsule/custody.py) takes a
Submit carrying B's chain and a grant giving `submit`; the quota holder checks and
charges capsules and CPU-seconds first (quota.py), then submits through its own
capsule core, so the capsule is placed and kept like A's own.

At B (federation_grantee.py): before a fetch the node proves itself to the providers
that are not members of B; a DAG fetched from another colony is marked private in B
(a copy is no less private than the original); submissions and status requests go
to the addresses the grant token carried.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from functools import partial
from typing import Any

import structlog
import trio

from dht.api import GetValue, PutValue, Stored, Value, result_as
from dht.grants import check_grant_record, grant_key
from dht.labels import label_key, parse_label_record
from overlay.capsule.events import RunRequested
from overlay.capsule.spec import Capsule, check_capsule_id
from overlay.core.certs import chain_from_wire, verify_chain
from overlay.core.cid import Cid
from overlay.core.crypto import KeyPair
from overlay.core.errors import ColonyError, ConfigError, RemoteProtocolError
from overlay.core.grants import (
    EXECUTE,
    READ,
    SUBMIT,
    Grant,
    Proof,
    parse_grant,
    revocation_authority,
    verify_grant,
    verify_proof,
)
from overlay.core.ids import PeerId, key_of_bytes
from overlay.core.quota import QuotaLedger, cpu_cost
from overlay.exchange.messages import BitswapMessage
from overlay.runtime.context import DhtCalls, Membership, Network
from overlay.runtime.jsontypes import JsonObject
from overlay.runtime.net.transport import Codec
from overlay.runtime.services.capsules import CapsuleService
from overlay.runtime.services.federation_grantee import PROTO_FEDERATION
from overlay.runtime.services.federation_guests import (
    GuestExecutors,
    guest_refused,
    split_wants,
)
from overlay.runtime.services.federation_revocations import (
    PROOF_LOOKUP_BUDGET_S,
    FederatedRevocations,
)
from overlay.runtime.services.federation_state import FederationState, grant_json
from overlay.runtime.services.grant_store import GrantStore
from overlay.runtime.services.trust import TrustService
from overlay.runtime.services.trust_state import colony_id, private_multihashes

log = structlog.get_logger("colony.federation")

#: A granted DAG's block set is recomputed at most this often (blocks arrive).
BLOCKS_TTL_S = 5.0
#: Peers with a verified session remembered at once (oldest forgotten first).
MAX_SESSIONS = 1024
MAX_LABELS = 16
#: Unsettled capsules the quota holder looks up per submission.
MAX_SETTLE = 16
#: Members a usage sum asks (status).
MAX_USAGE_PEERS = 32
#: Grantee colonies whose lists one re-check looks up (others: checked on what is known).
MAX_RECHECK_COLONIES = 64


class FederationService:
    """The granting colony's end: verify proofs, serve granted DAGs, admit capsules
    within quota, answer status and usage."""

    def __init__(
        self,
        trust_service: TrustService,
        *,
        keypair: KeyPair,
        network: Network,
        membership: Membership,
        dht: DhtCalls,
        capsules: CapsuleService,
        revocations: FederatedRevocations,
        guest_executors: bool = False,
    ) -> None:
        self.ts = trust_service
        self.trust = trust_service.trust
        self.grants = GrantStore(self.trust)
        self.me = keypair.peer_id
        self.keypair = keypair
        self.network = network
        self.membership = membership
        self.dht = dht
        self.capsules = capsules
        #: Grantee colonies' revocations (their lists in the DHT) and ours published.
        self.revs = revocations
        self.state = FederationState(self.trust.dir, self.trust)
        #: Other colonies' executors with a grant giving `execute` (federation_guests.py).
        self.guests = GuestExecutors(
            guest_executors, capsules.cores.submit if capsules else (lambda inp: None),
            lambda: self.state.ledger,
            capsules.core.custody.record if capsules else (lambda cid: None),
            capsules.find_record if capsules else None)
        #: Whether this node proved itself to `peer` (federation_grantee.py; the
        #: daemon wires it): that peer's blocks are answers to our granted wants.
        self.proved_to: Callable[[PeerId], bool] = lambda peer: False
        #: Whether `peer` took this node as a guest executor (federation_grantee.py).
        self.hosted_by: Callable[[PeerId], bool] = lambda peer: False

    @property
    def ledger(self) -> QuotaLedger:
        return self.state.ledger

    def register(self) -> None:
        self.network.set_handler(PROTO_FEDERATION, on_request=self.on_request,
                                 codec=Codec.CBOR)  # fmt: skip

    # ------------------------------------------------------------ A: requests

    async def on_request(self, peer: PeerId, obj: object) -> object:
        if not self.trust.enabled:
            raise RemoteProtocolError("this node is in open mode: no grants")
        if not isinstance(obj, dict):
            raise RemoteProtocolError("federation request must be a map")
        op = obj.get("op")
        if op == "prove":
            return await self._on_prove(peer, obj)
        if op in ("submit", "admit"):
            return await self._on_submit(peer, obj, op)
        if op == "status":
            return await self._on_status(peer, obj)
        if op == "usage":
            return await self._on_usage(peer, obj)
        if op == "offer-executor":
            return await self.guests.on_offer(peer, obj, self._verify)
        raise RemoteProtocolError(f"unknown federation op {op!r}")

    async def _verify(self, proof: Proof, peer: PeerId, role: str) -> Grant:
        """`verify_proof` with A's revocations and the grantee's as this node knows
        them (looked up first, for at most `PROOF_LOOKUP_BUDGET_S`, if older than
        `recheck_s`; only for a grant of ours in force: a stranger's made-up colony
        costs no lookup)."""
        owner = self.trust.require_colony()
        grantee = proof.grant.grantee
        if self._in_force(proof.grant, time.time()):
            with trio.move_on_after(PROOF_LOOKUP_BUDGET_S):
                await self.revs.refresh(grantee)
        g = verify_proof(proof, owner, peer, role, time.time(), self.trust.revocations,
                         self.revs.remote.get(grantee))  # fmt: skip
        if self.trust.admission is not None and g.envelope.signer != owner:
            # A revocation by the grant's delegate signer is then taken from peers too.
            self.trust.admission.note_authority(g.grant_id, revocation_authority(g))
        return g

    async def _on_prove(self, peer: PeerId, obj: dict[Any, Any]) -> object:
        try:
            chain = chain_from_wire(obj.get("chain"))
        except (RemoteProtocolError, TypeError) as e:
            raise RemoteProtocolError(f"bad federation proof chain: {e}") from None
        raw = obj.get("grants") or []
        if not isinstance(raw, list) or len(raw) > 64:
            raise RemoteProtocolError("grants must be a list of at most 64")
        grants, refused = [], []
        for item in raw:
            try:
                grants.append(parse_grant(item))
            except RemoteProtocolError as e:  # forged or malformed: say so, judge the rest
                refused.append(f"grant refused: {e}")
        if not raw:  # none presented: the DHT holds the newest grant to that colony
            found = await self._lookup(chain[0].colony)
            grants = [found] if found is not None else []
        accepted = []
        for g in grants:
            try:  # read: the DAGs it covers; submit: the outputs of B's own capsules
                await self._verify(Proof(chain, g), peer, _some_role(g))
            except RemoteProtocolError as e:
                refused.append(str(e))
                continue
            accepted.append(g)
        labels = obj.get("labels") or []
        roots = await self._resolve_labels(accepted, labels if isinstance(labels, list) else [])
        if obj.get("capsule") is not None and any(g.gives(EXECUTE) for g in accepted):
            if (lease := await self.guests.lease_inputs(peer, obj.get("capsule"))) is not None:
                self.state.note_lease(peer, *lease)  # (note_lease drops the cached set)
        if accepted:
            self.state.open_session(peer, accepted, roots, MAX_SESSIONS, chain)
        for why in refused:
            log.warning("federation_refused", peer=str(peer), reason=why)
        if accepted:
            log.info("federation_session", peer=str(peer), grants=[g.serial[:12] for g in accepted],
                     colony=str(colony_id(accepted[0].grantee)))  # fmt: skip
        return {"accepted": [g.serial for g in accepted], "refused": refused}

    async def _lookup(self, grantee: bytes) -> Grant | None:
        key = grant_key(self.trust.require_colony(), grantee)
        try:
            ev = await self.dht.call(lambda rid: GetValue(rid, key), timeout_s=10)
            payload = result_as(ev, Value).value
            return check_grant_record(key, payload, time.time()) if payload else None
        except (ColonyError, RemoteProtocolError) as e:
            log.info("federation_grant_lookup_failed", key=key.decode(), error=str(e))
            return None

    async def _resolve_labels(self, grants: Sequence[Grant], labels: Iterable[object]
                              ) -> dict[str, list[Cid]]:  # fmt: skip
        """Grant serial → current roots of the asked labels its prefix covers (DHT)."""
        out: dict[str, list[Cid]] = {}
        me = colony_id(self.trust.require_colony())
        for name in list(labels)[:MAX_LABELS]:
            if not isinstance(name, str):
                continue
            covering = [g for g in grants if g.gives(READ) and g.covers_label(name)]
            if not covering:
                continue
            try:
                key = label_key(me, name)
                ev = await self.dht.call(partial(GetValue, key=key), timeout_s=10)
                payload = result_as(ev, Value).value
                if not payload:
                    continue
                rec = parse_label_record(key, payload, time.time())
                for g in covering:
                    out.setdefault(g.serial, []).append(Cid.parse(rec.value))
            except (ColonyError, RemoteProtocolError) as e:
                log.info("federation_label_not_resolved", label=name, error=str(e))
        return out

    # ------------------------------------------------------------ A: Bitswap

    def filter_bitswap(self, peer: PeerId, msg: BitswapMessage) -> BitswapMessage | None:
        """The router's filter: a peer with a verified session gets the blocks its
        grants cover (within the byte quota); every other want goes through the trust
        service's rule (members: all; outsiders: public only, or nothing)."""
        why = self._chain_refused(peer, time.time())
        if why is not None:
            self._end_session(peer, why)
        grants = self.state.live_grants(peer, time.time(), self._in_force)
        if not grants and msg.wants and peer in self.state.outputs and self.hosted_by(peer):
            return self._own_outputs(peer, msg)
        if not grants or not msg.wants:
            kept = self.ts.filter_bitswap(peer, msg)
            if kept is None and (msg.blocks or msg.presences) and self.proved_to(peer):
                # This node asked that colony for granted blocks: take its answers even
                # with `serve_public = false` (which still refuses it every want).
                return dataclasses.replace(msg, wants=())
            return kept
        granted, rest = [], []
        with self.ts.store.reader() as r:
            for w in msg.wants:
                g = None if w.cancel else self._covering(peer, grants, w.cid)
                if g is None:
                    rest.append(w)
                    continue
                size = r.size(Cid.from_bytes(w.cid)) or 0
                why = self.ledger.charge_bytes(g, size, time.time())
                if why is None:
                    granted.append(w)
                else:
                    self.ts.log_refusal(peer, "federation_quota_refused", why)
        if granted:
            self.state.dirty()
        filtered = self.ts.filter_bitswap(peer, dataclasses.replace(msg, wants=tuple(rest)))
        if filtered is None:
            return dataclasses.replace(msg, wants=tuple(granted), blocks=(), presences=())
        return dataclasses.replace(filtered, wants=(*filtered.wants, *granted))

    def _own_outputs(self, peer: PeerId, msg: BitswapMessage) -> BitswapMessage | None:
        """At a guest executor: a host gets its own capsules' outputs and logs here."""
        blocks = self._output_blocks(peer, self.state.outputs[peer])
        return split_wants(msg, blocks, lambda m: self.ts.filter_bitswap(peer, m))

    def _chain_refused(self, peer: PeerId, now: float) -> str | None:
        """Why the chain `peer` proved its session with no longer holds (expired, or
        revoked by its colony as far as this node knows), or None."""
        chain = self.state.chains.get(peer)
        if chain is None:
            return None
        owner = chain[0].colony
        try:
            verify_chain(chain, owner, peer, chain[-1].roles[0], now, self.revs.remote.get(owner))
        except RemoteProtocolError as e:
            return str(e)
        return None

    def _end_session(self, peer: PeerId, why: str) -> None:
        if self.state.end_session(peer):
            log.warning("federation_session_ended", peer=str(peer), reason=why)

    async def run(self) -> None:
        """Every `recheck_s`: look up the revocation list of each colony with an open
        session or a guest executor here, then end the sessions and drop the guests
        whose chain it revokes (the bound in docs/federation.md: `recheck_s` + one
        lookup)."""
        while True:
            await trio.sleep(self.revs.recheck_s)
            if not self.trust.enabled:
                continue
            chains = [*self.state.chains.values(), *(g.chain for g in self.guests.guests.values())]
            colonies = list(dict.fromkeys(c[0].colony for c in chains))
            async with trio.open_nursery() as n:
                for colony in colonies[:MAX_RECHECK_COLONIES]:
                    n.start_soon(partial(self.revs.refresh, colony, force=True))
            now = time.time()
            for peer in list(self.state.chains):
                why = self._chain_refused(peer, now)
                if why is not None:
                    self._end_session(peer, why)
            self.guests.prune(now, partial(guest_refused, in_force=self._in_force,
                                           revocations=self.revs.remote.get, now=now))

    # ------------------------------------------------------------ A: guest executors

    def guest_message_ok(self, peer: PeerId, msg: object) -> bool:
        """The capsule service's gate: an executor's messages from a current guest (a
        receipt only while its proof holds, role execute)."""
        return self.guests.message_ok(peer, msg, partial(guest_refused, now=time.time(),
                                      in_force=self._in_force, revocations=self.revs.remote.get))

    def _in_force(self, g: Grant, now: float) -> bool:
        try:
            verify_grant(g, self.trust.require_colony(), now, self.trust.revocations)
        except RemoteProtocolError:
            return False
        return True

    def _covering(self, peer: PeerId, grants: Collection[Grant], cid_bytes: bytes
                  ) -> Grant | None:  # fmt: skip
        """The grant under which `peer` may have this block: one giving `read` of a DAG
        holding it, or one giving `submit` when it is an output (or log) of a capsule
        `peer` submitted and this node ran."""
        try:
            mh = Cid.from_bytes(cid_bytes).multihash
        except ColonyError:
            return None
        for g in grants:
            if g.gives(READ) and mh in self._blocks_of(g):
                return g
        leased = self.state.leases.get(peer)
        if leased and self.guests.lease_live(peer, leased[0]):
            for g in grants:
                if g.gives(EXECUTE) and mh in self._output_blocks(peer, leased[1], "lease"):
                    return g
        outputs = self.state.outputs.get(peer)
        if outputs:
            for g in grants:
                if g.gives(SUBMIT) and mh in self._output_blocks(peer, outputs):
                    return g
        return None

    def _output_blocks(self, peer: PeerId, roots: Sequence[str],
                       kind: str = "outputs") -> Collection[bytes]:  # fmt: skip
        key = f"{kind}:{peer}"
        hit = self.state.blocks.get(key)
        if hit is not None and time.monotonic() - hit[0] < BLOCKS_TTL_S:
            return hit[1]
        blocks = frozenset(private_multihashes(self.ts.store, roots))
        self.state.blocks[key] = (time.monotonic(), blocks)
        return blocks

    def on_event(self, ev: object) -> None:
        """Executor side: remember runs of capsules whose submitter is no member here
        (another colony's, admitted through a grant). Custody side: charge and settle
        guest leases."""
        if self.guests.on_event(ev, time.time()):
            self.state.save()
        if isinstance(ev, RunRequested) and self.trust.enabled:
            who = ev.capsule.submitter
            if self.trust.check(who, "member", time.time()) is not None:
                self.state.note_run(ev.capsule.id, who)

    def on_outputs(self, capsule_id: str, cids: Sequence[str]) -> None:
        who = self.state.note_outputs(capsule_id, cids)
        if who is not None:
            self.state.blocks.pop(f"outputs:{who}", None)
            log.info("federation_outputs", capsule=capsule_id, submitter=str(who),
                     roots=list(cids))  # fmt: skip

    def _blocks_of(self, g: Grant) -> Collection[bytes]:
        now = time.monotonic()
        hit = self.state.blocks.get(g.serial)
        if hit is not None and now - hit[0] < BLOCKS_TTL_S:
            return hit[1]
        roots = [str(c) for c in (*g.roots, *self.state.label_roots.get(g.serial, ()))]
        blocks = frozenset(private_multihashes(self.ts.store, roots))
        self.state.blocks[g.serial] = (now, blocks)
        return blocks

    # ------------------------------------------------------------ A: capsules

    def quota_holder(self, g: Grant) -> PeerId:
        """The live member closest to the grant id: it counts the grant's capsules and
        CPU-seconds (every member with the same view picks the same one)."""
        key = key_of_bytes(g.grant_id)
        peers = [m.peer for m in self.membership.list_members()] or [self.me]
        return min(peers, key=lambda p: p.key ^ key)

    async def _on_submit(self, peer: PeerId, obj: dict[Any, Any], op: str) -> object:
        try:
            proof = Proof.from_wire(obj.get("proof"))
            capsule = Capsule.from_wire(obj.get("capsule"))
        except (RemoteProtocolError, ColonyError) as e:
            raise RemoteProtocolError(f"bad federated submission: {e}") from None
        if op == "submit" and capsule.submitter != peer:
            raise RemoteProtocolError("a federated capsule must be signed by its sender")
        if op == "admit" and not self.membership.is_member(peer):
            raise RemoteProtocolError(f"{peer.short()} is not a member of this colony")
        try:
            g = await self._verify(proof, capsule.submitter, SUBMIT)
        except RemoteProtocolError as e:
            log.warning("federation_submit_refused", peer=str(peer), reason=str(e))
            return {"accepted": False, "id": capsule.id, "state": "rejected", "reason": str(e)}
        holder = self.quota_holder(g)
        if holder != self.me and op == "submit":
            reply = await self.network.request(holder, PROTO_FEDERATION, {**obj, "op": "admit"},
                                               timeout=60.0)  # fmt: skip
        else:
            reply = await self._admit(proof, g, capsule)
        if isinstance(reply, dict) and reply.get("accepted"):
            self.state.note_capsule(capsule.id, g.grantee)
        return reply

    async def _admit(self, proof: Proof, g: Grant, capsule: Capsule) -> JsonObject:
        """The quota holder: settle, check and charge the quotas, then submit."""
        spec = capsule.spec
        cost = cpu_cost(spec.conditions.cpu, spec.maxexectime_s)
        why: str | None = None
        if g.limit("cpu_s") is not None and spec.maxexectime_s <= 0:
            why = "a capsule under a CPU-second quota must set maxexectime_s"
        else:
            await self._settle(g)
            why = self.ledger.check_submit(g, cost, time.time())
        if why is not None:
            log.warning("federation_quota_refused", capsule=capsule.id, reason=why)
            return {"accepted": False, "id": capsule.id, "state": "rejected", "reason": why}
        self.ledger.charge_submit(g, capsule.id, cost, time.time())  # no await since the check
        self.state.save()
        k = await self.capsules.submit(capsule, chain=proof.chain, grant=g.to_bytes())
        if k.state == "rejected":
            self.ledger.refund(capsule.id)
            self.state.save()
        log.info("federation_capsule", capsule=capsule.id, state=k.state, grant=g.serial[:12],
                 reserved_cpu_s=cost, reason=k.reason)  # fmt: skip
        return {"accepted": k.state != "rejected", "id": capsule.id, "state": k.state,
                "reason": k.reason}  # fmt: skip

    async def _settle(self, g: Grant) -> None:
        """Replace reservations of finished capsules by what they used (receipts)."""
        for cid in self.ledger.unsettled(g.serial)[:MAX_SETTLE]:
            rec = await self.capsules.find_record(cid)
            if rec is None or not rec.terminal:
                continue
            r = rec.receipt
            used = 0.0 if r is None else cpu_cost(rec.capsule.spec.conditions.cpu,
                                                  r.finished - r.started)  # fmt: skip
            self.ledger.settle(cid, used)
        self.state.save()

    async def _on_status(self, peer: PeerId, obj: dict[Any, Any]) -> object:
        try:
            proof = Proof.from_wire(obj.get("proof"))
            cid = check_capsule_id(obj.get("id"))
        except (RemoteProtocolError, ColonyError) as e:
            raise RemoteProtocolError(f"bad status request: {e}") from None
        g = await self._verify(proof, peer, _some_role(proof.grant))
        rec = await self.capsules.find_record(cid)
        if rec is None:
            return {"record": None}
        if rec.capsule.submitter != peer and self.state.capsule_colony(cid) != g.grantee:
            raise RemoteProtocolError(f"capsule {cid} was not submitted by colony "
                                      f"{colony_id(g.grantee)} through this node")  # fmt: skip
        return {"record": rec.to_wire()}

    async def _on_usage(self, peer: PeerId, obj: dict[Any, Any]) -> object:
        if self.membership.is_member(peer):
            serials = obj.get("serials")
            if not isinstance(serials, list):
                raise RemoteProtocolError("usage needs serials")
            now = time.time()
            return {"usage": {str(s): self.ledger.usage(str(s), now).as_json()
                              for s in serials[:256] if isinstance(s, str)}}  # fmt: skip
        try:
            proof = Proof.from_wire(obj.get("proof"))
        except RemoteProtocolError as e:
            raise RemoteProtocolError(f"bad usage request: {e}") from None
        g = await self._verify(proof, peer, _some_role(proof.grant))
        return {"usage": {g.serial: (await self.usage([g.serial]))[g.serial]}}

    async def usage(self, serials: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Today's usage of grants `serials`, summed over what each live member (this
        node included) counted: the quota holder counts capsules and CPU-seconds, each
        serving node the bytes it served."""
        now = time.time()
        total = {s: self.ledger.usage(s, now).as_json() for s in serials}
        peers = [m.peer for m in self.membership.list_members() if m.peer != self.me]

        async def ask(p: PeerId) -> None:
            try:
                reply = await self.network.request(p, PROTO_FEDERATION,
                                                   {"op": "usage", "serials": list(serials)},
                                                   timeout=2.0)  # fmt: skip
            except ColonyError:
                return
            got = reply.get("usage") if isinstance(reply, dict) else None
            for s, u in (got or {}).items():
                if s in total and isinstance(u, dict):
                    for k in ("capsules", "cpu_s", "bytes"):
                        v = u.get(k)
                        if isinstance(v, (int, float)) and not isinstance(v, bool):
                            total[s][k] += v

        if serials:
            async with trio.open_nursery() as n:
                for p in peers[:MAX_USAGE_PEERS]:
                    n.start_soon(ask, p)
        return total

    # ------------------------------------------------------------ status and publishing

    async def publish(self, grant_hex: str) -> JsonObject:
        """Keep a grant of this colony and put it in the DHT under /colony/grant/<A>/<B>."""
        try:
            g = parse_grant(bytes.fromhex(grant_hex))
            verify_grant(g, self.trust.require_colony(), time.time(), self.trust.revocations)
        except (ValueError, RemoteProtocolError) as e:
            raise ConfigError(f"bad grant: {e}") from None
        self.grants.add_given(g)
        key = grant_key(g.colony, g.grantee)
        ev = await self.dht.call(lambda rid: PutValue(rid, key, g.to_bytes()))
        return {"serial": g.serial, "dht_key": key.decode(), "dht_acks": result_as(ev, Stored).acks,
                "dht_error": ev.error}  # fmt: skip

    async def status(self) -> JsonObject:
        """Grants given (with today's usage summed over the colony) and held."""
        if not self.trust.enabled:
            return {"enabled": False, "given": [], "held": []}
        now = time.time()
        given = self.grants.given()
        usage = await self.usage([g.serial for g in given])
        return {
            "enabled": True,
            "given": [{**grant_json(g, self.trust, now), "usage": usage.get(g.serial),
                       "quota_holder": str(self.quota_holder(g))} for g in given],
            "held": [{**grant_json(h.grant, self.trust, now), "addrs": list(h.addrs)}
                     for h in self.grants.held()],
            "sessions": self.state.session_count(),
            "revocation_lists": self.revs.stats(),
            "guest_executors": self.guests.stats(),
        }  # fmt: skip


def _some_role(g: Grant) -> str:
    """The role a request that needs *some* grant checks: the least the grant gives
    (read: a member of B; else submit or execute, with B's role of that name)."""
    return READ if g.gives(READ) else g.roles[-1]


__all__ = ["PROTO_FEDERATION", "FederationService"]
