"""Federation at the grantee's end: colony B's node proving itself to colony A and
using A's grants (docs/federation.md; A's end is services/federation.py).

- `before_fetch` / `after_fetch` (the block service's fetch hooks, wrapping the trust
  service's): before the first want goes to providers outside this colony, prove this
  node to them on `/colony/federation/1.0.0` (its chain, every grant it holds, the
  label naming the root if it was resolved through one), at most once per `REPROVE_S`
  per provider; a DAG fetched after such a proof was accepted is marked private here.
- `read_label`: a label of A under a held grant's prefix → its current root (DHT).
- `submit_to` / `record_in`: a capsule signed by this node, run in A through a held
  grant giving `submit`, and its custody record there — sent to the addresses the
  grant token carried (the first that answers).
- `offer_loop` / `host_ok`: with a held grant giving `execute` (and B's `execute`
  role), offer this node as a guest executor to every address of the grant's token,
  every `OFFER_EVERY_S` (federation_guests.py); the nodes that accepted may send this
  node's executor its leases (`LeaseOffer`, `LeaseRevoked`, `ReceiptReply`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import structlog
import trio

from dht.api import GetValue, Value, result_as
from dht.labels import label_key, parse_label_record
from overlay.capsule.events import RunRequested
from overlay.capsule.leases import CustodyRecord
from overlay.capsule.messages import LeaseOffer, LeaseRevoked, ReceiptReply
from overlay.capsule.placement import NodeAd
from overlay.capsule.spec import Capsule, CapsuleSpec
from overlay.core.certs import chain_to_wire
from overlay.core.cid import Cid
from overlay.core.crypto import KeyPair
from overlay.core.errors import ColonyError, ConfigError, RemoteProtocolError
from overlay.core.grants import EXECUTE, READ, SUBMIT, Grant, Proof
from overlay.core.ids import PeerId
from overlay.runtime.context import DhtCalls, Network
from overlay.runtime.jsontypes import JsonObject
from overlay.runtime.services.federation_guests import GUEST_TTL_S, OFFER_EVERY_S
from overlay.runtime.services.federation_state import held_for
from overlay.runtime.services.grant_store import GrantStore, Held
from overlay.runtime.services.trust import TrustService
from overlay.runtime.services.trust_state import colony_id, parse_colony_id

log = structlog.get_logger("colony.federation")

PROTO_FEDERATION = "/colony/federation/1.0.0"
REQUEST_TIMEOUT_S = 5.0
#: This node proves itself to a provider of another colony again after this long (the
#: provider may have restarted and forgotten the session).
REPROVE_S = 30.0
#: Providers proved to at once before one fetch; peers and label roots remembered.
MAX_PROVE = 8
MAX_REMEMBERED = 1024
#: After a refused executor offer, the next to that address waits this long.
OFFER_REFUSED_BACKOFF_S = 60.0


class Grantee:
    """This node as a member of a grantee colony."""

    def __init__(self, trust_service: TrustService, *, keypair: KeyPair, network: Network,
                 dht: DhtCalls) -> None:  # fmt: skip
        self.ts = trust_service
        self.trust = trust_service.trust
        self.grants = GrantStore(self.trust)
        self.me = keypair.peer_id
        self.keypair = keypair
        self.network = network
        self.dht = dht
        #: peer → when this node last proved itself to it (accepted).
        self._proved: dict[PeerId, float] = {}
        #: roots fetched with an accepted proof (marked private here after).
        self._granted_fetch: dict[str, None] = {}
        #: a label root (text) → the granting colony's label naming it.
        self._label_of: dict[str, str] = {}
        #: node of another colony → when it last accepted this node as a guest executor.
        self._hosts: dict[PeerId, float] = {}
        #: an input root (text) of another colony's capsule leased here → the capsule.
        self._capsule_of: dict[str, str] = {}
        #: address → until when not to offer there again (it refused the last offer).
        self._refused_until: dict[str, float] = {}

    # ------------------------------------------------------------ B: proving, fetching

    def proved_to(self, peer: PeerId) -> bool:
        """Whether a node of another colony accepted this node's proof (recently)."""
        return peer in self._proved

    def _proof_wire(self, g: Grant) -> dict[str, Any]:
        return Proof(self.trust.own_chain, g).to_wire()

    async def before_fetch(self, root: Cid, providers: Sequence[PeerId]) -> None:
        """The fetch hook (wrapping the trust service's): prove this node to providers
        outside its colony before the first want goes out."""
        await self.ts.before_fetch(root, providers)
        if not self.trust.enabled or not self.trust.own_chain:
            return
        now = time.time()
        strangers = [p for p in providers if p != self.me
                     and self.trust.check(p, "member", now) is not None]  # fmt: skip
        if not strangers:
            return
        # Every held grant, expired ones too: the granting colony judges (and says why
        # it refuses); none held: it looks the grant up in the DHT.
        grants = [h.grant.to_bytes() for h in self.grants.held()]
        label = self._label_of.get(str(root))
        capsule = self._capsule_of.get(str(root))
        accepted: list[bool] = []

        async def prove(p: PeerId) -> None:
            if label is None and capsule is None and now - self._proved.get(p, -1e18) < REPROVE_S:
                accepted.append(True)
                return
            try:
                reply = await self.network.request(
                    p, PROTO_FEDERATION, {"op": "prove", "grants": grants,
                                          "labels": [label] if label else [],
                                          "chain": chain_to_wire(self.trust.own_chain),
                                          **({"capsule": capsule} if capsule else {})},
                    timeout=REQUEST_TIMEOUT_S)  # fmt: skip
            except ColonyError as e:
                log.info("federation_prove_failed", peer=str(p), error=str(e))
                return
            ok = isinstance(reply, dict) and bool(reply.get("accepted"))
            if ok:
                if len(self._proved) >= MAX_REMEMBERED:
                    del self._proved[next(iter(self._proved))]
                self._proved[p] = now
                accepted.append(True)
            log.info("federation_proved", peer=str(p), accepted=ok,
                     refused=reply.get("refused") if isinstance(reply, dict) else None)

        async with trio.open_nursery() as n:
            for p in strangers[:MAX_PROVE]:
                n.start_soon(prove, p)
        if accepted:
            self._granted_fetch[str(root)] = None

    def after_fetch(self, root: Cid) -> None:
        self.ts.after_fetch(root)
        if self._granted_fetch.pop(str(root), 1) is None and root.multihash not in self.ts.private:
            try:  # read through a grant: members-only here too
                self.ts.set_private(str(root), True)
            except ColonyError as e:
                log.warning("federation_copy_not_private", cid=str(root), error=str(e))

    async def read_label(self, colony: str, label: str) -> JsonObject:
        """The current root of label `label` of colony `colony`, if a held grant's
        prefix covers it; later fetches of that root name the label to A's providers."""
        owner = parse_colony_id(colony)
        held = held_for(self.grants, owner, READ, time.time())
        if not held.grant.covers_label(label):
            raise ConfigError(f"label {label!r} is not under the prefix "
                              f"{held.grant.prefix!r} of grant {held.grant.serial[:12]}")
        key = label_key(colony_id(owner), label)
        ev = await self.dht.call(partial(GetValue, key=key), timeout_s=30)
        payload = result_as(ev, Value).value
        if not payload:
            raise ColonyError(f"label {label!r} of colony {colony} not found in the DHT")
        try:
            rec = parse_label_record(key, payload, time.time())
        except RemoteProtocolError as e:
            raise ColonyError(f"label {label!r} of colony {colony}: {e}") from None
        if len(self._label_of) >= MAX_REMEMBERED:
            del self._label_of[next(iter(self._label_of))]
        self._label_of[rec.value] = label
        return {"colony": colony, "label": label, "cid": rec.value, "seq": rec.seq}

    # ------------------------------------------------------------ B: guest executor

    def on_event(self, e: object) -> None:
        """A lease of another colony's capsule here: its inputs are fetched with a
        proof naming the capsule (the granting colony's providers then serve them)."""
        if isinstance(e, RunRequested) and self.trust.enabled and self._hosts and \
                self.trust.check(e.capsule.submitter, "member", time.time()) is not None:
            for cid in e.input_cids:
                if len(self._capsule_of) >= MAX_REMEMBERED:
                    del self._capsule_of[next(iter(self._capsule_of))]
                self._capsule_of[cid] = e.capsule.id

    def is_host(self, peer: PeerId) -> bool:
        """Whether `peer` took this node as a guest executor (recently)."""
        seen = self._hosts.get(peer)
        return seen is not None and time.monotonic() - seen < GUEST_TTL_S

    def host_ok(self, peer: PeerId, msg: object) -> bool:
        """The capsule service's gate: a node that took this one as a guest executor
        (recently) may send it what custody sends an executor."""
        return self.is_host(peer) and isinstance(msg, (LeaseOffer, LeaseRevoked, ReceiptReply))

    async def offer_loop(self, ad: Callable[[], NodeAd]) -> None:
        """Every `OFFER_EVERY_S`: offer this node as an executor under each held grant
        giving `execute`, to every address of its token."""
        while True:
            await trio.sleep(OFFER_EVERY_S)
            now = time.time()
            if not self.trust.enabled or self.trust.check(self.me, EXECUTE, now) is not None:
                continue
            held = [h for h in self.grants.held()
                    if h.grant.gives(EXECUTE) and h.grant.expires > now]  # fmt: skip
            async with trio.open_nursery() as n:
                for h in held:
                    body = {"op": "offer-executor", "proof": self._proof_wire(h.grant),
                            "ad": ad().to_wire()}  # fmt: skip
                    for addr in (h.addrs or ())[:MAX_PROVE]:
                        if self._refused_until.get(addr, 0.0) <= time.monotonic():
                            n.start_soon(self._offer, addr, body)

    async def _offer(self, addr: str, body: dict[str, Any]) -> None:
        try:
            peer = await self.network.connect(addr)
            reply = await self.network.request(peer, PROTO_FEDERATION, body,
                                               timeout=REQUEST_TIMEOUT_S)  # fmt: skip
        except ColonyError as e:
            log.info("federation_offer_failed", addr=addr, error=str(e))
            return
        ok = isinstance(reply, dict) and bool(reply.get("accepted"))
        if ok:
            if peer not in self._hosts and len(self._hosts) >= MAX_REMEMBERED:
                del self._hosts[next(iter(self._hosts))]
            if peer not in self._hosts:
                log.info("federation_guest_of", peer=str(peer))
            self._hosts[peer] = time.monotonic()
        else:  # (not opted in, over quota, proof refused): ask again in a while
            if addr not in self._refused_until and len(self._refused_until) >= MAX_REMEMBERED:
                del self._refused_until[next(iter(self._refused_until))]
            self._refused_until[addr] = time.monotonic() + OFFER_REFUSED_BACKOFF_S
            log.info("federation_offer_refused", peer=str(peer),
                     reason=reply.get("reason") if isinstance(reply, dict) else None)

    # ------------------------------------------------------------ B: capsules

    async def _ask(self, held: Held, body: dict[str, Any], timeout: float) -> object:
        """Send `body` to the first of the granting colony's nodes that answers."""
        errors = []
        for addr in held.addrs or ():
            try:
                peer = await self.network.connect(addr)
                return await self.network.request(peer, PROTO_FEDERATION, body, timeout=timeout)
            except ColonyError as e:
                errors.append(f"{addr}: {e}")
        raise ColonyError("no node of colony " + str(colony_id(held.grant.colony)) +
                          " answered: " + ("; ".join(errors) or "the grant token held no "
                                           "address; accept it again with one"))

    async def submit_to(self, colony: str, spec: CapsuleSpec, nonce: int) -> JsonObject:
        held = held_for(self.grants, parse_colony_id(colony), SUBMIT, time.time())
        cap = Capsule.sign(self.keypair, spec, time.time(), nonce)
        reply = await self._ask(held, {"op": "submit", "proof": self._proof_wire(held.grant),
                                       "capsule": cap.to_wire()}, 90.0)  # fmt: skip
        if not isinstance(reply, dict):
            raise ColonyError("bad reply to a federated submission")
        if not reply.get("accepted"):
            raise ConfigError(f"colony {colony} refused capsule {cap.id}: {reply.get('reason')}")
        return {"id": cap.id, "state": str(reply.get("state")), "reason": str(reply.get("reason")),
                "colony": colony}  # fmt: skip

    async def record_in(self, colony: str, capsule_id: str) -> CustodyRecord | None:
        owner = parse_colony_id(colony)
        held = held_for(self.grants, owner, None, time.time())
        reply = await self._ask(held, {"op": "status", "id": capsule_id,
                                       "proof": self._proof_wire(held.grant)}, 15.0)  # fmt: skip
        raw = reply.get("record") if isinstance(reply, dict) else None
        return None if raw is None else CustodyRecord.from_wire(raw)


__all__ = ["PROTO_FEDERATION", "Grantee"]
