"""The daemon's colony-trust glue: logs refusals, persists revocations, gates Bitswap,
and serves the trust API (`/v1/trust`, `/v1/trust/revoke`).

Blocks: peers outside the colony get blocks only with `[trust] serve_public = true`,
and never blocks of DAGs marked private (`colony colony private CID`): their wants
for those are removed before the exchange core sees them, so they simply get no
answer (as from a node without the block).

The rules live in the cores (gossip/admission.py, overlay/core/certs.py); the state
lives in `Trust` (overlay/runtime/services/trust_state.py). This module only connects them to the
running daemon, so the daemon itself needs a few one-line hooks.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

import structlog

from dht.api import GetValue, PutValue
from dht.records import revoke_key
from gossip.events import (
    MemberExpelled,
    MemberRefused,
    OwnCertificateRevoked,
    PublishRevocation,
    RevocationLearned,
)
from overlay.core.certs import Revocation
from overlay.core.crypto import Envelope
from overlay.core.errors import ColonyError, LocalProtocolError, RemoteProtocolError
from overlay.core.ids import PeerId
from overlay.exchange.messages import BitswapMessage
from overlay.runtime.api.server import ApiError, ApiServer, Request
from overlay.runtime.services.trust_state import Trust, colony_id, private_multihashes, serial
from store.cid import Cid

if TYPE_CHECKING:
    from overlay.runtime.daemon import Daemon

log = structlog.get_logger("colony.trust")

#: Bitswap refusals logged per peer at most this often.
BITSWAP_REFUSAL_LOG_S = 60.0


def cert_json(c: Any, now: float, trust: Trust | None = None) -> dict[str, Any]:
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


def strip_private_wants(msg: BitswapMessage, private: set[bytes]) -> BitswapMessage:
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
    def __init__(self, d: Daemon) -> None:
        self.d = d
        self.trust: Trust = d.trust
        self._bitswap_logged: dict[tuple[PeerId, str], float] = {}
        self.private: set[bytes] = set()
        if self.trust.enabled:
            self.refresh_private()
        if self.trust.enabled:
            log.info(
                "colony_mode", colony=str(colony_id(self.trust.require_colony())),
                name=self.trust.name, roles=list(self.trust.own_chain[-1].roles)
                if self.trust.own_chain else [], serve_public=self.trust.serve_public,
            )  # fmt: skip
            reason = self.trust.check(d.me, "member", time.time())
            if reason is not None:  # members will refuse us: say so where it is seen
                log.warning("own_certificate_invalid", reason=reason,
                            hint=f"ask an admin for a new token: colony cert issue {d.me}")

    # ------------------------------------------------------------ events

    def on_event(self, ev: Any) -> None:
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
        self.private = private_multihashes(self.d.store, self.trust.private_roots())

    def filter_bitswap(self, peer: PeerId, msg: BitswapMessage) -> BitswapMessage | None:
        """Colony mode: members get everything. Others get nothing when
        `serve_public = false`, and never blocks of DAGs marked private."""
        t = self.trust
        if not t.enabled:
            return msg
        reason = t.check(peer, "member", time.time())
        if reason is None:
            return msg
        if not t.serve_public:
            self._log_refusal(peer, "bitswap_refused", reason)
            return None
        kept = strip_private_wants(msg, self.private)
        if len(kept.wants) != len(msg.wants):
            self._log_refusal(peer, "bitswap_private_refused", reason)
        return kept

    def _log_refusal(self, peer: PeerId, event: str, reason: str) -> None:
        now = time.monotonic()
        key = (peer, event)
        if now - self._bitswap_logged.get(key, -1e9) >= BITSWAP_REFUSAL_LOG_S:
            if len(self._bitswap_logged) >= 1024:
                self._bitswap_logged.clear()
            self._bitswap_logged[key] = now
            log.warning(event, peer=str(peer), reason=reason)

    # ------------------------------------------------------------ API

    def add_routes(self, api: ApiServer) -> None:
        api.add("GET", "/v1/trust", self._status)
        api.add("POST", "/v1/trust/revoke", self._revoke)
        api.add("POST", "/v1/trust/lookup", self._lookup)
        api.add("POST", "/v1/trust/private", self._private)

    async def _private(self, req: Request) -> Any:
        """Mark (`private: true`) or unmark the DAG under `cid` as members-only."""
        body = req.json()
        text = str(body.get("cid", ""))
        try:
            cid = str(Cid.parse(text))
            roots = self.trust.set_private(cid, bool(body.get("private", True)))
        except ColonyError as e:
            raise ApiError(400, str(e)) from None
        self.refresh_private()
        return {"cid": cid, "private": cid in roots, "roots": roots,
                "private_blocks": len(self.private)}

    async def _status(self, req: Request) -> Any:
        t, now = self.trust, time.time()
        if not t.enabled:
            return {"enabled": False}
        members = []
        for m in self.d.swim.list_members():
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

    async def _revoke(self, req: Request) -> Any:
        """Apply a signed revocation (made by `colony cert revoke`): gossip it to the
        colony and store it in the DHT under /colony/revoke/<cert id>."""
        try:
            env = Envelope.from_bytes(bytes.fromhex(str(req.json().get("revocation", ""))))
            rev = Revocation.from_envelope(env)
        except (ValueError, ColonyError, RemoteProtocolError) as e:
            raise ApiError(400, f"bad revocation: {e}") from None
        if rev.colony != self.trust.colony_owner:
            raise ApiError(400, "the revocation is for another colony (or none: open mode)")
        try:
            # The gossip core applies it (expelling the member), gossips it, and emits
            # RevocationLearned, which saves it in <home>/trust (see on_event).
            await self.d.driver.submit_wait(PublishRevocation(env))
        except LocalProtocolError as e:
            raise ApiError(400, str(e)) from None
        key = revoke_key(rev.cert_id)
        ev = await self.d.dht(lambda rid: PutValue(rid, key, env.to_bytes()))
        return {"cert": rev.cert_id[2:].hex(), "gossiped": True,
                "dht_key": key.decode(), "dht_acks": ev.result.acks, "dht_error": ev.error}

    async def _lookup(self, req: Request) -> Any:
        """Is certificate `cert` (hex id) revoked according to the DHT?"""
        try:
            cert_id = bytes.fromhex("1220" + str(req.json().get("cert", ""))[-64:])
        except ValueError:
            raise ApiError(400, "cert must be a certificate serial (hex)") from None
        ev = await self.d.dht(lambda rid: GetValue(rid, revoke_key(cert_id)))
        r = ev.result
        if not r.payload:
            return {"cert": cert_id[2:].hex(), "revoked": False, "error": ev.error}
        rev = Revocation.from_envelope(Envelope.from_bytes(r.payload))
        return {"cert": cert_id[2:].hex(), "revoked": True, "revoker": str(rev.envelope.signer_id),
                "issued": rev.issued}
