"""`FederationService` at the granting colony's end, on real homes and a real LMDB store:
the prove request (good, expired and malformed grants), the Bitswap filter (granted DAG
served, others by the outsider rule, the byte quota, a revoked grant ends the
session), a grantee with `serve_public = false` still taking its answers, and B's
revocations reaching A: B's founder publishes B's list, A's re-check ends the session
of the member B revoked and refuses its next proof, a forged list is refused and
counted. The gossip core, driver and membership are real; the DHT is a dict with the
real validators (tests/helpers/dict_dht.py); the capsule service is never reached."""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from helpers.dict_dht import DictDht

from dht.revlists import make_revlist_record, revlist_key
from gossip.swim import Swim
from overlay.capsule.leases import CustodyRecord, State
from overlay.capsule.spec import Capsule, CapsuleSpec
from overlay.cli.main import main as colony_main
from overlay.core.certs import Certificate, Revocation, chain_to_wire
from overlay.core.cid import Cid
from overlay.core.crypto import KeyPair
from overlay.core.grants import Grant, revoke_grant
from overlay.core.ids import PeerId
from overlay.exchange.messages import BitswapMessage, Block, WantEntry
from overlay.runtime.driver import Driver
from overlay.runtime.process.identity import KEY_FILE, load_identity
from overlay.runtime.services.federation import FederationService
from overlay.runtime.services.federation_revocations import FederatedRevocations
from overlay.runtime.services.membership import SwimMembership
from overlay.runtime.services.trust import TrustService
from overlay.runtime.services.trust_state import Trust, colony_id
from store.blockstore import BlockStore
from store.importer import Importer, ImportOptions

NOW = time.time()
RECHECK_S = 30.0  # virtual (MockClock) where it is waited out


def founded(tmp: Path, name: str) -> tuple[Path, Trust]:
    home = tmp / name
    assert colony_main(["--home", str(home), "init"]) == 0
    kp = load_identity(home / KEY_FILE)
    return home, Trust.create_colony(home, name, kp, NOW, 86400)


def service(ha: Path, store: BlockStore, serve_public: bool,
            dht: DictDht | None = None) -> FederationService:  # fmt: skip
    ka = load_identity(ha / KEY_FILE)
    trust = Trust(ha, {"trust": {"serve_public": serve_public}})
    swim = Swim(ka, rng=random.Random(1))
    dht = dht or DictDht()
    ts = TrustService(trust, me=ka.peer_id, store=store, membership=SwimMembership(swim),
                      cores=Driver(swim, send=lambda peer, msg: None), dht=dht)  # fmt: skip
    revs = FederatedRevocations(trust, keypair=ka, dht=dht, recheck_s=RECHECK_S)
    return FederationService(ts, keypair=ka, network=None, membership=SwimMembership(swim),  # type: ignore[arg-type]
                             dht=dht, capsules=None, revocations=revs)  # type: ignore[arg-type]


def prove(svc: FederationService, peer: PeerId, req: Mapping[str, object]) -> dict[str, Any]:
    """`svc`'s answer to a request (`on_request` returns the wire object: a dict)."""
    reply = trio.run(svc.on_request, peer, req)
    assert isinstance(reply, dict), reply
    return reply


def wants(*cids: Any) -> BitswapMessage:
    return BitswapMessage(wants=tuple(WantEntry(c.to_bytes()) for c in cids))


@pytest.mark.parametrize("serve_public", [True, False])
def test_session_serves_the_granted_dag_within_quota_until_revoked(
    tmp_path: Path, serve_public: bool
) -> None:
    ha, ta = founded(tmp_path, "a")
    hb, tb = founded(tmp_path, "b")
    b_node = load_identity(hb / KEY_FILE).peer_id
    with BlockStore(tmp_path / "s") as store:
        imp = Importer(store, ImportOptions(cid_version=1, chunk_size=1024))
        secret = imp.add_bytes(b"s" * 3000)  # a root and 3 leaves
        other = imp.add_bytes(b"o" * 100)
        public = imp.add_bytes(b"p" * 100)
        for c in (secret, other):
            ta.set_private(str(c.cid), True)
        with store.reader() as r:
            leaves = [bytes(x) for x in r.links(secret.cid.multihash) or []]
            size = sum(r.size(Cid.from_bytes(x)) or 0 for x in leaves)
            root_size = r.size(secret.cid) or 0
        owner = ta.owner_key
        assert owner is not None
        g = Grant.issue(owner, ta.require_colony(), tb.require_colony(), ["read"], NOW - 5,
                        NOW + 3600, roots=[secret.cid],
                        quota={"bytes": size + root_size})  # fmt: skip
        expired = Grant.issue(owner, ta.require_colony(), tb.require_colony(), ["read"],
                              NOW - 7200, NOW - 3600, roots=[other.cid])  # fmt: skip
        svc = service(ha, store, serve_public)
        svc.ts.refresh_private()
        req = {"op": "prove", "chain": chain_to_wire(tb.own_chain), "labels": [],
               "grants": [g.to_bytes(), expired.to_bytes(), b"\x00junk"]}
        reply = prove(svc, b_node, req)
        assert reply["accepted"] == [g.serial]
        reasons = "\n".join(reply["refused"])
        assert f"grant {expired.serial[:12]} expired at" in reasons
        assert "grant refused: " in reasons  # malformed: said, the others still judged
        # The granted DAG is served; the other private one never; public ones by the rule.
        out = svc.filter_bitswap(b_node, wants(secret.cid, other.cid, public.cid))
        assert out is not None
        got = {w.cid for w in out.wants}
        assert secret.cid.to_bytes() in got and other.cid.to_bytes() not in got
        assert (public.cid.to_bytes() in got) is serve_public
        # The byte quota: the leaves fit; asking the root again goes over.
        out = svc.filter_bitswap(b_node, BitswapMessage(wants=tuple(WantEntry(x) for x in leaves)))
        assert out is not None and len(out.wants) == 3
        out = svc.filter_bitswap(b_node, wants(secret.cid))
        assert out is not None and not out.wants
        assert svc.ledger.usage(g.serial, time.time()).bytes == size + root_size
        # Revoked: the session ends at the next message.
        svc.trust.add_revocation(revoke_grant(owner, g, time.time()).envelope, time.time())
        out = svc.filter_bitswap(b_node, wants(secret.cid))
        assert out is None or not out.wants
        assert svc.state.session_count() == 0
        # A node of A answering our own granted wants: its blocks are taken even with
        # serve_public = false (its wants still go by the rule).
        answer = BitswapMessage(wants=(WantEntry(public.cid.to_bytes()),),
                                blocks=(Block(public.cid.to_bytes()[:4], b"p" * 100),))  # fmt: skip
        svc.proved_to = lambda peer: peer == b_node
        kept = svc.filter_bitswap(b_node, answer)
        assert kept is not None and kept.blocks == answer.blocks
        assert bool(kept.wants) is serve_public


def test_a_member_b_revoked_loses_its_session_in_a(tmp_path: Path) -> None:
    ha, ta = founded(tmp_path, "a")
    hb, tb = founded(tmp_path, "b")
    b_owner = tb.owner_key
    a_owner = ta.owner_key
    assert b_owner is not None and a_owner is not None
    b1, b2 = KeyPair.from_rng_seed(b"1" * 32), KeyPair.from_rng_seed(b"2" * 32)
    b1_cert, b2_cert = (Certificate.issue(b_owner, b_owner.public.raw, k.peer_id, ("member",),
                                          NOW - 10, NOW + 3600) for k in (b1, b2))  # fmt: skip
    dht = DictDht()
    with BlockStore(tmp_path / "s") as store:
        secret = Importer(store, ImportOptions(cid_version=1)).add_bytes(b"s" * 3000)
        ta.set_private(str(secret.cid), True)
        g = Grant.issue(a_owner, ta.require_colony(), tb.require_colony(), ["read"], NOW - 5,
                        NOW + 3600, roots=[secret.cid])  # fmt: skip
        svc = service(ha, store, True, dht)
        svc.ts.refresh_private()

        def prove(peer: KeyPair, cert: Certificate) -> Any:
            req = {"op": "prove", "chain": chain_to_wire([cert]), "labels": [],
                   "grants": [g.to_bytes()]}
            return trio.run(svc.on_request, peer.peer_id, req)

        assert prove(b1, b1_cert)["accepted"] == [g.serial]
        assert prove(b2, b2_cert)["accepted"] == [g.serial]
        assert dht.gets == 1  # B's list looked up once: the copy is fresh for RECHECK_S
        # B revokes b1; B's founder (it holds B's owner key) publishes B's list.
        kb = load_identity(hb / KEY_FILE)
        pub = FederatedRevocations(Trust(hb), keypair=kb, dht=dht, recheck_s=RECHECK_S)
        pub.trust.add_revocation(Revocation.issue(b_owner, b1_cert, time.time()).envelope,
                                 time.time())  # fmt: skip
        got = trio.run(pub.publish)
        assert got["published"] and got["seq"] == 0 and got["entries"] == 1, got
        assert not trio.run(pub.publish)["published"]  # nothing new: no second record
        # A's re-check (every RECHECK_S) looks the list up and ends b1's session only.

        async def one_recheck() -> None:
            async with trio.open_nursery() as n:
                n.start_soon(svc.run)
                await trio.sleep(RECHECK_S + 0.5)
                n.cancel_scope.cancel()

        trio.run(one_recheck, clock=trio.testing.MockClock(autojump_threshold=0))
        assert set(svc.state.sessions) == {b2.peer_id}
        assert svc.revs.remote.stats()["learned"] == 1
        out = svc.filter_bitswap(b1.peer_id, wants(secret.cid))
        assert out is None or not out.wants
        reply = prove(b1, b1_cert)
        assert reply["accepted"] == [] and "(link 0) was revoked" in reply["refused"][0], reply
        assert prove(b2, b2_cert)["accepted"] == [g.serial]
        # A forged list (b2 signs, without admit in B) served by a bad DHT node: refused,
        # counted, and what A learned before stays.
        b_id = colony_id(tb.require_colony())
        key, forged = make_revlist_record(b2, b_id, [], 2**40, time.time() + 60, chain=[b2_cert])
        assert key == revlist_key(b_id)
        dht.serve_bad[key] = forged
        trio.run(lambda: svc.revs.refresh(tb.require_colony(), force=True))
        assert svc.revs.remote.refused == 1 and svc.revs.remote.seq(tb.require_colony()) == 0
        assert "(link 0) was revoked" in prove(b1, b1_cert)["refused"][0]


def test_a_guest_reads_its_leased_capsules_private_inputs_only_while_the_lease_lives(
    tmp_path: Path,
) -> None:
    """A guest executor (grant giving execute) names the capsule in its proof; custody
    says it holds the live lease: it gets that capsule's inputs, private or not, and
    nothing else; once the lease ends, nothing."""
    ha, ta = founded(tmp_path, "a")
    hb, tb = founded(tmp_path, "b")
    b_node = load_identity(hb / KEY_FILE)
    a_owner = ta.owner_key
    assert a_owner is not None
    with BlockStore(tmp_path / "s") as store:
        imp = Importer(store, ImportOptions(cid_version=1))
        inp, other = imp.add_bytes(b"i" * 3000), imp.add_bytes(b"o" * 300)
        for c in (inp, other):
            ta.set_private(str(c.cid), True)
        g = Grant.issue(a_owner, ta.require_colony(), tb.require_colony(), ["execute"], NOW - 5,
                        NOW + 3600)  # fmt: skip
        svc = service(ha, store, True)
        svc.ts.refresh_private()
        cap = Capsule.sign(a_owner, CapsuleSpec(command=("run",), inputs=(str(inp.cid),)), NOW)
        rec = CustodyRecord(cap, a_owner.peer_id).advance(
            State.LEASED, token=9, executor=b_node.peer_id).advance(State.RUNNING)
        records = {cap.id: rec}

        async def find(cid: str) -> CustodyRecord | None:
            return records.get(cid)

        svc.guests.find_record, svc.guests.record = find, records.get
        req = {"op": "prove", "chain": chain_to_wire(tb.own_chain), "labels": [],
               "grants": [g.to_bytes()], "capsule": cap.id}
        assert prove(svc, b_node.peer_id, req)["accepted"] == [g.serial]
        out = svc.filter_bitswap(b_node.peer_id, wants(inp.cid, other.cid))
        assert out is not None and [w.cid for w in out.wants] == [inp.cid.to_bytes()]
        records[cap.id] = rec.advance(State.SUCCEEDED)  # the lease ended
        out = svc.filter_bitswap(b_node.peer_id, wants(inp.cid))
        assert out is None or not out.wants
        # A proof naming a capsule leased to someone else opens no input rule.
        records[cap.id] = rec.advance(State.RUNNING, executor=a_owner.peer_id)
        assert prove(svc, b_node.peer_id, req)["accepted"] == [g.serial]
        out = svc.filter_bitswap(b_node.peer_id, wants(inp.cid))
        assert out is None or not out.wants
