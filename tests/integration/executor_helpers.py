"""Shared helpers for the executor integration tests (real store, real processes)."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

from overlay.capsule.spec import CapsuleSpec
from overlay.core.cid import Cid
from overlay.runtime.executors import (
    BaseExecutor,
    ExecContext,
    ExecLimits,
    ExecRequest,
    ExecResult,
    KillSwitch,
)
from store.blockstore import BlockStore
from store.exporter import Exporter
from store.importer import Importer

CAPSULE_ID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"


def make_ctx(tmp: Path, grace_s: float = 0.5) -> ExecContext:
    store = BlockStore(tmp / "blocks")
    return ExecContext(store=store, workdir_root=tmp / "runs",
                       limits=ExecLimits(kill_grace_s=grace_s))  # fmt: skip


def run(
    executor: BaseExecutor,
    spec: CapsuleSpec,
    ctx: ExecContext,
    maxexectime_s: float = 30.0,
    token: int = 1,
    during: Callable[[KillSwitch], Awaitable[None]] | None = None,
) -> ExecResult:
    """Run one attempt under trio (bounded by fail_after); `during` runs alongside."""

    async def main() -> ExecResult:
        kill = KillSwitch()
        req = ExecRequest(CAPSULE_ID, token, spec, maxexectime_s)
        with trio.fail_after(60):
            if during is None:  # no nursery: exceptions stay unwrapped for pytest.raises
                return await executor.run(req, ctx, kill)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(during, kill)
                res = await executor.run(req, ctx, kill)
                nursery.cancel_scope.cancel()
        return res

    return trio.run(main)


def read_cid(ctx: ExecContext, cid: str) -> bytes:
    return Exporter(ctx.store).read_all(Cid.parse(cid))


def log_text(ctx: ExecContext, res: ExecResult) -> str:
    return read_cid(ctx, res.log_cid).decode("utf-8", errors="replace")


def add_path(ctx: ExecContext, path: Path) -> str:
    return str(Importer(ctx.store, ctx.import_options).add_path(path, recursive=True).cid)


async def wait_for_file(path: Path, timeout_s: float = 20.0) -> None:
    with trio.fail_after(timeout_s):
        while not path.exists() or path.stat().st_size == 0:
            await trio.sleep(0.02)


def live_in_group(pgid: int) -> list[int]:
    """Pids of non-zombie processes whose process group is `pgid` (from /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # Fields after the ")" that ends the command name: state ppid pgrp ...
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            out.append(int(entry))
    return out


async def wait_group_gone(pgid: int, timeout_s: float = 10.0) -> None:
    """SIGKILL is delivered asynchronously; give the kernel a bounded moment."""
    with trio.fail_after(timeout_s):
        while live_in_group(pgid):
            await trio.sleep(0.02)
