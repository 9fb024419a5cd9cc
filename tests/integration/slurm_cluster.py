"""A real one-node Slurm cluster (munged + slurmctld + slurmd) for integration tests.

`start_cluster(tmp)` writes a private slurm.conf under `tmp` (nothing global is touched:
the clients find it through the ``SLURM_CONF`` environment variable), starts munged if
no munge daemon answers yet, then ``slurmctld -D`` and ``slurmd -D`` as child processes,
and waits (bounded) until ``sinfo`` reports the node idle. `SlurmCluster.stop()` kills
what was started and leaves the temp dir to the caller.

There is no slurmdbd, so there is no accounting: `sacct` fails, which is exactly the
situation the Slurm executor must detect and handle.

`missing_packages()` says why the cluster cannot be started at all (slurm-wlm or munge
not installed); callers skip only then. Any other start-up failure raises
`ClusterError` with the daemons' log tails, so a broken set-up fails loudly.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from overlay.runtime.net.ports import free_port

MUNGE_SOCKET = Path("/run/munge/munge.socket.2")
MUNGE_KEY = Path("/etc/munge/munge.key")
START_TIMEOUT_S = 45.0


class ClusterError(RuntimeError):
    """The packages are there but the cluster did not come up."""


def missing_packages() -> str | None:
    need = ("sbatch", "squeue", "scontrol", "scancel", "sinfo", "slurmctld", "slurmd", "munged")
    missing = [n for n in need if shutil.which(n) is None and not _sbin(n)]
    if missing:
        return (
            f"Slurm test cluster unavailable: {', '.join(missing)} not installed "
            "(Debian packages slurm-wlm and munge; `make system-deps` installs them as root)"
        )
    return None


def _sbin(name: str) -> str | None:
    for d in ("/usr/sbin", "/sbin", "/usr/local/sbin"):
        p = Path(d) / name
        if p.exists():
            return str(p)
    return None


def _exe(name: str) -> str:
    found = shutil.which(name) or _sbin(name)
    if found is None:
        raise ClusterError(f"{name} not found")
    return found


def _munge_works() -> bool:
    if not MUNGE_SOCKET.exists():
        return False
    try:
        cred = subprocess.run(["munge", "-n"], capture_output=True, timeout=5, check=True).stdout
        subprocess.run(["unmunge"], input=cred, capture_output=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return False
    return True


def _mem_available_mib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) // 1024
    return 2048


@dataclass
class SlurmCluster:
    root: Path
    conf: Path
    node: str
    env: dict[str, str]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    munged_pid: int | None = None

    def log_tail(self, lines: int = 30) -> str:
        out = []
        for name in ("slurmctld.log", "slurmd.log", "slurmctld.out", "slurmd.out"):
            p = self.root / name
            if p.exists():
                tail = p.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {name}\n" + "\n".join(tail))
        return "\n".join(out)

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        self.procs.clear()
        if self.munged_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.munged_pid, signal.SIGTERM)
            self.munged_pid = None
            for pidfile in MUNGE_SOCKET.parent.glob(f"munged-colonytest-{os.getpid()}.pid"):
                pidfile.unlink(missing_ok=True)


def _start_munged(root: Path) -> int | None:
    """Start munged unless one already answers; returns its pid if we started it."""
    if _munge_works():
        return None
    if not MUNGE_KEY.exists():
        subprocess.run([_exe("mungekey"), "--create", "--keyfile", str(MUNGE_KEY)], check=True)
        shutil.chown(MUNGE_KEY, "munge", "munge")
        MUNGE_KEY.chmod(0o400)
    run_dir = MUNGE_SOCKET.parent
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.chown(run_dir, "munge", "munge")
    # The pid file lives next to the socket: the munge user cannot enter our temp dir.
    pidfile = run_dir / f"munged-colonytest-{os.getpid()}.pid"
    # --force: munged refuses to start when it finds a stale socket or lax permissions
    # on a freshly created container filesystem; the key itself is still checked.
    cmd = [_exe("munged"), "--force", f"--pid-file={pidfile}"]
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "munge", "--", *cmd]
    r = subprocess.run(cmd, timeout=15, capture_output=True, text=True)
    if r.returncode != 0:
        raise ClusterError(f"munged failed ({r.returncode}): {r.stderr.strip()}")
    deadline = time.monotonic() + 10
    while not _munge_works():
        if time.monotonic() > deadline:
            raise ClusterError("munged started but munge -n | unmunge does not work")
        time.sleep(0.1)
    text = pidfile.read_text().strip() if pidfile.exists() else ""
    return int(text) if text.isdigit() else None


def _write_conf(root: Path, node: str) -> Path:
    cpus = os.cpu_count() or 1
    mem = max(256, min(8192, _mem_available_mib() // 2))
    spool = root / "spool"
    state = root / "state"
    spool.mkdir()
    state.mkdir()
    conf = root / "slurm.conf"
    conf.write_text(
        "\n".join(
            [
                "ClusterName=colonytest",
                "SlurmctldHost=localhost",
                f"SlurmctldPort={free_port()}",
                f"SlurmdPort={free_port()}",
                "SlurmUser=root",
                "SlurmdUser=root",
                "AuthType=auth/munge",
                "ProctrackType=proctrack/linuxproc",
                "TaskPlugin=task/none",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_Core_Memory",
                "SchedulerType=sched/builtin",
                "MpiDefault=none",
                "SwitchType=switch/none",
                "JobAcctGatherType=jobacct_gather/none",
                "AccountingStorageType=accounting_storage/none",
                "ReturnToService=2",
                # Short waits keep cancels and time limits quick in tests.
                "KillWait=2",
                "MinJobAge=300",
                "InactiveLimit=0",
                # Without it a job with no --mem would hold the node's whole memory
                # (CR_Core_Memory) and jobs would run one at a time.
                "DefMemPerCPU=128",
                f"SlurmctldPidFile={root / 'slurmctld.pid'}",
                f"SlurmdPidFile={root / 'slurmd.pid'}",
                f"StateSaveLocation={state}",
                f"SlurmdSpoolDir={spool}",
                f"SlurmctldLogFile={root / 'slurmctld.log'}",
                f"SlurmdLogFile={root / 'slurmd.log'}",
                "SlurmctldDebug=info",
                "SlurmdDebug=info",
                f"NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem} State=UNKNOWN",
                "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
                "",
            ]
        )
    )
    return conf


def start_cluster(root: Path) -> SlurmCluster:
    """Start munged (if needed), slurmctld and slurmd with a private config under `root`."""
    why = missing_packages()
    if why is not None:
        raise ClusterError(why)
    root.mkdir(parents=True, exist_ok=True)
    node = socket.gethostname().split(".")[0]
    conf = _write_conf(root, node)
    env = {**os.environ, "SLURM_CONF": str(conf)}
    cluster = SlurmCluster(root, conf, node, env)
    try:
        cluster.munged_pid = _start_munged(root)
        for daemon in ("slurmctld", "slurmd"):
            args = [_exe(daemon), "-D"] + (["-c", "-i"] if daemon == "slurmctld" else [])
            out = open(root / f"{daemon}.out", "wb")  # noqa: SIM115 - owned by the child
            cluster.procs.append(
                subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
            )
            out.close()
        _wait_idle(cluster)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _wait_idle(cluster: SlurmCluster) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    last = ""
    while time.monotonic() < deadline:
        for p in cluster.procs:
            if p.poll() is not None:
                argv = p.args
                assert isinstance(argv, list), argv  # started from an argument list
                raise ClusterError(f"{argv[0]} exited with {p.returncode}\n{cluster.log_tail()}")
        r = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%t"],
            env=cluster.env, capture_output=True, text=True, timeout=15,
        )  # fmt: skip
        last = (r.stdout + r.stderr).strip()
        if r.returncode == 0 and last.startswith("idle"):
            return
        time.sleep(0.3)
    raise ClusterError(f"node not idle after {START_TIMEOUT_S}s (sinfo: {last!r})\n"
                       f"{cluster.log_tail()}")  # fmt: skip
