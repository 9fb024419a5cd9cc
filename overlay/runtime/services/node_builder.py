"""Assemble a daemon's node: gossip, DHT and block-exchange cores in one `Node`.

Also owns the mapping from message types to libp2p protocol ids and codecs, which is
the only thing the daemon's send path needs to know about each protocol:

| part     | protocol id                 | codec                 | pattern            |
|----------|-----------------------------|-----------------------|--------------------|
| gossip   | /colony/gossip/1.0.0        | canonical CBOR frames | one-way messages   |
| dht      | /colony/kad/1.0.0 (config)  | kad-dht protobuf      | request / response |
| exchange | /ipfs/bitswap/1.2.0         | Bitswap protobuf      | one-way messages   |
| capsule  | /colony/capsule/1.0.0       | canonical CBOR frames | one-way messages   |
"""

from __future__ import annotations

import os
import random
import shutil
from typing import Any

import multiaddr

from dht.api import COMMAND_TYPES as DHT_COMMANDS
from dht.api import AddPeer, KadConfig
from dht.core import Kademlia
from dht.wire import DhtRequest, DhtResponse
from gossip.admission import Admission
from gossip.events import (
    Join,
    Leave,
    MemberExpelled,
    MemberFailed,
    MemberJoined,
    MemberLeft,
    MemberReaped,
    MemberUpdated,
    PublishRevocation,
    SendUserEvent,
    UpdateAd,
)
from gossip.messages import MESSAGE_TYPES as GOSSIP_MESSAGES
from gossip.profiles import profile
from gossip.resources import ResourceAd
from gossip.swim import Swim
from overlay.capsule.core import CapsuleCore
from overlay.capsule.part import SLOTS_TAG, CapsulePart, members_changed
from overlay.core.cid import Cid
from overlay.core.crypto import Envelope, KeyPair
from overlay.core.errors import ColonyError
from overlay.exchange.engine import AddProviders, CancelFetch, Exchange, Fetch
from overlay.exchange.messages import BitswapMessage
from overlay.node import Node
from overlay.runtime.services.capsules import CAPSULE_MESSAGES
from store.blockstore import BlockStore

PROTO_GOSSIP = "/colony/gossip/1.0.0"
PROTO_BITSWAP = "/ipfs/bitswap/1.2.0"


class StoreSource:
    """The LMDB store as Bitswap's read-only block source (raw CID bytes in)."""

    def __init__(self, store: BlockStore) -> None:
        self.store = store

    # Missing, unparsable (a peer's want-list) or corrupt (`repo verify` will list it):
    # all mean "we don't have it" to a remote peer.
    def get_block(self, cid: bytes) -> bytes | None:
        try:
            return self.store.get(Cid.from_bytes(cid))
        except ColonyError:
            return None

    def has_block(self, cid: bytes) -> bool:
        try:
            return self.store.has(Cid.from_bytes(cid))
        except ColonyError:
            return False


def bin_addrs(addrs: list[str]) -> tuple[bytes, ...]:
    """Text multiaddrs → binary (the kad-dht wire form); unparsable ones are skipped."""
    out = []
    for a in addrs:
        try:
            out.append(multiaddr.Multiaddr(a).to_bytes())
        except Exception:
            continue
    return tuple(out)


def str_addrs(addrs: tuple[bytes, ...]) -> list[str]:
    """Binary multiaddrs from a peer → text; a peer's junk address costs only itself."""
    out = []
    for a in addrs:
        try:
            out.append(str(multiaddr.Multiaddr(a)))
        except Exception:
            continue
    return out


def local_ad(
    home: Any, executors: tuple[str, ...] = ("subprocess",), slots: int = 0,
    labels: tuple[tuple[str, str], ...] = (), location: str = "",
) -> ResourceAd:
    """What this machine offers, read from the OS (advertised by gossip); `executors`
    are the capsule executor kinds that really work here (executors.available_kinds)."""
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0] / cores
    except OSError:
        load = 0.0
    page, pages = os.sysconf("SC_PAGE_SIZE"), os.sysconf("SC_PHYS_PAGES")
    avail = os.sysconf("SC_AVPHYS_PAGES")
    disk = shutil.disk_usage(home)
    return ResourceAd.make(
        cpu_cores=cores,
        cpu_load=round(load, 3),
        mem_bytes=page * pages,
        mem_free_bytes=page * avail,
        disk_bytes=disk.total,
        disk_free_bytes=disk.free,
        executors=executors,
        labels=dict(labels),
        location=location,
        tags=(f"{SLOTS_TAG}{slots}",) if slots else (),
    )


def build_node(
    keypair: KeyPair,
    conf: dict[str, dict[str, Any]],
    store: BlockStore,
    *,
    addrs: tuple[str, ...],
    addrs_bin: tuple[bytes, ...],
    ad: ResourceAd,
    rng: random.Random | None = None,
    capsule: CapsuleCore | None = None,
    admission: Admission | None = None,
    chain: tuple[Envelope, ...] = (),
) -> tuple[Node, Swim, Kademlia, Exchange]:
    rng = rng or random.Random()
    me = keypair.peer_id
    swim = Swim(
        keypair, profile(conf["gossip"]["profile"]), rng=random.Random(rng.random()),
        ad=ad, addrs=addrs,
        admission=admission, chain=chain,  # colony mode (overlay/runtime/services/trust_state.py)
    )
    kad = Kademlia(
        me,
        KadConfig(mode=conf["dht"]["mode"], k=conf["dht"]["k"], alpha=conf["dht"]["alpha"]),
        rng=random.Random(rng.random()),
        addrs=addrs_bin,
    )
    exchange = Exchange(me, StoreSource(store))
    node = Node(me)
    node.add_part(
        "gossip", swim, messages=GOSSIP_MESSAGES,
        commands=(Join, Leave, UpdateAd, SendUserEvent, PublishRevocation),
    )
    node.add_part("dht", kad, messages=(DhtRequest, DhtResponse), commands=DHT_COMMANDS)
    node.add_part(
        "exchange", exchange, messages=(BitswapMessage,),
        commands=(Fetch, AddProviders, CancelFetch),
    )
    # A member gossip vouches for (signed alive claim) is a DHT contact worth probing.
    node.wire(MemberJoined, lambda ev: [("dht", AddPeer(ev.peer))])
    if capsule is not None:
        part = CapsulePart(capsule, lambda: members_changed(swim))
        node.add_part("capsule", part, messages=CAPSULE_MESSAGES,
                      commands=CapsulePart.COMMANDS)  # fmt: skip
        # The capsule core takes the whole live set (with ads) on every change.
        for ev_type in (MemberJoined, MemberUpdated, MemberFailed, MemberLeft, MemberReaped,
                        MemberExpelled):
            node.wire(ev_type, lambda ev: [("capsule", members_changed(swim))])
    return node, swim, kad, exchange
