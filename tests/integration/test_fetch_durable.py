"""Acknowledged = durable, for a fetch: a daemon killed with SIGKILL the moment its
`/v1/fetch` answers `done` keeps every block of the DAG (docs/store.md, "Fetching
between colony peers": the bulk stream's blocks are committed on the commit thread
and the fetch is acknowledged only after `BlockWriter.drain` and `flush` return).

The DAG is 40 MiB, so the last batches are still buffered or on the commit thread
when the stream ends; two real daemons on 127.0.0.1, the kill right after the final
progress line is read, then the store is opened by this process and checked whole.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from colony_cluster import Cluster, colony_cmd

from overlay.core.cid import Cid
from store.blockstore import BlockStore
from store.exporter import Exporter

pytestmark = pytest.mark.slow
MiB = 1024 * 1024


def test_acknowledged_fetch_survives_kill_9(tmp_path: Path) -> None:
    data = random.Random(16).randbytes(40 * MiB + 4321)
    src = tmp_path / "f.bin"
    src.write_bytes(data)
    with Cluster(tmp_path / "c", 2) as c:
        c.wait_converged(60)
        provider, fetcher = c.nodes
        r = colony_cmd(provider.home, "publish", str(src), "--json", timeout=300)
        cid = json.loads(r.stdout)["cid"]
        final: dict[str, object] = {}
        for item in fetcher.api(300).stream("POST", "/v1/fetch", {"cid": cid}):
            final = item
            if item.get("done"):
                fetcher.kill()  # the acknowledgement has been read: kill -9 now
                break
        assert final.get("done") and not final.get("error"), final
        assert int(final["blocks_fetched"]) > 100, final  # type: ignore[call-overload]
    with BlockStore(fetcher.home / "blocks") as store:
        assert store.verify_all() == []
        out = bytearray()
        Exporter(store).cat(Cid.parse(cid), out.extend)
    assert bytes(out) == data
