"""The web dashboard in a real browser (headless Debian Chromium via Playwright)
against a real 3-daemon colony on 127.0.0.1: log in, see every member, submit a
capsule from the page and watch it reach succeeded, read its log, fetch and browse a
published DAG by path, see a user event arrive, open a `colony sim run` folder; a
bad token, a stale session and a stopped daemon each show a message. Screenshots go
to tests/artifacts/dashboard/."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from browser import chromium, login, missing, shot
from colony_cluster import Cluster, Node, colony_cmd, wait_for

from overlay.client import Colony

WHY = missing()
pytestmark = [pytest.mark.slow, pytest.mark.timeout(120),
              pytest.mark.skipif(bool(WHY), reason=WHY or "browser present")]
WAIT_MS = 30_000


def base(node: Node) -> str:
    return f"http://127.0.0.1:{node.api_port}"


def token(node: Node) -> str:
    return (node.home / "api.token").read_text().strip()


@pytest.fixture(scope="module")
def colony(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("dashboard"), 3)
    try:
        c.start()
        c.wait_converged(60)
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def page(colony: Cluster) -> Iterator[Any]:
    with chromium() as browser:
        ctx = browser.new_context(viewport={"width": 1280, "height": 900})
        pg = ctx.new_page()
        pg.set_default_timeout(WAIT_MS)
        login(pg, base(colony.nodes[0]), token(colony.nodes[0]))
        yield pg
        ctx.close()


def test_bad_token_and_stale_session_say_so(colony: Cluster) -> None:
    n0 = colony.nodes[0]
    with chromium() as browser:
        ctx = browser.new_context()
        pg = ctx.new_page()
        pg.set_default_timeout(WAIT_MS)
        pg.goto(base(n0) + "/dashboard/login.html")
        pg.fill("#token", "0" * 64)
        pg.click("#submit")
        pg.wait_for_selector("#msg:has-text('Wrong token')")
        shot(pg, "login-bad-token")
        # what a browser holds after the daemon restarted: a session it no longer knows
        ctx.add_cookies([{"name": f"colony_session_{n0.api_port}", "value": "f" * 64,
                          "url": base(n0)}])
        pg.goto(base(n0) + "/dashboard/#/colony")
        pg.wait_for_url("**/login.html#expired")
        assert "expired" in pg.inner_text("#reason")
        shot(pg, "login-session-expired")


def test_colony_page_lists_every_member(colony: Cluster, page: Any) -> None:
    page.wait_for_selector("#members[data-loaded='3']")
    text = page.inner_text("#members")
    for n in colony.nodes:
        assert n.peer_id[:8] in text and n.peer_id[-6:] in text, (n.peer_id, text)
    assert text.count("alive") >= 3 and "(this node)" in text
    page.wait_for_selector("#coord-plot circle >> nth=2")  # one dot per member
    assert page.locator("#coord-plot circle").count() == 3
    shot(page, "colony")


def test_submit_capsule_watch_it_succeed_and_read_its_log(colony: Cluster, page: Any) -> None:
    page.goto(base(colony.nodes[0]) + "/dashboard/#/capsules")
    page.fill("#spec", '{"name": "from-the-page", "command": ["sh", "-c", '
                       '"echo dashboard-ran; echo second-line"]}')
    page.click("#submit")
    page.click("#submitted-link")
    page.wait_for_selector("#capsule-state:has-text('succeeded')")
    page.wait_for_selector("#capsule-log[data-done='1']")
    log = page.inner_text("#capsule-log")
    assert "dashboard-ran" in log and "second-line" in log, log
    assert "succeeded" in page.inner_text("#lease-history")
    assert "exit 0" in page.inner_text("#log-state")
    shot(page, "capsule")
    page.goto(base(colony.nodes[0]) + "/dashboard/#/capsules")
    page.select_option("#filter-state", "succeeded")
    page.wait_for_selector("#capsule-list:has-text('from-the-page')")
    shot(page, "capsules")


def test_fetch_and_browse_a_published_dag_by_path(
    colony: Cluster, page: Any, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    (site / "docs").mkdir(parents=True)
    (site / "docs" / "readme.txt").write_text("browsed by path\n")
    (site / "index.txt").write_text("top\n")
    cid = Colony.for_home(colony.nodes[1].home).publish(site).cid  # published elsewhere
    page.goto(base(colony.nodes[0]) + "/dashboard/#/data")
    page.fill("#fetch-cid", cid)
    page.click("#fetch-go")
    page.wait_for_selector("#fetch-text:has-text('done')")
    page.wait_for_selector("#dag-view a.entry:has-text('docs/')")
    page.click("#dag-view a.entry:has-text('docs/')")
    page.click("#dag-view a.entry:has-text('readme.txt')")
    page.wait_for_selector("#dag-preview:has-text('browsed by path')")
    assert page.input_value("#dag-path") == f"{cid}/docs/readme.txt"
    shot(page, "data")


def test_events_metrics_and_doctor_pages(colony: Cluster, page: Any) -> None:
    page.goto(base(colony.nodes[0]) + "/dashboard/#/events")
    page.wait_for_selector("#event-rows", state="attached")
    sender = Colony.for_home(colony.nodes[1].home)

    def arrived() -> bool:
        sender.send_event("dash-hello", "from node 1")
        page.wait_for_timeout(500)
        return "dash-hello" in page.inner_text("#event-rows")

    wait_for(arrived, 20, "a user event on the events page", every=0.1)
    shot(page, "events")
    page.goto(base(colony.nodes[0]) + "/dashboard/#/metrics")
    # a string for wait_for_function would be eval: the pages' CSP forbids it
    page.wait_for_selector("#metric-list:has-text('colony_members_alive')")
    assert int(page.get_attribute("#metric-list", "data-series") or 0) > 3
    shot(page, "metrics")
    page.goto(base(colony.nodes[0]) + "/dashboard/#/doctor")
    page.wait_for_selector("#doctor table")
    assert re.search(r"connections\s+ok", page.inner_text("#doctor"))
    shot(page, "doctor")


def test_simulation_page_opens_a_sim_run_folder(
    colony: Cluster, page: Any, tmp_path: Path
) -> None:
    out = tmp_path / "sim-run"
    colony_cmd(colony.nodes[0].home, "sim", "run", "gossip-failures", "--nodes", "16",
               "--duration", "20", "--out", str(out))
    page.goto(base(colony.nodes[0]) + "/dashboard/#/sim/" + quote(str(out), safe=""))
    page.wait_for_selector("#sim-series .name:has-text('live')")
    assert "gossip-failures" in page.inner_text("#sim-run")
    plot = page.locator("img.sim-plot").first
    plot.wait_for()
    wait_for(lambda: plot.evaluate("img => img.complete && img.naturalWidth") > 0, 10,
             "a PNG plot of the run drawn in the page")
    shot(page, "simulation")


def test_a_stopped_daemon_shows_a_message(colony: Cluster, page: Any) -> None:
    n2 = colony.nodes[2]
    pg = page.context.new_page()
    pg.set_default_timeout(WAIT_MS)
    login(pg, base(n2), token(n2))
    pg.wait_for_selector("#members[data-loaded]")
    n2.kill()
    pg.wait_for_selector("#banner[data-kind='gone']")
    assert "Daemon unreachable" in pg.inner_text("#banner")
    shot(pg, "daemon-gone")
    pg.close()
