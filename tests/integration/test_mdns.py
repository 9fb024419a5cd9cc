"""mDNS LAN discovery between real daemons, multicast kept inside test namespaces.

Two network namespaces joined by a veth pair (10.213.x.0/24, a multicast route on
the veth) stand in for two hosts on one LAN. One daemon runs in each with
`ip netns exec`, mDNS on, no bootstrap address and no saved peers. They must find
each other by multicast DNS and become alive members of each other's colony. All
multicast stays on the veth pair; the namespaces are deleted in a `finally` (and
ones left by a killed earlier run, named with its pid, at the next start).

A second test puts a js-libp2p node with @libp2p/mdns (tests/integration/js_bitswap/
mdns_peer.mjs) in one namespace and a daemon in the other: js-libp2p must discover
the daemon's address from our answers, and the daemon must find the js node from
its answers and dial it (it then shows in `colony peers`).

Skipped, with the reason, only when namespaces cannot be created (not root, no
`ip`, or no permission to create them), or for the js test when node/npm or the npm
registry is absent.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from colony_cluster import REPO, colony_cmd, wait_for
from test_bitswap_js_interop import install_js_peers

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]
PREFIX = "cymd"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check,
                          timeout=30)


def _remove_leftovers() -> None:
    """Namespaces of earlier runs whose process is gone (names carry the pid)."""
    for line in _ip("netns", "list", check=False).stdout.splitlines():
        m = re.match(rf"({PREFIX}(\d+)x\w+)", line)
        if m and not Path(f"/proc/{m.group(2)}").exists():
            _ip("netns", "del", m.group(1), check=False)


class Lan:
    """Two namespaces on one veth 'cable', 10.213.0.1 and 10.213.0.2."""

    def __init__(self) -> None:
        tag = f"{PREFIX}{os.getpid()}x{secrets.token_hex(2)}"
        self.ns = [f"{tag}a", f"{tag}b"]
        self.ips = ["10.213.0.1", "10.213.0.2"]
        self.created: list[str] = []

    def up(self) -> None:
        for ns in self.ns:
            r = _ip("netns", "add", ns, check=False)
            if r.returncode != 0:
                raise PermissionError(r.stderr.strip())
            self.created.append(ns)
        veth = [f"v{os.getpid() % 100000}{c}{secrets.token_hex(1)}" for c in "ab"]
        _ip("link", "add", veth[0], "netns", self.ns[0], "type", "veth",
            "peer", "name", veth[1], "netns", self.ns[1])
        for ns, dev, ip in zip(self.ns, veth, self.ips, strict=True):
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "route", "add", "224.0.0.0/4", "dev", dev)

    def down(self) -> None:
        for ns in self.created:
            _ip("netns", "del", ns, check=False)


def _skip_reason() -> str | None:
    if shutil.which("ip") is None:
        return "mDNS test needs the `ip` command (iproute2) to create network namespaces"
    if os.geteuid() != 0:
        return "mDNS test needs root to create network namespaces (multicast stays inside)"
    return None


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLONY_")}
    # Each namespace has its own ports, so every daemon uses the same fixed ones.
    env.update(COLONY_DISCOVERY_MDNS="true", COLONY_NETWORK_LISTEN="/ip4/0.0.0.0/tcp/4001",
               COLONY_API_LISTEN="127.0.0.1:5101", COLONY_LOG_FORMAT="json")
    return env


def _start_daemon(ns: str, home: Path) -> subprocess.Popen[bytes]:
    with open(home.parent / f"{home.name}.log", "wb") as log:
        return subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "overlay.cli.main",
             "--home", str(home), "daemon"],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, cwd=REPO, env=_env(),
            start_new_session=True)


def _cli(ns: str, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-m", "overlay.cli.main",
         "--home", str(home), *args],
        capture_output=True, text=True, timeout=30, cwd=REPO, env=_env())


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            p.wait(timeout=10)


def test_two_daemons_on_a_lan_find_each_other_by_mdns(tmp_path: Path) -> None:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    _remove_leftovers()
    lan = Lan()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        try:
            lan.up()
        except PermissionError as e:
            pytest.skip(f"cannot create network namespaces here: {e}")
        homes = [tmp_path / "a", tmp_path / "b"]
        ids = []
        for home in homes:
            colony_cmd(home, "init")
            ids.append(colony_cmd(home, "id").stdout.strip())
        for ns, home in zip(lan.ns, homes, strict=True):
            procs.append(_start_daemon(ns, home))

        def alive_members(i: int) -> set[str]:
            if procs[i].poll() is not None:
                raise AssertionError(f"daemon {i} exited: "
                                     + (tmp_path / f"{homes[i].name}.log").read_text()[-2000:])
            r = _cli(lan.ns[i], homes[i], "members", "--json")
            if r.returncode != 0:
                return set()  # API not up yet
            return {m["id"] for m in json.loads(r.stdout) if m["state"] == "alive"}

        wait_for(lambda: alive_members(0) >= set(ids) and alive_members(1) >= set(ids), 60,
                 "both daemons to list each other alive (found by mDNS)", every=1.0)
        log_a = (tmp_path / "a.log").read_text()
        assert "mdns_peer_found" in log_a or "mdns_peer_found" in (tmp_path / "b.log").read_text()
        assert "bootstrap_dial_failed" not in log_a  # no bootstrap was configured at all
    finally:
        _stop(procs)
        lan.down()


@pytest.mark.timeout(420)  # the first run includes `npm ci` (~40 s idle, minutes if loaded)
def test_js_libp2p_and_a_daemon_find_each_other_by_mdns(tmp_path: Path) -> None:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    cache = install_js_peers()
    _remove_leftovers()
    lan = Lan()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        try:
            lan.up()
        except PermissionError as e:
            pytest.skip(f"cannot create network namespaces here: {e}")
        home = tmp_path / "a"
        colony_cmd(home, "init")
        me = colony_cmd(home, "id").stdout.strip()
        procs.append(_start_daemon(lan.ns[0], home))
        js_out = tmp_path / "js.out"
        with open(js_out, "wb") as out, open(tmp_path / "js.err", "wb") as err:
            js = subprocess.Popen(["ip", "netns", "exec", lan.ns[1], "node", "mdns_peer.mjs"],
                                  cwd=cache, stdin=subprocess.PIPE, stdout=out, stderr=err,
                                  start_new_session=True)
        procs.append(js)

        def events() -> list[dict[str, Any]]:
            if js.poll() is not None:
                raise AssertionError("js peer exited: " + (tmp_path / "js.err").read_text())
            return [json.loads(line) for line in js_out.read_text().splitlines()]

        js_id = wait_for(lambda: next((e["peerId"] for e in events()
                                       if e["event"] == "ready"), None), 60, "js peer ready")
        # js-libp2p parsed our answer: our id with our address on the veth.
        wait_for(lambda: any(e["event"] == "discovered" and e["peer"] == me
                             and any("/ip4/10.213.0.1/tcp/4001" in a for a in e["addrs"])
                             for e in events()), 60, "js-libp2p to discover the daemon")
        # We parsed js-libp2p's answer (TXT records in its answer section) and dialled.
        wait_for(lambda: str(js_id) in _cli(lan.ns[0], home, "peers").stdout, 60,
                 "the daemon to connect to the js peer it found")
        assert f'"peer": "{js_id}"' in (tmp_path / "a.log").read_text().replace(
            '"peer":"', '"peer": "')  # the mdns_peer_found line names it
    finally:
        _stop(procs)
        lan.down()
