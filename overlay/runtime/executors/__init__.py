"""Executors: run leased capsules as local processes, Python calls or Slurm jobs.

How the daemon uses this package (docs/executors.md has the whole contract)::

    kinds = await available_kinds()              # advertise these (ExecutorConfig.executors)
    ctx = ExecContext(store=store, workdir_root=home / "runs")
    attempts = Attempts(ctx, {k: executor_for(k) for k in kinds}, on_exit=driver.submit,
                        fetch=fetch_inputs)
    attempts.handle(nursery.start_soon, event)  # RunRequested → a task; Kill… → its kill

or, without `Attempts`, per `RunRequested`::

    req, kill = ExecRequest.from_event(ev), KillSwitch()
    result = await executor_for(kind_of(req.spec)).run(req, ctx, kill)   # in a task
    driver.submit(result.to_exited())
    # Emit(KillRequested(capsule_id, token, reason)):  kill.kill(reason)
"""

from __future__ import annotations

from overlay.runtime.executors.attempts import Attempts
from overlay.runtime.executors.base import (
    EXIT_CANCELLED,
    EXIT_LOST,
    EXIT_OUTPUT_MISSING,
    EXIT_SETUP_FAILED,
    EXIT_SYNC_FAILED,
    EXIT_TIMEOUT,
    BaseExecutor,
    ExecContext,
    ExecLimits,
    ExecRequest,
    ExecResult,
    ExecutorError,
    InputMissing,
    KillSwitch,
    UnknownExecutor,
    kind_of,
)
from overlay.runtime.executors.function import FunctionExecutor
from overlay.runtime.executors.slurm import SlurmExecutor, slurm_available
from overlay.runtime.executors.subprocess import SubprocessExecutor

KINDS = ("subprocess", "function", "slurm")


def executor_for(kind: str) -> BaseExecutor:
    """A new executor of `kind`; keep it (the Slurm one caches what it detected)."""
    if kind == "subprocess":
        return SubprocessExecutor()
    if kind == "function":
        return FunctionExecutor()
    if kind == "slurm":
        return SlurmExecutor()
    raise UnknownExecutor(f"no executor of kind {kind!r} (known: {', '.join(KINDS)})")


async def available_kinds(timeout_s: float = 5.0) -> tuple[str, ...]:
    """The kinds that work on this node: subprocess and function always; slurm when
    sbatch is on PATH and `scontrol ping` reaches a controller within `timeout_s`."""
    kinds = ["subprocess", "function"]
    if await slurm_available(timeout_s):
        kinds.append("slurm")
    return tuple(kinds)


__all__ = [
    "EXIT_CANCELLED",
    "EXIT_LOST",
    "EXIT_OUTPUT_MISSING",
    "EXIT_SETUP_FAILED",
    "EXIT_SYNC_FAILED",
    "EXIT_TIMEOUT",
    "KINDS",
    "Attempts",
    "BaseExecutor",
    "ExecContext",
    "ExecLimits",
    "ExecRequest",
    "ExecResult",
    "ExecutorError",
    "FunctionExecutor",
    "InputMissing",
    "KillSwitch",
    "SlurmExecutor",
    "SubprocessExecutor",
    "UnknownExecutor",
    "available_kinds",
    "executor_for",
    "kind_of",
]
