"""`colony daemon` and the commands that talk to a running daemon through its API."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from overlay.cli.fmt import Command, Subparsers
from overlay.cli.fmt import human_bytes as _human
from overlay.core.errors import ConfigError

if TYPE_CHECKING:
    from overlay.client import Colony, Progress

_FMT = argparse.RawDescriptionHelpFormatter




def _colony(args: argparse.Namespace, timeout_s: float = 600.0) -> Colony:
    from overlay.client import Colony

    return Colony.for_home(args.home, timeout_s=timeout_s)


def _print(obj: object, as_json: bool) -> None:
    if as_json:
        json.dump(obj, sys.stdout, indent=2)
        print()


# ---------------------------------------------------------------- daemon


def _daemon(args: argparse.Namespace) -> int:
    if args.action == "stop":
        return _stop(args)
    if args.action == "status":
        return _status(args)
    if args.listen:
        os.environ["COLONY_NETWORK_LISTEN"] = ",".join(args.listen)
    if args.bootstrap:
        os.environ["COLONY_NETWORK_BOOTSTRAP"] = ",".join(args.bootstrap)
    if args.api:
        os.environ["COLONY_API_LISTEN"] = args.api
    if args.detach:
        return _detach(args)
    from overlay.runtime.run import run_daemon_blocking

    return run_daemon_blocking(args.home)


def _detach(args: argparse.Namespace) -> int:
    """Re-run this command without --detach in a new session, logging to daemon.log;
    return once its API answers, so a script can use the daemon right after."""
    import subprocess

    from overlay.runtime.process import pidfile

    pid = pidfile.running_pid(args.home)
    if pid is not None:
        raise pidfile.AlreadyRunning(args.home, pid)
    if not (args.home / "identity.key").exists():
        raise ConfigError(f"{args.home} is not a node home; run `colony --home {args.home} init`")
    log = args.home / "daemon.log"
    # Absolute: the child runs from / (a relative --home would point elsewhere).
    argv = [sys.executable, "-m", "overlay.cli.main", "--home", str(args.home.resolve())]
    if getattr(args, "log_level", None):
        argv += ["--log-level", args.log_level]
    argv.append("daemon")  # flags travel in the environment set by _daemon
    with open(log, "ab") as f:
        # A new session: no controlling terminal, so the shell's SIGHUP/SIGINT on
        # exit never reach it; stdin from /dev/null; cwd / so no mount is held busy.
        proc = subprocess.Popen(argv, stdout=f, stderr=f, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd="/",
                                env={**os.environ, "PYTHONPATH": _import_path()})
    deadline = time.monotonic() + args.wait
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").splitlines()[-15:]
            raise ConfigError(
                f"the daemon exited during start-up (status {proc.returncode}); "
                f"last lines of {log}:\n  " + "\n  ".join(tail))
        if pidfile.running_pid(args.home) == proc.pid and _api_up(args.home):
            print(f"daemon running in the background (pid {proc.pid}); log: {log}; "
                  f"stop it with `colony --home {args.home} daemon stop`")
            return 0
        time.sleep(0.2)
    print(f"daemon started (pid {proc.pid}) but its API did not answer within "
          f"{args.wait:.0f} s; see {log}", file=sys.stderr)
    return 1


def _import_path() -> str:
    """PYTHONPATH that finds this very `overlay` package from cwd / (source checkouts)."""
    here = str(Path(__file__).resolve().parents[2])
    old = os.environ.get("PYTHONPATH")
    return here + (os.pathsep + old if old else "")


def _api_up(home: Path) -> bool:
    from overlay.client import Colony

    try:
        return bool(Colony.for_home(home, timeout_s=2.0).id().id)
    except Exception:  # not listening yet, token not written yet
        return False


def _stop(args: argparse.Namespace) -> int:
    import signal

    from overlay.runtime.process import pidfile

    pid = pidfile.running_pid(args.home)
    if pid is None:
        if pidfile.remove_stale(args.home):
            print(f"no daemon running on {args.home}; removed a stale pid file")
        else:
            print(f"no daemon running on {args.home}")
        return 0
    if pid < 0:
        raise ConfigError(f"{args.home / pidfile.PID_FILE} is locked but holds no pid; "
                          "is a daemon starting right now?")
    # SIGTERM is a graceful leave (gossip leave intent, state saved), as with Ctrl-C.
    os.kill(pid, signal.SIGTERM)
    if _wait_gone(args.home, pid, args.wait):
        print(f"daemon (pid {pid}) left the colony and stopped")
        return 0
    if not args.force:
        raise ConfigError(f"daemon (pid {pid}) did not stop within {args.wait:.0f} s; "
                          "retry with --force to kill it (SIGKILL loses no acknowledged data)")
    os.kill(pid, signal.SIGKILL)
    if not _wait_gone(args.home, pid, 10.0):
        raise ConfigError(f"daemon (pid {pid}) survived SIGKILL for 10 s")
    pidfile.remove_stale(args.home)
    print(f"daemon (pid {pid}) killed")
    return 0


def _wait_gone(home: Path, pid: int, timeout_s: float) -> bool:
    """Wait for the lock to go (state saved, store closed) and then the process."""
    from overlay.runtime.process import pidfile

    deadline = time.monotonic() + timeout_s
    while pidfile.running_pid(home) is not None or pidfile.process_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _status(args: argparse.Namespace) -> int:
    from overlay.runtime.process import pidfile

    pid = pidfile.running_pid(args.home)
    if pid is None:
        print(f"not running ({args.home})")
        return 3  # LSB: program is not running
    up = _api_up(args.home)
    print(f"running (pid {pid}); API {'answers' if up else 'not answering yet'}")
    return 0


# ---------------------------------------------------------------- client commands


def _labels(pairs: list[str], flag: str = "--label") -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"{flag} wants KEY=VALUE, not {pair!r}")
        out[key] = value
    return out


def _members(args: argparse.Namespace) -> int:
    found = _colony(args).members(include_all=args.all, status=args.status,
                                  labels=_labels(args.label))
    rows = [m.raw for m in found]
    if args.json:
        _print(rows, True)
        return 0
    print(f"{'PEER':<54} {'STATE':<8} {'INC':>4} {'RTT':>8}  ADDRESS")
    for r in rows:
        rtt = "-" if r["rtt_ms"] is None else f"{r['rtt_ms']:.1f}ms"
        me = " (self)" if r["self"] else ""
        addr = r["addrs"][0] if r["addrs"] else "-"
        print(f"{r['id'] + me:<54} {r['state']:<8} {r['incarnation']:>4} {rtt:>8}  {addr}")
    return 0


def _connect(args: argparse.Namespace) -> int:
    r = _colony(args).connect(args.multiaddr)
    if args.json:
        _print(r, True)
    else:
        print(f"connected to {r['id']}")
    return 0


def _labels_cmd(args: argparse.Namespace) -> int:
    """Show, or with --set/--delete change, the running node's labels (serf's `tags`)."""
    c = _colony(args)
    if args.set or args.delete:
        labels = c.set_labels(_labels(args.set, "--set"), list(args.delete))
    else:
        labels = c.labels()
    if args.json:
        _print(labels, True)
    else:
        print("\n".join(f"{k}={v}" for k, v in labels.items()) or "(no labels)")
    return 0


def _peers(args: argparse.Namespace) -> int:
    peers = _colony(args).peers()
    if args.json:
        _print(peers, True)
    else:
        print("\n".join(peers) if peers else "(no connected peers)")
    return 0


def _dht(args: argparse.Namespace) -> int:
    c = _colony(args)
    if args.dht_cmd == "findprovs":
        r = c.dht("findprovs", cid=args.target)
        if not args.json:
            print("\n".join(r["providers"]) if r["providers"] else "(no providers found)")
    elif args.dht_cmd == "findpeer":
        r = c.dht("findpeer", peer=args.target)
        if not args.json:
            print(f"{'found' if r['found'] else 'not found'} in {r['hops']} hops")
    elif args.dht_cmd == "put":
        r = c.dht("put", value=args.target)
        if not args.json:
            print(f"published {r['key']} (seq {r['seq']}) to {r['acks']} peers")
    else:
        r = c.dht("get", name=args.target)
        if not args.json:
            print(r["value"] if r["value"] is not None else "(no record found)")
    _print(r, args.json)
    return 0


class _ProgressBar:
    """The SDK's progress callback as a tqdm bar on stderr when it is a terminal
    (publish, fetch), like `add` and `get`: bytes, rate and, for a fetch, providers."""

    def __init__(self, label: str, total: int | None = None) -> None:
        self.label, self.total = label, total
        self.bar: Any = None
        self.seen = 0

    def __enter__(self) -> _ProgressBar:
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, unit="B", unit_scale=True, unit_divisor=1024,
                            desc=self.label, file=sys.stderr, leave=False)
        return self

    def __call__(self, p: Progress) -> None:
        if self.bar is None or p.done:
            return
        if p.bytes > self.seen:
            self.bar.update(p.bytes - self.seen)
            self.seen = p.bytes
        provs = p.raw.get("providers")
        if isinstance(provs, (dict, list)):
            self.bar.set_postfix(providers=len(provs), refresh=False)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()


def _publish(args: argparse.Namespace) -> int:
    path = Path(args.path).resolve()
    if not path.exists():
        raise ConfigError(f"{path}: no such file or directory")
    from overlay.cli.cmd_store import _tree_bytes

    with _ProgressBar("publish", _tree_bytes([path])) as bar:
        final = _colony(args).publish(path, cid_version=args.cid_version, progress=bar).raw
    if args.json:
        _print(final, True)
    else:
        print(final["cid"])
        print(f"published {_human(final['size'])} in {final['blocks']} blocks; "
              f"announced with {final['provide']['lookups']} DHT lookups", file=sys.stderr)
    return 0


def _fetch(args: argparse.Namespace) -> int:
    with _ProgressBar("fetch") as bar:
        final = _colony(args).fetch(args.cid, progress=bar).raw
    if args.json:
        _print(final, True)
    else:
        provs = ", ".join(f"{p[-6:]}: {n}" for p, n in final.get("providers", {}).items())
        print(f"fetched {args.cid}: {final['blocks_fetched']} blocks "
              f"({_human(final['bytes_fetched'])}), {final['blocks_local']} already local; "
              f"blocks by provider: {provs or 'none'}", file=sys.stderr)
    if args.output:
        from overlay.cli.cmd_store import _get

        return _get(argparse.Namespace(home=args.home, cid=args.cid, output=args.output))
    return 0


def _colony_totals(colony: object) -> list[str]:
    """The push-sum totals of /v1/stats "colony", one line per epoch shown."""
    if not isinstance(colony, dict):
        return []
    lines = []
    for key, label in (("last", "colony totals"), ("current", "colony (converging)")):
        t = colony.get(key)
        if isinstance(t, dict):
            lines.append(
                f"{label}, epoch {t.get('epoch')}: {t.get('members', 0):.0f} members, "
                f"{t.get('cpu_cores', 0):.0f} CPU cores, {t.get('gpus', 0):.0f} GPUs, "
                f"{_human(int(t.get('mem_free_bytes', 0)))} of "
                f"{_human(int(t.get('mem_bytes', 0)))} memory free, "
                f"{_human(int(t.get('disk_free_bytes', 0)))} disk free")
    return lines or [f"colony totals: none yet (push-sum epochs of {colony.get('epoch_s')} s)"]


def _stats(args: argparse.Namespace) -> int:
    stats = _colony(args).stats()
    if args.json or not isinstance(stats, dict):
        _print(stats, True)
        return 0
    for line in _colony_totals(stats.pop("colony", None)):
        print(line)
    cells = stats.get("cells")
    if isinstance(cells, dict) and "count" in cells:
        free = cells.get("free") or {}
        print(f"cells: {cells['count']} known, {cells.get('members', 0)} members in them "
              f"({free.get('cpu', 0):g} CPUs, {_human(int(free.get('mem', 0)))} memory free, "
              f"by their digests); this node in {cells.get('cell')}")
    for group, values in stats.items():
        if not isinstance(values, dict):
            print(f"{group}: {values}")
            continue
        print(f"{group}:")
        for name, value in values.items():
            if not isinstance(value, dict):  # per-peer maps: --json
                print(f"  {name:<34} {value}")
    return 0


def _events(args: argparse.Namespace) -> int:
    c = _colony(args)
    if args.events_cmd == "send":
        r = c.send_event(args.name, args.payload)
        print(f"sent event {args.name!r} ({r['bytes']} bytes)")
        return 0
    for ev in c.events():
        if args.json:
            print(json.dumps(ev), flush=True)
        else:
            fields = " ".join(f"{k}={v}" for k, v in ev.items() if k not in ("time", "event"))
            print(f"{ev['time']:.3f} {ev['event']} {fields}", flush=True)
    return 0


def _leave(args: argparse.Namespace) -> int:
    _colony(args).leave()
    print("left the colony; daemon stopped")
    return 0


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "daemon", parents=[common], formatter_class=_FMT,
        help="run the node: libp2p host, DHT, gossip, block exchange, control API",
        description="Run this node in the foreground (Ctrl-C leaves the colony "
        "gracefully), or in the background with --detach.\n\n"
        "One daemon per home: it holds <home>/daemon.pid locked while it runs; a second "
        "start\nrefuses, and a pid file left by a killed daemon is taken over.\n\n"
        "Peers: --bootstrap addresses, the peers and routing table saved in "
        "<home>/peers.json\nby the last run, and, with `[discovery] mdns = true` in "
        "config.toml, any libp2p\nnode announcing itself by mDNS on the LAN.\n\n"
        "examples:\n  colony daemon\n"
        "  colony daemon --listen /ip4/0.0.0.0/tcp/4001 "
        "--bootstrap /ip4/10.0.0.5/tcp/4001/p2p/12D3KooW…\n"
        "  colony daemon --detach          # background; log in <home>/daemon.log\n"
        "  colony daemon status            # running? (exit status 3 when not)\n"
        "  colony daemon stop              # graceful leave, wait until it exited",
    )
    p.add_argument("action", nargs="?", choices=["run", "stop", "status"], default="run",
                   help="run (default), stop the running daemon, or show its status")
    p.add_argument("--listen", action="append", metavar="MULTIADDR",
                   help="listen address (repeatable; default from config)")
    p.add_argument("--bootstrap", action="append", metavar="MULTIADDR",
                   help="peer to join through, ending in /p2p/<id> (repeatable)")
    p.add_argument("--api", metavar="HOST:PORT",
                   help="control API address (default 127.0.0.1:5101)")
    p.add_argument("--detach", action="store_true",
                   help="run in the background (new session, log in <home>/daemon.log); "
                   "returns once the control API answers")
    p.add_argument("--wait", type=float, default=60.0, metavar="SECONDS",
                   help="--detach: how long to wait for the API; stop: for the exit "
                   "(default 60)")
    p.add_argument("--force", action="store_true",
                   help="stop: SIGKILL the daemon if it has not exited after --wait")
    p.set_defaults(func=_daemon, default_log_level="info")

    def client_cmd(name: str, help_: str, func: Command) -> argparse.ArgumentParser:
        q: argparse.ArgumentParser = sub.add_parser(name, parents=[common], help=help_,
                                                    description=help_, formatter_class=_FMT)
        q.add_argument("--json", action="store_true", help="machine-readable output")
        q.set_defaults(func=func)
        return q

    q = client_cmd("members", "list colony members seen by gossip (state, RTT, address)",
                   _members)
    q.add_argument("--all", action="store_true", help="include failed and departed members")
    q.add_argument("--status", choices=["alive", "suspect", "dead", "left"],
                   help="only members in this state")
    q.add_argument("--label", action="append", default=[], metavar="KEY=VALUE",
                   help="only members whose resource ad has this label (repeatable; all match)")
    q = client_cmd("labels", "show or change this node's labels while it runs (saved in "
                   "labels.json, gossiped at once; capsules' conditions.labels match them)",
                   _labels_cmd)
    q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="add or change a label (repeatable)")
    q.add_argument("--delete", action="append", default=[], metavar="KEY",
                   help="remove a label (repeatable)")
    client_cmd("peers", "list peers with an open libp2p connection", _peers)
    q = client_cmd("connect", "dial a peer now from the running daemon (kubo's swarm connect)",
                   _connect)
    q.add_argument("multiaddr", help="e.g. /ip4/10.0.0.2/tcp/4001/p2p/12D3KooW…")
    q = client_cmd("dht", "query the DHT: findprovs CID | findpeer PEER | get PEER | put VALUE",
                   _dht)
    q.add_argument("dht_cmd", choices=["findprovs", "findpeer", "get", "put"])
    q.add_argument("target", help="CID, peer id, or value to publish under this node's name")
    q = client_cmd("publish", "import a file or directory and announce it in the DHT", _publish)
    q.add_argument("path")
    q.add_argument("--cid-version", type=int, choices=[0, 1], default=1)
    q = client_cmd("fetch", "fetch a DAG by CID from the colony (resumable)", _fetch)
    q.add_argument("cid")
    q.add_argument("-o", "--output", help="also write the content to this path")
    client_cmd("stats", "colony-wide totals (members, CPUs, GPUs, memory, disk: push-sum "
               "gossip, one epoch old) and node statistics (driver, dht, gossip, exchange, "
               "drops: every frame, input or event dropped, by where; store)", _stats)
    q = client_cmd("events", "user events: send NAME PAYLOAD | watch", _events)
    q.add_argument("events_cmd", choices=["send", "watch"])
    q.add_argument("name", nargs="?", default="")
    q.add_argument("payload", nargs="?", default="")
    client_cmd("leave", "leave the colony gracefully and stop the daemon", _leave)
