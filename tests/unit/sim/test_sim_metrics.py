"""Summary statistics and the deterministic JSON/CSV writers."""

from pathlib import Path

from sim.metrics import Metrics, quantile, summarize


def test_quantiles_interpolate_like_numpy() -> None:
    xs = [1.0, 2.0, 3.0, 4.0]
    assert quantile(xs, 0.5) == 2.5
    assert quantile(xs, 0.0) == 1.0 and quantile(xs, 1.0) == 4.0
    s = summarize([3.0, 1.0, 2.0])
    assert s["count"] == 3 and s["mean"] == 2.0 and s["p50"] == 2.0 and s["stdev"] == 1.0
    assert summarize([]) == {"count": 0}


def test_written_files_are_stable(tmp_path: Path) -> None:
    def build() -> Metrics:
        m = Metrics()
        m.count("b", 2)
        m.count("a")
        m.sample("lat", 0.1 + 0.2)
        m.row("t", t=1.0, x=None, y=3)
        m.info["name"] = "x"
        return m

    a, b = tmp_path / "a", tmp_path / "b"
    files = build().write(a)
    build().write(b)
    assert [p.name for p in files] == ["metrics.json", "t.csv"]
    for p in files:
        assert p.read_bytes() == (b / p.name).read_bytes()
    assert (a / "t.csv").read_text() == "t,x,y\n1.0,,3\n"
    text = (a / "metrics.json").read_text()
    assert '"a": 1' in text and text.index('"a"') < text.index('"b"')
    assert '"mean": 0.3' in text  # rounded to 9 significant digits
