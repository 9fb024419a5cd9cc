"""Slurm executor: run a capsule as a batch job on the cluster this node fronts.

Per attempt it writes ``job.sh`` in the run directory and submits it with
``sbatch --parsable``. The script carries everything as ``#SBATCH`` lines and shell
code, so it can be read and resubmitted by hand:

- ``--chdir`` = the attempt's ``work/``; ``--output`` = the attempt's log (stdout and
  stderr together, ``--open-mode=append``); ``--job-name=colony-<id tail>``;
- environment: sbatch runs with only the Slurm client settings of the daemon's
  environment (SLURM_CONF, PATH, HOME, LANG, USER, LOGNAME); the script unsets every
  variable but ``SLURM_*`` and then ``export``s the same minimal base env plus spec env
  a subprocess capsule gets. The daemon's environment never reaches the job;
- ``--time`` = ceil(maxexectime / 1 min) + 1 min: Slurm counts whole minutes, so it is
  only a backstop; the exact limit is our own deadline, enforced with ``scancel``;
- ``--cpus-per-task`` = ceil(conditions.cpu), ``--mem`` = conditions.mem_mib (MiB);
- ``--no-requeue``: custody does retries (with a new token); Slurm must not rerun an
  attempt we already reported;
- a function capsule runs `fnrunner.py` with the node's interpreter, exactly as the
  function executor does (the interpreter and the run directory must be visible on
  the compute nodes at the same paths: put `workdir_root` on the shared filesystem).

State: ``scontrol show -o job <id>`` every `poll_s` (one call gives JobState and
ExitCode) until a terminal state. slurmctld forgets a finished job after MinJobAge
(300 s by default); if the job is gone before we saw it end, ``sacct`` answers, but
only where accounting exists: without slurmdbd ``sacct`` fails ("accounting storage
is disabled"), which is detected once (`accounting()`), and such a job is reported
`EXIT_LOST`.

Exit status from ``ExitCode=<code>:<signal>``: a signal gives 128 + signal, else the
code (see base.py). JobState TIMEOUT → `EXIT_TIMEOUT`; CANCELLED (by someone else) →
`EXIT_CANCELLED`; OUT_OF_MEMORY → 137; NODE_FAIL, BOOT_FAIL, PREEMPTED, DEADLINE →
`EXIT_LOST`; FAILED with ExitCode 0:0 (Slurm could not even start the script) →
`EXIT_SETUP_FAILED`. Kill and timeout: ``scancel`` (Slurm sends SIGTERM, then SIGKILL
after its KillWait), then wait (bounded) for the job to leave the running states.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog
import trio

from overlay.capsule.spec import CapsuleSpec
from overlay.runtime.executors.base import (
    EXIT_CANCELLED,
    EXIT_LOST,
    EXIT_SETUP_FAILED,
    EXIT_TIMEOUT,
    BaseExecutor,
    Job,
    KillSwitch,
    Outcome,
    describe_status,
    signal_status,
)
from overlay.runtime.executors.function import check_function, function_argv, with_result

log = structlog.get_logger("colony.executors.slurm")

TERMINAL = frozenset({
    "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL",
    "DEADLINE", "OUT_OF_MEMORY", "SPECIAL_EXIT",
})  # fmt: skip
LOST = frozenset({"NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE", "SPECIAL_EXIT"})
_STATE = re.compile(r"\bJobState=(\S+)")
_EXIT = re.compile(r"\bExitCode=(\d+):(\d+)")
_REASON = re.compile(r"\bReason=(\S+)")
#: Client settings of the daemon's environment the Slurm commands need (not the job).
CLIENT_ENV = ("SLURM_CONF", "PATH", "HOME", "LANG", "USER", "LOGNAME")


class SlurmError(Exception):
    """A Slurm command failed in a way the executor cannot interpret."""


@dataclass(frozen=True, slots=True)
class JobState:
    state: str  # e.g. RUNNING, COMPLETED; "" when the controller no longer knows the job
    exit_code: int
    signal: int
    reason: str


def parse_scontrol(text: str) -> JobState | None:
    """Parse ``scontrol show -o job`` output (one line of Key=Value fields)."""
    m = _STATE.search(text)
    if m is None:
        return None
    e = _EXIT.search(text)
    r = _REASON.search(text)
    code, sig = (int(e.group(1)), int(e.group(2))) if e else (0, 0)
    # JobState may carry flags after "+" (e.g. CANCELLED+); keep the base state.
    return JobState(m.group(1).split("+")[0], code, sig, r.group(1) if r else "")


def parse_sacct(text: str) -> JobState | None:
    """Parse ``sacct -n -P -X -o State,ExitCode`` output ("CANCELLED by 0|0:15")."""
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) >= 2 and ":" in parts[1]:
            code, _, sig = parts[1].partition(":")
            if code.isdigit() and sig.isdigit():
                return JobState(parts[0].split()[0].split("+")[0], int(code), int(sig), "")
    return None


def map_state(js: JobState) -> tuple[int, str]:
    """(exit status, reason) for a terminal Slurm state (see module docstring)."""
    status = signal_status(js.signal) if js.signal else js.exit_code
    if js.state == "COMPLETED":
        return status, "" if status == 0 else describe_status(status)
    if js.state == "FAILED":
        if status == 0:
            return EXIT_SETUP_FAILED, f"Slurm could not run the job ({js.reason or 'FAILED'})"
        return status, describe_status(status)
    if js.state == "TIMEOUT":
        return EXIT_TIMEOUT, "Slurm time limit reached"
    if js.state == "CANCELLED":
        return EXIT_CANCELLED, "cancelled in Slurm"
    if js.state == "OUT_OF_MEMORY":
        return signal_status(9), "out of memory (Slurm)"
    if js.state in LOST:
        return EXIT_LOST, f"job ended {js.state} in Slurm"
    return EXIT_LOST, f"unexpected Slurm state {js.state}"


#: Unset every variable but SLURM_* (job id, node list, …), whatever Slurm passed in.
_SCRUB = (
    "for v in $(env | sed -n 's/^\\([A-Za-z_][A-Za-z0-9_]*\\)=.*/\\1/p'); do\n"
    '  case "$v" in SLURM_*) ;; *) unset "$v" ;; esac\n'
    "done"
)


def batch_script(job: Job, argv: Sequence[str], env: dict[str, str]) -> str:
    spec = job.spec
    cond = spec.conditions
    lines = [
        "#!/bin/sh",
        f"# Colony capsule {job.req.capsule_id}, lease token {job.req.token}",
        f"#SBATCH --job-name=colony-{job.req.capsule_id[-12:]}",
        f"#SBATCH --chdir={job.work}",
        # "%" starts a Slurm filename pattern (%j, %x, …); "%%" is a literal one.
        f"#SBATCH --output={str(job.log_path).replace('%', '%%')}",
        "#SBATCH --open-mode=append",
        # The job gets sbatch's own environment, which is only the client settings
        # (client_env); the scrub below then removes everything but SLURM_*. Not
        # --export=NONE: Slurm 22.05 then loads root's login environment on the node.
        "#SBATCH --export=ALL",
        "#SBATCH --no-requeue",
        "#SBATCH --ntasks=1",
    ]
    if job.req.maxexectime_s > 0:
        lines.append(f"#SBATCH --time={math.ceil(job.req.maxexectime_s / 60) + 1}")
    if cond.cpu > 0:
        lines.append(f"#SBATCH --cpus-per-task={math.ceil(cond.cpu)}")
    if cond.mem_mib > 0:
        lines.append(f"#SBATCH --mem={cond.mem_mib}M")
    lines.append(_SCRUB)
    lines += [f"export {k}={shlex.quote(v)}" for k, v in sorted(env.items())
              if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k)]  # fmt: skip
    lines.append("exec " + shlex.join(argv))
    return "\n".join(lines) + "\n"


def client_env() -> dict[str, str]:
    return {k: os.environ[k] for k in CLIENT_ENV if k in os.environ}


async def slurm_cmd(argv: Sequence[str], timeout_s: float = 30.0) -> tuple[int, str, str]:
    """Run a Slurm client command (bounded); (returncode, stdout, stderr)."""
    exe = shutil.which(argv[0])
    if exe is None:
        return 127, "", f"{argv[0]}: not found on PATH"
    with trio.move_on_after(timeout_s) as scope:
        r = await trio.run_process([exe, *argv[1:]], capture_stdout=True, capture_stderr=True,
                                   check=False, env=client_env())  # fmt: skip
        return r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")
    assert scope.cancelled_caught
    return 124, "", f"{argv[0]} did not answer within {timeout_s:g}s"


async def slurm_available(timeout_s: float = 5.0) -> bool:
    """sbatch on PATH and a controller that answers `scontrol ping` with UP."""
    if shutil.which("sbatch") is None or shutil.which("scontrol") is None:
        return False
    rc, out, _ = await slurm_cmd(["scontrol", "ping"], timeout_s)
    return rc == 0 and " is UP" in out


class SlurmExecutor(BaseExecutor):
    kind = "slurm"

    def __init__(self, poll_s: float = 0.5, python: str | None = None,
                 cancel_wait_s: float = 60.0, extra_args: Sequence[str] = ()) -> None:  # fmt: skip
        self.poll_s = poll_s
        self.python = python or sys.executable
        self.cancel_wait_s = cancel_wait_s
        self.extra_args = tuple(extra_args)
        self._accounting: bool | None = None
        self._last_warning_at = -math.inf

    def check(self, spec: CapsuleSpec) -> str | None:
        return check_function(spec) if spec.function else None

    async def accounting(self) -> bool:
        """Whether sacct works here (slurmdbd configured); detected once."""
        if self._accounting is None:
            rc, _, err = await slurm_cmd(["sacct", "-n", "-X", "-j", "1", "-o", "JobID"])
            self._accounting = rc == 0
            log.info("slurm_accounting_detected", available=self._accounting,
                     detail=err.strip()[:200])  # fmt: skip
        return self._accounting

    async def query(self, job_id: str) -> JobState | None:
        """The job's state; JobState('') if neither slurmctld nor sacct knows it."""
        rc, out, err = await slurm_cmd(["scontrol", "show", "-o", "job", job_id])
        if rc == 0:
            return parse_scontrol(out)
        if "Invalid job id" not in err:
            # A transient controller problem: poll again (warn once per minute, not per poll).
            now = time.monotonic()
            if now - self._last_warning_at >= 60.0:
                self._last_warning_at = now
                log.warning("slurm_query_failed", job=job_id, rc=rc, error=err.strip()[:200])
            return None
        if await self.accounting():
            rc, out, _ = await slurm_cmd(
                ["sacct", "-n", "-P", "-X", "-j", job_id, "-o", "State,ExitCode"]
            )
            found = parse_sacct(out) if rc == 0 else None
            if found is not None:
                return found
        return JobState("", 0, 0, "")

    async def _wait_terminal(self, job_id: str) -> JobState:
        while True:
            js = await self.query(job_id)
            if js is not None and (js.state in TERMINAL or js.state == ""):
                return js
            await trio.sleep(self.poll_s)

    async def _execute(self, job: Job, kill: KillSwitch) -> Outcome:
        spec = job.spec
        argv = list(spec.command) if spec.command else function_argv(self.python, job)
        script = job.rundir / "job.sh"
        script.write_text(batch_script(job, argv, job.base_env()), encoding="utf-8")
        job.log_path.touch(mode=0o600)
        started = time.time()
        rc, out, err = await slurm_cmd(["sbatch", "--parsable", *self.extra_args, str(script)])
        if rc != 0:
            msg = f"sbatch failed ({rc}): {err.strip()[:500]}"
            _append(job.log_path, f"[colony] {msg}\n")
            return Outcome(EXIT_SETUP_FAILED, msg, started, time.time())
        job_id = out.strip().split(";")[0]
        log.info("slurm_job_submitted", capsule=job.req.capsule_id, token=job.req.token,
                 job=job_id)  # fmt: skip
        ended: JobState | None = None
        try:
            with trio.move_on_at(job.deadline) as timer:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_cancel_on_kill, kill, nursery.cancel_scope)
                    ended = await self._wait_terminal(job_id)
                    nursery.cancel_scope.cancel()
            if ended is None:
                await self._scancel(job_id)
        except BaseException:  # Cancelled (daemon shutdown): never leave the job running
            with trio.CancelScope(shield=True):
                await self._scancel(job_id)
            raise
        finished = time.time()
        if ended is None:
            status = EXIT_CANCELLED if kill.killed else EXIT_TIMEOUT
            why = kill.reason if kill.killed else f"maxexectime {job.req.maxexectime_s:g}s exceeded"
            assert kill.killed or timer.cancelled_caught
            outcome = Outcome(status, f"{why}; Slurm job {job_id} cancelled", started, finished)
        elif ended.state == "":
            outcome = Outcome(EXIT_LOST, f"Slurm job {job_id} vanished (no accounting to ask)",
                              started, finished)  # fmt: skip
        else:
            status, reason = map_state(ended)
            outcome = Outcome(status, reason, started, finished)
        return with_result(job, outcome) if spec.function else outcome

    async def _scancel(self, job_id: str) -> None:
        """scancel, then wait (bounded) until the job is no longer running."""
        rc, _, err = await slurm_cmd(["scancel", job_id])
        if rc != 0:
            log.warning("slurm_scancel_failed", job=job_id, rc=rc, error=err.strip()[:200])
        with trio.move_on_after(self.cancel_wait_s):
            await self._wait_terminal(job_id)


async def _cancel_on_kill(kill: KillSwitch, scope: trio.CancelScope) -> None:
    await kill.wait()
    scope.cancel()


def _append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)
