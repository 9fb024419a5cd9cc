"""What this host brings to its node: the machine's resource ad, its addresses in wire
form, the protocol ids it speaks and its block store as Bitswap's source.

The node itself is composed by `overlay.node.build_node` (sans-IO, shared with the
simulator); this module is the runtime side that reads the machine and the store.
The daemon's send path needs only a protocol id and a codec per part:

| part     | protocol id                 | codec                 | pattern            |
|----------|-----------------------------|-----------------------|--------------------|
| gossip   | /colony/gossip/1.0.0        | canonical CBOR frames | one-way messages   |
| dht      | /colony/kad/1.0.0 (config)  | kad-dht protobuf      | request / response |
| exchange | /ipfs/bitswap/1.2.0         | Bitswap protobuf      | one-way messages   |
| capsule  | /colony/capsule/1.0.0       | canonical CBOR frames | one-way messages   |

Addresses use our own multiaddr (overlay/p2p/multiaddr.py); a peer's unparsable
address is skipped, so junk costs only that peer.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from gossip.resources import ResourceAd
from overlay.capsule.part import SLOTS_TAG
from overlay.core.cid import Cid
from overlay.core.errors import ColonyError, WireError
from overlay.p2p import multiaddr
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


def bin_addrs(addrs: Iterable[str]) -> tuple[bytes, ...]:
    """Text multiaddrs → binary (the kad-dht wire form); unparsable ones are skipped."""
    out = []
    for a in addrs:
        try:
            out.append(multiaddr.to_bytes(a))
        except WireError:
            continue
    return tuple(out)


def str_addrs(addrs: Iterable[bytes]) -> list[str]:
    """Binary multiaddrs from a peer → text; a peer's junk address costs only itself."""
    out = []
    for a in addrs:
        try:
            out.append(multiaddr.from_bytes(a))
        except WireError:
            continue
    return out


def local_ad(
    home: str | Path, executors: tuple[str, ...] = ("subprocess",), slots: int = 0,
    labels: tuple[tuple[str, str], ...] = (), location: str = "",
) -> ResourceAd:
    """What this machine offers, read from the OS (advertised by gossip); `executors`
    are the capsule executor kinds that really work here (executors.available_kinds)."""
    cores = os.cpu_count() or 1
    try:
        # In cores, as every reader takes it (free CPUs = cores - load in digests and
        # placement): a per-core fraction made a busy 64-core node look 63 cores free.
        load = os.getloadavg()[0]
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
