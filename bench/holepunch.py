"""DCUtR hole punching over TCP through real NATs: success rate and time to a direct path.

Root only: builds tests/integration/netns_topology.py with three NAT'd sites (a and
c endpoint-independent, b symmetric), 20 ms delay lines, 1 % loss, 40 Mbit/s on every
WAN link, and runs one process per node (each a Transport with the daemon's edge
stack, overlay.runtime.edge.stack.open_edge): a relay on pub1, punch targets in c and
b holding a reservation there, and a dialler in a. For each target the dialler, N
times: reaches it through the relay (`dial_order = ["holepunch"]`), waits for the
target's DCUtR to give a direct TCP connection (or to give up), records the times,
and disconnects.

Prints per NAT pair, with the limit in the same line:
  * punch success rate vs the public-network figure (70 %, Trautwein et al., "Challenging
    Tribal Knowledge", arXiv 2510.27500: 4.4 M attempts; TCP and QUIC alike);
  * time to the direct path p50 (from the start of the dial) vs the time to the relayed
    connection p50 in the same run (what the punch costs on top of the relay).

Re-punching the same peer from the same ports within seconds needs the old 4-tuple
out of TIME_WAIT: `net.ipv4.tcp_tw_reuse = 1` is set in the NAT'd hosts' namespaces
(a daemon re-punches a peer rarely; the bench does it N times a minute).

Run: .venv/bin/python bench/holepunch.py [--attempts 50] [--attempts-symmetric 10]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PUBLIC_FIGURE = 0.70
PORT = 4001


def _conf(**sections: dict[str, Any]) -> dict[str, dict[str, Any]]:
    from overlay.runtime.process.config import DEFAULTS

    c = copy.deepcopy(DEFAULTS)
    for k, v in sections.items():
        c[k].update(v)
    return c


async def _wait_file(p: Path, timeout: float = 60.0) -> str:
    with trio.fail_after(timeout):
        while not p.exists():
            await trio.sleep(0.05)
    return p.read_text()


def _put(p: Path, text: str) -> None:
    p.with_suffix(".tmp").write_text(text)
    p.with_suffix(".tmp").rename(p)


SINK = "/colony-bench/sink/1.0.0"
#: Modes of the throughput phase: the punch's transport (and QUIC's congestion control).
#: "no pmtud": the dialler's datagrams stay at 1200 bytes (path-MTU discovery off).
MODES = (("tcp", "tcp", ""), ("quic (reno)", "quic", "reno"), ("quic (cubic)", "quic", "cubic"),
         ("quic (bbr)", "quic", "bbr"), ("quic (bbr, no pmtud)", "quic", "bbr"))


async def _sink(s: Any) -> None:
    """Read to EOF, answer the byte count (8 bytes): the sender's clock stops on it."""
    n = 0
    while chunk := await s.read():
        n += len(chunk)
    await s.write(n.to_bytes(8, "big"))
    await s.close()


async def _send(host: Any, peer: Any, nbytes: int) -> float:
    s = await host.new_stream(peer, [SINK])
    block = b"\x5a" * 65536
    t0 = trio.current_time()
    left = nbytes
    while left > 0:
        await s.write(block[:min(left, len(block))])
        left -= len(block)
    await s.close()
    got = await s.read_exact(8)
    dt = trio.current_time() - t0
    assert int.from_bytes(got, "big") == nbytes, got
    return nbytes / dt


async def node(role: str, d: Path, ip: str, names: list[str], attempts: list[int],
               transports: list[str], mib: float, rounds: int) -> None:
    """One process of the bench, inside its namespace."""
    from overlay.core.crypto import KeyPair
    from overlay.p2p.dcutr import DcutrConfig, PunchGuard
    from overlay.runtime.edge.stack import open_edge
    from overlay.runtime.net.transport import Transport

    kp = KeyPair.generate()
    edge = {"holepunch_grace_s": 0.0, "dial_order": ["holepunch"], "webrtc": False}
    conf = _conf(edge=edge, relay={"enabled": role == "relay", "max_rate": 0})
    listen = [f"/ip4/{ip}/tcp/{PORT}", f"/ip4/{ip}/udp/{PORT}/quic-v1"]
    async with Transport.open(kp, listen) as t, \
            open_edge(t, kp, conf, lambda p: True) as dialer:
        hp = dialer.holepunch
        host = t.native_host()
        assert hp is not None and host is not None

        def use(kinds: tuple[str, ...]) -> None:
            # The bench punches one peer N times a minute: lift the per-peer rate limit.
            # The dialler's transports decide the punch's: CONNECT carries only those.
            hp.config = DcutrConfig(per_peer=100_000, transports=kinds)
            hp.guard = PunchGuard(hp.config)

        use(("tcp", "quic"))
        if role == "relay":
            _put(d / "relay.addr", t.addrs[0])
            await trio.sleep_forever()
        relay = await t.connect(await _wait_file(d / "relay.addr"))
        if role == "target":
            host.set_stream_handler(SINK, _sink)
            await dialer.relay.reserve(relay)
            _put(d / f"{names[0]}.id", str(t.peer_id))
            while True:  # renew well before the 300 s ttl
                await trio.sleep(60)
                await dialer.relay.reserve(relay)
        from overlay.core.ids import PeerId

        async def punch(peer: PeerId, kind: str) -> dict[str, Any]:
            t0 = trio.current_time()
            wall0 = time.time()
            row: dict[str, Any] = {"ok": False}
            try:
                await dialer.connect(peer)
                row["relayed_s"] = trio.current_time() - t0
                with trio.move_on_after(25):
                    while (c := host.punched_connection(peer)) is None:
                        await trio.sleep(0.005)
                    row["ok"] = True
                    row["direct_s"] = trio.current_time() - t0
                    row["transport"] = "quic" if type(c).__name__ == "QuicConn" else "tcp"
                    # One round trip on the punched path before `drop` closes it: the
                    # QUIC client (a) is done a flight before the server (c); closing at
                    # once left c's exchange running into the next punch
                    # (`refused: punch_in_progress`, a bench artefact).
                    with trio.move_on_after(5), contextlib.suppress(Exception):
                        await _send(host, peer, 1)
                    with trio.move_on_after(2):  # a's record lands when its driver ends
                        while (rec := hp.results.get(peer)) is None or rec.at < wall0:
                            await trio.sleep(0.01)
                        row["attempts"] = rec.attempts
                if not row["ok"]:
                    rec = hp.results.get(peer)  # a's own (responder) outcome
                    row["reason"] = (rec.reason if rec and rec.at >= wall0 else
                                     "no direct connection and no DCUtR exchange "
                                     "reached the dialler in 25 s")
            except Exception as e:  # a failed relay dial counts as a failed attempt
                row["reason"] = f"dial: {type(e).__name__}: {e}"[:200]
            row["wall"] = round(wall0, 3)
            return row

        async def drop(peer: PeerId, kind: str) -> None:
            await t.disconnect(peer)
            dialer._backoff.pop(peer, None)
            # TCP: TIME_WAIT reuse needs a newer timestamp; QUIC: the routers' UDP
            # conntrack entries (2 s here) must expire, or the next punch finds the
            # NATs already open.
            await trio.sleep(1.2 if kind == "tcp" else 2.6)

        peers: dict[str, PeerId] = {}
        for name, n in zip(names, attempts, strict=True):
            peer = peers[name] = PeerId.from_base58(await _wait_file(d / f"{name}.id"))
            for kind in transports:
                use((kind,))
                rows = []
                for i in range(n):
                    row = await punch(peer, kind)
                    row["i"] = i
                    rows.append(row)
                    await drop(peer, kind)
                print(json.dumps({"target": name, "transport": kind, "rows": rows}), flush=True)
        if rounds <= 0 or "c" not in peers:
            return
        # Throughput over the punched cone <-> cone path, modes interleaved per round.
        from overlay.p2p import quic

        nbytes = int(mib * 1024 * 1024)
        for _ in range(rounds):
            for label, kind, cc in MODES:
                use((kind,))
                quic.CONGESTION_CONTROL = cc or "reno"
                quic.PMTUD = "no pmtud" not in label
                if host._quic is not None:
                    host._quic.congestion_control = cc or "reno"
                    host._quic.pmtud = quic.PMTUD
                for _try in range(3):
                    row = await punch(peers["c"], kind)
                    if row["ok"] and row.get("transport") == kind:
                        break
                    await drop(peers["c"], kind)
                else:
                    print(json.dumps({"throughput": label, "error": row}), flush=True)
                    continue
                await trio.sleep(0.5)  # the circuit retires (grace 0)
                try:
                    with trio.fail_after(180):
                        rate = await _send(host, peers["c"], nbytes)
                except Exception as e:
                    print(json.dumps({"throughput": label, "error": repr(e)[:200]}), flush=True)
                else:
                    got: dict[str, Any] = {"throughput": label, "bps": rate}
                    q = getattr(host.punched_connection(peers["c"]), "quic", None)
                    if kind == "quic" and q is not None:  # the controller's end state
                        got["cc"] = {k: v for k, v in q._loss._cc.get_log_data().items()
                                     if isinstance(v, (int, float, str))}
                        got["cc"]["datagram"] = q.max_datagram_size
                    print(json.dumps(got), flush=True)
                await drop(peers["c"], kind)


def _p50(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--attempts", type=int, default=50,
                    help="cone <-> cone punches per transport")
    ap.add_argument("--attempts-symmetric", type=int, default=10,
                    help="cone <-> symmetric punches per transport (a failure costs ~15 s)")
    ap.add_argument("--transports", default="tcp,quic", help="punch over each, in turn")
    ap.add_argument("--mib", type=float, default=2.0,
                    help="MiB per throughput run over the punched cone <-> cone path")
    ap.add_argument("--rounds", type=int, default=3, help="throughput rounds (0: none)")
    ap.add_argument("--logs", default="", help="keep every node's log in this directory")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "tests" / "integration"))
    from netns_topology import Topology, skip_reason

    why = skip_reason()
    if why:
        raise SystemExit(why)
    me = str(Path(__file__).resolve())
    transports = [x for x in args.transports.split(",") if x in ("tcp", "quic")]
    with tempfile.TemporaryDirectory() as tmp, Topology(
        Path(tmp) / "net", delay_ms=20, loss_pct=1, rate_mbit=40,
        site_nats=(("a", "endpoint-independent"), ("b", "symmetric"),
                   ("c", "endpoint-independent")),
    ) as topo:
        d = Path(tmp)
        for s in topo.sites.values():
            topo.run(s.host_ns, "sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1")
            for key in ("udp_timeout", "udp_timeout_stream"):  # see `drop` in node()
                topo.run(s.router_ns, "sysctl", "-qw", f"net.netfilter.nf_conntrack_{key}=2")
        pub_ns, pub_ip = next(iter(topo.public.items()))

        def opts(**kw: Any) -> str:
            return json.dumps({"names": [], "attempts": [], "transports": transports,
                               "mib": args.mib, "rounds": args.rounds, **kw})

        topo.popen(pub_ns, [sys.executable, me, "node", "relay", tmp, pub_ip, opts()],
                   log=d / "relay.log")
        for label in ("c", "b"):
            s = topo.sites[label]
            topo.popen(s.host_ns, [sys.executable, me, "node", "target", tmp, s.host_ip,
                                   opts(names=[label])], log=d / f"{label}.log")
        a = topo.sites["a"]
        started = time.monotonic()
        n = len(transports)
        r = topo.run(a.host_ns, sys.executable, me, "node", "dialler", tmp, a.host_ip,
                     opts(names=["c", "b"], attempts=[args.attempts, args.attempts_symmetric]),
                     timeout=60 + n * (8 * args.attempts + 40 * args.attempts_symmetric)
                     + args.rounds * (60 + len(MODES) * 200 * args.mib))
        wall = time.monotonic() - started
        if args.logs:
            keep = Path(args.logs)
            keep.mkdir(parents=True, exist_ok=True)
            for f in d.glob("*.log"):
                (keep / f.name).write_bytes(f.read_bytes())
            (keep / "dialler.log").write_text(r.stdout + r.stderr)
    pairs = {"c": "cone <-> cone (a -> c)", "b": "cone -> symmetric (a -> b)"}
    rates: dict[str, list[float]] = {}
    for out in (ln for ln in r.stdout.splitlines() if ln.startswith("{")):
        got = json.loads(out)
        if "throughput" in got:
            if "bps" in got:
                rates.setdefault(got["throughput"], []).append(got["bps"])
                if "cc" in got:
                    print(f"  {got['throughput']} {got['bps'] / 1e6:.2f} MB/s, controller at "
                          f"the end: {got['cc']}")
            else:
                print(f"throughput {got['throughput']}: failed: {got['error']}")
            continue
        rows = got["rows"]
        if not rows:
            continue
        ok = [x for x in rows if x["ok"]]
        rate = len(ok) / len(rows) if rows else 0.0
        direct = _p50([x["direct_s"] for x in ok])
        relayed = _p50([x["relayed_s"] for x in rows if "relayed_s" in x])
        reasons: dict[str, int] = {}
        for x in rows:
            if not x["ok"]:
                key = str(x.get("reason") or "(no reason recorded)")[:90]
                reasons[key] = reasons.get(key, 0) + 1
        name = f"{pairs.get(got['target'], got['target'])} {got['transport'].upper()}"
        print(f"{name}: punch success {len(ok)}/{len(rows)} = {rate:.0%}"
              f"  ratio {rate / PUBLIC_FIGURE:.2f} of the public-network {PUBLIC_FIGURE:.0%}")
        if ok:
            print(f"{name}: time to direct p50 {direct * 1000:.0f} ms"
                  f"  ratio {direct / relayed:.2f} of the relayed connection p50"
                  f" ({relayed * 1000:.0f} ms)")
        tries: dict[int, int] = {}
        for x in ok:
            tries[x.get("attempts", 0)] = tries.get(x.get("attempts", 0), 0) + 1
        if ok:
            print(f"{name}: successes by attempt (0: not recorded): "
                  + ", ".join(f"{k}: {v}" for k, v in sorted(tries.items())))
        for reason, count in reasons.items():
            print(f"    {count} x {reason}")
    tcp = _p50(rates.get("tcp", []))
    for label, xs in rates.items():
        mbs = _p50(xs) / 1e6
        each = ", ".join(f"{x / 1e6:.2f}" for x in xs)
        ratio = "" if label == "tcp" else f"  ratio {_p50(xs) / tcp:.2f} of TCP (goal >= 0.8)"
        print(f"stream over the punched path, {label:<13} {mbs:6.2f} MB/s p50 of "
              f"[{each}]{ratio}")
    print(f"(wall {wall:.0f} s; 20 ms each way per WAN link, 1 % loss, 40 Mbit/s; "
          f"{args.mib:g} MiB per throughput run)")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "node":
        role, tmpdir, ip_, raw = sys.argv[2:6]
        o = json.loads(raw)
        trio.run(node, role, Path(tmpdir), ip_, o["names"], o["attempts"], o["transports"],
                 o["mib"], o["rounds"])
    else:
        main()
