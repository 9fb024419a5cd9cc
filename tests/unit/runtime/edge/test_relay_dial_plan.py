"""The dial plan (overlay.runtime.edge.dialer.plan): which of direct / holepunch / webrtc /
relay to try
for a peer, from both sides' resource-ad reachability. A table test."""

from __future__ import annotations

import pytest

from overlay.runtime.edge.dialer import METHODS, plan

ALL = list(METHODS)
H = "holepunch"


@pytest.mark.parametrize(
    ("theirs", "ours", "turn", "expected"),
    [
        ("public", "nat/symmetric", False, ["direct"]),  # public: TCP or it is down
        ("", "", False, ALL),  # unknown: the configured order
        ("nat", "public", False, [H, "webrtc", "relay"]),  # no direct into a NAT
        ("nat/endpoint-independent", "nat/endpoint-independent", False, [H, "webrtc", "relay"]),
        ("nat/symmetric", "public", False, [H, "webrtc", "relay"]),  # public side answers ICE
        # ICE cannot punch these; DCUtR is tried (over the relay it needs anyway) and
        # says why it failed in `colony doctor`.
        ("nat/symmetric", "nat/endpoint-independent", False, [H, "relay"]),
        ("nat/endpoint-independent", "nat/symmetric", False, [H, "relay"]),
        ("nat/symmetric", "nat/symmetric", True, [H, "webrtc", "relay"]),  # TURN candidates
    ],
)
def test_plan(theirs: str, ours: str, turn: bool, expected: list[str]) -> None:
    assert plan(METHODS, theirs, ours, turn) == expected


def test_plan_never_empties_a_configured_order() -> None:
    assert plan(("direct",), "nat", "nat", False) == ["direct"]
    assert plan(("webrtc",), "nat/symmetric", "nat", False) == ["webrtc"]
