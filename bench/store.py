"""Store throughput: import and cat against limits measured in the same run (DESIGN §4).

One run on generated data (1 GiB by default, `--size-mib` to shrink) prints:

- limits: sha256 MB/s on 256 KiB blocks (every byte is hashed once on import and once
  on a verified read), disk write + fdatasync, and bare synced LMDB puts of the same
  blocks (64-block transactions, CIDs computed beforehand). The durable-write limit of
  an import is min(sha256, LMDB puts): an add overlaps the two on two threads;
- add MB/s in-process (Importer → LMDB) and through the CLI into a fresh home
  (`colony add`, a real subprocess, including interpreter start-up), with the ratio to
  the durable-write limit; limit and adds in `--rounds` interleaved rounds (medians,
  ratios within a round);
- cold reads, in `--rounds` interleaved rounds (this VM's disk scatters 2-3× between
  consecutive reads, so each figure is a median and ratios are taken within a round):
  the same bytes read from a flat file, the flat file read and sha256-hashed on one
  thread, the flat file read and hashed on `VERIFY_THREADS` threads as `cat` hashes
  (the verified read of a flat file: the fair reference for a verified `cat`), and
  `cat` through the exporter with and without reading and hashing ahead on threads
  (`Exporter(verify_ahead=...)`); `cat` is printed as a ratio to both the plain and
  the verified flat read. The order of the reads rotates from round to round. The page
  cache is dropped before each read with /proc/sys/vm/drop_caches (as root), otherwise
  posix_fadvise(DONTNEED) on data.mdb and the flat file; the header says which;
  with each read's CPU time per GiB (all threads of the process: on a loaded machine
  a verified read is CPU-bound, and this figure moves far less with the load). `cat`
  writes its views of the map to /dev/null (nothing copied); the flat reads copy into
  the process (read()): the zero-copy read is part of what `cat` is measured on;
- warm reads: `cat` vs the flat file with everything cached;
- `--nordahead`: also a cold `cat` with LMDB opened with MDB_NORDAHEAD (slow);
- the load average next to the figures (the machine is shared).

`--reads-only` imports the file once (in-process) and measures only the reads.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from overlay.cli.cmd_node import init_home
from overlay.core.cid import RAW, Cid
from store.blockstore import BlockStore
from store.exporter import VERIFY_AHEAD_BYTES, Exporter
from store.importer import Importer, ImportOptions
from store.verify_ahead import VERIFY_THREADS

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


def drop_caches(*files: Path) -> str:
    """Evict the page cache: all of it when allowed, else these files' pages."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return "drop_caches"
    except OSError:
        for path in files:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
        return "posix_fadvise(DONTNEED)"


def lmdb_put_limit(src: Path, dir_: Path) -> float:
    """Bare synced LMDB puts of the file's 256 KiB blocks, 64 per transaction, with
    the CIDs computed beforehand: the store's share of a durable import."""
    with open(src, "rb") as f:
        cids = [Cid.of(RAW, b) for b in iter(lambda: f.read(CHUNK), b"")]
    with BlockStore(dir_ / "puts", initial_map_size_mib=256) as store, open(src, "rb") as f:
        t = time.perf_counter()
        for i in range(0, len(cids), 64):
            store.put_many([(c, f.read(CHUNK), None) for c in cids[i:i + 64]])
            store.release_mapped_pages()
        rate = src.stat().st_size / (time.perf_counter() - t) / MB
    shutil.rmtree(dir_ / "puts")
    return rate


def flat_rate(src: Path, *, hashed: bool) -> float:
    """Read `src` in 256 KiB reads (and hash each, if `hashed`)."""
    t = time.perf_counter()
    with open(src, "rb", buffering=0) as f:
        for b in iter(lambda: f.read(CHUNK), b""):
            if hashed:
                hashlib.sha256(b).digest()
    return src.stat().st_size / (time.perf_counter() - t) / MB


def _hash_chunk(buf: bytes) -> None:
    mv = memoryview(buf)
    for off in range(0, len(buf), CHUNK):
        hashlib.sha256(mv[off:off + CHUNK]).digest()


def flat_threads_rate(src: Path, threads: int = VERIFY_THREADS,
                      window: int = VERIFY_AHEAD_BYTES) -> float:
    """Read `src` in 1 MiB reads and sha256 each 256 KiB on `threads` threads, at most
    `window` bytes read ahead of the hashing: a verified flat-file read done as `cat`
    does it (same threads, same window, same hash-task size)."""
    step = 1 << 20
    t = time.perf_counter()
    queued: deque[Future[None]] = deque()
    with ThreadPoolExecutor(threads) as pool, open(src, "rb", buffering=0) as f:
        for b in iter(lambda: f.read(step), b""):
            queued.append(pool.submit(_hash_chunk, b))
            while len(queued) * step > window:
                queued.popleft().result()
        for fut in queued:
            fut.result()
    return src.stat().st_size / (time.perf_counter() - t) / MB


def cat_rate(store_dir: Path, cid: Cid, *, readahead: bool = True,
             ahead: int = VERIFY_AHEAD_BYTES) -> tuple[float, int]:
    with BlockStore(store_dir, readahead=readahead) as store:
        fd = os.open(os.devnull, os.O_WRONLY)
        try:
            t = time.perf_counter()
            n = Exporter(store, verify_ahead=ahead).cat(cid, lambda mv: os.write(fd, mv))
            dt = time.perf_counter() - t
        finally:
            os.close(fd)
    return n / dt / MB, n


def load() -> str:
    return "load " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def print_rate(name: str, rate: float, ref: float, ref_name: str) -> None:
    print(f"  {name:<44} {rate:8.0f} MB/s   {rate / ref:5.2f} of {ref_name}")


def add_inproc(src: Path, dir_: Path, version: int) -> tuple[float, float, Cid]:
    """(MB/s, CPU s per GiB over all threads, root) of an Importer add into `dir_`."""
    shutil.rmtree(dir_, ignore_errors=True)
    size = src.stat().st_size
    with BlockStore(dir_, initial_map_size_mib=256) as store:
        t, c = time.perf_counter(), time.process_time()
        added = Importer(store, ImportOptions(cid_version=version)).add_path(src)
        rate = size / (time.perf_counter() - t) / MB
        cpu = (time.process_time() - c) / (size / 2**30)
    return rate, cpu, added.cid


def add_cli(src: Path, home: Path) -> tuple[float, str]:
    """MB/s of `colony add` into a fresh home, as a user runs it (with start-up)."""
    shutil.rmtree(home, ignore_errors=True)
    init_home(home, quiet=True)
    env = {**os.environ, "COLONY_HOME": str(home)}
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "overlay.cli.main", "add", "-Q", str(src)],
                       env=env, capture_output=True, text=True, check=True)
    return src.stat().st_size / (time.perf_counter() - t) / MB, r.stdout.strip()


def imports(tmp: Path, src: Path, size: int, rounds: int) -> Cid:
    """Limits and adds in interleaved rounds (medians; ratios within a round); prints
    them and returns the v1 CID, left in ``tmp/inproc`` for the reads."""
    sha, sha_cpu = sha256_limit(min(size, 256 << 20))
    disk = disk_limit(tmp, size)
    lo = os.getloadavg()[0]
    runs: dict[str, list[float]] = {"puts": [], "inproc": [], "cli": []}
    cpu: list[float] = []
    cid = None
    for _ in range(rounds):
        runs["puts"].append(lmdb_put_limit(src, tmp))
        rate, c, cid = add_inproc(src, tmp / "inproc", 1)
        runs["inproc"].append(rate)
        cpu.append(c)
        rate, printed = add_cli(src, tmp / "node")
        runs["cli"].append(rate)
        assert printed == str(cid), "CLI and in-process CIDs differ"
    shutil.rmtree(tmp / "node")
    v0 = add_inproc(src, tmp / "inproc-v0", 0)[0]
    shutil.rmtree(tmp / "inproc-v0")
    hi = os.getloadavg()[0]
    limits = [min(sha, p) for p in runs["puts"]]
    print(f"import, {rounds} rounds (load {lo:.1f}→{hi:.1f})")
    print(f"  {'sha256 on 256 KiB blocks':<44} {sha:8.0f} MB/s")
    print(f"  {'disk write + fdatasync':<44} {disk:8.0f} MB/s")
    for name, key in (("bare synced LMDB puts of the same blocks", "puts"),
                      ("add in-process (v1, raw leaves)", "inproc"),
                      ("add via CLI into a fresh home (colony add)", "cli")):
        ratios = [a / b for a, b in zip(runs[key], limits, strict=True)]
        print(f"  {name:<44} {statistics.median(runs[key]):8.0f} MB/s   "
              f"{statistics.median(ratios):5.2f} of min(sha256, puts) "
              f"(rounds: {' '.join(f'{x:.0f}' for x in runs[key])})")
    print(f"  {'add in-process (v0, dag-pb leaves), once':<44} {v0:8.0f} MB/s")
    print(f"  CPU per GiB added in-process (v1): {statistics.median(cpu):.2f} s, all threads; "
          f"sha256 alone {sha_cpu:.2f} s")
    assert cid is not None
    return cid


def reads(src: Path, store_dir: Path, cid: Cid, size: int, rounds: int,
          nordahead: bool) -> None:
    """Cold reads in interleaved rounds (medians, ratios within a round), then warm."""
    files = (src, store_dir / "data.mdb")
    flat, flat_v = "flat file", f"flat file + sha256, {VERIFY_THREADS} threads"

    def cat_ahead() -> float:
        rate, n = cat_rate(store_dir, cid)
        assert n == size
        return rate

    readers: dict[str, Callable[[], float]] = {
        flat: lambda: flat_rate(src, hashed=False),
        "flat file + sha256, 1 thread": lambda: flat_rate(src, hashed=True),
        flat_v: lambda: flat_threads_rate(src),
        "cat, verify ahead": cat_ahead,
        "cat, no verify ahead": lambda: cat_rate(store_dir, cid, ahead=0)[0],
    }
    names = list(readers)
    runs: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}  # CPU s per GiB, all threads
    how = ""
    lo = os.getloadavg()[0]
    for i in range(rounds):
        for name in names[i % len(names):] + names[:i % len(names)]:  # rotate the order
            how = drop_caches(*files)
            c = time.process_time()
            runs[name].append(readers[name]())
            cpu[name].append((time.process_time() - c) / (size / 2**30))
    hi = os.getloadavg()[0]
    print(f"cold reads, {rounds} rounds, page cache dropped with {how} (load {lo:.1f}→{hi:.1f});"
          f" ratios are medians of the per-round ratios")
    for name in names:
        med = statistics.median(runs[name])
        ratios = [statistics.median(a / b for a, b in zip(runs[name], runs[ref], strict=True))
                  for ref in (flat, flat_v)]
        print(f"  {name:<44} {med:8.0f} MB/s   {ratios[0]:5.2f} of flat, {ratios[1]:5.2f} of "
              f"verified flat, {statistics.median(cpu[name]):.2f} CPU s/GiB "
              f"(rounds: {' '.join(f'{x:.0f}' for x in runs[name])})")
    if nordahead:
        drop_caches(*files)
        rate, _ = cat_rate(store_dir, cid, readahead=False)
        print(f"  {'cat, LMDB MDB_NORDAHEAD':<44} {rate:8.0f} MB/s")
    cat_rate(store_dir, cid)  # warm the cache
    flat_rate(src, hashed=False)
    print(f"warm reads ({load()})")
    fw = statistics.median(flat_rate(src, hashed=False) for _ in range(3))
    print(f"  {'flat file':<44} {fw:8.0f} MB/s")
    for ahead in (VERIFY_AHEAD_BYTES, 0):
        rate = statistics.median(cat_rate(store_dir, cid, ahead=ahead)[0] for _ in range(3))
        print_rate(f"cat, verify ahead {ahead >> 20} MiB", rate, fw, "flat file")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--nordahead", action="store_true", help="also cat with MDB_NORDAHEAD")
    ap.add_argument("--dir", type=Path, default=None, help="work dir (default: a temp dir)")
    ap.add_argument("--reads-only", action="store_true",
                    help="import once in-process, measure only the reads")
    args = ap.parse_args()
    size = args.size_mib << 20
    tmp = Path(tempfile.mkdtemp(prefix="colony-bench-store-", dir=args.dir))
    try:
        src = tmp / "data.bin"
        make_file(src, size)
        print(f"store benchmark: {args.size_mib} MiB, 256 KiB chunks")
        if args.reads_only:
            cid = add_inproc(src, tmp / "inproc", 1)[2]
        else:
            cid = imports(tmp, src, size, args.rounds)
        reads(src, tmp / "inproc", cid, size, args.rounds, args.nordahead)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
