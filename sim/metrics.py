"""Metrics of one run: counters, distributions, time series, tables; JSON and CSV output.

Everything written is a pure function of the recorded values: no wall-clock times, no
host names, keys sorted, floats rounded to 9 significant digits — so one seed gives
byte-identical files on any machine with the same Python float semantics (IEEE 754).
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any


def _r(x: float) -> float | int | None:
    if isinstance(x, bool):
        return int(x)
    if isinstance(x, int):
        return x
    if math.isnan(x) or math.isinf(x):
        return None
    return float(f"{x:.9g}")


def quantile(sorted_xs: list[float], q: float) -> float:
    """Linear-interpolated quantile of an already sorted list (numpy's default)."""
    if not sorted_xs:
        return math.nan
    pos = (len(sorted_xs) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_xs) - 1)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


def summarize(xs: list[float]) -> dict[str, Any]:
    s = sorted(xs)
    n = len(s)
    if n == 0:
        return {"count": 0}
    mean = math.fsum(s) / n
    var = math.fsum((x - mean) ** 2 for x in s) / (n - 1) if n > 1 else 0.0
    return {
        "count": n,
        "mean": _r(mean),
        "stdev": _r(math.sqrt(var)),
        "min": _r(s[0]),
        "p50": _r(quantile(s, 0.5)),
        "p90": _r(quantile(s, 0.9)),
        "p99": _r(quantile(s, 0.99)),
        "max": _r(s[-1]),
    }


def _clean(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, float):
        return _r(obj)
    return obj


class Metrics:
    """Collected by the runner; `write(out_dir)` emits metrics.json and *.csv."""

    def __init__(self) -> None:
        self.counters: dict[str, int] = {}
        self.samples: dict[str, list[float]] = {}
        #: Named tables of rows (column -> value); each becomes <name>.csv.
        self.tables: dict[str, list[dict[str, Any]]] = {}
        self.info: dict[str, Any] = {}

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def sample(self, name: str, value: float) -> None:
        self.samples.setdefault(name, []).append(value)

    def row(self, table: str, **values: Any) -> None:
        self.tables.setdefault(table, []).append(values)

    def summary(self) -> dict[str, Any]:
        return {
            "info": _clean(self.info),
            "counters": dict(sorted(self.counters.items())),
            "distributions": {k: summarize(v) for k, v in sorted(self.samples.items())},
        }

    def to_json(self) -> str:
        return json.dumps(self.summary(), indent=2, sort_keys=True, allow_nan=False) + "\n"

    @staticmethod
    def table_csv(rows: list[dict[str, Any]]) -> str:
        buf = io.StringIO()
        if rows:
            cols = list(rows[0])
            w = csv.writer(buf, lineterminator="\n")
            w.writerow(cols)
            for r in rows:
                w.writerow([_fmt(r.get(c)) for c in cols])
        return buf.getvalue()

    def write(self, out: Path) -> list[Path]:
        out.mkdir(parents=True, exist_ok=True)
        written = [out / "metrics.json"]
        written[0].write_text(self.to_json())
        for name, rows in sorted(self.tables.items()):
            p = out / f"{name}.csv"
            p.write_text(self.table_csv(rows))
            written.append(p)
        return written


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        r = _r(v)
        return "" if r is None else repr(r)
    return str(v)
