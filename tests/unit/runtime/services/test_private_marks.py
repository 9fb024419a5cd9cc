"""Private marks (overlay/core/private_mark.py) and how TrustService carries them with
a DAG (overlay/runtime/services/trust.py), on real homes and LMDB stores: a mark is
signed by a member, checked against the colony chain, learned by a fetching member
from its provider, and binds the copy (outsiders' wants refused) whatever the
holder's own marks."""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
import trio

from gossip.swim import Swim
from overlay.core.certs import Certificate, JoinToken, NotAuthorized
from overlay.core.cid import Cid
from overlay.core.crypto import KeyPair
from overlay.core.errors import ColonyError, RemoteProtocolError, WireError
from overlay.core.ids import PeerId
from overlay.core.private_mark import PRIVATE_MARK_KIND, PrivateMark, check_mark
from overlay.exchange.messages import BitswapMessage, WantEntry
from overlay.runtime.driver import Driver
from overlay.runtime.process.identity import KEY_FILE, load_identity
from overlay.runtime.services.membership import SwimMembership
from overlay.runtime.services.trust import PROTO_PRIVATE_MARK, TrustService
from overlay.runtime.services.trust_state import Trust
from store.blockstore import BlockStore
from store.importer import Importer

NOW = time.time()
SECRET = b"members only " * 40_000  # several blocks: a DAG, not one leaf
PUBLIC = b"anyone"


def init(tmp: Path, name: str) -> tuple[Path, KeyPair]:
    from overlay.cli.main import main as colony_main

    home = tmp / name
    assert colony_main(["--home", str(home), "init"]) == 0
    return home, load_identity(home / KEY_FILE)


@dataclasses.dataclass
class Colony:
    owner: bytes
    ha: Path
    ka: KeyPair
    chain_a: tuple[Certificate, ...]
    hb: Path
    kb: KeyPair
    chain_b: tuple[Certificate, ...]
    outsider: KeyPair


@pytest.fixture
def colony(tmp_path: Path) -> Colony:
    ha, ka = init(tmp_path, "a")
    hb, kb = init(tmp_path, "b")
    t = Trust.create_colony(ha, "lab", ka, NOW, 86400)
    chain_b = t.issue(ka, kb.peer_id, ["member"], 3600, NOW)
    owner = t.require_colony()
    Trust.join(hb, JoinToken(owner, chain_b, ()), kb, NOW)
    return Colony(owner, ha, ka, t.own_chain, hb, kb, chain_b, KeyPair(b"\x33" * 32))


# ------------------------------------------------------------------ the mark itself


def test_mark_round_trips_and_verifies(colony: Colony) -> None:
    root = Cid.parse("bafkreiaxnnnb7qz2focittuqq3ya25q7rcv3bqynnczfzao63nnyblcqo4")
    mark = PrivateMark.issue(colony.kb, colony.owner, root, colony.chain_b, NOW)
    again = check_mark(mark.to_bytes(), colony.owner, NOW)
    assert again.root == root and again.marker == colony.kb.peer_id
    assert again.issued == NOW and again.chain == colony.chain_b


def test_forged_and_non_member_marks_are_refused(colony: Colony) -> None:
    root = Cid.parse("bafkreiaxnnnb7qz2focittuqq3ya25q7rcv3bqynnczfzao63nnyblcqo4")
    good = PrivateMark.issue(colony.kb, colony.owner, root, colony.chain_b, NOW)
    # A changed body (another root) under the member's signature: BadSignature.
    other = PrivateMark.issue(colony.kb, colony.owner, Cid.parse(
        "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"), colony.chain_b, NOW)
    forged = dataclasses.replace(good.envelope, body=other.envelope.body)
    with pytest.raises(WireError):
        check_mark(forged.to_bytes(), colony.owner, NOW)
    with pytest.raises(WireError):
        check_mark(b"\x00garbage", colony.owner, NOW)
    # An outsider presenting a member's chain: the chain certifies someone else.
    stolen = PrivateMark.issue(colony.outsider, colony.owner, root, colony.chain_b, NOW)
    with pytest.raises(NotAuthorized):
        check_mark(stolen.to_bytes(), colony.owner, NOW)
    # No chain at all, another colony, a mark from the future, one after the chain expired.
    bare = colony.outsider.seal(PRIVATE_MARK_KIND, {"colony": colony.owner, "issued": NOW,
                                                    "root": root.to_bytes(), "chain": []})
    with pytest.raises(WireError, match="chain"):
        check_mark(bare.to_bytes(), colony.owner, NOW)
    with pytest.raises(NotAuthorized, match="another colony"):
        check_mark(good.to_bytes(), b"\x01" * 32, NOW)
    future = PrivateMark.issue(colony.kb, colony.owner, root, colony.chain_b, NOW + 3600)
    with pytest.raises(NotAuthorized, match="future"):
        check_mark(future.to_bytes(), colony.owner, NOW)
    late = PrivateMark.issue(colony.kb, colony.owner, root, colony.chain_b, NOW + 7200)
    with pytest.raises(RemoteProtocolError, match="expired"):
        check_mark(late.to_bytes(), colony.owner, NOW + 7200)


# ------------------------------------------------------------------ carried by the service


class NoDht:
    async def call(self, make: object, timeout_s: float = 60.0) -> NoReturn:
        raise AssertionError("private marks need no DHT")


class Wire:
    """A `Network` whose requests reach other TrustServices' handlers directly."""

    def __init__(self, me: PeerId) -> None:
        self.me = me
        self.peers: dict[PeerId, TrustService] = {}

    def set_handler(self, protocol: str, **kw: Any) -> None:
        assert protocol == PROTO_PRIVATE_MARK

    async def request(self, peer: PeerId, protocol: str, obj: Any, timeout: float = 3.0) -> Any:
        assert protocol == PROTO_PRIVATE_MARK
        return await self.peers[peer].on_mark_request(self.me, obj)


def service(home: Path, key: KeyPair, store: BlockStore, wire: Wire,
            knows: dict[PeerId, tuple[Certificate, ...]]) -> TrustService:  # fmt: skip
    trust = Trust(home)  # serve_public = true (the default)
    for peer, chain in knows.items():
        assert trust.learn(peer, chain, time.time()) is None
    swim = Swim(key, rng=random.Random(1))
    return TrustService(trust, me=key.peer_id, store=store, membership=SwimMembership(swim),
                        cores=Driver(swim, send=lambda peer, msg: None), dht=NoDht(),
                        keypair=key, network=wire)  # type: ignore[arg-type]  # fmt: skip


def wants(*cids: Cid) -> BitswapMessage:
    return BitswapMessage(wants=tuple(WantEntry(c.to_bytes()) for c in cids))


@pytest.fixture
def pair(colony: Colony, tmp_path: Path) -> Iterator[tuple[TrustService, TrustService, Cid, Cid]]:
    with BlockStore(tmp_path / "sa") as sa, BlockStore(tmp_path / "sb") as sb:
        secret = Importer(sa).add_bytes(SECRET).cid
        public = Importer(sa).add_bytes(PUBLIC).cid
        wa, wb = Wire(colony.ka.peer_id), Wire(colony.kb.peer_id)
        a = service(colony.ha, colony.ka, sa, wa, {colony.kb.peer_id: colony.chain_b})
        b = service(colony.hb, colony.kb, sb, wb, {colony.ka.peer_id: colony.chain_a})
        wa.peers[colony.kb.peer_id], wb.peers[colony.ka.peer_id] = b, a
        a.set_private(str(secret), True)
        yield a, b, secret, public


def test_a_fetched_copy_stays_private(colony: Colony,
                                      pair: tuple[TrustService, TrustService, Cid, Cid]) -> None:
    a, b, secret, public = pair
    out = colony.outsider.peer_id
    assert a.filter_bitswap(out, wants(secret, public)) == wants(public)
    # B fetches: the mark is learned before any block arrives ...
    trio.run(b.before_fetch, secret, [colony.ka.peer_id])
    assert b.trust.private_roots() == [str(secret)]
    mark = PrivateMark.from_bytes(b.trust.private_marks()[str(secret)])
    assert mark.marker == colony.ka.peer_id and mark.root == secret
    # ... while it runs, an outsider gets neither the blocks that arrived nor the rest.
    Importer(b.store).add_bytes(PUBLIC)
    with a.store.reader() as r:
        leaves = [Cid.from_bytes(bytes(c)) for c in r.links(secret.multihash) or []]
        blocks = [(c, bytes(r.read(c)), None) for c in [secret, *leaves]]
    first = leaves[0]
    assert b.filter_bitswap(out, wants(first, public)) == wants(public)
    b.store.put_many(blocks)
    b.after_fetch(secret)
    # The whole stored copy is private at B, whatever B marked itself; the public one flows.
    assert {secret.multihash, first.multihash} <= b.private.keys()
    assert b.filter_bitswap(out, wants(secret, first, public)) == wants(public)
    assert b.filter_bitswap(colony.ka.peer_id, wants(secret)) == wants(secret)
    # A member fetching from B learns the same mark from B (it travels transitively).
    assert b.mark_for(first) == a.mark_for(secret)


def test_marks_are_for_members_and_unmarking_is_the_markers(
    colony: Colony, pair: tuple[TrustService, TrustService, Cid, Cid]
) -> None:
    a, b, secret, _ = pair
    with pytest.raises(RemoteProtocolError, match="no certificate"):
        trio.run(a.on_mark_request, colony.outsider.peer_id, {"cid": secret.to_bytes()})
    trio.run(b.before_fetch, secret, [colony.ka.peer_id])
    b.after_fetch(secret)
    with pytest.raises(ColonyError, match="only that member or an admin"):
        b.set_private(str(secret), False)
    assert b.trust.private_roots() == [str(secret)]
    assert a.set_private(str(secret), False)["private"] is False  # the marker may
    # A capsule's outputs and log are marked by the executor, signed by it.
    b.mark_outputs([str(secret)])
    assert PrivateMark.from_bytes(b.trust.private_marks()[str(secret)]).marker == colony.kb.peer_id
