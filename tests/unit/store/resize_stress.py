"""Grow a block store's map ≥ 10× while other threads read (run as a script).

Run by test_store_resize.py in a child process, so that a crash (reading a memoryview
into a map that set_mapsize replaced) fails the test instead of killing pytest.
Prints one line `ok GROWTH READS` or raises.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
from pathlib import Path

from overlay.core.cid import RAW, Cid
from store.blockstore import BlockStore

BLOCK = 64 * 1024
READERS = 3


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = BlockStore(Path(tmp) / "blocks", initial_map_size_mib=1)
        start = store.env.info()["map_size"]
        seed = [os.urandom(BLOCK) for _ in range(4)]
        seed_cids = [Cid.of(RAW, b) for b in seed]
        store.put_many([(c, b, None) for c, b in zip(seed_cids, seed, strict=True)])
        stop = threading.Event()
        errors: list[BaseException] = []
        reads = [0] * READERS

        def reader(i: int) -> None:
            try:
                while not stop.is_set():
                    with store.reader() as r:
                        views = [r.read(c, verify=False) for c in seed_cids]
                        for _ in range(20):  # hold the views across the writer's commits
                            for c, v in zip(seed_cids, views, strict=True):
                                if not c.verify(v):
                                    raise AssertionError(f"reader {i}: {c} changed under us")
                        reads[i] += 1
            except BaseException as e:  # reported by the main thread
                errors.append(e)

        threads = [threading.Thread(target=reader, args=(i,)) for i in range(READERS)]
        for t in threads:
            t.start()
        try:
            while store.env.info()["map_size"] < 10 * start and not errors:
                batch = [os.urandom(BLOCK) for _ in range(16)]
                store.put_many([(Cid.of(RAW, b), b, None) for b in batch])
        finally:
            stop.set()
            for t in threads:
                t.join()
        if errors:
            raise errors[0]
        growth = store.env.info()["map_size"] / start
        for c, b in zip(seed_cids, seed, strict=True):
            assert store.get(c) == b
        store.close()
        print(f"ok {growth:.0f} {sum(reads)}")


if __name__ == "__main__":
    main()
    sys.exit(0)
