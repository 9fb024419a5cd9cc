"""The cell directory (gossip/cell_directory.py): report validation, current cells,
publisher choice and when a node moves."""

from __future__ import annotations

import random

import pytest

from gossip.cell_digest import CellDigest
from gossip.cell_directory import (
    MAX_SEEDS,
    CellDirectory,
    CellReport,
    Seed,
    cell_to_adopt,
    found_after,
    is_publisher,
    publisher_rank,
    should_publish,
)
from gossip.cells import CellId, cell_key
from gossip.resources import ResourceAd
from overlay.core.errors import WireError
from overlay.core.ids import PeerId

ROOT = CellId()
A0, A1 = ROOT.children()


def _peer_in(cell: CellId, rng: random.Random) -> PeerId:
    while True:
        p = PeerId.from_ed25519(rng.randbytes(32))
        if cell.contains(cell_key(p)):
            return p


def _report(cell: CellId, members: int, issued: float, seeds: tuple[Seed, ...] = ()) -> CellReport:
    return CellReport(CellDigest(cell, issued, members), seeds)


def test_report_round_trips_and_speaks_only_for_the_responders_cell() -> None:
    rng = random.Random(1)
    me, seed = _peer_in(A0, rng), _peer_in(A0, rng)
    ads = [ResourceAd.make(cpu_cores=4), None]
    rep = CellReport(CellDigest.of(A0, ads, 10.0), (Seed(seed, ("/ip4/127.0.0.1/tcp/1",)),))
    assert CellReport.from_wire(rep.to_wire(), me) == rep
    with pytest.raises(WireError, match="another cell"):
        CellReport.from_wire(rep.to_wire(), _peer_in(A1, rng))
    outsider = CellReport(rep.digest, (Seed(_peer_in(A1, rng), ()),))
    with pytest.raises(WireError, match="outside the reported cell"):
        CellReport.from_wire(outsider.to_wire(), me)


@pytest.mark.parametrize("wire", [
    None, [], [42], [41, [], []], [42, "x", []],
    [42, [41, "/0", 1.0, 1, []], "seeds"],
    [42, [41, "/0", 1.0, 1, []], [[b"junk", []]]],
    [42, [41, "/0", 1.0, 1, []], [["text", []]]],
    [42, [41, "/0", 1.0, 1, []], [[b"", []]] * (MAX_SEEDS + 1)],
])
def test_malformed_reports_raise_wire_errors(wire: object) -> None:
    me = _peer_in(A0, random.Random(2))
    with pytest.raises(WireError):
        CellReport.from_wire(wire, me)


def test_leaves_prefer_descendants_and_reports_age_out() -> None:
    rng = random.Random(3)
    d = CellDirectory("", ttl_s=10.0)
    src = _peer_in(ROOT, rng)
    assert d.heard(_report(ROOT, 9, 1.0), src, now=0.0)  # a member that has not split yet
    d.heard(_report(A0, 4, 0.5), src, now=1.0)
    d.heard(_report(A1, 5, 0.5), src, now=1.0)
    assert [r.cell for r in d.leaves(2.0)] == [A0, A1]
    assert not d.heard(_report(A0, 3, 0.1), src, now=2.0)  # older than the one held
    assert d.report(A0, 2.0) is not None and d.report(A0, 2.0).digest.members == 4  # type: ignore[union-attr]
    assert not d.heard(_report(CellId("eu"), 3, 5.0), src, now=2.0)  # another site's
    assert [r.cell for r in d.leaves(10.5)] == [A0, A1]  # the root aged out first
    assert d.leaves(11.5) == []
    d.heard(_report(ROOT, 6, 20.0), src, now=12.0)  # merged
    d.heard(_report(A0, 3, 19.0), src, now=12.0)
    d.forget_under(ROOT)
    assert [r.cell for r in d.leaves(12.0)] == [ROOT]


def test_the_publisher_is_the_smallest_hash_in_every_view() -> None:
    rng = random.Random(4)
    peers = [_peer_in(ROOT, rng) for _ in range(6)]
    best = min(peers, key=publisher_rank)
    assert [is_publisher(p, peers) for p in peers].count(True) == 1
    assert is_publisher(best, peers) and is_publisher(best, [best])


def test_a_lower_ranked_member_publishes_once_its_cell_went_unreported_long_enough() -> None:
    """The wedge sim/cells_rdv.py found: the top-ranked member of a view is an unplaced
    joiner (it publishes only once placed, by a report) and the old publisher crashed
    (its record lingers): the next members take over, one more round per rank."""
    rng = random.Random(5)
    peers = sorted((_peer_in(ROOT, rng) for _ in range(4)), key=publisher_rank)
    top, second, third = peers[0], peers[1], peers[2]

    def pub(p: PeerId, *, placed: bool = True, found: int | None = 1, unreported: int = 0
            ) -> bool:
        return should_publish(p, peers, placed=placed, found=found, unreported=unreported)

    assert pub(top) and not pub(second) and not pub(third)
    # Unplaced: only the top-ranked, and only when nothing at all is published.
    assert pub(top, placed=False, found=0) and not pub(top, placed=False, found=2)
    assert not pub(second, placed=False, found=0, unreported=9)
    # Unreported for longer than its rank: rank 1 after 2 rounds, rank 2 after 3.
    assert not pub(second, unreported=1) and pub(second, unreported=2)
    assert not pub(third, unreported=2) and pub(third, unreported=3)


def test_a_node_moves_down_when_placed_or_settled_up_only_when_alone() -> None:
    key = 0b10 << 62  # in /1 and /10
    a10, a11 = A1.children()
    leaves = [A0, a10, a11]
    # A joiner at the root (first reading): down to the leaf holding its key.
    assert cell_to_adopt(ROOT, key, leaves, first=True, settled=False, alone=False) == a10
    # Just after a change of its own (e.g. a merge), reports may be stale: stay.
    assert cell_to_adopt(ROOT, key, leaves, first=False, settled=False, alone=False) is None
    # Settled and still above the leaves: it missed a split; go down.
    assert cell_to_adopt(A1, key, leaves, first=False, settled=True, alone=False) == a10
    # With cell-mates it never moves up, settled or not.
    assert cell_to_adopt(a10, key, [A0, A1], first=False, settled=True, alone=False) is None
    # Its cell merged while it was away: alone, it goes to the cell holding its key.
    assert cell_to_adopt(a10, key, [A0, A1], first=False, settled=False, alone=True) == A1
    assert cell_to_adopt(a10, key, leaves, first=True, settled=True, alone=True) is None
    # Alone in a cell nobody else reports, next to known leaves: it stays.
    assert cell_to_adopt(a10, key, [A0, a11], first=False, settled=True, alone=True) is None
    # Only the leaf it cannot see: the cover invariant gives the depth.
    assert cell_to_adopt(ROOT, key, [A0], first=True, settled=False, alone=False) == A1
    assert cell_to_adopt(ROOT, key, [], first=True, settled=True, alone=True) is None


def test_a_node_left_in_a_merged_child_follows_its_cell_mates_up() -> None:
    """Seen in a 9-daemon run: of three survivors of /00 and /01 two merged into /0;
    the third's sibling digest expired before its hold time ran out, and it stayed in
    /00 (still listing one cell-mate, now in /0) for good."""
    key = 0b001 << 61  # in /0 and /00
    a00, a01 = A0.children()
    merge_at = 0.8 * 4
    # The others report /0; its own cell (2 live) is below the threshold: up.
    assert cell_to_adopt(a00, key, [A0, A1], first=False, settled=True, alone=False,
                         sizes={A0: 3, A1: 4}, live=2, merge_at=merge_at) == A0
    # Not before it settled (a stale parent report from before a split), nor when its
    # own cell is big enough to stand on its own (a split it took part in).
    assert cell_to_adopt(a00, key, [A0, A1], first=False, settled=False, alone=False,
                         sizes={A0: 3, A1: 4}, live=2, merge_at=merge_at) is None
    assert cell_to_adopt(a00, key, [A0, A1], first=False, settled=True, alone=False,
                         sizes={A0: 5, A1: 4}, live=4, merge_at=merge_at) is None
    # Its stranded cell-mates (or a provider that once published /00) still report
    # /00: that does not hold it back (each would hide /0 from the other for good).
    assert cell_to_adopt(a00, key, [a00, A1], first=False, settled=True, alone=False,
                         sizes={A0: 3, a00: 2, A1: 4}, live=2, merge_at=merge_at) == A0
    # But a reported sibling that makes the pair big enough keeps it (a split, not a
    # merge, left /0's report behind).
    assert cell_to_adopt(a00, key, [a00, a01, A1], first=False, settled=True,
                         alone=False, sizes={A0: 5, a00: 2, a01: 3, A1: 4}, live=2,
                         merge_at=merge_at) is None
    # Several levels up at once: nothing is reported under /0.
    assert cell_to_adopt(a00.child(1), key, [A0], first=False, settled=True,
                         alone=False, sizes={A0: 3}, live=1, merge_at=merge_at) == A0
    # A member of /0 does not move down into a child holding fewer than the threshold
    # (it is merging into /0), so the two nodes never swap places...
    assert cell_to_adopt(A0, key, [a00, A1], first=False, settled=True, alone=False,
                         sizes={a00: 2, A1: 4}, live=3, merge_at=merge_at) is None
    # ...but it does into children that together hold more (a split it missed).
    assert cell_to_adopt(A0, key, [a00, a01, A1], first=False, settled=True, alone=False,
                         sizes={a00: 3, a01: 2, A1: 4}, live=5, merge_at=merge_at) == a00


def test_own_reports_do_not_hide_the_others() -> None:
    rng = random.Random(5)
    me, other = _peer_in(A0.child(1), rng), _peer_in(A0, rng)
    d = CellDirectory("", ttl_s=10.0)
    d.heard(_report(A0, 3, 1.0), other, now=0.0)  # merged
    d.heard(_report(A0.child(1), 1, 1.0), me, now=0.0)  # we are still in the child
    assert [r.cell for r in d.leaves(1.0)] == [A0.child(1)]
    assert [r.cell for r in d.leaves(1.0, exclude=me)] == [A0]


def test_a_failed_lookup_keeps_the_providers_found_before() -> None:
    # A DHT call that timed out says nothing about what is published: a node that
    # found 3 providers must not read "none published" (and place or publish at the
    # root) because its next lookup failed.
    assert found_after(3, None) == 3
    assert found_after(3, 0) == 0  # a lookup that answered "none" is believed
    assert found_after(None, 5) == 5
    assert found_after(None, None) == 0  # before any reading, as a lone first node
    assert found_after(0, None) == 0
