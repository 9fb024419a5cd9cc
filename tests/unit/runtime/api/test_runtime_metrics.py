"""Metrics read live values at scrape time and render valid Prometheus text."""

from prometheus_client.parser import text_string_to_metric_families

from overlay.runtime.api.metrics import StatsCollector, render


def test_render_reads_current_values() -> None:
    state: dict[str, float | dict[str, float]] = {
        "frames": 3, "peers": 2, "drops": {"oversize": 1, "malformed": 4}
    }
    c = StatsCollector()
    c.counter("frames_in", "frames received", lambda: state["frames"])
    c.gauge("peers", "connected peers", lambda: state["peers"])
    c.counter("stream_drops", "streams closed by reason", lambda: state["drops"], "reason")
    first = render(c)
    state["frames"] = 10
    fams = {f.name: f for f in text_string_to_metric_families(render(c).decode())}
    assert b"colony_frames_in_total 3.0" in first
    assert fams["colony_frames_in"].samples[0].value == 10
    assert fams["colony_peers"].samples[0].value == 2
    drops = {s.labels["reason"]: s.value for s in fams["colony_stream_drops"].samples}
    assert drops == {"malformed": 4.0, "oversize": 1.0}
