"""Placement as a table: filters, ranking terms and cannot-place reasons."""

from __future__ import annotations

import pytest

from overlay.capsule.placement import NodeAd, place
from overlay.capsule.spec import Conditions, SpecError
from overlay.core.crypto import KeyPair
from overlay.core.ids import PeerId, key_of_bytes

PEERS = [KeyPair(bytes([i + 1]) * 32).peer_id for i in range(12)]
CPU = NodeAd(cpu=8, mem_mib=16384, executors=("subprocess",), free_slots=4)
GPU = NodeAd(cpu=8, mem_mib=16384, gpu=2, executors=("subprocess", "slurm"),
             labels=(("site", "cern"),), location="ch", free_slots=2)  # fmt: skip
GPU_ELSEWHERE = NodeAd(cpu=8, mem_mib=16384, gpu=1, labels=(("site", "desy"),), free_slots=2)


def cands(*ads: NodeAd | None) -> list[tuple[PeerId, NodeAd | None]]:
    return list(zip(PEERS, ads, strict=False))


def test_cannot_place_reason_counts_first_failure_per_member() -> None:
    cond = Conditions(gpu=1, labels=(("site", "cern"),))
    result = place(cond, cands(*([CPU] * 9), *([GPU_ELSEWHERE] * 3)))
    assert not result.ok
    assert result.reason == (
        "no node with gpu≥1 and label site=cern (12 members checked: 9 lack gpu, 3 lack label)"
    )


@pytest.mark.parametrize(
    ("cond", "ads", "reason"),
    [
        (Conditions(cpu=16), [CPU], "no node with cpu≥16 (1 member checked: 1 lack cpu)"),
        (Conditions(mem_mib=1 << 20), [CPU, GPU],
         "no node with mem≥1048576 MiB (2 members checked: 2 lack mem)"),
        (Conditions(executor="slurm"), [CPU, None],
         "no node with executor slurm (2 members checked: 1 lack executor, "
         "1 without a resource ad)"),
        (Conditions(location="us"), [GPU], "no node with location us (1 member checked: "
         "1 wrong location)"),
        (Conditions(), [NodeAd(cpu=1, free_slots=0)],
         "no node with no requirements (1 member checked: 1 no free slot)"),
        (Conditions(gpu=1), [], "no node with gpu≥1 (no live members known)"),
    ],
)  # fmt: skip
def test_cannot_place_table(cond: Conditions, ads: list[NodeAd | None], reason: str) -> None:
    result = place(cond, cands(*ads))
    assert not result.ok and result.reason == reason


def test_filters_then_ranks_by_free_capacity() -> None:
    busy = NodeAd(cpu=8, cpu_load=7.5, mem_mib=16384, free_slots=1)
    result = place(Conditions(cpu=2), cands(busy, CPU, NodeAd(cpu=1, free_slots=4)))
    assert [s.peer for s in result.ranked] == [PEERS[1], PEERS[0]]
    assert result.ranked[0].score > result.ranked[1].score


def test_data_locality_beats_free_capacity() -> None:
    holder = NodeAd(cpu=8, cpu_load=6, free_slots=1)
    inputs = ("QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN",)
    result = place(Conditions(), cands(CPU, holder), inputs=inputs,
                   holders={inputs[0]: {PEERS[1]}})  # fmt: skip
    assert result.ranked[0].peer == PEERS[1] and result.ranked[0].locality == 1.0


def test_network_distance_breaks_otherwise_equal_scores() -> None:
    result = place(Conditions(), cands(CPU, CPU), rtt_s={PEERS[0]: 0.15, PEERS[1]: 0.01})
    assert result.ranked[0].peer == PEERS[1]


def test_reservations_and_exclusions() -> None:
    one = NodeAd(cpu=4, free_slots=1)
    result = place(Conditions(), cands(one, one), reserved={PEERS[0]: 1}, exclude={PEERS[1]})
    assert result.reason.endswith("(2 members checked: 1 excluded, 1 no free slot)")


def test_equal_scores_spread_by_capsule_key() -> None:
    keys = [key_of_bytes(bytes([i])) for i in range(12)]
    firsts = [place(Conditions(), cands(*[CPU] * 6), spread_key=k).ranked[0].peer for k in keys]
    assert len(set(firsts)) >= 3
    # ...and the same capsule always ranks the same way.
    assert place(Conditions(), cands(*[CPU] * 6), spread_key=keys[0]).ranked[0].peer == firsts[0]


def test_node_ad_from_dict_and_wire() -> None:
    ad = NodeAd.from_dict({"cpu": 4, "cpu_load": 0.5, "mem_mib": "8Gi", "gpu": 1,
                           "executors": ["subprocess"], "labels": {"site": "x"},
                           "location": "eu", "free_slots": 2})  # fmt: skip
    assert ad.mem_mib == 8192 and ad.labels == (("site", "x"),)
    assert NodeAd.from_wire(ad.to_wire()) == ad
    with pytest.raises(SpecError, match="unknown ad field disk"):
        NodeAd.from_dict({"disk": 1})
