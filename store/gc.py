"""Mark-and-sweep garbage collection of unpinned blocks.

Mark: every recursive pin's DAG (walked through the reference index, never decoding a
block) and every direct pin's block. Sweep: every other block is deleted, in batched
write transactions. GC holds the store lock exclusively, so it cannot run while an
import (which holds it shared until its root is pinned) is adding blocks: a half-done
import is never collected from under its writer (kubo's GC lock).

Missing blocks inside a pinned DAG are tolerated while marking (the pin may have been
made before a `block rm`); they are reported in `GcResult.missing`.

Memory: the mark set holds one 34-byte multihash per live block (~70 bytes with the
set's overhead) — 70 MB per million pinned blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

from overlay.core.cid import Cid
from store.blockstore import BlockStore
from store.pins import PinMode, Pins, walk

SWEEP_BATCH = 1024


@dataclass(frozen=True, slots=True)
class GcResult:
    removed_blocks: int
    removed_bytes: int
    kept_blocks: int
    missing: int


def mark(store: BlockStore) -> tuple[set[bytes], int]:
    """(multihashes reachable from pins, number of missing blocks seen)."""
    live: set[bytes] = set()
    missing: set[bytes] = set()

    def note_missing(cid: Cid) -> None:
        missing.add(cid.multihash)

    with store.reader() as r:
        for pin in Pins(store).ls():
            if pin.mode is PinMode.DIRECT:
                if r.has(pin.cid):
                    live.add(pin.cid.multihash)
                else:
                    missing.add(pin.cid.multihash)
                continue
            live.update(walk(r, pin.cid, on_missing=note_missing))
    return live, len(missing)


def collect(store: BlockStore) -> GcResult:
    """Delete every block not reachable from a pin."""
    with store.lock(exclusive=True):
        live, missing = mark(store)
        removed = 0
        removed_bytes = 0
        kept = 0
        doomed: list[bytes] = []
        for keys in store.iter_multihashes():
            for mh in keys:
                if mh in live:
                    kept += 1
                else:
                    doomed.append(mh)
                if len(doomed) >= SWEEP_BATCH:
                    n, b = store.delete_many(doomed)
                    removed += n
                    removed_bytes += b
                    doomed = []
        if doomed:
            n, b = store.delete_many(doomed)
            removed += n
            removed_bytes += b
    return GcResult(removed, removed_bytes, kept, missing)
