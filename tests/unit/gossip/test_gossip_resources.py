"""Resource ads: wire form, deltas, queries."""

from typing import Any

import pytest

from gossip.resources import Query, ResourceAd, parse_query
from overlay.core.errors import MalformedFrame

AD = ResourceAd.make(
    cpu_cores=16,
    cpu_load=3.5,
    mem_bytes=64 << 30,
    gpus=2,
    gpu_kinds=("a100",),
    executors=("subprocess", "slurm"),
    labels={"site": "cern", "rack": "b5"},
    location="eu/ch/cern",
    bandwidth_bps=10**9,
    tags=("fast",),
)


def test_body_round_trip_and_defaults_omitted() -> None:
    body = AD.to_body()
    assert ResourceAd.from_body(body) == AD
    assert ResourceAd().to_body() == {}
    assert "df" not in body


def test_delta_applies_only_changed_fields() -> None:
    new = ResourceAd.make(**{**_kw(AD), "cpu_load": 9.0, "tags": ()})
    delta = new.delta_from(AD)
    assert delta == {"l": 9.0, "t": []}
    assert AD.apply(delta) == new


def _kw(ad: ResourceAd) -> dict[str, Any]:
    kw = {f: getattr(ad, f) for f in ad.__dataclass_fields__}
    kw["labels"] = dict(ad.labels)
    return kw


@pytest.mark.parametrize(
    "body",
    [{"c": -1}, {"c": 1.5}, {"l": float("inf")}, {"x": "slurm"}, {"lb": {"a": 1}}, {"?": 1}, []],
)
def test_invalid_fields_rejected(body: object) -> None:
    with pytest.raises(MalformedFrame):
        ResourceAd.from_body(body)


@pytest.mark.parametrize(
    ("text", "matches"),
    [
        ("cpu>=4 gpu>=1 site=cern", True),
        ("cpu>=4,gpu>=3", False),
        ("free_cpu>=12", True),
        ("free_cpu>=13", False),
        ("executor=slurm location=eu/ tag=fast", True),
        ("executor=k8s", False),
        ("label:rack=b5", True),
        ("site=desy", False),
        ("", True),
    ],
)
def test_query_matching(text: str, matches: bool) -> None:
    assert parse_query(text).matches(AD) is matches


def test_query_never_matches_missing_ad_and_rejects_garbage() -> None:
    assert not Query().matches(None)
    for bad in ("cpu>4", "nonsense>=1", "=x", "cpu>=many"):
        with pytest.raises(ValueError):
            parse_query(bad)
