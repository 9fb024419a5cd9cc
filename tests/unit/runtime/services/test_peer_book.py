"""services/peer_book.PeerBook: what it learns, and peers.json saved then loaded back."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from dht.api import KadConfig, PeerAddressesLearned
from dht.core import Kademlia
from dht.wire import PeerInfo
from gossip.events import MemberJoined
from overlay.core.crypto import KeyPair
from overlay.core.ids import PeerId
from overlay.runtime.services.host_ad import bin_addrs
from overlay.runtime.services.peer_book import PEERS_FILE, PeerBook

ME = KeyPair(b"\x01" * 32).peer_id
PEERS = [KeyPair(bytes([i]) * 32).peer_id for i in range(2, 8)]


class AddressBook:
    """The two Network calls the peer book makes, recorded."""

    def __init__(self) -> None:
        self.addrs: dict[PeerId, list[str]] = {}
        self.hearsay: set[str] = set()

    def add_addrs(self, peer: PeerId, addrs: Any, *, hearsay: bool = False) -> None:
        self.addrs.setdefault(peer, []).extend(addrs)
        if hearsay:
            self.hearsay.update(addrs)

    def known_addrs(self, peer: PeerId) -> list[str]:
        return self.addrs.get(peer, [])


def _book(home: Path, kad: Kademlia, net: AddressBook, max_known: int = 256) -> PeerBook:
    return PeerBook(home, ME, net, kad, lambda: 100.0,  # type: ignore[arg-type]
                    max_known_peers=max_known)


def _addr(i: int) -> str:
    return f"/ip4/10.0.0.{i}/tcp/4001"


def test_saved_members_and_table_load_back_after_a_restart(tmp_path: Path) -> None:
    kad = Kademlia(ME, KadConfig(), rng=random.Random(1))
    net = AddressBook()
    book = _book(tmp_path, kad, net)
    for i, p in enumerate(PEERS[:3]):
        book.on_event(MemberJoined(p, 1, (_addr(i),)))
    for i, p in enumerate(PEERS[3:], start=3):
        kad.table.seen(p, 90.0 + i, bin_addrs([_addr(i)]))
    assert net.addrs[PEERS[0]] == [_addr(0)]  # a member's addresses reach the network
    book.save()
    assert not (tmp_path / (PEERS_FILE + ".tmp")).exists()

    again = _book(tmp_path, Kademlia(ME, KadConfig(), rng=random.Random(2)), AddressBook())
    assert again.saved_addrs() == [f"{_addr(i)}/p2p/{p}" for i, p in enumerate(PEERS[:3])]
    table = again.saved_table()  # freshest first
    assert table == [PeerInfo(PEERS[i], bin_addrs([_addr(i)])) for i in (5, 4, 3)]


def test_known_peers_are_bounded_oldest_dropped_and_nothing_never_overwrites(
    tmp_path: Path,
) -> None:
    kad = Kademlia(ME, KadConfig(), rng=random.Random(1))
    book = _book(tmp_path, kad, AddressBook(), max_known=2)
    book.save()
    assert not (tmp_path / PEERS_FILE).exists()  # nothing to save: no file
    for i, p in enumerate(PEERS[:3]):
        book.remember(p, (_addr(i),))
    assert list(book.known_peers) == [str(PEERS[1]), str(PEERS[2])]
    book.save()
    saved = (tmp_path / PEERS_FILE).read_text()
    _book(tmp_path, kad, AddressBook()).save()  # a fresh book knows nobody yet
    assert (tmp_path / PEERS_FILE).read_text() == saved


def test_damaged_files_and_entries_cost_only_themselves(tmp_path: Path) -> None:
    kad = Kademlia(ME, KadConfig(), rng=random.Random(1))
    book = _book(tmp_path, kad, AddressBook())
    (tmp_path / PEERS_FILE).write_text("{not json")
    assert book.saved_addrs() == [] and book.saved_table() == []
    rows = [{"id": "garbage"}, {"id": str(ME), "addrs": [_addr(1)]},
            {"id": str(PEERS[0]), "addrs": [_addr(2)]}]
    (tmp_path / PEERS_FILE).write_text(json.dumps({"peers": {}, "dht": rows}))
    assert book.saved_table() == [PeerInfo(PEERS[0], bin_addrs([_addr(2)]))]


def test_dht_addresses_reach_the_network_except_our_own() -> None:
    net = AddressBook()
    book = _book(Path("/nonexistent"), Kademlia(ME, KadConfig(), rng=random.Random(1)), net)
    book.on_event(PeerAddressesLearned(PEERS[0], bin_addrs([_addr(1)])))
    book.on_event(PeerAddressesLearned(ME, bin_addrs([_addr(2)])))
    assert net.addrs == {PEERS[0]: [_addr(1)]}
    assert net.hearsay == {_addr(1)}  # a third party's word: after first-hand addresses
    assert book.known_peers == {}  # DHT peers are not members
