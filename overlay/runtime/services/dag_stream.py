"""Bulk DAG transfer between colony peers: `/colony/dag/1.0.0`, CAR-framed blocks.

Bitswap asks for blocks one want at a time and was built for strangers; between
colony peers a fetch can ask once and receive the DAG as a stream. The fetcher sends
one request, `varint(len) CBOR {"roots": [CID bytes…]}`; the provider answers with
the DAG under each root, depth-first, each block once, as CAR sections
(`varint(len(cid) + len(block)) cid block`, store/car.py's framing) and ends with a
zero-length section. Several providers split one DAG: the fetcher gets the root
block first (and, while the root has fewer than `MIN_UNITS` children, the next level's
inner blocks: a 64 MiB file's root has only 2), then asks each provider for a
contiguous range of those sub-DAG roots (the *frontier*).

Providers come and go during a fetch: one found late (a DHT answer that came after the
lookup's walk ended) and one that finished its range *steal* the second half of the
not yet started roots of the busiest range; the range's stream stops when the first
stolen root's block arrives on it (depth-first order: everything before it is in), so
a late provider costs at most the few MiB in flight, and a fast provider is never idle
while a slow one still has roots queued. A failed stream's unstarted roots are stolen
whole by the others.

Trust: the fetcher verifies every block on arrival — sha2-256 against its CID
(`store.car.verify_section`) — and takes only blocks it expects: a requested root,
or a link of a dag-pb block it already took (so a provider cannot push unrelated
data into our store). A block that fails either check resets the stream and is
counted; whatever is still missing is then fetched by Bitswap, which stays the path
for IPFS peers, for colony outsiders and for everything the stream did not deliver.
The provider does not re-hash what it serves (its store verified every block on the
way in; the fetcher verifies anyway) and serves only peers `may_serve` admits: every
peer in open mode, members in a colony (outsiders use Bitswap, whose filter keeps
private DAGs private).

Bounded: a request holds at most `MAX_ROOTS` roots (a longer range is asked for in
several requests, one after the other); a section at most `MAX_SECTION` bytes
(services/dag_sections.py, which reassembles and hash-checks them); the provider
reads `BATCH_BYTES` of blocks at a time from LMDB on a worker thread; the fetcher's
buffered blocks go through `BlockWriter`'s bound.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog
import trio

from overlay.core.cid import DAG_PB, Cid, sha256_multihash
from overlay.core.errors import ColonyError, WireError
from overlay.core.ids import PeerId
from overlay.core.multiformats import decode_varint, encode_varint
from overlay.core.wire import cbor_decode, cbor_encode
from overlay.p2p.diagnose import describe_stream
from overlay.p2p.yamux import MAX_DATA_FRAME as FRAME
from overlay.runtime.net.transport import Transport
from overlay.runtime.services.dag_sections import Section, Sections, verify_all
from overlay.runtime.services.fetch import BlockWriter, FetchProgress
from store.blockstore import BlockStore
from store.car import CarError
from store.unixfs import link_cids

log = structlog.get_logger("colony.dag_stream")

PROTO_DAG = "/colony/dag/1.0.0"
MAX_ROOTS = 1024
MAX_REQUEST = 64 * 1024
BATCH_BYTES = 8 * 1024 * 1024
READ_BYTES = 4 << 20
#: Received blocks are hash-checked on a worker thread this many bytes at a time.
VERIFY_BYTES = 4 << 20
PACE_BYTES = 1 << 20
#: A stream that delivers nothing for this long is given up (Bitswap takes over).
STALL_S = 20.0
#: Expand the frontier (the sub-DAG roots providers split) while it has fewer roots
#: than this: enough for 8 providers to share and to steal from.
MIN_UNITS = 16
#: Levels expanded at most (each costs one round trip for a few inner blocks).
MAX_EXPAND = 2


class _Stalled(ColonyError):
    """The stream delivered nothing for STALL_S."""


@dataclass
class StreamStats:
    served_streams: int = 0
    served_blocks: int = 0
    served_refused: int = 0
    fetched_blocks: int = 0
    fetched_bytes: int = 0
    streams_failed: int = 0
    #: Failed streams that delivered nothing for STALL_S (their connection is closed).
    streams_stalled: int = 0
    bad_blocks: int = 0
    unexpected_blocks: int = 0
    #: Ranges split to give roots to a provider found late or idle, and streams
    #: stopped because their remaining roots were taken.
    steals: int = 0
    streams_cut: int = 0
    #: Fetched blocks copied out of the received pieces because they spanned two
    #: (frames or socket reads); the others were stored from a view, uncopied.
    fetched_joined: int = 0
    by_peer: dict[str, int] = field(default_factory=dict)


class _Range:
    """Frontier roots [start, stop) of one stream: `at` the last root whose block
    arrived, `next` the first not yet requested. `stop` shrinks when roots are stolen;
    the stream is then `cut` when a root at or past it arrives."""

    __slots__ = ("at", "cut", "dead", "next", "start", "stop")

    def __init__(self, start: int, stop: int) -> None:
        self.start = self.next = start
        self.at = start - 1
        self.stop = stop
        self.cut = False
        #: Its stream failed: no worker runs it; the others take what is left.
        self.dead = False

    def unstarted(self) -> int:
        return max(0, self.stop - self.at - 1)


class _Split:
    """The frontier and its ranges (one per stream, stolen ones included)."""

    __slots__ = ("index", "ranges", "roots")

    def __init__(self, roots: list[Cid]) -> None:
        self.roots = roots
        #: A root's CID bytes (as sections carry them) → its first index.
        self.index: dict[bytes, int] = {}
        for i, c in enumerate(roots):
            self.index.setdefault(c.to_bytes(), i)
        self.ranges: list[_Range] = []

    def deal(self, k: int) -> list[_Range]:
        n = len(self.roots)
        self.ranges = [_Range(i * n // k, (i + 1) * n // k) for i in range(k)]
        return list(self.ranges)

    def track(self, sections: list[Section], rng: _Range) -> list[Section]:
        """Advance `rng.at` over the sections just parsed (before they are verified,
        so a thief sees how far the stream really is); cut them at the first root
        past `rng.stop` (stolen: `rng.cut`)."""
        for j, (cb, _) in enumerate(sections):
            i = self.index.get(cb)
            if i is not None and i >= rng.start:
                if i >= rng.stop:
                    rng.cut = True
                    rng.at = rng.stop - 1  # depth-first: all before it is in
                    return sections[:j]
                rng.at = max(rng.at, i)
        return sections

    def steal(self) -> _Range | None:
        """A new range: the second half of the unstarted roots of the range with the
        most (all of a dead one's); None when no range has two (one if dead)."""
        best: _Range | None = None
        for r in self.ranges:
            need = 1 if r.dead else 2
            if r.unstarted() >= need and (best is None or r.unstarted() > best.unstarted()):
                best = r
        if best is None:
            return None
        u = best.unstarted()
        thief = _Range(best.stop - (u if best.dead else u // 2), best.stop)
        best.stop = thief.start
        self.ranges.append(thief)
        return thief


def _request(roots: Sequence[Cid], only: bool = False) -> bytes:
    body = cbor_encode({"roots": [c.to_bytes() for c in roots], "only": only})
    return encode_varint(len(body)) + body


class DagStreams:
    """Both sides of `/colony/dag/1.0.0` for one node."""

    def __init__(self, transport: Transport, store: BlockStore, writer: BlockWriter,
                 may_serve: Callable[[PeerId], bool] = lambda peer: True) -> None:
        self.transport = transport
        self.store = store
        self.writer = writer
        self.may_serve = may_serve
        self.stats = StreamStats()

    def register(self) -> None:
        self.transport.set_stream_handler(PROTO_DAG, self._serve)

    # ------------------------------------------------------------ provider

    async def _serve(self, peer: PeerId, s: trio.abc.Stream) -> None:
        if not self.may_serve(peer):
            self.stats.served_refused += 1
            await s.aclose()
            return
        buf = bytearray()
        while True:
            try:
                n, i = decode_varint(bytes(buf[:10]))
                if n > MAX_REQUEST:
                    raise ColonyError(f"request of {n} bytes")
                if len(buf) >= i + n:
                    break
            except WireError:
                if len(buf) >= 10:
                    raise ColonyError("malformed request length") from None
            chunk = await s.receive_some(MAX_REQUEST)
            if not chunk:
                return
            buf += chunk
        body = cbor_decode(bytes(buf[i:i + n]))
        raw = body.get("roots") if isinstance(body, dict) else None
        if not isinstance(raw, list) or not 0 < len(raw) <= MAX_ROOTS:
            raise ColonyError(f"a request names 1..{MAX_ROOTS} roots")
        only = bool(body.get("only"))  # the roots' own blocks, not their DAGs
        # Validated here; walked as CID bytes (no `Cid` per block: `_read_batch`).
        roots = [Cid.from_bytes(r).to_bytes() for r in raw if isinstance(r, bytes)]
        self.stats.served_streams += 1
        # Diagnostics: a send blocked for STALL_S / 2 is logged once with the stream's
        # flow-control state (the fetcher gives up on a stream silent for STALL_S).
        sending = 0.0

        async def watch() -> None:
            while True:
                await trio.sleep(STALL_S / 4)
                if sending and trio.current_time() - sending > STALL_S / 2:
                    log.info("dag_stream_send_blocked", peer=str(peer),
                             state=describe_stream(getattr(s, "net", None)))
                    return

        async with trio.open_nursery() as watching:
            watching.start_soon(watch)
            seen: set[bytes] = set()
            stack = list(reversed(roots))
            while stack:
                pieces, stack = await trio.to_thread.run_sync(
                    self._read_batch, stack, seen, only)
                # In ~PACE_BYTES pieces, so `[network] max_send_rate` paces the stream
                # smoothly; each is `bytes`, which the send path queues uncopied, and
                # starts a Yamux frame (one write each: `_read_batch` aligns blocks).
                for piece in pieces:
                    await self.transport.pace(peer, len(piece))
                    sending = trio.current_time()
                    await s.send_all(piece)
                    sending = 0.0
            sending = trio.current_time()
            await s.send_all(b"\x00")  # end of the DAG
            sending = 0.0
            watching.cancel_scope.cancel()
        await s.aclose()

    def _read_batch(self, stack: list[bytes], seen: set[bytes],
                    only: bool = False) -> tuple[list[bytes], list[bytes]]:
        """Up to BATCH_BYTES of frames, depth-first from `stack`, as pieces of about
        PACE_BYTES; what is left to do.

        Each block is copied once: from its zero-copy view into the LMDB map straight
        into the piece that is sent (profiled, the provider copied every block four
        times on its way to the encryption: out of the map, into its section, into
        the batch, and once more in `send_all` for a memoryview).

        The walk holds CID bytes, as requests and the reference index carry them:
        a sha2-256 CID's multihash is a slice of them (`sha256_multihash`), so no
        `Cid` is built per block; anything else takes the general path."""
        pieces: list[bytes] = []
        parts: list[bytes | memoryview] = []
        held = 0  # bytes in `parts`, the piece being built
        size = 0
        with self.store.reader() as r:
            while stack and size < BATCH_BYTES:
                cb = stack.pop()
                mh = sha256_multihash(cb)
                if mh is None:
                    cid = Cid.from_bytes(cb)  # identity or another hash: general path
                    mh = cid.multihash
                if mh in seen:
                    continue
                seen.add(mh)
                # Not re-hashed: every way into the store hashes or hash-checks a
                # block first (import, fetch, Bitswap, CAR), and the fetcher verifies.
                block = r.stored(mh)
                if block is None:
                    block = r.read(Cid.from_bytes(cb), verify=False)  # identity; or raises
                head = encode_varint(len(cb) + len(block)) + cb
                start = held + len(head)
                if held >= PACE_BYTES or start // FRAME != (start + len(block) - 1) // FRAME:
                    # Frame alignment: the send path cuts a piece into Yamux frames
                    # every FRAME bytes from its start, so a block that would cross a
                    # cut here starts the next piece instead, and this piece ends with
                    # its section's head. A 256 KiB block is then one frame, and the
                    # fetcher takes it without copying it when that frame arrived in
                    # one read (services/dag_sections.py); behind a 40-byte head it
                    # always crossed a cut and was copied on the fetcher's loop.
                    parts.append(head)
                    pieces.append(b"".join(parts))  # inside the txn: the views are valid
                    parts, held = [block], len(block)
                else:
                    parts += (head, block)
                    held = start + len(block)
                size += len(block)
                self.stats.served_blocks += 1
                if not only:
                    stack.extend(reversed(r.links(mh) or []))
            if parts:
                pieces.append(b"".join(parts))
        return pieces, stack

    # ------------------------------------------------------------ fetcher

    async def fetch(self, root: Cid, providers: Sequence[PeerId],
                    progress: FetchProgress | None = None,
                    more: trio.MemoryReceiveChannel[PeerId] | None = None) -> int:
        """Stream `root`'s DAG from `providers` into the store; the blocks taken.
        Never raises for a provider's fault: what is missing is left to Bitswap.
        `progress` (a fetch's) counts the blocks, bytes and providers as they come.
        Providers received from `more` while it runs join it (they steal roots)."""
        prog = progress or FetchProgress(str(root))
        if not providers:
            return 0
        taken = 0
        if not self.writer.has(root):
            if len(providers) == 1 and more is None:
                return await self._one(providers[0], [root], {root.multihash}, prog)
            taken += await self._one(providers[0], [root], {root.multihash}, prog,
                                     only_root=True)
            if not self.writer.has(root):
                return taken
        if root.codec != DAG_PB:
            return taken  # a single block
        frontier, got = await self._frontier(root, providers[0], prog)
        taken += got
        if not frontier:
            return taken
        split = _Split(frontier)
        used = set(providers)
        counts: list[int] = []

        async def work(peer: PeerId, rng: _Range | None) -> None:
            counts.append(await self._worker(peer, split, rng, prog))

        async def arrivals(workers: trio.Nursery) -> None:
            assert more is not None
            async for peer in more:
                if peer in used:
                    continue
                used.add(peer)
                try:
                    workers.start_soon(work, peer, None)
                except RuntimeError:  # every range is done: the fetch is ending
                    return

        async with trio.open_nursery() as outer:
            async with trio.open_nursery() as workers:
                ranges: list[_Range | None] = [
                    *split.deal(min(len(providers), len(frontier)))]
                ranges += [None] * (len(providers) - len(ranges))  # they steal
                for peer, rng in zip(providers, ranges, strict=True):
                    workers.start_soon(work, peer, rng)
                if more is not None:
                    outer.start_soon(arrivals, workers)
            outer.cancel_scope.cancel()
        return taken + sum(counts)

    async def _frontier(self, root: Cid, peer: PeerId,
                        prog: FetchProgress) -> tuple[list[Cid], int]:
        """The sub-DAG roots to split: the root's children, expanded level by level
        (their inner blocks fetched from `peer`) while fewer than MIN_UNITS."""
        frontier, taken = [root], 0
        for level in range(MAX_EXPAND + 1):
            inner = [c for c in frontier if c.codec == DAG_PB]
            missing = [c for c in inner if not self.writer.has(c)]
            if missing and len(missing) <= MAX_ROOTS:
                taken += await self._one(peer, missing, {c.multihash for c in missing},
                                         prog, only_root=True)
            nxt: list[Cid] = []
            for c in frontier:
                block = self._block(c) if c.codec == DAG_PB else None
                if block is None:
                    nxt.append(c)  # a leaf, or not here: streamed whole
                else:
                    nxt.extend(Cid.from_bytes(x) for x in link_cids(block))
            frontier = nxt
            if len(frontier) >= MIN_UNITS or level == MAX_EXPAND or not any(
                    c.codec == DAG_PB for c in frontier):
                break
        return frontier, taken

    def _block(self, cid: Cid) -> bytes | memoryview | None:
        block = self.writer.pending_block(cid.multihash)
        if block is None and self.writer.has(cid):
            with self.store.reader() as r:
                block = bytes(r.read(cid, verify=False))
        return block

    async def _worker(self, peer: PeerId, split: _Split, rng: _Range | None,
                      prog: FetchProgress) -> int:
        """Stream `rng` from `peer`, then roots stolen from the others, until none is
        left or a stream fails; the blocks taken."""
        got = 0
        while True:
            if rng is None or rng.next >= rng.stop or rng.cut:
                rng = split.steal()
                if rng is None:
                    return got
                self.stats.steals += 1
            while rng.next < rng.stop and not rng.cut:
                end = min(rng.stop, rng.next + MAX_ROOTS)
                part = split.roots[rng.next:end]
                rng.next = end
                got += await self._one(peer, part, {c.multihash for c in part}, prog,
                                       split=split, rng=rng)
                if rng.dead:
                    return got
                if not rng.cut:
                    rng.at = max(rng.at, end - 1)  # that request is complete

    async def _one(self, peer: PeerId, roots: list[Cid], expected: set[bytes],
                   progress: FetchProgress, only_root: bool = False,
                   split: _Split | None = None, rng: _Range | None = None) -> int:
        """One stream from `peer`; the blocks taken. Failures are logged and counted
        (and mark `rng` dead). With `rng`, the stream stops once a root past its
        `stop` arrives (those were stolen)."""
        got = 0
        key = str(peer)  # base58 once, not per block
        frames = Sections()
        try:
            s = await self.transport.open_stream(peer, PROTO_DAG, timeout=10.0)
        except Exception as e:  # not a colony peer (helia, kubo), or unreachable: Bitswap
            log.debug("dag_stream_unavailable", peer=str(peer), error=repr(e)[:200])
            if rng is not None:
                rng.dead = True  # the other providers take its roots
            return 0
        try:
            await s.send_all(_request(roots, only_root))
            held: list[Section] = []  # whole sections not yet verified

            async def take_held() -> int:
                # Verified VERIFY_BYTES at a time: profiled, handing each wakeup's one
                # or two blocks to a worker thread cost the event loop a fifth of its
                # time in thread hand-offs.
                sections = held[:]
                held.clear()
                try:
                    cids = await trio.to_thread.run_sync(verify_all, sections)
                except CarError:
                    self.stats.bad_blocks += 1
                    raise
                # Back-pressure without stalling the loop: wait for the commit
                # thread rather than commit here (BlockWriter.wait_room).
                await self.writer.wait_room(sum(len(b) for _, b in sections))
                return self._accept(sections, cids, expected, key, progress)

            held_bytes = 0
            while True:
                pieces: list[bytes | memoryview] = []
                with trio.move_on_after(STALL_S) as stall:
                    pieces = await s.receive_pieces(READ_BYTES)
                if stall.cancelled_caught or not pieces:
                    # What arrived whole is still verified and kept.
                    got += await take_held() if held else 0
                    if stall.cancelled_caught:
                        raise _Stalled(f"no data for {STALL_S:g} s")
                    raise ColonyError("the stream ended before the DAG did")
                frames.feed(pieces)
                try:
                    done, sections = frames.split(only_root and len(roots) == 1)
                except CarError:
                    self.stats.bad_blocks += 1
                    got += await take_held() if held else 0  # the whole ones before it
                    raise
                if split is not None and rng is not None and sections:
                    sections = split.track(sections, rng)
                    done = done or rng.cut
                held += sections
                held_bytes += sum(len(b) for _, b in sections)
                if held and (done or held_bytes >= VERIFY_BYTES):
                    held_bytes = 0
                    got += await take_held()
                if done:
                    break
            if rng is not None and rng.cut:
                # Reset, not close: a closed stream's provider would send the rest of
                # the range anyway (our FIN only says we send nothing more).
                self.stats.streams_cut += 1
                await s.reset()
            self.writer.commit_soon()
            return got
        except Exception as e:  # a bad block, a reset, a stall: this stream only
            self.stats.streams_failed += 1
            if rng is not None:
                rng.dead = True
            log.info("dag_stream_failed", peer=str(peer), error=str(e)[:200], blocks=got)
            if isinstance(e, _Stalled):
                # A connection that carries nothing for STALL_S while we wait on it is
                # presumed broken (seen on relayed connections: docs/reliability.md,
                # Open): close it, so Bitswap's next want dials a fresh one instead of
                # timing out on the same path.
                self.stats.streams_stalled += 1
                log.info("dag_stream_stall_state", peer=str(peer),
                         state=describe_stream(getattr(s, "net", None)))
                self.transport.disconnect_soon(peer, f"dag stream stalled: {e}")
            return got
        finally:
            self.stats.by_peer[str(peer)] = self.stats.by_peer.get(str(peer), 0) + got
            self.stats.fetched_joined += frames.joined
            with trio.CancelScope(shield=True):
                await s.aclose()

    def _accept(self, sections: list[Section], cids: list[Cid | None],
                expected: set[bytes], peer_key: str, p: FetchProgress) -> int:
        """Take verified sections that belong to the DAG, in order (parents first)."""
        taken = 0
        # One read transaction for the whole batch, not one per block (profiled).
        have = self.writer.have([c for c in cids if c is not None])
        for (_, block), cid in zip(sections, cids, strict=True):
            if cid is None:
                continue  # identity: nothing to store
            if cid.multihash not in expected:
                self.stats.unexpected_blocks += 1
                raise ColonyError(f"{cid} is not part of the requested DAG")
            expected.discard(cid.multihash)
            links: list[bytes] = []
            if cid.codec == DAG_PB:
                # Inner blocks are small and read back (links, `pending_block`):
                # bytes; raw leaves may stay views of the received plaintext.
                block = bytes(block)
                links = link_cids(block)
            expected.update(sha256_multihash(c) or Cid.from_bytes(c).multihash
                            for c in links)
            if cid.multihash not in have:
                have.add(cid.multihash)  # the same block twice in one batch
                self.writer.add(cid, block, links)
                self.stats.fetched_blocks += 1
                self.stats.fetched_bytes += len(block)
                p.blocks_fetched += 1
                p.bytes_fetched += len(block)
                p.by_peer[peer_key] = p.by_peer.get(peer_key, 0) + 1
            taken += 1
        return taken
