"""The daemon's colony-trust glue: logs refusals, persists revocations, gates Bitswap,
and serves the trust API (`/v1/trust`, `/v1/trust/revoke`).

Blocks: peers outside the colony get blocks only with `[trust] serve_public = true`,
and never blocks of DAGs marked private (`colony colony private CID`): their wants
for those are removed before the exchange core sees them, so they simply get no
answer (as from a node without the block).

The rules live in the cores (gossip/admission.py, overlay/core/certs.py); the state
lives in `Trust` (overlay/runtime/services/trust_state.py). This module only connects them to the
running node through the narrow interfaces of overlay/runtime/context.py (membership
to list, cores to submit a revocation to, DHT calls to store and look one up).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Collection, Sequence

import structlog
import trio

from dht.api import GetValue, PutValue, Stored, Value, result_as
from dht.records import revoke_key
from gossip.events import (
    MemberExpelled,
    MemberRefused,
    OwnCertificateRevoked,
    PublishRevocation,
    RevocationLearned,
)
from overlay.core.certs import Certificate, Revocation
from overlay.core.cid import Cid
from overlay.core.crypto import Envelope, KeyPair
from overlay.core.errors import ColonyError, RemoteProtocolError
from overlay.core.ids import PeerId
from overlay.core.private_mark import PrivateMark, check_mark
from overlay.exchange.messages import BitswapMessage
from overlay.runtime.context import Cores, DhtCalls, Membership, Network
from overlay.runtime.jsontypes import JsonObject
from overlay.runtime.net.transport import Codec
from overlay.runtime.services.trust_state import Trust, colony_id, private_multihashes, serial
from store.blockstore import BlockStore

log = structlog.get_logger("colony.trust")

#: Bitswap refusals logged per peer at most this often.
BITSWAP_REFUSAL_LOG_S = 60.0
#: Members ask a DAG's providers for its private mark on this protocol (CBOR):
#: {"cid": CID bytes} → {"mark": envelope bytes | None}.
PROTO_PRIVATE_MARK = "/colony/private-mark/1.0.0"
#: How long a fetch waits for its providers' marks before it starts.
MARK_TIMEOUT_S = 3.0


def cert_json(c: Certificate, now: float, trust: Trust | None = None) -> JsonObject:
    status = "valid"
    if now >= c.expires:
        status = "expired"
    elif trust is not None and trust.revocations is not None and trust.revocations.revokers(
        c.cert_id
    ):
        status = "revoked"
    return {
        "serial": serial(c), "subject": str(c.subject), "issuer": str(c.issuer),
        "roles": list(c.roles), "issued": c.issued, "expires": c.expires, "status": status,
    }  # fmt: skip


def _wanted(msg: BitswapMessage) -> list[Cid]:
    out = []
    for w in msg.wants:
        if not w.cancel:
            try:
                out.append(Cid.from_bytes(w.cid))
            except ColonyError:
                continue
    return out


def strip_private_wants(msg: BitswapMessage, private: Collection[bytes]) -> BitswapMessage:
    """`msg` without the wants (not cancels) for blocks in `private` (multihashes).
    A want we cannot parse is left for the exchange core to judge."""
    if not private or not msg.wants:
        return msg
    kept = []
    for w in msg.wants:
        if not w.cancel:
            try:
                if Cid.from_bytes(w.cid).multihash in private:
                    continue
            except ColonyError:
                pass
        kept.append(w)
    return dataclasses.replace(msg, wants=tuple(kept))


class TrustService:
    def __init__(
        self,
        trust: Trust,
        *,
        me: PeerId,
        store: BlockStore,
        membership: Membership,
        cores: Cores,
        dht: DhtCalls,
        keypair: KeyPair | None = None,
        network: Network | None = None,
    ) -> None:
        self.trust = trust
        self.me = me
        self.store = store
        self.membership = membership
        self.cores = cores
        self.dht = dht
        self.keypair = keypair
        self.network = network
        self._bitswap_logged: dict[tuple[PeerId, str], float] = {}
        #: Multihash of every stored block of a private DAG → the private root (text)
        #: whose walk reached it.
        self.private: dict[bytes, str] = {}
        #: Private root (text) → its mark (envelope bytes), from trust/private.json.
        self.marks: dict[str, bytes] = {}
        #: Private roots being fetched now (their block sets grow as blocks arrive).
        self.growing: dict[str, int] = {}
        if self.trust.enabled:
            self._sign_unmarked()
            self.refresh_private()
        if self.trust.enabled:
            log.info(
                "colony_mode", colony=str(colony_id(self.trust.require_colony())),
                name=self.trust.name, roles=list(self.trust.own_chain[-1].roles)
                if self.trust.own_chain else [], serve_public=self.trust.serve_public,
            )  # fmt: skip
            reason = self.trust.check(me, "member", time.time())
            if reason is not None:  # members will refuse us: say so where it is seen
                log.warning("own_certificate_invalid", reason=reason,
                            hint=f"ask an admin for a new token: colony cert issue {me}")

    # ------------------------------------------------------------ events

    def on_event(self, ev: object) -> None:
        if isinstance(ev, MemberRefused):
            # "not a member" alone (no claim seen) is usually a member we have not
            # heard of yet, pinging us a moment early during a join: info, not warning.
            # Refused *claims* (no/expired/revoked/foreign certificate) are warnings.
            level = log.info if ev.reason.endswith("is not a member of this colony") \
                else log.warning
            level("gossip_refused", peer=str(ev.peer), reason=ev.reason)
            self.trust.note_refusal(time.time(), ev.peer, ev.reason, expelled=False)
        elif isinstance(ev, MemberExpelled):
            log.warning("member_expelled", peer=str(ev.peer), reason=ev.reason)
            self.trust.note_refusal(time.time(), ev.peer, ev.reason, expelled=True)
        elif isinstance(ev, RevocationLearned):
            try:
                self.trust.add_revocation(ev.envelope, time.time())
            except (ColonyError, RemoteProtocolError) as e:
                log.warning("revocation_not_saved", error=str(e))
            log.info("revocation_learned", cert=ev.cert_id[2:].hex(), revoker=str(ev.revoker))
        elif isinstance(ev, OwnCertificateRevoked):
            log.error("own_certificate_revoked", cert=ev.cert_id[2:].hex(),
                      revoker=str(ev.revoker),
                      hint="members refuse this node; ask an admin for a new certificate")

    # ------------------------------------------------------------ bitswap

    def refresh_private(self) -> None:
        index: dict[bytes, str] = {}
        for root in self.trust.private_roots():
            for mh in private_multihashes(self.store, [root]):
                index.setdefault(mh, root)
        self.private = index
        self.marks = self.trust.private_marks()

    def may_stream(self, peer: PeerId) -> bool:
        """Whether `peer` may fetch DAGs by bulk stream (services/dag_stream.py): anyone
        in open mode, members in a colony. Outsiders use Bitswap, whose filter keeps
        private DAGs private."""
        t = self.trust
        return not t.enabled or t.check(peer, "member", time.time()) is None

    def filter_bitswap(self, peer: PeerId, msg: BitswapMessage) -> BitswapMessage | None:
        """Colony mode: members get everything. Others get nothing when
        `serve_public = false`, and never blocks of private DAGs — marked here or
        fetched under a mark (while one is being fetched, also no block that was
        not stored before the set was recomputed: it cannot be classified yet)."""
        t = self.trust
        if not t.enabled:
            return msg
        reason = t.check(peer, "member", time.time())
        if reason is None:
            return msg
        if not t.serve_public:
            self.log_refusal(peer, "bitswap_refused", reason)
            return None
        private: Collection[bytes] = self.private
        if self.growing and msg.wants:
            # Stored-ness first, then the walk: every block stored at the first look is
            # seen by the walk, so none slips between the two.
            absent = {c.multihash for c in _wanted(msg) if not self.store.has(c)}
            self.refresh_private()
            private = self.private.keys() | absent
        kept = strip_private_wants(msg, private)
        if len(kept.wants) != len(msg.wants):
            self.log_refusal(peer, "bitswap_private_refused", reason)
        return kept

    # ------------------------------------------------------------ private marks

    def register(self) -> None:
        """Answer members' questions for the marks of DAGs this node holds."""
        if self.network is not None:
            self.network.set_handler(PROTO_PRIVATE_MARK, on_request=self.on_mark_request,
                                     codec=Codec.CBOR)  # fmt: skip

    def mark_for(self, cid: Cid) -> bytes | None:
        """The mark covering stored block `cid`, if it is in a private DAG here."""
        root = self.private.get(cid.multihash)
        return None if root is None else self.marks.get(root)

    async def on_mark_request(self, peer: PeerId, obj: object) -> object:
        if not self.trust.enabled:
            raise RemoteProtocolError("this node is in open mode: no private data")
        reason = self.trust.check(peer, "member", time.time())
        if reason is not None:
            raise RemoteProtocolError(reason)
        raw = obj.get("cid") if isinstance(obj, dict) else None
        if not isinstance(raw, bytes):
            raise RemoteProtocolError("bad private-mark request: no cid bytes")
        try:
            cid = Cid.from_bytes(raw)
        except ColonyError as e:
            raise RemoteProtocolError(f"bad private-mark request: {e}") from None
        return {"mark": self.mark_for(cid)}

    async def before_fetch(self, root: Cid, providers: Sequence[PeerId]) -> None:
        """Colony mode: learn the mark of `root`'s DAG from its member providers (before
        any block arrives) and keep it. A private DAG (marked, or inside one held
        here) is growing until `after_fetch`: see `filter_bitswap`."""
        if not self.trust.enabled:
            return
        text = str(root)
        if root.multihash in self.private:  # inside a private DAG held here already
            self.growing[text] = self.growing.get(text, 0) + 1
            return
        if self.network is None:
            return
        now, owner = time.time(), self.trust.require_colony()
        network = self.network
        found: list[PrivateMark] = []

        async def ask(peer: PeerId) -> None:
            try:
                reply = await network.request(peer, PROTO_PRIVATE_MARK,
                                              {"cid": root.to_bytes()}, timeout=MARK_TIMEOUT_S)
                if isinstance(reply, dict) and reply.get("mark") is not None:
                    found.append(check_mark(reply["mark"], owner, now))
            except ColonyError as e:
                log.info("private_mark_not_learned", peer=str(peer), cid=text, error=str(e))

        async with trio.open_nursery() as n:
            for p in providers:
                if p != self.me and self.trust.check(p, "member", now) is None:
                    n.start_soon(ask, p)
        if found:
            mark = found[0]
            self.growing[text] = self.growing.get(text, 0) + 1
            self.trust.set_private(text, True, mark.to_bytes())
            self.refresh_private()
            log.info("private_mark_learned", cid=text, root=str(mark.root),
                     marker=str(mark.marker))  # fmt: skip

    def after_fetch(self, root: Cid) -> None:
        text = str(root)
        if text not in self.growing:
            return  # not a private DAG: nothing to reclassify
        left = self.growing[text] - 1
        if left > 0:
            self.growing[text] = left
        else:
            del self.growing[text]
        self.refresh_private()

    def mark_outputs(self, cids: Sequence[str]) -> None:
        """Colony mode: a capsule's outputs and log are members-only (docs/trust.md)."""
        if not self.trust.enabled:
            return
        for text in cids:
            try:
                self._mark(Cid.parse(text))
            except ColonyError as e:
                log.warning("capsule_output_not_private", cid=text, error=str(e))
        self.refresh_private()

    def _mark(self, cid: Cid) -> None:
        if self.keypair is None:
            raise ColonyError("this node cannot sign private marks")
        reason = self.trust.check(self.me, "member", time.time())
        if reason is not None:
            raise ColonyError(f"only a member may mark data private: {reason}")
        mark = PrivateMark.issue(self.keypair, self.trust.require_colony(), cid,
                                 self.trust.own_chain, time.time())  # fmt: skip
        self.trust.set_private(str(cid), True, mark.to_bytes())

    def _sign_unmarked(self) -> None:
        """Roots marked with the daemon stopped (the CLI has no key at hand) are signed
        at start: this node marked them."""
        marks = self.trust.private_marks()
        for root in self.trust.private_roots():
            if root not in marks:
                try:
                    self._mark(Cid.parse(root))
                except ColonyError as e:
                    log.warning("private_mark_not_signed", cid=root, error=str(e))

    def may_unmark(self, cid: str) -> str | None:
        """None if this node may make `cid` public again, else why not."""
        return self.trust.may_unmark(cid, self.me, time.time())

    def log_refusal(self, peer: PeerId, event: str, reason: str) -> None:
        now = time.monotonic()
        key = (peer, event)
        if now - self._bitswap_logged.get(key, -1e9) >= BITSWAP_REFUSAL_LOG_S:
            if len(self._bitswap_logged) >= 1024:
                self._bitswap_logged.clear()
            self._bitswap_logged[key] = now
            log.warning(event, peer=str(peer), reason=reason)

    # ------------------------------------------------------------ actions (api/routes_trust.py)

    def set_private(self, text: str, private: bool) -> JsonObject:
        """Mark (or unmark) the DAG under `text` as members-only; ColonyError if bad."""
        cid = str(Cid.parse(text))
        if private:
            self._mark(Cid.parse(cid))
        else:
            why = self.may_unmark(cid)
            if why is not None:
                raise ColonyError(why)
            self.trust.set_private(cid, False)
        self.refresh_private()
        roots = self.trust.private_roots()
        return {"cid": cid, "private": cid in roots, "roots": roots,
                "private_blocks": len(self.private)}

    def status(self) -> JsonObject:
        t, now = self.trust, time.time()
        if not t.enabled:
            return {"enabled": False}
        members: list[JsonObject] = []
        for m in self.membership.list_members():
            reason = t.check(m.peer, "member", now)
            chain = t.chain_of(m.peer)
            members.append({
                "id": str(m.peer), "self": m.is_self, "state": m.state.name.lower(),
                "roles": list(chain[-1].roles) if chain else [],
                "expires": min(c.expires for c in chain) if chain else None,
                "problem": reason,
            })  # fmt: skip
        current = {m["id"] for m in members}
        return {
            "enabled": True, "colony": str(colony_id(t.require_colony())), "name": t.name,
            "owner_key_here": t.owner_key is not None, "serve_public": t.serve_public,
            "chain": [cert_json(c, now, t) for c in t.own_chain],
            "revocations": len(t.revocations or ()), "members": members,
            "private_roots": t.private_roots(), "private_blocks": len(self.private),
            # A refusal of a peer that is a member now was the join race: not shown.
            "refused": [
                {"time": r.time, "peer": r.peer, "reason": r.reason, "expelled": r.expelled}
                for r in t.refusals if r.expelled or r.peer not in current
            ],
        }  # fmt: skip

    async def revoke(self, hex_envelope: str) -> JsonObject:
        """Apply a signed revocation (made by `colony cert revoke`): gossip it to the
        colony and store it in the DHT under /colony/revoke/<cert id>.

        Raises ColonyError (or ValueError for bad hex) when it cannot be applied."""
        try:
            env = Envelope.from_bytes(bytes.fromhex(hex_envelope))
            rev = Revocation.from_envelope(env)
        except (ValueError, ColonyError, RemoteProtocolError) as e:
            raise ColonyError(f"bad revocation: {e}") from None
        if rev.colony != self.trust.colony_owner:
            raise ColonyError("the revocation is for another colony (or none: open mode)")
        # The gossip core applies it (expelling the member), gossips it, and emits
        # RevocationLearned, which saves it in <home>/trust (see on_event).
        await self.cores.submit_wait(PublishRevocation(env))
        key = revoke_key(rev.cert_id)
        ev = await self.dht.call(lambda rid: PutValue(rid, key, env.to_bytes()))
        return {"cert": rev.cert_id[2:].hex(), "gossiped": True,
                "dht_key": key.decode(), "dht_acks": result_as(ev, Stored).acks,
                "dht_error": ev.error}

    async def lookup(self, cert_hex: str) -> JsonObject:
        """Is certificate `cert_hex` revoked according to the DHT? ValueError if not hex."""
        cert_id = bytes.fromhex("1220" + cert_hex[-64:])
        ev = await self.dht.call(lambda rid: GetValue(rid, revoke_key(cert_id)))
        r = result_as(ev, Value)
        if not r.payload:
            return {"cert": cert_id[2:].hex(), "revoked": False, "error": ev.error}
        rev = Revocation.from_envelope(Envelope.from_bytes(r.payload))
        return {"cert": cert_id[2:].hex(), "revoked": True, "revoker": str(rev.envelope.signer_id),
                "issued": rev.issued}
