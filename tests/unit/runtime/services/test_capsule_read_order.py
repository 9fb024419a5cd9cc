"""A read picks the custody copy of highest (epoch, leader, version)
(services/capsule_info.newest_copy), not the highest version: after a partition, the
minority leader's own copy can carry a higher version than the epoch that replaced it
(seen in the real-daemon partition run of 2026-12-06, where the versions happened to
order the copies right)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from overlay.capsule.leases import CustodyRecord, State
from overlay.capsule.spec import Capsule, CapsuleSpec
from overlay.core.crypto import KeyPair
from overlay.runtime.services.capsule_info import newest_copy

KEYS = [KeyPair.from_rng_seed(bytes([i]) * 32) for i in range(1, 5)]
P = [k.peer_id for k in KEYS]
CAP = Capsule.sign(KEYS[0], CapsuleSpec(name="x", command=("true",)), 1000.0, 1)
BASE = CustodyRecord(CAP, P[0])


def test_the_later_epoch_wins_over_a_higher_version_of_the_earlier() -> None:
    stale = replace(BASE, state=State.FAILED, version=12, epoch=5, config=(P[0], P[1], P[2]))
    current = replace(BASE, state=State.SUCCEEDED, version=6, epoch=6,
                      config=(P[1], P[2], P[3]))
    assert newest_copy(stale, [current]) is current
    assert newest_copy(current, [stale]) is current
    assert newest_copy(None, [stale, current]) is current


def test_within_one_ballot_the_higher_version_wins_and_nothing_found_keeps_ours() -> None:
    v3 = replace(BASE, version=3, epoch=5, config=(P[0], P[1], P[2]))
    v4 = replace(v3, version=4)
    assert newest_copy(v3, [v4]) is v4
    assert newest_copy(v4, []) is v4
    assert newest_copy(None, []) is None


def _receipt_by(rec: CustodyRecord, key: KeyPair, token: int) -> CustodyRecord:
    from overlay.capsule.receipts import Receipt

    r = Receipt.sign(key, CAP.id, token, 0, (), "", 1.0, 2.0)
    return replace(rec, state=State.SUCCEEDED, token=token, receipt=r)


def test_a_deposed_leaders_uncommitted_outcome_is_never_the_reads_answer() -> None:
    """The 2026-12-06 run: n0 (epoch 5's leader, cut off) holds 'succeeded, run by n0',
    never committed; its committed copy is the lease. Epoch 6 committed n2's run."""
    from overlay.capsule.custody_table import Report
    from overlay.runtime.services.capsule_info import (
        UNCONFIRMED,
        acted_on,
        merge_reports,
        report_from_wire,
        report_json,
        report_to_wire,
    )

    leased = replace(BASE, state=State.RUNNING, version=3, epoch=5, token=5 << 22 | 1,
                     executor=P[0], config=(P[0], P[1], P[2]))  # fmt: skip
    mine = _receipt_by(replace(leased, version=4), KEYS[0], leased.token)
    theirs = _receipt_by(replace(BASE, version=7, epoch=6, config=(P[1], P[2], P[3])),
                         KEYS[2], 6 << 22 | 1)  # fmt: skip
    n0 = Report(leased, mine)
    # Cut off: n0 alone answers; the outcome is pending, the committed lease is shown.
    alone = merge_reports([n0])
    assert alone is not None and acted_on(alone) is leased
    row = report_json(alone)
    assert row["state"] == "running" and row["committed"] is True
    pending = row["pending"]
    assert isinstance(pending, Mapping)
    assert row["exit_status"] is None and pending["state"] == "succeeded"
    # Healed (or asked the others): the later epoch's committed run wins.
    both = merge_reports([n0, Report(theirs, None)])
    assert both is not None and both.record is theirs and both.pending is None
    assert report_json(both)["receipt_executor"] == str(P[2])
    # Only an uncommitted finished copy known (a restart with no commit point yet):
    # its outcome is withheld, and nothing is acted on.
    lone = Report(None, mine)
    assert acted_on(lone) is None
    row = report_json(lone)
    assert row["state"] == UNCONFIRMED and row["committed"] is False
    assert row["exit_status"] is None and row["outputs"] == []
    # The wire form, and an older node's answer (no "pending": its copy as committed).
    assert report_from_wire(report_to_wire(n0), CAP.id) == n0
    old = report_from_wire({"record": theirs.to_wire()}, CAP.id)
    assert old == Report(theirs, None)
    assert report_from_wire({"record": None, "pending": None}, CAP.id) is None
