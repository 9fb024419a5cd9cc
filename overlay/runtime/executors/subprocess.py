"""Subprocess executor: run a capsule's command as a local process group.

- Working dir: the attempt's fresh ``work/`` (see base.py), inputs under ``inputs/``.
- Environment: a minimal base (PATH=/usr/local/bin:/usr/bin:/bin, HOME and TMPDIR = the
  work dir, LANG/LC_ALL=C.UTF-8, COLONY_CAPSULE_ID, COLONY_TOKEN, COLONY_WORKDIR,
  COLONY_INPUTS) plus the spec's `env` on top. Nothing of the daemon's environment
  leaks in (no credentials, no SLURM_CONF, no COLONY_HOME).
- stdin is /dev/null; stdout and stderr go to the attempt's log file (O_APPEND, so the
  two streams interleave in the order they were written).
- Its own session and process group (``setsid``): timeout and kill signal the whole
  group: SIGTERM, `kill_grace_s` for the leader to exit, then SIGKILL to the group.
  Group members still alive when the leader has exited (daemonised helpers) get
  SIGKILL too, so nothing of an attempt outlives it.
- Resource limits (setrlimit in the child before exec; see `ExecLimits`): address
  space from ``conditions.mem_mib``, CPU seconds from maxexectime × cores, open
  files, no core dumps, optional file size. They are per process (a child gets its
  own copy of each limit), not per tree.

Not enforced (would need cgroups or a user switch, both root-only): a total memory or
CPU budget across the process tree, process count, disk usage, network access, and
escape from the group by a process that calls setsid() itself. Capsules run as the
daemon's user.
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import trio

from overlay.capsule.spec import CapsuleSpec
from overlay.runtime.executors.base import (
    EXIT_CANCELLED,
    EXIT_SETUP_FAILED,
    EXIT_TIMEOUT,
    BaseExecutor,
    ExecLimits,
    Job,
    KillSwitch,
    Outcome,
    describe_status,
    ensure_log,
    signal_status,
)

_INF = resource.RLIM_INFINITY
#: Largest finite limit setrlimit takes (rlim_t is a 64-bit value; Python passes a C long).
_RLIM_MAX = (1 << 63) - 1


def rlimits_for(job: Job) -> list[tuple[int, int, int]]:
    """(resource, soft, hard) for the child, never above the daemon's own hard limits."""
    lim: ExecLimits = job.ctx.limits
    cond = job.spec.conditions
    want: list[tuple[int, int, int]] = [(resource.RLIMIT_CORE, 0, 0)]
    mem = cond.mem_mib or lim.default_mem_mib
    if mem > 0:
        want.append((resource.RLIMIT_AS, mem << 20, mem << 20))
    if job.req.maxexectime_s > 0:
        cpu = math.ceil(job.req.maxexectime_s * max(1.0, cond.cpu) + lim.cpu_slack_s)
        # Soft limit: SIGXCPU (catchable); hard limit a little later: SIGKILL.
        want.append((resource.RLIMIT_CPU, cpu, cpu + 2))
    if lim.max_open_files > 0:
        want.append((resource.RLIMIT_NOFILE, lim.max_open_files, lim.max_open_files))
    if lim.max_file_bytes > 0:
        want.append((resource.RLIMIT_FSIZE, lim.max_file_bytes, lim.max_file_bytes))
    out = []
    for res, soft, hard in want:
        # Never ask setrlimit for more than rlim_t holds (it raises OverflowError in
        # the child's preexec_fn); anything that large means "unlimited" anyway.
        soft, hard = min(soft, _RLIM_MAX), min(hard, _RLIM_MAX)
        _, cur_hard = resource.getrlimit(res)
        if cur_hard != _INF:
            hard = min(hard, cur_hard)
            soft = min(soft, hard)
        out.append((res, soft, hard))
    return out


def _preexec(limits: list[tuple[int, int, int]]) -> Callable[[], None]:
    def apply() -> None:  # runs in the forked child: no locks, no allocation-heavy work
        for res, soft, hard in limits:
            resource.setrlimit(res, (soft, hard))

    return apply


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def _terminate(proc: trio.Process, grace_s: float) -> None:
    """SIGTERM the group, give the leader `grace_s` to exit, then SIGKILL the group."""
    _killpg(proc.pid, signal.SIGTERM)
    with trio.move_on_after(grace_s):
        await proc.wait()
    _killpg(proc.pid, signal.SIGKILL)
    await proc.wait()


async def _cancel_on_kill(kill: KillSwitch, scope: trio.CancelScope) -> None:
    await kill.wait()
    scope.cancel()


async def run_group(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: dict[str, str],
    log_path: Path,
    rlimits: list[tuple[int, int, int]],
    deadline: float,
    maxexectime_s: float,
    kill: KillSwitch,
    grace_s: float,
) -> Outcome:
    """Start `argv` in a new process group and wait for it, a timeout or a kill."""
    fd = ensure_log(log_path)
    started = time.time()
    try:
        proc = await trio.lowlevel.open_process(
            list(argv), cwd=str(cwd), env=env, stdin=subprocess.DEVNULL, stdout=fd,
            stderr=fd, start_new_session=True, preexec_fn=_preexec(rlimits),
        )  # fmt: skip
    except OSError as e:
        os.write(fd, f"[colony] cannot start {argv[0]}: {e.strerror or e}\n".encode())
        now = time.time()
        return Outcome(EXIT_SETUP_FAILED, f"cannot start {argv[0]}: {e.strerror or e}",
                       started, now)  # fmt: skip
    finally:
        os.close(fd)  # the child holds its own copy
    try:
        with trio.move_on_at(deadline) as timer:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_cancel_on_kill, kill, nursery.cancel_scope)
                await proc.wait()
                nursery.cancel_scope.cancel()
        ended_by_us = proc.returncode is None
        if ended_by_us:
            await _terminate(proc, grace_s)
        else:
            # The leader is gone; whatever it left behind in its group goes too.
            _killpg(proc.pid, signal.SIGKILL)
    except BaseException:  # trio.Cancelled (daemon shutting down) or a bug: never leak
        with trio.CancelScope(shield=True):
            await _terminate(proc, grace_s)
        raise
    finished = time.time()
    rc = proc.returncode
    assert rc is not None
    status = signal_status(-rc) if rc < 0 else rc
    if ended_by_us and kill.killed:
        return Outcome(EXIT_CANCELLED, f"{kill.reason}; {describe_status(status)}",
                       started, finished)  # fmt: skip
    if ended_by_us and timer.cancelled_caught:
        return Outcome(EXIT_TIMEOUT,
                       f"maxexectime {maxexectime_s:g}s exceeded; {describe_status(status)}",
                       started, finished)  # fmt: skip
    return Outcome(status, "" if status == 0 else describe_status(status), started, finished)


class SubprocessExecutor(BaseExecutor):
    kind = "subprocess"

    def check(self, spec: CapsuleSpec) -> str | None:
        if not spec.command:
            return "the subprocess executor runs commands; this capsule names a function"
        return None

    async def _execute(self, job: Job, kill: KillSwitch) -> Outcome:
        return await run_group(
            job.spec.command, cwd=job.work, env=job.base_env(), log_path=job.log_path,
            rlimits=rlimits_for(job), deadline=job.deadline,
            maxexectime_s=job.req.maxexectime_s, kill=kill,
            grace_s=job.ctx.limits.kill_grace_s,
        )  # fmt: skip
