"""Store throughput: import and cat against the sha256 limit (DESIGN §4).

One run on generated data (1 GiB by default, `--size-mib` to shrink) prints:

- sha256 MB/s on 256 KiB blocks: the limit (every byte must be hashed once on import
  and once on a verified read);
- disk write + fdatasync MB/s of the same amount of data (a second limit: an add is
  acknowledged only once its blocks are fsync'd, so it cannot beat the disk);
- add MB/s in-process (Importer → LMDB) and through the CLI (`colony add`, a real
  subprocess, including interpreter start-up);
- cat MB/s warm (pages cached) and cold (page cache dropped with
  /proc/sys/vm/drop_caches, or posix_fadvise(DONTNEED) on data.mdb when that is not
  permitted), for LMDB opened with readahead on (the default) and off (MDB_NORDAHEAD);
- each figure's ratio to the sha256 limit;
- CPU seconds (all threads) per GiB of the in-process add against sha256's: steadier
  than wall-clock rates on a shared machine.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from overlay.cli.cmd_node import init_home
from overlay.core.cid import Cid
from store.blockstore import BlockStore
from store.exporter import Exporter
from store.importer import Importer, ImportOptions

MB = 1e6
CHUNK = 262144


def sha256_limit(total: int) -> tuple[float, float]:
    """(MB/s, CPU seconds per GiB) of sha256 over 256 KiB blocks."""
    block = random.Random(0).randbytes(CHUNK)
    n = max(1, total // CHUNK)
    t, c = time.perf_counter(), time.process_time()
    for _ in range(n):
        hashlib.sha256(block).digest()
    cpu = (time.process_time() - c) / (n * CHUNK / 2**30)
    return n * CHUNK / (time.perf_counter() - t) / MB, cpu


def disk_limit(dir_: Path, total: int) -> float:
    """Write `total` bytes in 16 MiB writes and fdatasync: what a durable add must do."""
    buf = random.Random(1).randbytes(16 << 20)
    path = dir_ / "disk-probe.bin"
    t = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        left = total
        while left > 0:
            left -= os.write(fd, buf[: min(left, len(buf))])
        os.fdatasync(fd)
    finally:
        os.close(fd)
    rate = total / (time.perf_counter() - t) / MB
    path.unlink()
    return rate


def make_file(path: Path, size: int) -> None:
    rng = random.Random(42)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 16 << 20)
            f.write(rng.randbytes(n))
            left -= n


def drop_caches(store_dir: Path) -> str:
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return "drop_caches"
    except OSError:
        fd = os.open(store_dir / "data.mdb", os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        return "fadvise"


def cat_rate(store_dir: Path, cid: Cid, *, readahead: bool) -> tuple[float, int]:
    with BlockStore(store_dir, readahead=readahead) as store:
        fd = os.open(os.devnull, os.O_WRONLY)
        try:
            t = time.perf_counter()
            n = Exporter(store).cat(cid, lambda mv: os.write(fd, mv))
            dt = time.perf_counter() - t
        finally:
            os.close(fd)
    return n / dt / MB, n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--dir", type=Path, default=None, help="work dir (default: a temp dir)")
    args = ap.parse_args()
    size = args.size_mib << 20
    tmp = Path(tempfile.mkdtemp(prefix="colony-bench-store-", dir=args.dir))
    src = tmp / "data.bin"
    make_file(src, size)

    limit, sha_cpu = sha256_limit(min(size, 256 << 20))
    disk = disk_limit(tmp, size)
    rows: list[tuple[str, float]] = []

    # In-process add into a fresh store (source file warm in the page cache). CPU time
    # (all threads) per GiB is steadier than wall time on a shared machine.
    with BlockStore(tmp / "inproc", initial_map_size_mib=256) as store:
        t, c = time.perf_counter(), time.process_time()
        added = Importer(store, ImportOptions(cid_version=1)).add_path(src)
        rows.append(("add in-process (v1, raw leaves)", size / (time.perf_counter() - t) / MB))
        add_cpu = (time.process_time() - c) / (size / 2**30)
    with BlockStore(tmp / "inproc-v0", initial_map_size_mib=256) as store:
        t = time.perf_counter()
        Importer(store, ImportOptions(cid_version=0)).add_path(src)
        rows.append(("add in-process (v0, dag-pb leaves)", size / (time.perf_counter() - t) / MB))

    # Through the CLI, as a user runs it.
    home = tmp / "node"
    init_home(home, quiet=True)
    env = {**os.environ, "COLONY_HOME": str(home)}
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "overlay.cli.main", "add", "-Q", str(src)],
                       env=env, capture_output=True, text=True, check=True)
    rows.append(("add via CLI (colony add)", size / (time.perf_counter() - t) / MB))
    assert r.stdout.strip() == str(added.cid), "CLI and in-process CIDs differ"

    store_dir = tmp / "inproc"
    cat_rate(store_dir, added.cid, readahead=True)  # warm the cache
    warm, n = cat_rate(store_dir, added.cid, readahead=True)
    assert n == size
    rows.append(("cat warm (verified, zero-copy)", warm))
    how = ""
    for ra in (True, False):
        how = drop_caches(store_dir)
        cold, _ = cat_rate(store_dir, added.cid, readahead=ra)
        rows.append((f"cat cold, readahead={'on' if ra else 'off'}", cold))
    # A cold read of the same bytes as a flat file, for scale.
    drop_caches(store_dir)
    t = time.perf_counter()
    with open(src, "rb", buffering=0) as f:
        while f.read(CHUNK):
            pass
    rows.append(("flat file cold read (reference)", size / (time.perf_counter() - t) / MB))

    print(f"store benchmark: {args.size_mib} MiB, 256 KiB chunks, cold via {how}")
    print(f"  {'sha256 on 256 KiB blocks (limit)':<40} {limit:8.0f} MB/s")
    print(f"  {'disk write + fdatasync (durable limit)':<40} {disk:8.0f} MB/s")
    for name, rate in rows:
        print(f"  {name:<40} {rate:8.0f} MB/s   {rate / limit:6.1%} of sha256"
              + (f"   {rate / disk:6.1%} of disk" if name.startswith("add") else ""))
    print(f"  CPU per GiB added in-process (v1): {add_cpu:.2f} s, all threads; sha256 alone "
          f"{sha_cpu:.2f} s (ratio {add_cpu / sha_cpu:.2f})")
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
