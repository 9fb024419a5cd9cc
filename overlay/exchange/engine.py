"""Sans-IO Bitswap engine: fetch blocks from several providers, serve our own.

Fetching: each wanted CID is asked (want-block, send-dont-have) of one provider at a
time; the provider is the one with the fewest requests in flight that has not yet
failed this CID, so a DAG's blocks spread over every provider in parallel and a slow
provider gets less work. DONT_HAVE or an unreachable peer moves the want to the next
provider; after every provider failed it, the want is retried up to `max_rounds`
times, then reported unavailable.

Frame loss: a timeout is not DONT_HAVE. Frames are lost on the way (a full send queue
at the provider or here, a full driver inbox, a reset stream), so a want that timed
out is re-sent at once, to another provider if one has not timed out on it yet, else
to the same ones again; a failed send to the only provider left (PeerUnreachable)
counts as a timeout and keeps that provider. A want is not timed out while its
provider is still answering, in order, the wants sent before it (a slow link drains
a full window more slowly than `want_timeout_s`): its deadline moves on instead.
A want is reported unavailable only when
every provider said DONT_HAVE (or became unreachable) in `max_rounds` rounds, or after
`max_timeouts` timeouts: about `max_timeouts * want_timeout_s` of silence, the bound
the fetch's stall limit follows.

Verification: every block's bytes are hashed against its CID before it is handed on
(the wire decoder rebuilds the CID from the prefix too, but in-process delivery skips
the decoder), so bytes that do not match a wanted CID are never delivered as it.
Blocks nobody asked for count against the sender; after
`bad_block_limit` of them the peer is disconnected and dropped as a provider.

Serving: a peer's want-list is answered at once from a read-only `BlockSource` (the
LMDB store in the daemon, a dict in the simulator) in responses of at most
`max_response_bytes`; no per-peer state is kept, so wants cost us no memory.

Invariants: every map is bounded (documented on its config field); dict iteration
only, never sets, so the simulator stays deterministic. Each want is either waiting
for a provider (`_retry` if it was sent before and released — retried first, so a
want that keeps failing is settled promptly — else `_idle`) or in flight (`_out`,
in the order it was sent, which is deadline order: every deadline is
`now + want_timeout_s`), so timeouts and the timer cost work in proportion to the
wants in flight, not to the fetch queue.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Protocol

from overlay.core.cid import verify_bytes
from overlay.core.effects import (
    CancelTimer,
    Disconnect,
    Effect,
    Emit,
    PeerUnreachable,
    Received,
    Send,
    SetTimer,
    TimerFired,
)
from overlay.core.ids import PeerId
from overlay.exchange.messages import (
    BitswapMessage,
    Block,
    BlockPresence,
    Presence,
    WantEntry,
    WantType,
)

TIMER = ("bitswap", "want-timeout")


class BlockSource(Protocol):
    """Read-only view of the local block store."""

    def get_block(self, cid: bytes) -> bytes | None: ...

    def has_block(self, cid: bytes) -> bool: ...


@dataclass(frozen=True, slots=True)
class ExchangeConfig:
    want_timeout_s: float = 15.0
    #: Requests in flight per provider (pipelining depth).
    max_inflight_per_peer: int = 32
    #: Full passes over the provider list before a want is reported unavailable.
    max_rounds: int = 2
    #: Timeouts of one want (lost frames, silent providers) before it is unavailable.
    max_timeouts: int = 4
    #: Bytes of blocks per response message (Bitswap messages are ≤ 4 MiB).
    max_response_bytes: int = 2 * 1024 * 1024
    #: Unsolicited blocks tolerated from one peer before it is disconnected.
    bad_block_limit: int = 3
    #: Outstanding wants (whole fetch queue).
    max_wants: int = 1_000_000
    #: Recently completed CIDs remembered to tell late duplicates from junk.
    recent_done: int = 8192


# ---------------------------------------------------------------- commands


@dataclass(frozen=True, slots=True)
class Fetch:
    """Want these blocks; ask these providers (added to the known providers)."""

    cids: tuple[bytes, ...]
    providers: tuple[PeerId, ...] = ()


@dataclass(frozen=True, slots=True)
class AddProviders:
    peers: tuple[PeerId, ...]


@dataclass(frozen=True, slots=True)
class CancelFetch:
    cids: tuple[bytes, ...]


# ---------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class BlockReceived:
    cid: bytes
    data: bytes
    peer: PeerId


@dataclass(frozen=True, slots=True)
class BlockUnavailable:
    cid: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class PeerPenalised:
    peer: PeerId
    reason: str


@dataclass(slots=True)
class _Want:
    peer: PeerId | None = None
    deadline: float = 0.0
    failed: list[PeerId] = field(default_factory=list)
    #: Providers whose answer to this want was lost (timed out) in the current pass.
    slow: list[PeerId] = field(default_factory=list)
    rounds: int = 0
    timeouts: int = 0
    #: Send order of the want's current request (per engine), to tell a lost want
    #: (a later one to the same provider was answered) from one queued behind others.
    seq: int = 0


@dataclass(slots=True)
class ExchangeStats:
    blocks_received: int = 0
    bytes_received: int = 0
    duplicate_blocks: int = 0
    unsolicited_blocks: int = 0
    blocks_served: int = 0
    bytes_served: int = 0
    dont_have_sent: int = 0
    timeouts: int = 0
    #: Wants re-sent after a timeout (the answer or the want was lost on the way).
    rewants: int = 0
    #: Deadlines extended because the provider was still answering the wants sent
    #: before this one (a slow link, not a lost frame).
    deferrals: int = 0
    want_drops: int = 0
    received_by_peer: dict[PeerId, int] = field(default_factory=dict)


class Exchange:
    def __init__(self, me: PeerId, source: BlockSource, config: ExchangeConfig | None = None):
        self.me = me
        self.source = source
        self.config = config or ExchangeConfig()
        self.stats = ExchangeStats()
        self._wants: dict[bytes, _Want] = {}
        #: Wants not in flight: released ones (retried first, as the oldest), then
        #: never-sent ones in queue order; and wants in flight, in deadline order.
        self._retry: dict[bytes, None] = {}
        self._idle: dict[bytes, None] = {}
        self._out: dict[bytes, None] = {}
        self._providers: dict[PeerId, None] = {}
        self._inflight: dict[PeerId, int] = {}
        self._bad: dict[PeerId, int] = {}
        self._done: OrderedDict[bytes, None] = OrderedDict()
        self._timer_at: float | None = None
        self._seq = 0
        #: Per provider: the highest `seq` it answered and when it last answered.
        self._answered: dict[PeerId, tuple[int, float]] = {}

    # ------------------------------------------------------------ queries

    @property
    def providers(self) -> list[PeerId]:
        return list(self._providers)

    def wanted(self) -> list[bytes]:
        return list(self._wants)

    def inflight(self, peer: PeerId) -> int:
        return self._inflight.get(peer, 0)

    # ------------------------------------------------------------ entry point

    def handle(self, inp: object, now: float) -> list[Effect]:
        out: list[Effect] = []
        if isinstance(inp, Received) and isinstance(inp.msg, BitswapMessage):
            self._on_message(inp.peer, inp.msg, now, out)
        elif isinstance(inp, TimerFired) and inp.timer == TIMER:
            self._timer_at = None
            self._on_timeouts(now, out)
        elif isinstance(inp, Fetch):
            for p in inp.providers:
                self._add_provider(p)
            for cid in inp.cids:
                if cid not in self._wants:
                    if len(self._wants) >= self.config.max_wants:
                        self.stats.want_drops += 1
                        continue
                    self._wants[cid] = _Want()
                    self._idle[cid] = None
        elif isinstance(inp, AddProviders):
            for p in inp.peers:
                self._add_provider(p)
        elif isinstance(inp, CancelFetch):
            self._cancel(inp.cids, out)
        elif isinstance(inp, PeerUnreachable):
            self._unreachable(inp.peer, now)
        else:
            return out
        self._dispatch(now, out)
        self._arm_timer(out)
        return out

    # ------------------------------------------------------------ fetching

    def _add_provider(self, peer: PeerId) -> None:
        if peer != self.me and self._bad.get(peer, 0) < self.config.bad_block_limit:
            self._providers.setdefault(peer, None)

    def _drop_provider(self, peer: PeerId, now: float) -> None:
        self._providers.pop(peer, None)
        self._answered.pop(peer, None)
        for cid in list(self._out):
            w = self._wants[cid]
            if w.peer == peer:
                self._release(cid, w, peer, failed=True)

    def _unreachable(self, peer: PeerId, now: float) -> None:
        """Frames to `peer` were dropped (its stream failed, a dial failed).

        Another provider takes its wants; the only provider left is kept and asked
        again, its wants counting a timeout each (forgotten, it left those wants
        waiting for a provider until the fetch's stall limit).
        """
        if list(self._providers) != [peer]:
            self._drop_provider(peer, now)
            return
        for cid in list(self._out):
            w = self._wants[cid]
            if w.peer == peer:
                w.timeouts += 1
                self._release(cid, w, peer, failed=False)
                w.slow.append(peer)

    def _release(
        self, cid: bytes, w: _Want, peer: PeerId, *, failed: bool, requeue: bool = True
    ) -> None:
        """The want is no longer in flight at `peer`; idle again unless it is done."""
        w.peer = None
        self._inflight[peer] = max(0, self._inflight.get(peer, 0) - 1)
        self._out.pop(cid, None)
        if requeue:
            self._retry[cid] = None
        if failed:
            w.failed.append(peer)

    def _unidle(self, cid: bytes) -> None:
        self._retry.pop(cid, None)
        self._idle.pop(cid, None)

    def _pick(self, w: _Want) -> PeerId | None:
        best: PeerId | None = None
        best_load = self.config.max_inflight_per_peer
        for p in self._providers:
            load = self._inflight.get(p, 0)
            if load < best_load and p not in w.failed and p not in w.slow:
                best, best_load = p, load
        return best

    def _dispatch(self, now: float, out: list[Effect]) -> None:
        batches: dict[PeerId, list[WantEntry]] = {}
        unavailable: list[bytes] = []
        # Every idle want is looked at, even when every provider is at its window: a
        # want every provider failed must be retried or reported unavailable now (with
        # a break at zero room it went to the back of the queue behind never-sent
        # wants and, while blocks kept being lost, was never settled: a silent stall).
        for cid in [*self._retry, *self._idle]:
            w = self._wants[cid]
            peer = self._pick(w)
            if peer is None and not self._providers and (w.failed or w.timeouts or w.rounds):
                unavailable.append(cid)  # every provider it was sent to is gone
                continue
            if peer is None and w.slow:
                # Every provider left timed out on it: its frames were lost, not
                # refused. Ask them again now, unless it timed out too often.
                if w.timeouts >= self.config.max_timeouts:
                    unavailable.append(cid)
                    continue
                w.slow.clear()
                peer = self._pick(w)
            if peer is None and w.failed and len(w.failed) >= len(self._providers):
                # Every provider failed this CID: start another round or give up.
                w.rounds += 1
                if w.rounds >= self.config.max_rounds:
                    unavailable.append(cid)
                    continue
                w.failed.clear()
                peer = self._pick(w)
            if peer is None:
                continue  # all providers busy (or none yet): wait for capacity
            w.peer = peer
            if w.timeouts:
                self.stats.rewants += 1
            w.deadline = now + self.config.want_timeout_s
            self._seq += 1
            w.seq = self._seq
            self._inflight[peer] = self._inflight.get(peer, 0) + 1
            self._unidle(cid)
            self._out[cid] = None
            batches.setdefault(peer, []).append(
                WantEntry(cid, priority=1, want_type=WantType.BLOCK, send_dont_have=True)
            )
        for cid in unavailable:
            w = self._wants.pop(cid)
            self._unidle(cid)
            out.append(Emit(BlockUnavailable(cid, self._why(w))))
        for peer, entries in batches.items():
            out.append(Send(peer, BitswapMessage(wants=tuple(entries))))

    def _why(self, w: _Want) -> str:
        tried = len(self._providers)
        if not tried:
            return "no providers known"
        if w.timeouts >= self.config.max_timeouts:
            return f"no provider answered: timed out {w.timeouts} times ({tried} providers)"
        return f"no provider delivered it ({tried} providers, {w.rounds} rounds)"

    def _on_timeouts(self, now: float, out: list[Effect]) -> None:
        cancels: dict[PeerId, list[WantEntry]] = {}
        for cid in list(self._out):  # deadline order: stop at the first one not due
            w = self._wants[cid]
            if w.deadline > now or w.peer is None:
                break
            peer = w.peer
            if self._queued_behind(w, peer, now):
                # The provider answers in order and is still working through the
                # wants sent before this one: on a slow link (a relay, a lossy WAN)
                # a full window takes longer than `want_timeout_s` to drain. Re-
                # asking would only send the same bytes twice and, after
                # `max_timeouts`, report a block unavailable that is arriving.
                self.stats.deferrals += 1
                w.deadline = now + self.config.want_timeout_s
                del self._out[cid]
                self._out[cid] = None  # the latest deadline: deadline order holds
                continue
            self.stats.timeouts += 1
            w.timeouts += 1
            self._release(cid, w, peer, failed=False)
            w.slow.append(peer)
            cancels.setdefault(peer, []).append(WantEntry(cid, cancel=True))
        for peer, entries in cancels.items():
            out.append(Send(peer, BitswapMessage(wants=tuple(entries))))

    def _queued_behind(self, w: _Want, peer: PeerId, now: float) -> bool:
        """True if `peer` answered within the last timeout but no want sent after `w`.

        A provider that answered a later want has skipped this one: its want or its
        answer was lost, so it times out. One silent for a whole timeout times out
        too. The wait is bounded: new wants go behind this one, so the queue in
        front of it only drains.
        """
        answered = self._answered.get(peer)
        if answered is None:
            return False
        top, at = answered
        return top < w.seq and at > now - self.config.want_timeout_s

    def _note_answer(self, peer: PeerId, w: _Want, now: float) -> None:
        top, _ = self._answered.get(peer, (0, now))
        self._answered[peer] = (max(top, w.seq), now)

    def _cancel(self, cid_list: tuple[bytes, ...], out: list[Effect]) -> None:
        cancels: dict[PeerId, list[WantEntry]] = {}
        for cid in cid_list:
            w = self._wants.pop(cid, None)
            self._unidle(cid)
            if w is not None and w.peer is not None:
                peer = w.peer
                self._release(cid, w, peer, failed=False, requeue=False)
                cancels.setdefault(peer, []).append(WantEntry(cid, cancel=True))
                # The block may already be on its way: when it comes it is a late
                # duplicate, not a made-up block to penalise the provider for.
                self._remember_done(cid)
        for peer, entries in cancels.items():
            out.append(Send(peer, BitswapMessage(wants=tuple(entries))))

    def _arm_timer(self, out: list[Effect]) -> None:
        earliest = self._wants[next(iter(self._out))].deadline if self._out else None
        if earliest == self._timer_at:
            return
        self._timer_at = earliest
        out.append(CancelTimer(TIMER) if earliest is None else SetTimer(TIMER, earliest))

    def _remember_done(self, cid: bytes) -> None:
        self._done[cid] = None
        if len(self._done) > self.config.recent_done:
            self._done.popitem(last=False)

    # ------------------------------------------------------------ inbound

    def _on_message(self, peer: PeerId, msg: BitswapMessage, now: float, out: list[Effect]) -> None:
        for block in msg.blocks:
            self._on_block(peer, block, now, out)
        for pres in msg.presences:
            w = self._wants.get(pres.cid)
            if pres.presence == Presence.DONT_HAVE and w is not None and w.peer == peer:
                self._note_answer(peer, w, now)
                self._release(pres.cid, w, peer, failed=True)
        if msg.wants or msg.full:
            self._serve(peer, msg, out)

    def _on_block(self, peer: PeerId, block: Block, now: float, out: list[Effect]) -> None:
        # Hash-check once: the wire decoder already rebuilt the CID from the data's
        # hash (`verified`); in-process delivery (simulator, tests) skips decoding, so
        # those blocks are hashed here. Nothing unverified is handed on (DESIGN §4).
        genuine = block.verified or verify_bytes(block.cid, block.data)
        w = self._wants.pop(block.cid, None) if genuine else None
        if w is not None:
            self._unidle(block.cid)
            if w.peer is not None:
                if w.peer == peer:
                    self._note_answer(peer, w, now)
                self._release(block.cid, w, w.peer, failed=False, requeue=False)
            self._remember_done(block.cid)
            self.stats.blocks_received += 1
            self.stats.bytes_received += len(block.data)
            by = self.stats.received_by_peer
            by[peer] = by.get(peer, 0) + 1
            self._add_provider(peer)
            out.append(Emit(BlockReceived(block.cid, block.data, peer)))
            return
        if genuine and block.cid in self._done:
            self.stats.duplicate_blocks += 1
            return
        # Bytes that match no CID we want: a corrupt or made-up block.
        self.stats.unsolicited_blocks += 1
        bad = self._bad[peer] = self._bad.get(peer, 0) + 1
        if bad == 1:
            out.append(Emit(PeerPenalised(peer, "sent a block that matches no wanted CID")))
        if bad >= self.config.bad_block_limit:
            self._drop_provider(peer, now)
            out.append(Disconnect(peer, f"bitswap: {bad} blocks matching no wanted CID"))

    # ------------------------------------------------------------ serving

    def _serve(self, peer: PeerId, msg: BitswapMessage, out: list[Effect]) -> None:
        """Answer a want-list at once from what we hold; keep no per-peer state.

        go-bitswap remembers wants for blocks it lacks and sends them when they arrive;
        we answer DONT_HAVE (when asked) instead, so a peer's wants cost us no memory
        beyond the message itself; its session re-asks or moves to another provider.
        """
        blocks: list[Block] = []
        presences: list[BlockPresence] = []
        size = 0
        for e in msg.wants:
            if e.cancel:
                continue  # nothing is pending on our side to cancel
            if e.want_type == WantType.HAVE:
                has = self.source.has_block(e.cid)
                if has or e.send_dont_have:
                    presences.append(
                        BlockPresence(e.cid, Presence.HAVE if has else Presence.DONT_HAVE)
                    )
                continue
            data = self.source.get_block(e.cid)
            if data is None:
                if e.send_dont_have:
                    presences.append(BlockPresence(e.cid, Presence.DONT_HAVE))
                    self.stats.dont_have_sent += 1
                continue
            if blocks and size + len(data) > self.config.max_response_bytes:
                out.append(Send(peer, BitswapMessage(blocks=tuple(blocks))))
                blocks, size = [], 0
            blocks.append(Block(e.cid, bytes(data)))
            size += len(data)
            self.stats.blocks_served += 1
            self.stats.bytes_served += len(data)
        if blocks or presences:
            out.append(Send(peer, BitswapMessage(blocks=tuple(blocks), presences=tuple(presences))))
