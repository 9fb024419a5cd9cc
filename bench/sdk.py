"""The SDK's overhead per call (docs/sdk.md, "Overhead").

One real daemon on 127.0.0.1. In the same run, `--calls` times each (after a warm-up):
1. bare: `http.client` GET /v1/id with the token, JSON-decoded — the limit;
2. sdk: `Colony.id()` (transport + typed result);
3. async: `AsyncColony.id()` under trio (adds a worker-thread hop);
4. error: `Colony.capsule("bad")` raising `BadRequest` (error mapping), next to a bare
   request that gets the same 400.
Prints µs per call for each and its ratio to the bare request, and the load average.

Run: .venv/bin/python bench/sdk.py [--calls 200]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
from colony_cluster import cluster

from overlay.client import AsyncColony, BadRequest, Colony

ROUNDS = 5


def per_call_us(fn: Callable[[], object], calls: int) -> float:
    for _ in range(min(50, calls)):
        fn()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=200)
    calls: int = ap.parse_args().calls
    with tempfile.TemporaryDirectory() as tmp, cluster(Path(tmp), 1) as c:
        colony = Colony.for_home(c.nodes[0].home)
        host, port, token = colony.api.host, colony.api.port, colony.api.token
        headers = {"Authorization": f"Bearer {token}"}

        def bare(path: str = "/v1/id") -> object:
            conn = http.client.HTTPConnection(host, port, timeout=60)
            try:
                conn.request("GET", path, headers=headers)
                resp = conn.getresponse()
                return json.loads(resp.read())
            finally:
                conn.close()

        def sdk_error() -> None:
            with contextlib.suppress(BadRequest):
                colony.capsule("bad")

        aio = AsyncColony(colony)

        async def async_calls() -> float:
            for _ in range(min(50, calls)):
                await aio.id()
            t0 = time.perf_counter()
            for _ in range(calls):
                await aio.id()
            return (time.perf_counter() - t0) / calls * 1e6

        # Rounds alternate the variants so a load change on this shared machine hits
        # them alike; each figure is the median of its rounds.
        samples: dict[str, list[float]] = {}
        for _ in range(ROUNDS):
            variants: list[tuple[str, Callable[[], float]]] = [
                ("bare http.client GET /v1/id", lambda: per_call_us(bare, calls)),
                ("Colony.id()", lambda: per_call_us(colony.id, calls)),
                ("AsyncColony.id() under trio", lambda: trio.run(async_calls)),
                ("bare400", lambda: per_call_us(lambda: bare("/v1/capsules/get?id=bad"),
                                                calls)),
                ("sdk400", lambda: per_call_us(sdk_error, calls)),
            ]
            for name, measure in variants:
                samples.setdefault(name, []).append(measure())
        med = {k: statistics.median(v) for k, v in samples.items()}
        rows = [(k, v) for k, v in med.items() if not k.endswith("400")]
        err_bare, err_sdk = med["bare400"], med["sdk400"]
    limit = rows[0][1]
    print(f"SDK overhead per call, median of {ROUNDS} alternating rounds of {calls} calls, "
          "load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for name, us in rows:
        print(f"  {name:<34} {us:8.1f} µs/call   ratio to bare {us / limit:5.2f}")
    print(f"  {'bare request answered 400':<34} {err_bare:8.1f} µs/call   (limit for the next)")
    print(f"  {'Colony.capsule -> BadRequest':<34} {err_sdk:8.1f} µs/call   "
          f"ratio to bare 400 {err_sdk / err_bare:5.2f}")


if __name__ == "__main__":
    main()
