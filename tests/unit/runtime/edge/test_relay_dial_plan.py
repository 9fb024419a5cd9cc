"""The dial plan (overlay.runtime.edge.dialer.plan): which of direct / webrtc / relay to try
for a peer, from both sides' resource-ad reachability. A table test."""

from __future__ import annotations

import pytest

from overlay.runtime.edge.dialer import METHODS, plan

ALL = list(METHODS)


@pytest.mark.parametrize(
    ("theirs", "ours", "turn", "expected"),
    [
        ("public", "nat/symmetric", False, ["direct"]),  # public: TCP or it is down
        ("", "", False, ALL),  # unknown: the configured order
        ("nat", "public", False, ["webrtc", "relay"]),  # no direct into a NAT
        ("nat/endpoint-independent", "nat/endpoint-independent", False, ["webrtc", "relay"]),
        ("nat/symmetric", "public", False, ["webrtc", "relay"]),  # public side answers ICE
        ("nat/symmetric", "nat/endpoint-independent", False, ["relay"]),  # punching fails
        ("nat/endpoint-independent", "nat/symmetric", False, ["relay"]),
        ("nat/symmetric", "nat/symmetric", True, ["webrtc", "relay"]),  # TURN candidates
    ],
)
def test_plan(theirs: str, ours: str, turn: bool, expected: list[str]) -> None:
    assert plan(METHODS, theirs, ours, turn) == expected


def test_plan_never_empties_a_configured_order() -> None:
    assert plan(("direct",), "nat", "nat", False) == ["direct"]
    assert plan(("webrtc",), "nat/symmetric", "nat", False) == ["webrtc"]
