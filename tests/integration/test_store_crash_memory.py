"""`kill -9` in the middle of `colony add`, and bounded memory for large files.

Crash: the add reads from a pipe we feed. A write to a pipe returns only once the
reader has taken all but the pipe buffer. The importer hands each full batch (64
blocks, 16 MiB) to its writer thread before it reads the next chunk, and the hand-over
waits while one batch is queued, so when batch n is handed over batch n-2 is committed
(store/batch_writer.py). Once 72 MiB have gone in, batch 4 was handed over and at least
two batches are committed — no sleeping or guessing. We keep feeding from a thread and
kill the add while it is busy.

Acknowledged = durable: a `colony add` killed with SIGKILL the moment it prints the
root CID, and a daemon killed the moment its add request answers, leave every block of
the file in the store.

Memory: peak RSS of a `colony add`/`colony cat` of a 256 MiB file, measured with
getrusage(RUSAGE_CHILDREN) inside a fresh wrapper process, so no other child of the
test run is counted. This is a memory bound, not a timing assertion.
"""

import os
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from overlay.core.cid import Cid
from store.blockstore import BlockStore
from store.exporter import Exporter
from store.importer import Importer

pytestmark = pytest.mark.slow
MiB = 1024 * 1024


def env_for(home: Path) -> dict[str, str]:
    return {**os.environ, "COLONY_HOME": str(home)}


def colony(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "overlay.cli.main", *args],
                          env=env_for(home), capture_output=True, text=True, timeout=120)


def test_kill_9_mid_add_then_resume(tmp_path: Path) -> None:
    home = tmp_path / "node"
    assert colony(home, "init").returncode == 0
    data = random.Random(9).randbytes(96 * MiB)
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    proc = subprocess.Popen(
        [sys.executable, "-m", "overlay.cli.main", "add", "-Q", "-"],
        env=env_for(home), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None
    proc.stdin.write(data[: 72 * MiB])
    proc.stdin.flush()

    def feed_rest() -> None:
        try:
            assert proc.stdin is not None
            proc.stdin.write(data[72 * MiB :])
        except (BrokenPipeError, ValueError):
            pass  # killed: expected

    feeder = threading.Thread(target=feed_rest, daemon=True)
    feeder.start()
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    feeder.join(timeout=60)
    assert proc.returncode == -signal.SIGKILL

    # The store opens cleanly and every block present hashes to its key.
    with BlockStore(home / "blocks") as store:
        before = store.stat().blocks
        assert before >= 128  # at least the two committed batches
        assert store.verify_all() == []
        assert store.stat().pins == 0  # the root never got pinned

    expected = Importer(None)
    want = expected.add_bytes(data)
    r = colony(home, "add", "-Q", str(src))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(want.cid)
    with BlockStore(home / "blocks") as store:
        after = store.stat()
        assert after.blocks == expected.sink.blocks  # nothing stored twice
        assert after.pins == 1
        assert store.verify_all() == []
    got = subprocess.run([sys.executable, "-m", "overlay.cli.main", "cat", str(want.cid)],
                         env=env_for(home), capture_output=True, timeout=120)
    assert got.returncode == 0 and got.stdout == data


def test_acknowledged_add_survives_kill_9(tmp_path: Path) -> None:
    home = tmp_path / "node"
    assert colony(home, "init").returncode == 0
    # Three batches and a partial one: the last blocks are still queued for the writer
    # thread while the DAG's root is computed.
    data = random.Random(10).randbytes(56 * MiB + 12345)
    src = tmp_path / "f.bin"
    src.write_bytes(data)
    proc = subprocess.Popen(
        [sys.executable, "-m", "overlay.cli.main", "add", "-q", str(src)],
        env={**env_for(home), "PYTHONUNBUFFERED": "1"},  # the line leaves at print()
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the acknowledgement: the root CID
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    cid = line.strip()
    assert cid == str(Importer(None).add_bytes(data).cid), proc.stderr.read() if proc.stderr else ""
    with BlockStore(home / "blocks") as store:
        assert store.verify_all() == []
        out = bytearray()
        Exporter(store).cat(Cid.parse(cid), out.extend)
    assert bytes(out) == data


MEASURE = """
import resource, subprocess, sys
out = open(sys.argv[1], "wb") if sys.argv[1] != "-" else subprocess.DEVNULL
r = subprocess.run([sys.executable, "-m", "overlay.cli.main", *sys.argv[2:]], stdout=out)
print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def peak_rss_mib(home: Path, sink: str, *args: str) -> float:
    r = subprocess.run([sys.executable, "-c", MEASURE, sink, *args], env=env_for(home),
                       capture_output=True, text=True, timeout=300)
    code, kib = r.stdout.split()
    assert code == "0", r.stderr
    return int(kib) / 1024


def test_rss_stays_bounded_for_large_files(tmp_path: Path) -> None:
    home = tmp_path / "node"
    assert colony(home, "init").returncode == 0
    small, big = tmp_path / "small.bin", tmp_path / "big.bin"
    small.write_bytes(random.Random(1).randbytes(4 * MiB))
    with open(big, "wb") as f:
        rng = random.Random(2)
        for _ in range(256 // 16):
            f.write(rng.randbytes(16 * MiB))
    base = peak_rss_mib(home, "-", "add", "-Q", str(small))
    add_big = peak_rss_mib(home, "-", "add", "-Q", str(big))
    cid = colony(home, "add", "-n", "-Q", str(big)).stdout.strip()
    cat_big = peak_rss_mib(home, str(tmp_path / "out.bin"), "cat", cid)
    assert (tmp_path / "out.bin").stat().st_size == big.stat().st_size
    print(f"peak RSS: small add {base:.0f} MiB, 256 MiB add {add_big:.0f} MiB, "
          f"cat {cat_big:.0f} MiB")
    # 256 MiB through the pipeline must not show up as 256 MiB of RSS.
    assert add_big < 200 and cat_big < 200
    assert add_big - base < 128 and cat_big - base < 128
