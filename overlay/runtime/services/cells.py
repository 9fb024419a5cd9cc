"""Cells in the daemon: the tier-1 cell this node gossips in, and the other cells' digests.

The gossip part of the node is a `gossip.cell_node.CellNode` (SWIM + `CellCore`): the
cell core splits a cell whose live count stayed above `[cell] cap` for `hold_s`, SWIM
then keeps only the new cell's members. This service does the I/O around it
(docs/gossip.md "Cells in the daemon"):

- start: the cell saved in `<home>/cell.json` (a restarted node rejoins its cell; its
  saved peers are members of it): `StartCells` goes in before bootstrap's `Join`. A new
  node gossips unrestricted (as in the root cell) with its cell core not yet running
  until its first reading of the other cells: then it starts in `choose_cell`'s cell
  (the root when none is published) and joins through that cell's seeds, so it never
  splits from a view of the cell its bootstrap seed happens to be in. Every
  `CellChanged` is saved.
- publish: every `digest_interval_s` (jittered, in a loop of its own: DHT lookups
  can take long while dead peers time out), the cell's *publisher* (smallest
  sha256(peer id) among its live members, gossip/cell_directory.py) provides the
  site's rendezvous key in the DHT; a member that stops being publisher stops
  providing. Answering `/colony/cells/1.0.0` requests, any member sends its own cell's
  `CellReport` (digest from its SWIM view's ads, and its four smallest-ranked members
  with addresses: joiners dial them, push-sum bridges cells through them).
- read: the same loop looks the rendezvous key up, asks every provider (at most
  `MAX_READ`, concurrently, `REQUEST_TIMEOUT_S` each) for its report, validates it
  (the responder and seeds must be in the reported cell; in colony mode the
  responder's certificate chain must make it a member) and keeps it in the directory.
  Every `digest_interval_s` a tick gives the cell core the sibling's size from the
  directory (`SiblingSize`, merge evidence) and decides moves.
- move (gossip/cell_directory.py, "Moving"): on the first reading after start, or
  when it has not changed cell for `hold_s` + 3 digest intervals, a node whose cell is
  an ancestor of the leaf `choose_cell` picks from the other nodes' reports (a joiner
  at the root, a node that missed a split) goes there, and a node alone in its cell
  goes to the current cell holding its key; it joins through that cell's seeds. After
  a merge it joins through the sibling's seeds.

Bounds: `MAX_READ` providers asked per round, the directory holds ≤ 1,024 cells, a
report ≤ 32 classes and 4 seeds. Failures are counted in `stats` (/v1/stats "cells").
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
import trio

from dht.api import GetProviders, Provide, Providers, StopProviding, result_as
from gossip.cell_digest import CellDigest
from gossip.cell_directory import (
    MAX_ADDRS,
    MAX_READ,
    MAX_SEEDS,
    TTL_INTERVALS,
    CellDirectory,
    CellReport,
    Seed,
    cell_to_adopt,
    found_after,
    publisher_rank,
    rendezvous_key,
    should_publish,
)
from gossip.cells import (
    CellChanged,
    CellConfig,
    CellId,
    SiblingSize,
    StartCells,
    cell_key,
    choose_cell,
)
from gossip.events import Join
from overlay.core.certs import chain_from_wire, chain_to_wire
from overlay.core.errors import ColonyError, ConfigError, RemoteProtocolError, WireError
from overlay.runtime.net.transport_types import Codec
from overlay.runtime.services.host_ad import str_addrs
from overlay.runtime.services.trust_state import colony_id

if TYPE_CHECKING:
    from gossip.members import MemberInfo
    from overlay.core.ids import PeerId
    from overlay.runtime.context import Cores, DhtCalls, Membership, Network, Spawn
    from overlay.runtime.services.trust_state import Trust

log = structlog.get_logger("colony.cells")

PROTO_CELLS = "/colony/cells/1.0.0"
CELL_FILE = "cell.json"
REQUEST_TIMEOUT_S = 5.0
DHT_TIMEOUT_S = 30.0
DIAL_TIMEOUT_S = 10.0
#: A report served is at most this old (trio seconds).
REPORT_CACHE_S = 1.0
#: The first round runs this soon after start (bootstrap has joined the DHT by then).
FIRST_ROUND_S = 1.0


def cell_config(conf: dict[str, Any]) -> CellConfig:
    """`[cell]` as the cell core's config; a bad value is a `ConfigError` naming it."""
    try:
        CellId(str(conf["site"]))  # the site label's rules (no '/', ≤ 64 characters)
        if float(conf["digest_interval_s"]) <= 0:
            raise ValueError("digest_interval_s must be positive")
        return CellConfig(cap=int(conf["cap"]), merge_below=float(conf["merge_below"]),
                          hold_s=float(conf["hold_s"]),
                          check_interval_s=float(conf["check_interval_s"]),
                          digest_ttl_s=TTL_INTERVALS * float(conf["digest_interval_s"]))
    except ValueError as e:
        raise ConfigError(f"[cell] {e}") from None


@dataclass
class CellStats:
    ticks: int = 0
    published: int = 0
    lookups_failed: int = 0
    requests_failed: int = 0
    reports_bad: int = 0
    reports_refused: int = 0
    served: int = 0
    moves: int = 0
    joins_failed: int = 0
    #: Placement across cells: probes of another cell that no seed answered.
    probes_failed: int = 0


class CellService:
    def __init__(self, me: PeerId, home: Path, conf: dict[str, Any], *, cores: Cores,
                 network: Network, membership: Membership, dht: DhtCalls, trust: Trust,
                 spawn: Spawn, rng: random.Random | None = None) -> None:
        self.me = me
        self.key = cell_key(me)
        self.config = cell_config(conf)
        self.site = str(conf["site"])
        self.interval_s = float(conf["digest_interval_s"])
        root = CellId(self.site)
        self._file = home / CELL_FILE
        self._cores, self._net, self._members, self._dht = cores, network, membership, dht
        self._trust, self._spawn = trust, spawn
        self._rng = rng or random.Random()
        saved = self._saved()
        self.cell = saved or root
        #: The cell core runs (StartCells sent): at once for a node with a saved cell;
        #: a new node first reads the other cells, so it never splits (or counts) from
        #: a view of the cell its bootstrap seed happens to be in.
        self._cell_started = saved is not None
        self.directory = CellDirectory(self.site, TTL_INTERVALS * self.interval_s)
        self.stats = CellStats()
        self._providing = False
        self._placed = False
        #: Providers the last lookup found (None: no lookup yet); whether any other
        #: node's report was ever heard (the first reading that places a joiner).
        self._found: int | None = None
        self._heard_others = False
        self._unreported = 0
        self._report: tuple[float, CellReport] | None = None
        self._rejoined_at = -1e9
        #: When this node last changed cell (trio time); moving down waits this long
        #: after a change: the hold time, plus reports from before it age out.
        self._changed_at = trio.current_time()
        self._grace_s = self.config.hold_s + TTL_INTERVALS * self.interval_s

    # ------------------------------------------------------------ start and events

    def _saved(self) -> CellId | None:
        try:
            cell = CellId.parse(json.loads(self._file.read_text())["cell"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return cell if cell.site == self.site and cell.contains(self.key) else None

    def _save(self) -> None:
        tmp = self._file.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps({"cell": self.cell.name()}))
            os.replace(tmp, self._file)
        except OSError as e:  # the next change saves again; a restart may re-place us
            log.warning("cell_not_saved", error=str(e))

    def register(self) -> None:
        self._net.set_handler(PROTO_CELLS, on_request=self._serve, codec=Codec.CBOR)

    async def start(self) -> None:
        """Put the gossip core in its saved cell (before bootstrap joins anyone)."""
        if self._cell_started:
            await self._cores.submit_wait(StartCells(self.cell))
            log.info("cell_started", cell=self.cell.name(), cap=self.config.cap)

    async def _place(self, now: float) -> None:
        """A new node's first cell: `choose_cell` over the cells others report, or the
        root when the lookup found no cell published at all."""
        leaves = [r.cell for r in self.directory.leaves(now)]
        cell = choose_cell(self.key, self.site, leaves)
        self._cell_started, self._placed = True, True
        self.cell, self._changed_at = cell, now
        await self._cores.submit_wait(StartCells(cell))
        self._save()
        log.info("cell_started", cell=cell.name(), cap=self.config.cap, known=len(leaves))
        rep = self.directory.report(cell, now)
        if rep is not None:
            await self._join(rep.seeds)

    def on_event(self, ev: object) -> None:
        if isinstance(ev, CellChanged):
            self.cell, self._changed_at = ev.new, trio.current_time()
            self._save()
            log.info("cell_changed", old=ev.old.name(), new=ev.new.name(), reason=ev.reason)
            if ev.reason == "merge":  # join the sibling's members through its seeds
                sib = ev.old.sibling()
                rep = self.directory.report(sib, trio.current_time()) if sib else None
                self.directory.forget_under(ev.new)
                if rep is not None:
                    self._spawn(self._join, rep.seeds)

    # ------------------------------------------------------------ serving

    def own_report(self) -> CellReport:
        """This cell's report from this node's view, computed at most once per
        `REPORT_CACHE_S` (every reader of the site asks the publisher each interval,
        and a digest costs one pass over the cell's ads)."""
        now = trio.current_time()
        cached = self._report
        if cached is not None and cached[1].cell == self.cell \
                and now - cached[0] < REPORT_CACHE_S:
            return cached[1]
        live = self._members.list_members()  # self first; SWIM keeps only this cell
        digest = CellDigest.of(self.cell, [m.ad for m in live], time.time())
        report = CellReport(digest, tuple(self._seeds(live)))
        self._report = (now, report)
        return report

    def _seeds(self, live: list[MemberInfo]) -> list[Seed]:
        """The cell's `MAX_SEEDS` smallest-ranked members: deterministic, so every
        member reports the same ones (they are also push-sum's bridges)."""
        out = []
        for m in sorted(live, key=lambda m: publisher_rank(m.peer))[:MAX_SEEDS]:
            addrs = self._net.addrs if m.is_self else list(m.addrs)
            out.append(Seed(m.peer, tuple(addrs[:MAX_ADDRS])))
        return out

    async def _serve(self, peer: PeerId, obj: object) -> object:
        self._check_peer(peer, obj)
        self.stats.served += 1
        out: dict[str, object] = {"report": self.own_report().to_wire()}
        if self._trust.own_chain:
            out["chain"] = chain_to_wire(self._trust.own_chain)
        return out

    def _check_peer(self, peer: PeerId, obj: object) -> None:
        """Colony mode: `peer` must show a chain making it a member (open mode: anyone)."""
        if self._trust.colony_owner is None:
            return
        raw = obj.get("chain") if isinstance(obj, dict) else None
        now = time.time()
        try:
            reason = self._trust.learn(peer, chain_from_wire(raw), now) if raw else None
        except WireError as e:
            reason = str(e)
        reason = reason or self._trust.check(peer, "member", now)
        if reason is not None:
            self.stats.reports_refused += 1
            raise RemoteProtocolError(f"cells: {reason}")

    # ------------------------------------------------------------ rounds

    async def run(self) -> None:
        """Two loops: the DHT side (publish, read: lookups may take long while dead
        peers time out) and the tick (feed the core, move), so a slow lookup never
        starves the cell core of its sibling's size."""
        async with trio.open_nursery() as n:
            n.start_soon(self._dht_loop)
            await trio.sleep(FIRST_ROUND_S)
            while True:
                self.stats.ticks += 1
                try:
                    await self.tick()
                except ColonyError as e:  # retried next interval
                    log.info("cells_tick_failed", error=str(e))
                await trio.sleep(self._jittered())

    def _jittered(self) -> float:
        return self.interval_s * (0.8 + 0.4 * self._rng.random())

    def _rendezvous(self) -> bytes:
        owner = self._trust.colony_owner
        return rendezvous_key(colony_id(owner).to_base58() if owner else "open", self.site)

    async def tick(self) -> None:
        """Feed the core the sibling's size; move if the directory says so."""
        now = trio.current_time()
        if not self._cell_started:
            if self._heard_others or self._found == 0:
                await self._place(now)
            return
        sib = self.cell.sibling()
        rep = self.directory.report(sib, now) if sib is not None else None
        if rep is not None:
            await self._cores.submit_wait(SiblingSize(rep.cell, rep.digest.members))
        reports = self.directory.leaves(now)
        live = len(self._members.list_members())
        alone = live <= 1
        new = cell_to_adopt(self.cell, self.key, [r.cell for r in reports],
                            first=not self._placed,
                            settled=now - self._changed_at > self._grace_s, alone=alone,
                            sizes={r.cell: r.digest.members
                                   for r, _, _ in self.directory.fresh(now)}, live=live,
                            merge_at=self.config.merge_below * self.config.cap)
        if self._heard_others:
            self._placed = True
        if new is not None:
            await self._move(new, now)
        elif alone and now - self._rejoined_at > self.directory.ttl_s:
            # Alone in a cell others report (e.g. a joiner that split from a view of
            # another cell, or whose saved peers are gone): join through its seeds.
            rep = self.directory.report(self.cell, now)
            if rep is not None:
                self._rejoined_at = now
                await self._join(rep.seeds)

    async def _dht_loop(self) -> None:
        await trio.sleep(FIRST_ROUND_S)
        while True:
            key = self._rendezvous()
            try:
                await self._publish(key)
            except ColonyError as e:  # a failed Provide is retried next round
                log.info("cells_publish_failed", error=str(e))
            reading, heard = await self._read(key)
            self._found = found_after(self._found, reading)
            self._heard_others = self._heard_others or heard
            # Rounds without a fresh report of our cell from another node (`should_publish`).
            src = self.directory.source(self.cell, trio.current_time())
            self._unreported = 0 if src not in (None, self.me) else self._unreported + 1
            await trio.sleep(self._jittered())

    async def _publish(self, key: bytes) -> None:
        """Provide the key while this node is its cell's publisher. Only once placed
        (a node that has just started is alone in its view and would provide for
        nothing), or when the last lookup found no cell of the site published at all;
        a lower-ranked member also provides once its cell went unreported for longer
        than its rank (`should_publish`)."""
        live = self._members.list_members()
        publisher = should_publish(self.me, [m.peer for m in live], placed=self._placed,
                                   found=self._found, unreported=self._unreported)
        if publisher == self._providing:
            return
        if publisher:
            await self._dht.call(lambda rid: Provide(rid, (key,)), DHT_TIMEOUT_S)
            self.stats.published += 1
            log.info("cell_publishing", cell=self.cell.name())
        else:
            await self._cores.submit_wait(StopProviding((key,)))
        self._providing = publisher

    async def _read(self, key: bytes) -> tuple[int | None, bool]:
        """(providers found, None if the lookup failed; whether another node's report
        was heard)."""
        try:
            ev = await self._dht.call(lambda rid: GetProviders(rid, key, MAX_READ),
                                      DHT_TIMEOUT_S)
            providers = result_as(ev, Providers).providers
        except ColonyError as e:
            self.stats.lookups_failed += 1
            log.debug("cells_lookup_failed", error=str(e))
            return None, False
        heard = [False]

        async def ask(peer: PeerId) -> None:
            if await self._ask(peer) is not None:
                heard[0] = True

        async with trio.open_nursery() as n:
            for info in providers[:MAX_READ]:
                if info.peer == self.me:
                    continue
                if info.addrs:
                    self._net.add_addrs(info.peer, str_addrs(info.addrs), hearsay=True)
                n.start_soon(ask, info.peer)
        return len(providers), heard[0]

    async def _ask(self, peer: PeerId, timeout_s: float = REQUEST_TIMEOUT_S
                   ) -> CellReport | None:
        req: dict[str, object] = {}
        if self._trust.own_chain:
            req["chain"] = chain_to_wire(self._trust.own_chain)
        try:
            reply = await self._net.request(peer, PROTO_CELLS, req, timeout=timeout_s)
        except (ColonyError, OSError, trio.TooSlowError) as e:
            self.stats.requests_failed += 1
            log.debug("cells_request_failed", peer=str(peer), error=str(e))
            return None
        try:
            if not isinstance(reply, dict):
                raise RemoteProtocolError("cells reply must be a map")
            self._check_peer(peer, reply)
            report = CellReport.from_wire(reply.get("report"), peer)
        except (WireError, RemoteProtocolError) as e:
            self.stats.reports_bad += 1
            log.info("cells_report_refused", peer=str(peer), error=str(e))
            return None
        self.directory.heard(report, peer, trio.current_time())
        return report

    # ------------------------------------------------------------ placement across cells

    def current_reports(self) -> list[CellReport]:
        """The current cells (leaves), this node's own with its fresh report."""
        return [r for r, _, _ in self._current()]

    async def probe(self, rep: CellReport, timeout_s: float) -> CellDigest | None:
        """`rep`'s cell's digest now (late binding for placement across cells): this
        node's own, or the first of (at most two of) its seeds that answers a
        `/colony/cells/1.0.0` request within `timeout_s`; None if none does."""
        if rep.cell == self.cell:
            return self.own_report().digest
        with trio.move_on_after(timeout_s):
            for seed in rep.seeds[:2]:
                if seed.peer == self.me:
                    continue
                self._net.add_addrs(seed.peer, seed.addrs)
                fresh = await self._ask(seed.peer, timeout_s)
                if fresh is not None:
                    return fresh.digest
        self.stats.probes_failed += 1
        return None

    async def _move(self, new: CellId, now: float) -> None:
        old, self.cell, self._changed_at = self.cell, new, now
        self.stats.moves += 1
        await self._cores.submit_wait(StartCells(new))
        self._save()
        log.info("cell_moved", old=old.name(), new=new.name())
        rep = self.directory.report(new, now)
        if rep is not None:
            await self._join(rep.seeds)

    async def _join(self, seeds: tuple[Seed, ...]) -> None:
        peers: list[PeerId] = []
        for s in seeds:
            if s.peer == self.me:
                continue
            self._net.add_addrs(s.peer, s.addrs)
            try:
                with trio.fail_after(DIAL_TIMEOUT_S):
                    await self._net.connect(s.peer)
            except (ColonyError, OSError, trio.TooSlowError) as e:
                log.info("cell_seed_unreachable", peer=str(s.peer), error=str(e))
                continue
            peers.append(s.peer)
        if peers:
            await self._cores.submit_wait(Join(tuple(peers)))
        else:
            self.stats.joins_failed += 1

    # ------------------------------------------------------------ push-sum bridges

    def _other_bridges(self) -> set[PeerId]:
        """Seeds and sources of the other current cells' reports."""
        now = trio.current_time()
        out: set[PeerId] = set()
        for r in self.directory.leaves(now):
            if r.cell != self.cell:
                out.update(s.peer for s in r.seeds)
                out.add(self.directory.source(r.cell, now) or self.me)
        out.discard(self.me)
        return out

    def bridges(self) -> list[PeerId]:
        """Push-sum neighbours in other cells: their seeds, if this node is a seed of
        its own cell (the `MAX_SEEDS` smallest-ranked members)."""
        if not any(s.peer == self.me for s in self._seeds(self._members.list_members())):
            return []
        return sorted(self._other_bridges(), key=publisher_rank)

    def accepts(self, peer: PeerId) -> bool:
        """A push-sum share from another cell: from one of its seeds or its source."""
        return peer in self._other_bridges()

    def holds(self, key: int) -> bool:
        return self.cell.contains(key)

    # ------------------------------------------------------------ reading

    def _current(self) -> list[tuple[CellReport, float, PeerId]]:
        """The current cells (report, age, source): the directory's, with this node's
        own report for its own cell (the freshest), leaves only."""
        now = trio.current_time()
        known = {r.cell: (r, age, src) for r, age, src in self.directory.fresh(now)}
        known[self.cell] = (self.own_report(), 0.0, self.me)
        return [known[c] for c in sorted(known, key=lambda c: c.name())
                if not any(o != c and c.is_ancestor_of(o) for o in known)]

    def cells_json(self) -> dict[str, Any]:
        """`GET /v1/cells`: this node's cell and the current cells it knows of."""
        cells = []
        for rep, age, source in self._current():
            d = rep.digest
            cells.append({
                "cell": d.cell.name(), "site": d.cell.site, "depth": d.cell.depth,
                "members": d.members, "age_s": round(age, 1), "source": str(source),
                "mine": d.cell == self.cell,
                "classes": {c.name: {"members": c.members, "free": round(c.free, 3)}
                            for c in d.classes},
            })
        return {"cell": self.cell.name(), "site": self.site, "cap": self.config.cap,
                "publisher": self._providing, "cells": cells}

    def stats_json(self) -> dict[str, Any]:
        """`/v1/stats` "cells": this node's cell, the current cells' count and their
        digests summed (colony-wide members and free capacity by class), counters."""
        leaves = [r for r, _, _ in self._current()]
        free: dict[str, float] = {}
        for r in leaves:
            for c in r.digest.classes:
                free[c.name] = free.get(c.name, 0.0) + c.free
        return {"cell": self.cell.name(), "count": len(leaves),
                "members": sum(r.digest.members for r in leaves),
                "free": {k: round(v, 3) for k, v in sorted(free.items())},
                **asdict(self.stats)}
