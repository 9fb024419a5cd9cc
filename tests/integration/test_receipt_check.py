"""The real-daemon fault runs' receipt rule (fault_colony.committed_receipts): a receipt
counts as accepted once a majority of the configuration that wrote it holds it.

The first case is the partition run of 2026-12-06 that reported two receipts: the
leader n0 of epoch 1 ran the capsule itself as the cut began and applied its receipt
to its own copy only; n2 and n4, the rest of its configuration, took over in epoch 2
from the copy they held (running), ran it again and committed that receipt on n2, n3
and n4. One receipt was accepted; the checker counted n0's copy too.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from fault_colony import committed_receipts, uncommitted_outcomes

CID = "bafkreiht5sacsmo"
E1, E2 = 1796517668, 1796517669
T1, T2 = E1 << 22 | 1, E2 << 22 | 1
C1, C2 = ["n0", "n2", "n4"], ["n2", "n4", "n3"]


def row(epoch: int, config: list[str], state: str, token: int,
        receipt_by: str | None) -> dict[str, Any]:
    return {"id": CID, "epoch": epoch, "custodians": config, "state": state,
            "token": token, "receipt_executor": receipt_by}


def test_a_minority_leaders_own_copy_is_not_an_accepted_receipt() -> None:
    latest = {("n0", CID): row(E1, C1, "succeeded", T1, "n0")}
    assert committed_receipts(latest) == []
    # what n2 and n4 held when they took over: the lease, no receipt
    latest |= {(n, CID): row(E1, C1, "running", T1, None) for n in ("n2", "n4")}
    assert committed_receipts(latest) == []
    latest |= {(n, CID): row(E2, C2, "succeeded", T2, "n2") for n in ("n2", "n3", "n4")}
    assert committed_receipts(latest) == [(CID, "n2", T2, "n2")]


def test_two_receipts_each_on_a_majority_are_both_reported() -> None:
    latest = {(n, CID): row(E1, C1, "succeeded", T1, "n0") for n in ("n0", "n2")}
    latest |= {(n, CID): row(E2, C2, "succeeded", T2, "n2") for n in ("n3", "n4")}
    got = committed_receipts(latest)
    assert sorted(g[2] for g in got) == [T1, T2]  # the checker then flags one_receipt


def test_holders_outside_the_configuration_do_not_make_a_majority() -> None:
    latest = {(n, CID): row(E1, C1, "succeeded", T1, "n0") for n in ("n0", "n1", "n3")}
    assert committed_receipts(latest) == []


def test_a_reported_uncommitted_outcome_is_flagged_and_a_pending_one_is_not() -> None:
    """What n0 showed in that run (its own run as its copy's state) is a violation
    now that reads report committed copies; what it reports since (the committed lease,
    its run only as `pending`) is not, and a pending copy counts as held."""
    latest = {(n, CID): row(E2, C2, "succeeded", T2, "n2") for n in ("n2", "n3", "n4")}
    before = latest | {("n0", CID): row(E1, C1, "succeeded", T1, "n0")}
    assert uncommitted_outcomes(before) == [("n0", CID, T1, "n0")]
    pending = {"state": "succeeded", "epoch": E1, "token": T1, "receipt_executor": "n0",
               "custodians": C1}
    now = latest | {("n0", CID): {**row(E1, C1, "running", T1, None), "pending": pending}}
    assert uncommitted_outcomes(now) == []
    # A follower that learnt the commit reports it while the others still hold it as
    # pending: the majority counts both.
    split = {("n2", CID): row(E2, C2, "succeeded", T2, "n2")}
    split |= {(n, CID): {**row(E2, C2, "running", T2 - 1, None),
                         "pending": {"state": "succeeded", "epoch": E2, "token": T2,
                                     "receipt_executor": "n2", "custodians": C2}}
              for n in ("n3", "n4")}
    assert committed_receipts(split) == [(CID, "n2", T2, "n2")]
    assert uncommitted_outcomes(split) == []
