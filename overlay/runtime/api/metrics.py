"""Prometheus text metrics read from live stats objects at scrape time.

Cores and runtime pieces keep plain counters (ints on slotted stats objects); this
module exposes them through one prometheus_client collector, so the hot paths never
call into a metrics library and there is no second copy of any count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

#: One reading: a number, or numbers by label value (a Mapping, so `dict[str, int]` fits);
#: with several labels (`label="state,executor"`) the keys are tuples of label values.
Sample = float | Mapping[str, float] | Mapping[tuple[str, ...], float]


@dataclass(frozen=True)
class _Spec:
    name: str
    help: str
    kind: str  # "counter" or "gauge"
    read: Callable[[], Sample]
    label: str


class StatsCollector(Collector):
    def __init__(self, prefix: str = "colony") -> None:
        self.prefix = prefix
        self._specs: list[_Spec] = []

    def counter(
        self, name: str, help: str, read: Callable[[], Sample], label: str = "kind"
    ) -> None:
        self._specs.append(_Spec(name, help, "counter", read, label))

    def gauge(self, name: str, help: str, read: Callable[[], Sample], label: str = "kind") -> None:
        self._specs.append(_Spec(name, help, "gauge", read, label))

    def collect(self) -> Iterator[Metric]:
        for s in self._specs:
            full = f"{self.prefix}_{s.name}"
            value = s.read()
            fam: CounterMetricFamily | GaugeMetricFamily
            if isinstance(value, Mapping):
                fam = (CounterMetricFamily if s.kind == "counter" else GaugeMetricFamily)(
                    full, s.help, labels=s.label.split(",")
                )
                for key, v in sorted(value.items()):
                    keys = key if isinstance(key, tuple) else (key,)
                    fam.add_metric([str(k) for k in keys], float(v))
            elif s.kind == "counter":
                fam = CounterMetricFamily(full, s.help, value=float(value))
            else:
                fam = GaugeMetricFamily(full, s.help, value=float(value))
            yield fam


def render(collector: StatsCollector) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry)
