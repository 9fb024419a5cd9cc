"""Page load time of the dashboard's colony page (docs/dashboard.md, "Load time").

N real daemons on 127.0.0.1 (default 20), converged; headless Debian Chromium driven
by Playwright (tests/integration/browser.py), logged in once. Each round opens the
colony page in a new tab and reads, from the page's own Performance timeline:
- first paint: `first-contentful-paint`;
- data shown: the `colony-data` mark the page sets when the member table (all N
  members) and the coordinate plot are drawn;
next to, in the same run, a bare `http.client` GET /v1/members of the same daemon
(the API's share of that time). Prints medians, their ratio to the 1 s limit, and
the load average.

Run: .venv/bin/python bench/dashboard.py [--nodes 20] [--rounds 7]
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

# bench/ holds an overlay.py: the repository, not this folder, must come first.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from browser import chromium, login, missing
from colony_cluster import Cluster

LIMIT_MS = 1000.0


def bare_members_ms(port: int, token: str, calls: int = 20) -> float:
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("GET", "/v1/members", headers={"Authorization": f"Bearer {token}"})
        c.getresponse().read()
        c.close()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    why = missing()
    if why:
        sys.exit(f"cannot run: {why}")
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp, Cluster(Path(tmp), args.nodes,
                                                       start_timeout=180) as c:
        c.wait_converged(240)
        print(f"{args.nodes} daemons started and converged in {time.monotonic() - t0:.1f} s; "
              f"load average {os.getloadavg()[0]:.2f}")
        n0 = c.nodes[0]
        base = f"http://127.0.0.1:{n0.api_port}"
        token = (n0.home / "api.token").read_text().strip()
        paint, shown = [], []
        with chromium() as browser:
            ctx = browser.new_context(viewport={"width": 1280, "height": 900})
            first = ctx.new_page()
            login(first, base, token)
            first.close()
            for _ in range(args.rounds):
                pg = ctx.new_page()
                pg.goto(base + "/dashboard/#/colony")
                pg.wait_for_selector(f"#members[data-loaded='{args.nodes}']", timeout=30_000)
                fcp = pg.evaluate("performance.getEntriesByName('first-contentful-paint')"
                                  "[0].startTime")
                data = pg.evaluate("performance.getEntriesByName('colony-data')[0].startTime")
                paint.append(float(fcp))
                shown.append(float(data))
                pg.close()
        bare = bare_members_ms(n0.api_port, token)
        load = os.getloadavg()[0]
    p, d = statistics.median(paint), statistics.median(shown)
    print(f"colony page, {args.nodes} members, median of {args.rounds} loads "
          f"(load average {load:.2f}):")
    print(f"  first paint   {p:7.1f} ms   ratio to the {LIMIT_MS:.0f} ms limit {p / LIMIT_MS:.3f}")
    print(f"  data shown    {d:7.1f} ms   ratio to the {LIMIT_MS:.0f} ms limit {d / LIMIT_MS:.3f}")
    print(f"  bare GET /v1/members (http.client, same daemon) {bare:.1f} ms "
          f"= {bare / d:.2f} of data shown")
    print(f"  all rounds: paint {[round(x) for x in paint]}, data {[round(x) for x in shown]}")


if __name__ == "__main__":
    main()
