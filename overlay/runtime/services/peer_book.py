"""The peer book: who this node knew, saved so a restart finds its colony (DESIGN §9).

It learns addresses from the cores' events (a joined member's, a DHT peer's), hands
them to the network, remembers the last `max_known_peers` members, and saves those
with the DHT routing table to `<home>/peers.json`: within a second of a new member or
a routing-table change, every `SAVE_INTERVAL_S` anyway, and at leave and shutdown. At
the next start `saved_addrs` and `saved_table` are what bootstrap dials and PINGs.

Invariants: the file is replaced atomically after an fsync (a crash leaves the old
file or the new, never an empty one); a useful file is never overwritten with nothing;
a damaged file or entry costs only itself (read as nothing). Bounds: `max_known_peers`
members, `MAX_TABLE_SAVED` table rows, 4 addresses each, 64 saved dial addresses.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import trio

from dht.api import PeerAddressesLearned
from dht.wire import PeerInfo
from gossip.events import MemberJoined
from overlay.core.errors import ColonyError
from overlay.core.ids import PeerId
from overlay.runtime.services.host_ad import bin_addrs, str_addrs

if TYPE_CHECKING:
    from dht.routing_table import RoutingTable
    from overlay.runtime.context import Network

PEERS_FILE = "peers.json"
SAVE_INTERVAL_S = 30.0
#: Routing-table entries saved in peers.json and PINGed at the next start.
MAX_TABLE_SAVED = 512
#: Saved member addresses dialled at the next start.
MAX_SAVED_ADDRS = 64

#: A table row as saved: {"id": peer, "addrs": [...], "seen_ago_s": float}.
TableRow = dict[str, object]


class TableView(Protocol):
    """What the peer book reads of the Kademlia core."""

    @property
    def table(self) -> RoutingTable: ...

    def table_snapshot(self, now: float, limit: int = ...) -> list[tuple[PeerInfo, float]]: ...


class PeerBook:
    def __init__(
        self, home: Path, me: PeerId, network: Network, kad: TableView,
        clock: Callable[[], float], *, max_known_peers: int,
    ) -> None:
        self._path = home / PEERS_FILE
        self._me = me
        self._net = network
        self._kad = kad
        self._clock = clock
        self._max_known = max_known_peers
        #: peer id → addresses, from gossip; survives leave/failure so a restart can
        #: dial back into the colony. Oldest first.
        self.known_peers: dict[str, list[str]] = {}
        self._new = False

    def on_event(self, ev: object) -> None:
        if isinstance(ev, MemberJoined) and ev.addrs:
            self._net.add_addrs(ev.peer, ev.addrs)
            self.remember(ev.peer, ev.addrs)
        elif isinstance(ev, PeerAddressesLearned):
            addrs = str_addrs(ev.addrs)
            if addrs and ev.peer != self._me:
                self._net.add_addrs(ev.peer, addrs, hearsay=True)  # a DHT answer's

    def remember(self, peer: PeerId, addrs: tuple[str, ...]) -> None:
        key = str(peer)
        if self.known_peers.pop(key, None) is None:
            self._new = True  # saved within a second: a crash soon after join
        self.known_peers[key] = list(addrs)[:4]
        while len(self.known_peers) > self._max_known:
            del self.known_peers[next(iter(self.known_peers))]

    # ------------------------------------------------------------ load

    def saved_addrs(self) -> list[str]:
        """`…/p2p/<id>` dial strings of the saved members (two addresses each)."""
        try:
            data = json.loads(self._path.read_text())
        except (OSError, ValueError):
            return []
        out: list[str] = []
        for peer, addrs in data.get("peers", {}).items():
            out.extend(f"{a}/p2p/{peer}" for a in addrs[:2] if "/p2p/" not in a)
        return out[:MAX_SAVED_ADDRS]

    def saved_table(self) -> list[PeerInfo]:
        """The DHT routing table saved by `save` (freshest first); [] if none."""
        try:
            rows = json.loads(self._path.read_text()).get("dht", [])
        except (OSError, ValueError, AttributeError):
            return []
        out: list[PeerInfo] = []
        for row in rows[:MAX_TABLE_SAVED] if isinstance(rows, list) else ():
            try:
                peer = PeerId.from_base58(str(row["id"]))
                addrs = bin_addrs([str(a) for a in row.get("addrs", [])][:4])
            except (ColonyError, KeyError, TypeError, ValueError):
                continue  # a damaged entry costs itself only
            if peer != self._me:
                out.append(PeerInfo(peer, addrs))
        return out

    # ------------------------------------------------------------ save

    def table_rows(self) -> list[TableRow]:
        rows: list[TableRow] = []
        for info, age_s in self._kad.table_snapshot(self._clock(), MAX_TABLE_SAVED):
            addrs = str_addrs(info.addrs) or self._net.known_addrs(info.peer)
            addrs = [a for a in addrs if "/p2p/" not in a][:4]
            if addrs:  # an entry we could not dial is no use after a restart
                rows.append({"id": str(info.peer), "addrs": addrs,
                             "seen_ago_s": round(age_s, 1)})
        return rows

    def _table_signature(self) -> tuple[int, int, int]:
        table = self._kad.table
        return (len(table), table.stats.added, table.stats.evicted)

    def save(self) -> None:
        """Write members and the routing table to peers.json (DESIGN §9)."""
        table = self.table_rows()
        if not self.known_peers and not table:
            return  # never overwrite a useful file with nothing
        tmp = self._path.with_name(PEERS_FILE + ".tmp")
        with open(tmp, "w") as f:
            json.dump({"peers": self.known_peers, "dht": table}, f, indent=1)
            f.flush()
            os.fsync(f.fileno())  # the rename below must not expose an empty file
        os.replace(tmp, self._path)  # atomic: a crash leaves old or new

    async def save_tick(self) -> None:
        last = trio.current_time()
        table = self._table_signature()
        while True:
            await trio.sleep(1.0)
            # Saved within a second of a new member or a routing-table change, so a
            # kill -9 soon after loses at most that second.
            changed = self._table_signature() != table
            if self._new or changed or trio.current_time() - last >= SAVE_INTERVAL_S:
                self._new = False
                last = trio.current_time()
                table = self._table_signature()
                self.save()
