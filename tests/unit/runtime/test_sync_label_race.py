"""Two writers race one label to the same seq (overlay/runtime/services/sync.py).

The DHT peer here is one real `ValueStore` with the real label validator: it keeps the
better record and does not acknowledge a worse one, as dht/serve.py does. The race that
failed CI once (test_sync_labels.py): the rival's record of seq 0 lands between our
resolve and our put and wins the selection (later expiry), so our put gets no ack.
Under `conflict = "fail"` that must be the conflict it is, not "no DHT node stored the
record".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
import trio.testing

from dht.api import GetValue, LookupDone, PutValue, Stored, Value
from dht.labels import default_validators, make_label_record
from dht.records import ValueStore
from overlay.core.cid import RAW, Cid
from overlay.core.crypto import KeyPair
from overlay.core.errors import ColonyError
from overlay.runtime.services.sync import SyncConflict, SyncService

RIVAL = KeyPair(b"r" * 32)
ME = KeyPair(b"m" * 32)
MINE = str(Cid.of(RAW, b"mine"))
THEIRS = str(Cid.of(RAW, b"theirs"))


class OnePeerDht:
    """One DHT peer's value store; `before_put` runs once, before our first put lands."""

    def __init__(self, before_put: Callable[[], None] | None = None,
                 reachable: bool = True) -> None:
        self.store = ValueStore()
        self.validators = default_validators()
        self.before_put = before_put
        self.reachable = reachable
        self.puts = 0

    def put_raw(self, key: bytes, value: bytes) -> bool:
        rec = self.validators.validate(key, value, time.time())
        return self.store.put(rec, RIVAL.peer_id, self.validators, time.time()) == "stored"

    async def call(self, make: Callable[[int], object], timeout_s: float = 60.0) -> LookupDone:
        cmd = make(1)
        if isinstance(cmd, PutValue):
            self.puts += 1
            if self.before_put is not None:
                self.before_put()
                self.before_put = None
            acked = self.reachable and self.put_raw(cmd.key, cmd.value)
            return LookupDone(1, Stored(int(acked), ()), 1, 1)
        assert isinstance(cmd, GetValue)
        rec = self.store.get(cmd.key, time.time()) if self.reachable else None
        if rec is None:
            return LookupDone(1, Value(None, 0, None, 0), 1, 1, "not found")
        return LookupDone(1, Value(rec.value, rec.seq, rec.payload, 1), 1, 1)


def service(dht: OnePeerDht) -> SyncService:
    return SyncService(dht, None, ME, lambda: None, lambda: ())  # type: ignore[arg-type]


def rival_writes_seq0(dht: OnePeerDht) -> Callable[[], None]:
    def write() -> None:  # expires later than ours: the selection prefers it
        key, value = make_label_record(RIVAL, None, "race", THEIRS, 0, time.time() + 10 * 86400)
        assert dht.put_raw(key, value)
    return write


def test_a_lost_race_to_the_same_seq_is_a_conflict_under_fail() -> None:
    dht = OnePeerDht()
    dht.before_put = rival_writes_seq0(dht)
    sync = service(dht)
    with pytest.raises(SyncConflict, match=f"moved from nothing to {THEIRS}"):
        trio.run(lambda: sync._move("race", Path("."), Cid.parse(MINE), "", "fail", False))
    assert dht.puts == 1  # no blind retries of a put the peer will never take


def test_a_lost_race_under_keep_newest_writes_the_next_seq() -> None:
    dht = OnePeerDht()
    dht.before_put = rival_writes_seq0(dht)
    sync = service(dht)
    out = trio.run(lambda: sync._move("race", Path("."), Cid.parse(MINE), "", "keep-newest",
                                      False))
    assert out.seq == 1 and out.cid == MINE and out.replaced == THEIRS


def test_no_peer_at_all_is_still_reported_as_such() -> None:
    sync = service(OnePeerDht(reachable=False))

    async def main() -> None:  # the mock clock skips the young-node back-off sleeps
        await sync._move("race", Path("."), Cid.parse(MINE), "", "fail", False)

    with pytest.raises(ColonyError, match="no DHT node stored the record"):
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
