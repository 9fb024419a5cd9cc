"""`colony demo` as `make demo` runs it: the single-node tour, then the local colony
(publish, multi-provider fetch, a capsule over the dataset, its output read by CID on
another node), and every daemon stopped afterwards."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _demo(tmp_path: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "COLONY_HOME": str(tmp_path / "unused")}
    # SIGINT back to its default in the child: a suite started as a background job of
    # a non-interactive shell (`make test &`) has SIGINT ignored, children inherit
    # that, and a Python started with SIGINT ignored keeps ignoring it, so the
    # interrupt test's Ctrl-C did nothing (the demo ran to its end; seen twice). A
    # user's terminal starts the demo with the default.
    return subprocess.Popen(
        [sys.executable, "-m", "overlay.cli.main", "demo", "--home", str(tmp_path / "demo"),
         *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _daemons_alive(root: Path) -> list[str]:
    """`colony daemon` processes whose --home is under root (from /proc)."""
    alive = []
    for d in Path("/proc").iterdir():
        try:
            cmd = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"daemon" in cmd and any(str(root).encode() in a for a in cmd):
            alive.append(d.name)
    return alive


def test_demo_runs_and_verifies(tmp_path: Path) -> None:
    p = _demo(tmp_path)
    stdout, stderr = p.communicate(timeout=180)
    assert p.returncode == 0, stderr.decode()[-3000:]
    text = stdout.decode()
    # single-node tour
    assert "5/5 files identical" in text and "all blocks hash to their CIDs" in text
    assert "sensor-a.bin" in text and "bafy" in text
    # the colony: publish, fetch from two holders, verify
    assert "every node sees 5 members alive" in text
    assert "byte-identical to the original" in text
    # the capsule: submitted on node3, placed and run somewhere, output read elsewhere
    assert re.search(r"13\. node3 submitted a capsule .*: bafkrei\w+", text), text
    placed = re.search(r"succeeded on (node\d), exit status 0", text)
    assert placed, text
    assert f"the leader placed it on {placed.group(1)}" in text
    assert "(leader)" in text
    reader = re.search(r"16\. (node\d) fetched the output by CID", text)
    assert reader and reader.group(1) not in ("node3", placed.group(1)), text
    assert "| measurements.csv: 4000 rows, mean value" in text
    assert "| sensor-a.bin: 700000 bytes, crc" in text
    assert "17. stopped all 5 daemons" in text
    assert not _daemons_alive(tmp_path)


def test_demo_interrupted_stops_every_daemon(tmp_path: Path) -> None:
    p = _demo(tmp_path)
    deadline = time.monotonic() + 120
    assert p.stdout is not None
    for line in iter(p.stdout.readline, b""):  # interrupt once daemons are running
        if b"node2  12D3" in line or time.monotonic() > deadline:
            break
    p.send_signal(signal.SIGINT)
    rest, stderr = p.communicate(timeout=60)
    # Failed once under load with 0 (the demo ran to its end): the output says where
    # the interrupt landed, if it was seen at all.
    assert p.returncode == 130, (rest.decode()[-2000:], stderr.decode()[-2000:])
    assert b"demo stopped early: stopped the 5 daemon(s)" in rest, rest
    assert not _daemons_alive(tmp_path)
