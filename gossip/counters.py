"""Named drop and event counters shared by the parts of the gossip core.

Every bounded map or queue in gossip/ counts its overflow here, and every refused or
stale input counts under a name (`stale_alive`, `relay_dropped`, …). The parts of one
core share a single plain dict, exposed as `Swim.stats`.
"""

from __future__ import annotations


def count(stats: dict[str, int], what: str, n: int = 1) -> None:
    """Add `n` to the counter `what`."""
    stats[what] = stats.get(what, 0) + n
