"""MemberView caching edge cases: the directory's change log overflowing, `update`
replacing the whole set, and an answer with fewer than k members."""

import random

from overlay.capsule.members import MAX_CHANGE_LOG, Directory, Member, MemberView
from overlay.core.crypto import KeyPair
from overlay.core.ids import PeerId

PEERS = [KeyPair.from_rng_seed(random.Random(i).randbytes(32)).peer_id for i in range(40)]


def brute(view: MemberView, d: Directory, target: int, k: int) -> list[PeerId]:
    return sorted((p for p in d.live if view.is_live(p)), key=lambda p: p.key ^ target)[:k]


def test_answers_survive_far_changes_and_notice_near_ones_after_log_overflow() -> None:
    d = Directory(Member(p) for p in PEERS[:20])
    view = MemberView(PEERS[0], directory=d)
    target = PEERS[5].key
    assert view.closest(target, 3) == brute(view, d, target, 3)
    # More changes than the log keeps: the cached answer must be recomputed.
    for _ in range(MAX_CHANGE_LOG // 2 + 1):
        d.put(Member(PEERS[30]))
        d.remove(PEERS[30])
    d.remove(PEERS[5])
    assert PEERS[5] not in view.closest(target, 3)
    assert view.closest(target, 3) == brute(view, d, target, 3)


def test_update_replaces_the_set_and_small_answers_grow() -> None:
    view = MemberView(PEERS[0])
    target = PEERS[7].key
    assert view.closest(target, 3) == [PEERS[0]]  # only itself: fewer than k
    view.update([Member(p) for p in PEERS[:10]])
    assert view.closest(target, 3) == brute(view, view.directory, target, 3)
    view.directory.put(Member(PEERS[11]))
    assert view.closest(target, 3) == brute(view, view.directory, target, 3)
    assert view.leader(target, 3) == PEERS[7]
