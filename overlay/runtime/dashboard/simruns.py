"""Reads of a `colony sim run` output folder for the dashboard's simulation page.

A run folder (docs/simulation.md) holds `metrics.json` (counters, distributions,
info), `*.csv` tables and `*.png` plots. The page names the folder by its path on
the daemon's host, as `colony sim run --out` printed it; whoever holds the API token
may already make the daemon read any path it can (`/v1/publish`), so this opens no
new access. Still, only a folder holding `metrics.json` is read, only its own files
(plain names, no separators), only these kinds, and at most `MAX_FILE_BYTES` each.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from overlay.core.errors import ColonyError

METRICS = "metrics.json"
MAX_FILE_BYTES = 8 * 1024 * 1024
#: Rows of a CSV table returned to the page (the plots show the rest).
MAX_CSV_ROWS = 2000
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}\.(png|csv)$")


class SimRunError(ColonyError):
    """Not a run folder, or a file it may not read."""


def run_dir(text: str) -> Path:
    """The run folder named by `text`: absolute, existing, holding metrics.json."""
    if not text or "\0" in text:
        raise SimRunError("give the folder of a `colony sim run` (its --out)")
    d = Path(text)
    if not d.is_absolute():
        raise SimRunError(f"{text}: give an absolute path on the daemon's host")
    if not (d / METRICS).is_file():
        raise SimRunError(f"{text}: no {METRICS} here; not a `colony sim run` output folder")
    return d


def _read(path: Path) -> bytes:
    if path.stat().st_size > MAX_FILE_BYTES:
        raise SimRunError(f"{path.name}: larger than {MAX_FILE_BYTES >> 20} MiB")
    return path.read_bytes()


def summary(text: str) -> dict[str, object]:
    """metrics.json and the names of the run's plots and tables."""
    d = run_dir(text)
    try:
        metrics = json.loads(_read(d / METRICS))
    except ValueError as e:
        raise SimRunError(f"{d / METRICS}: not JSON: {e}") from None
    if not isinstance(metrics, dict):
        raise SimRunError(f"{d / METRICS}: not a JSON object")
    names = sorted(p.name for p in d.iterdir() if p.is_file() and _NAME.match(p.name))
    return {"dir": str(d), "metrics": metrics,
            "plots": [n for n in names if n.endswith(".png")],
            "tables": [n for n in names if n.endswith(".csv")]}


def run_file(text: str, name: str) -> tuple[bytes, str]:
    """One plot (PNG bytes) or table (CSV text, first MAX_CSV_ROWS rows) of the run."""
    d = run_dir(text)
    if not _NAME.match(name):
        raise SimRunError(f"{name!r}: a plot (.png) or table (.csv) name of the run")
    path = d / name
    if path.is_symlink() or not path.is_file():  # the run's own files, not links out
        raise SimRunError(f"{name}: not in {d}")
    data = _read(path)
    if name.endswith(".png"):
        return data, "image/png"
    lines = data.decode("utf-8", "replace").splitlines()[: MAX_CSV_ROWS + 1]
    return ("\n".join(lines) + "\n").encode(), "text/csv; charset=utf-8"
