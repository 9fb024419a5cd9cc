"""PNG plots of one run (matplotlib, Agg backend, imported only when plotting).

One figure per question: how many hops and how long do lookups take; how fast are
failures detected; how many false positives over time; how fast do views converge;
how is message load spread over nodes; how fast do user events spread.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sim.metrics import Metrics


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt: Any, fig: Any, path: Path, written: list[Path]) -> None:
    fig.tight_layout()
    # No timestamps or software versions in the file: same run, same bytes.
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    written.append(path)


def _cdf(ax: Any, xs: list[float], label: str) -> None:
    s = sorted(xs)
    n = len(s)
    ax.step(s, [(i + 1) / n for i in range(n)], where="post", label=label)


def write_plots(m: Metrics, out: Path) -> list[Path]:
    """Write every plot the recorded metrics allow; returns the files written."""
    plt = _plt()
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    s = m.samples
    ts = m.tables.get("timeseries", [])

    if s.get("lookup_hops"):
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
        hops = [int(h) for h in s["lookup_hops"]]
        lo, hi = min(hops), max(hops)
        a1.hist(hops, bins=[h - 0.5 for h in range(lo, hi + 2)], rwidth=0.8)
        a1.set_xlabel("hops (sequential request rounds)")
        a1.set_ylabel("lookups")
        a1.set_title(f"DHT lookup hops (n={len(hops)})")
        _cdf(a2, s["lookup_latency_s"], "lookup latency")
        a2.set_xlabel("seconds")
        a2.set_ylabel("CDF")
        a2.set_title("DHT lookup latency")
        _save(plt, fig, out / "lookup_hops_latency.png", written)

    if s.get("detect_first_s") or s.get("detect_all_s"):
        fig, ax = plt.subplots(figsize=(6, 4))
        for key, label in (("detect_first_s", "first suspicion"),
                           ("detect_failed_s", "first death notice"),
                           ("detect_all_s", "all members know")):
            if s.get(key):
                _cdf(ax, s[key], label)
        ax.set_xlabel("seconds after the crash")
        ax.set_ylabel("CDF")
        ax.set_title("Failure detection time")
        ax.legend()
        _save(plt, fig, out / "detection_time.png", written)

    if ts and "false_suspicions" in ts[0]:
        fig, ax = plt.subplots(figsize=(6, 4))
        t = [r["t"] for r in ts]
        ax.plot(t, [r["false_suspicions"] for r in ts], label="false suspicions")
        ax.plot(t, [r["false_failures"] for r in ts], label="false failures")
        ax.set_xlabel("simulated time (s)")
        ax.set_ylabel("per sample interval")
        ax.set_title("False positives over time")
        ax.legend()
        _save(plt, fig, out / "false_positives.png", written)

    if ts:
        fig, ax = plt.subplots(figsize=(6, 4))
        t = [r["t"] for r in ts]
        if "view_accuracy" in ts[0]:
            ax.plot(t, [r["view_accuracy"] for r in ts], label="gossip view accuracy")
            ax.plot(t, [r["view_stale"] for r in ts], label="stale share of view")
            ax.set_ylim(-0.02, 1.05)
        ax2 = ax.twinx()
        ax2.plot(t, [r["live"] for r in ts], color="grey", linestyle=":", label="live nodes")
        ax2.set_ylabel("live nodes")
        ax.set_xlabel("simulated time (s)")
        ax.set_title("Convergence")
        if "view_accuracy" in ts[0]:
            ax.legend(loc="lower right")
        _save(plt, fig, out / "convergence.png", written)

    if s.get("load_sent_per_s"):
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.hist(s["load_sent_per_s"], bins=40, alpha=0.7, label="sent")
        ax.hist(s["load_received_per_s"], bins=40, alpha=0.7, label="received")
        ax.set_xlabel("messages per second of uptime")
        ax.set_ylabel("nodes")
        ax.set_title("Message load per node")
        ax.legend()
        _save(plt, fig, out / "message_load.png", written)

    if s.get("event_latency_s"):
        fig, ax = plt.subplots(figsize=(6, 4))
        _cdf(ax, s["event_latency_s"], "user event delivery")
        ax.set_xlabel("seconds after sending")
        ax.set_ylabel("share of deliveries")
        ax.set_title("User event dissemination")
        _save(plt, fig, out / "user_events.png", written)

    if s.get("fetch_s"):
        fig, ax = plt.subplots(figsize=(6, 4))
        _cdf(ax, s["fetch_s"], "fetch (lookup + transfer)")
        ax.set_xlabel("seconds")
        ax.set_ylabel("CDF")
        ax.set_title("Bulk fetch time")
        _save(plt, fig, out / "fetch_time.png", written)

    if s.get("capsule_submit_to_finished_s"):
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
        _cdf(a1, s.get("capsule_submit_to_running_s", []), "submit → running")
        _cdf(a1, s["capsule_submit_to_finished_s"], "submit → finished")
        a1.set_xscale("log")
        a1.set_xlabel("seconds")
        a1.set_ylabel("CDF")
        a1.set_title("Capsule latency")
        a1.legend(loc="lower right")
        if ts and "finished" in ts[0]:
            t = [r["t"] for r in ts]
            for key in ("submitted", "started", "finished"):
                a2.plot(t, [r[key] for r in ts], label=key)
            a2.set_xlabel("simulated time (s)")
            a2.set_ylabel("capsules")
            a2.set_title("Capsules over time")
            a2.legend(loc="upper left")
        _save(plt, fig, out / "capsules.png", written)
    return written
