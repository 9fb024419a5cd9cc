"""Huge pages for a large simulation's memory (Linux; nothing elsewhere).

A full-membership cell of N nodes holds N² member entries: ≈ 1 GiB at N = 2,000 and
≈ 5 GiB at 5,000, touched at random (each event belongs to another node). With 4 KiB
pages the page tables of such a process (≈ 10 MiB at 5 GiB) no longer fit in the
caches either, so a cold load often costs a page walk that misses as well: the
per-event cost of a cell grew with N although the work per event did not
(docs/simulation.md, Performance, "Ninth" and "Tenth"). 2 MiB pages need 512× fewer
translations. This machine's kernel gives transparent huge pages only to memory that
asks for them (`enabled = madvise`), and CPython's small-object arenas never ask, so
`HugePages.maybe_collapse` asks the kernel to collapse the process's anonymous
writable memory into huge pages (`madvise(MADV_COLLAPSE)`, Linux ≥ 6.1: synchronous,
in this process, so its CPU time is counted where it happens) whenever the resident
size has grown by a good part since the last time.

Nothing observable by the simulation changes: the same objects at the same addresses,
mapped with larger pages. Resident memory stays within the pages already touched
(measured: 947 MB before and after at N = 2,000). Where the call is refused (another
OS, an older kernel, THP `never`) it is not tried again.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys

#: linux/mman.h
MADV_COLLAPSE = 25
HUGE_PAGE = 2 << 20
#: Collapse again once the resident size grew by this much and by `GROWTH` since the
#: last time (the bytes already in huge pages are skipped by the kernel, so the work
#: over a run is about the final size).
MIN_GROWTH_BYTES = 64 << 20
GROWTH = 0.10


def _regions(maps: str) -> list[tuple[int, int]]:
    """The 2 MiB-aligned parts of the private anonymous writable mappings (CPython's
    arenas, the malloc heap and its large blocks) in /proc/self/maps text."""
    out = []
    for line in maps.splitlines():
        parts = line.split()
        if len(parts) < 5 or parts[1] != "rw-p" or (len(parts) > 5 and parts[5] != "[heap]"):
            continue
        lo, hi = (int(x, 16) for x in parts[0].split("-"))
        a, b = -(-lo // HUGE_PAGE) * HUGE_PAGE, hi // HUGE_PAGE * HUGE_PAGE
        if b > a:
            out.append((a, b - a))
    return out


class HugePages:
    """Collapses the process's memory into huge pages as it grows (see above)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled and sys.platform == "linux"
        self._page = os.sysconf("SC_PAGE_SIZE") if self.enabled else 4096
        # Growth counts from here: a process that already holds much (a test worker
        # running many small simulations) collapses only what a large simulation adds,
        # not everything it held before, once per `Simulation`.
        self._last_rss = self.rss() if self.enabled else 0
        #: Bytes the kernel collapsed (or found collapsed), over all calls.
        self.collapsed = 0
        self._madvise = None
        if self.enabled:
            try:
                libc = ctypes.CDLL(None, use_errno=True)
                madvise = libc.madvise
                madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
                madvise.restype = ctypes.c_int
                self._madvise = madvise
            except (OSError, AttributeError):
                self.enabled = False

    def rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def maybe_collapse(self) -> int:
        """Collapse if the resident size grew enough since the last call that did;
        returns the bytes collapsed now (0 if not tried or refused)."""
        if not self.enabled:
            return 0
        rss = self.rss()
        grown = rss - self._last_rss
        if grown < MIN_GROWTH_BYTES or grown < GROWTH * self._last_rss:
            return 0
        self._last_rss = rss
        return self.collapse()

    def collapse(self) -> int:
        madvise = self._madvise
        if madvise is None:
            return 0
        with open("/proc/self/maps") as f:
            regions = _regions(f.read())
        done = 0
        refused = False
        for addr, size in regions:
            if madvise(addr, size, MADV_COLLAPSE) == 0:
                done += size
            else:
                # EINVAL: not supported (or not for this mapping); EAGAIN, ENOMEM: no
                # free huge page now. That region stays as it is.
                refused = refused or ctypes.get_errno() == errno.EINVAL
        if refused and not done:
            self.enabled = False  # not supported here: stop asking
        self.collapsed += done
        return done
