"""Sync labels: pull a directory by label, push it back, with a conflict rule.

A label (dht/labels.py) is a signed, mutable DHT record `/colony/label/<colony>/<label>`
naming the current version (a CID) of a directory. `pull` resolves it, fetches the DAG
(only the blocks this node lacks: unchanged files have unchanged CIDs) and writes the
tree; `push` imports a tree (the store dedups unchanged blocks, so the next puller also
fetches only what changed), provides it, and moves the label from the version the
pusher started from (`base`) to the new one.

Concurrent pushes (docs/sync.md): when the label moved since `base`, the rule decides —

- `fail`: refuse, naming both versions; the pushed version stays in the local store,
  pinned, and its CID is in the error;
- `keep-newest`: the push wins; the version it replaced is the new record's `prev`;
- `both`: the new version is the pushed tree plus a `.conflict-<cid>/` entry holding
  the other version; nothing is dropped from either side.

Two writers may also race to the same `seq`; the DHT's selector picks one record
everywhere (dht/labels.py), and each writer reads the label back after writing: the
loser sees it lost and applies its rule again (at most `MAX_ROUNDS` times). Every
version a node pushed or pulled stays pinned under `sync/<label>` (the newest only), so
garbage collection cannot take a label's current data from the node that wrote it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog
import trio

from dht.api import GetValue, Provide, PutValue, Stored, Value, result_as
from dht.labels import LabelRecord, label_key, make_label_record, parse_label_record
from overlay.capsule.spec import CapsuleSpec
from overlay.core.certs import Certificate
from overlay.core.cid import Cid
from overlay.core.crypto import KeyPair
from overlay.core.errors import ColonyError, RemoteProtocolError
from overlay.core.ids import PeerId
from overlay.runtime.context import Blocks, DhtCalls
from store.exporter import Exporter
from store.importer import Importer, ImportOptions
from store.pins import Pins

log = structlog.get_logger("colony.sync")

CONFLICT_RULES = ("keep-newest", "fail", "both")
#: A label record lives this long unless pushed again (IPNS's default is 48 h).
LABEL_TTL_S = 7 * 86400.0
#: Read-back rounds after a lost race to the same sequence number.
MAX_ROUNDS = 5
PROVIDE_TIMEOUT_S = 300.0


class SyncConflict(ColonyError):
    """The label moved since the pusher's base and the rule is `fail`."""

    code = "conflict"


@dataclass(frozen=True, slots=True)
class Pushed:
    label: str
    cid: str  # the label's value now
    seq: int
    pushed: str  # the tree this push imported
    replaced: str  # the version it moved the label from ("" for a new label)
    conflict: str  # "" or the rule applied ("keep-newest" or "both")


class SyncService:
    """Labels for one node: resolve, pull, push (narrow interfaces: DHT calls, blocks)."""

    def __init__(self, dht: DhtCalls, blocks: Blocks, keypair: KeyPair,
                 colony: Callable[[], PeerId | None],
                 chain: Callable[[], tuple[Certificate, ...]],
                 options: ImportOptions | None = None, state: Path | None = None) -> None:
        self.dht = dht
        self.blocks = blocks
        self.keypair = keypair
        self.colony = colony
        self.chain = chain
        self.options = options or ImportOptions()
        #: (label, directory) → the version last pulled or pushed there: a push's base.
        self.state = state
        self.bases: dict[str, str] = {}
        if state is not None and state.exists():
            try:
                self.bases = {str(k): str(v) for k, v in json.loads(state.read_text()).items()}
            except (OSError, ValueError) as e:
                log.warning("sync_state_unreadable", path=str(state), error=str(e))

    def base_of(self, label: str, directory: Path) -> str:
        return self.bases.get(f"{label}\0{directory.resolve()}", "")

    def _set_base(self, label: str, directory: Path, cid: str) -> None:
        self.bases[f"{label}\0{directory.resolve()}"] = cid
        while len(self.bases) > 4096:
            del self.bases[next(iter(self.bases))]
        if self.state is not None:
            tmp = self.state.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.bases))
            tmp.replace(self.state)

    async def resolve(self, label: str) -> LabelRecord | None:
        """The label's current record (None if it has none), verified."""
        key = label_key(self.colony(), label)
        ev = await self.dht.call(lambda rid: GetValue(rid, key), timeout_s=60)
        v = result_as(ev, Value)
        if v.value is None:
            return None
        try:
            return parse_label_record(key, v.value, time.time())
        except RemoteProtocolError as e:  # the DHT validated it; it may have expired since
            raise ColonyError(f"label {label}: {e}") from None

    async def pull(self, label: str, dest: Path, record: LabelRecord | None = None,
                   remember: bool = True) -> LabelRecord:
        """Fetch the label's version (or `record`'s) and write it at `dest` (a new path)."""
        rec = record or await self.resolve(label)
        if rec is None:
            raise ColonyError(f"label {label} names nothing yet (push it first)")
        cid = Cid.parse(rec.value)
        await self.blocks.fetch_dag(cid)
        store = self.blocks.store
        await trio.to_thread.run_sync(lambda: Exporter(store).get(cid, dest))
        self._pin(label, cid)
        if remember:
            self._set_base(label, dest, rec.value)
        return rec

    async def push(self, label: str, src: Path, base: str | None = None,
                   conflict: str = "keep-newest", remember: bool = True) -> Pushed:
        """Import `src` and move the label to it. `base`: the version the tree was
        made from (default: what this node last pulled or pushed at `src`)."""
        if base is None:
            base = self.base_of(label, src)
        if conflict not in CONFLICT_RULES:
            raise ColonyError(f"conflict must be one of {', '.join(CONFLICT_RULES)}")
        store, opts = self.blocks.store, self.options
        added = await trio.to_thread.run_sync(
            lambda: Importer(store, opts).add_path(src, recursive=True))
        self._pin(label, added.cid)
        # The root first, the rest after the label moved: providing every block is many
        # DHT requests, and the peers' per-peer rate limits would refuse the label's
        # write queued behind them. A puller fetches the DAG from the root's providers.
        await self._provide(added.cid, root_only=True)
        try:
            return await self._move(label, src, added.cid, base, conflict, remember)
        finally:
            await self._provide(added.cid)

    async def _move(self, label: str, src: Path, added: Cid, base: str, conflict: str,
                    remember: bool) -> Pushed:
        mine = str(added)
        applied = ""
        for _ in range(MAX_ROUNDS):
            cur = await self.resolve(label)
            value, prev = mine, base
            if cur is not None and cur.value not in (base, mine):
                applied = conflict
                if conflict == "fail":
                    raise SyncConflict(
                        f"label {label} moved from {base or 'nothing'} to {cur.value} "
                        f"(seq {cur.seq}, by {cur.writer.short()}) since your base; your "
                        f"version {mine} is kept in this node's store, pinned as sync/{label}")
                if conflict == "both":
                    value = await self._both(added, Cid.parse(cur.value))
                prev = cur.value
            elif cur is not None:
                prev = cur.value
            seq = cur.seq + 1 if cur is not None else 0
            if cur is not None and cur.value == value:
                if remember:
                    self._set_base(label, src, value)
                return Pushed(label, value, cur.seq, mine, cur.prev, applied)
            await self._write(label, value, seq, prev)
            back = await self.resolve(label)
            if back is not None and back.value == value and back.writer == self.keypair.peer_id:
                log.info("label_pushed", label=label, cid=value, seq=seq, conflict=applied)
                if remember:
                    self._set_base(label, src, value)
                return Pushed(label, value, back.seq, mine, prev, applied)
            base = prev  # lost a race to the same seq: apply the rule against the winner
        raise ColonyError(f"label {label}: still racing other writers after {MAX_ROUNDS} rounds")

    async def _write(self, label: str, value: str, seq: int, prev: str) -> None:
        key, record = make_label_record(self.keypair, self.colony(), label, value, seq,
                                        time.time() + LABEL_TTL_S, prev, self.chain())
        for delay in (1.0, 2.0, 4.0, 0.0):  # a young node's routing table may be empty
            ev = await self.dht.call(lambda rid: PutValue(rid, key, record), timeout_s=60)
            if result_as(ev, Stored).acks > 0:
                return
            # A peer acknowledges only a record better than the one it holds: no acks
            # may mean a racing writer's record of the same seq won there. The caller's
            # read-back sees the winner and applies the conflict rule.
            cur = await self.resolve(label)
            if cur is not None and cur.seq >= seq and cur.writer != self.keypair.peer_id:
                log.info("label_write_lost_race", label=label, seq=seq, winner=cur.value)
                return
            if delay:
                await trio.sleep(delay)
        raise ColonyError(f"label {label}: no DHT node stored the record "
                          f"({ev.error or 'no peers'})")

    async def _both(self, mine: Cid, theirs: Cid) -> str:
        """Our tree plus `.conflict-<their cid>/` holding theirs, as a new directory."""
        await self.blocks.fetch_dag(theirs)
        store, opts = self.blocks.store, self.options

        def build() -> str:
            ex = Exporter(store)
            entries = [(e.name, e.cid, e.tsize) for e in ex.ls(mine)]
            info = ex.stat(theirs)
            entries.append((f".conflict-{theirs}", theirs, info.size))
            imp = Importer(store, opts)
            out = imp.directory(sorted(entries), "")
            imp.flush()
            return str(out.cid)

        cid = await trio.to_thread.run_sync(build)
        await self._provide(Cid.parse(cid))
        return cid

    async def _provide(self, cid: Cid, root_only: bool = False) -> None:
        keys = (cid.multihash,) if root_only else tuple(self.blocks.dag_multihashes(cid))
        try:
            await self.dht.call(lambda rid: Provide(rid, keys), timeout_s=PROVIDE_TIMEOUT_S)
        except ColonyError as e:  # pulled from us directly still works; the DHT catches up
            log.warning("label_provide_failed", cid=str(cid), error=str(e))

    def _pin(self, label: str, cid: Cid) -> None:
        pins, name = Pins(self.blocks.store), f"sync/{label}"
        for old in pins.by_name(name):
            if old.cid != cid:
                pins.rm(old.cid, name=name)
        pins.add(cid, recursive=True, name=name)


class RunSync:
    """A capsule run's sync directives (executors' `SyncHooks`) on a `SyncService`.

    `before` writes each pulled label at ``work/<dir>`` (an empty directory for a new
    label, or with ``on_start = ""``) and remembers the version as the push's base;
    `after` pushes each ``on_exit = "push"`` directory with its rule, and reports a
    refusal (the attempt then ends `EXIT_SYNC_FAILED`). Bases live only for the run."""

    def __init__(self, sync: SyncService) -> None:
        self.sync = sync
        self._bases: dict[tuple[str, str], str] = {}

    async def before(self, capsule_id: str, spec: CapsuleSpec, work: Path) -> None:
        for d in spec.sync:
            dest = work / d.dir
            rec = await self.sync.resolve(d.label)
            self._bases[(capsule_id, d.dir)] = rec.value if rec is not None else ""
            if rec is not None and d.on_start == "pull":
                dest.parent.mkdir(parents=True, exist_ok=True)
                await self.sync.pull(d.label, dest, rec, remember=False)
            else:
                dest.mkdir(parents=True, exist_ok=True)

    async def after(self, capsule_id: str, spec: CapsuleSpec, work: Path) -> str | None:
        try:
            for d in spec.sync:
                base = self._bases.get((capsule_id, d.dir), "")
                if d.on_exit != "push":
                    continue
                try:
                    await self.sync.push(d.label, work / d.dir, base, d.conflict,
                                         remember=False)
                except SyncConflict as e:
                    return str(e)
                except (ColonyError, OSError) as e:
                    return f"sync push of label {d.label} failed: {e}"
            return None
        finally:
            for d in spec.sync:
                self._bases.pop((capsule_id, d.dir), None)
