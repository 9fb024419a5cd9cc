"""Attempts: core events (RunRequested / KillRequested from signed capsules) in, one
CapsuleExited per attempt out; inputs fetched from a second real store when missing."""

from __future__ import annotations

from pathlib import Path

import executor_helpers as h
import pytest
import trio

from overlay.capsule.events import KillRequested, RunRequested
from overlay.capsule.executor import CapsuleExited
from overlay.capsule.spec import Capsule, CapsuleSpec
from overlay.core.cid import DAG_PB, RAW, Cid
from overlay.core.crypto import KeyPair
from overlay.core.errors import ColonyError
from overlay.runtime.executors import (
    EXIT_CANCELLED,
    EXIT_SETUP_FAILED,
    Attempts,
    BaseExecutor,
    KillSwitch,
    executor_for,
)
from overlay.runtime.executors.base import ExecContext
from store.blockstore import BlockStore
from store.importer import Importer
from store.pins import walk

pytestmark = pytest.mark.slow
SUBMITTER = KeyPair(b"\x07" * 32)


def capsule(spec: CapsuleSpec, nonce: int) -> Capsule:
    return Capsule.sign(SUBMITTER, spec, 1_800_000_000.0, nonce)


def copy_dag(src: BlockStore, dst: BlockStore, root: Cid) -> None:
    """What the daemon's network fetch does, minus the network: every block of `root`."""
    blocks = []
    with src.reader() as r:
        for mh in walk(r, root):
            links = r.links(mh)
            cid = Cid.from_multihash(mh, DAG_PB if links is not None else RAW)
            blocks.append((cid, bytes(r.read(cid)), [bytes(x) for x in links or []]))
    dst.put_many(blocks)


async def wait_for(exits: list[CapsuleExited], n: int) -> None:
    with trio.fail_after(30):
        while len(exits) < n:
            await trio.sleep(0.02)


def test_events_in_exits_out_with_fetch_kill_and_unknown_kind(tmp_path: Path) -> None:
    ctx = h.make_ctx(tmp_path)
    remote = BlockStore(tmp_path / "remote")
    f = tmp_path / "dataset.txt"
    f.write_text("remote bytes\n" * 50_000)  # several chunks: a DAG, not one block
    data_cid = Importer(remote, ctx.import_options).add_path(f).cid
    fetched: list[str] = []

    async def fetch(cid: str) -> None:
        fetched.append(cid)
        await trio.to_thread.run_sync(copy_dag, remote, ctx.store, Cid.parse(cid))

    exits: list[CapsuleExited] = []
    kinds = ("subprocess", "function")
    attempts = Attempts(ctx, {k: executor_for(k) for k in kinds}, on_exit=exits.append,
                        fetch=fetch)  # fmt: skip
    uses_input = capsule(CapsuleSpec(command=("sh", "-c", f"wc -l < inputs/{data_cid} > n"),
                                     inputs=(str(data_cid),), outputs=("n",)), 1)  # fmt: skip
    marker = tmp_path / "started"
    sleeper = capsule(CapsuleSpec(command=("sh", "-c", f"echo up > {marker}; exec sleep 1000")), 2)
    on_slurm = capsule(CapsuleSpec.from_dict({"command": ["true"],
                                              "conditions": {"executor": "slurm"}}), 3)  # fmt: skip

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            spawn = nursery.start_soon
            assert attempts.handle(spawn, RunRequested(uses_input, 1, 30.0))
            assert attempts.handle(spawn, RunRequested(uses_input, 1, 30.0))  # duplicate
            attempts.handle(spawn, RunRequested(sleeper, 4, 0.0))
            attempts.handle(spawn, RunRequested(on_slurm, 1, 0.0))
            assert not attempts.handle(spawn, "not an executor event")
            await h.wait_for_file(marker)
            attempts.handle(spawn, KillRequested(sleeper.id, 3, "stale token"))  # not ours
            attempts.handle(spawn, KillRequested(sleeper.id, 4, "lease revoked"))
            await wait_for(exits, 3)
        attempts.handle(spawn, KillRequested(sleeper.id, 4, "late"))  # already ended

    trio.run(main)
    by_id = {e.capsule_id: e for e in exits}
    assert len(exits) == 3 and attempts.running == {}
    assert fetched == [str(data_cid)]
    done = by_id[uses_input.id]
    assert done.exit_status == 0 and done.token == 1
    assert h.read_cid(ctx, done.outputs[0]).strip() == b"50000"
    killed = by_id[sleeper.id]
    assert killed.exit_status == EXIT_CANCELLED and killed.reason.startswith("lease revoked")
    refused = by_id[on_slurm.id]
    assert refused.exit_status == EXIT_SETUP_FAILED and "no slurm executor" in refused.reason
    assert attempts.stats == {"duplicate_runs_ignored": 1, "kills_after_exit": 2,
                              "attempts_reported": 3}  # fmt: skip


class Broken(BaseExecutor):
    """An executor with a bug: its failure must become a result, not a daemon crash."""

    kind = "subprocess"

    async def _execute(self, job: object, kill: KillSwitch) -> object:  # type: ignore[override]
        raise RuntimeError("bug in executor")


def test_missing_input_without_fetch_and_executor_bugs_become_results(tmp_path: Path) -> None:
    ctx: ExecContext = h.make_ctx(tmp_path)
    exits: list[CapsuleExited] = []
    absent = str(Cid.of(RAW, b"held by nobody"))
    missing = capsule(CapsuleSpec(command=("true",), inputs=(absent,)), 5)
    buggy = capsule(CapsuleSpec(command=("true",)), 6)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            Attempts(ctx, {"subprocess": executor_for("subprocess")}, exits.append).handle(
                nursery.start_soon, RunRequested(missing, 1, 0.0))  # fmt: skip
            Attempts(ctx, {"subprocess": Broken()}, exits.append).handle(
                nursery.start_soon, RunRequested(buggy, 1, 0.0))  # fmt: skip
            await wait_for(exits, 2)

    trio.run(main)
    by_id = {e.capsule_id: e for e in exits}
    assert by_id[missing.id].exit_status == EXIT_SETUP_FAILED
    assert absent in by_id[missing.id].reason
    assert by_id[buggy.id].exit_status == EXIT_SETUP_FAILED
    assert by_id[buggy.id].reason == "executor error: RuntimeError: bug in executor"


def test_failing_fetch_and_kill_during_fetch(tmp_path: Path) -> None:
    ctx: ExecContext = h.make_ctx(tmp_path)
    exits: list[CapsuleExited] = []
    absent = str(Cid.of(RAW, b"nobody has this either"))
    started_fetch = trio.Event()

    async def unreachable(cid: str) -> None:
        raise ColonyError(f"no provider for {cid}")

    async def slow(cid: str) -> None:
        started_fetch.set()
        await trio.sleep_forever()

    spec = CapsuleSpec(command=("true",), inputs=(absent,))
    a, b = capsule(spec, 7), capsule(spec, 8)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            runner = {"subprocess": executor_for("subprocess")}
            Attempts(ctx, runner, exits.append, fetch=unreachable).handle(
                nursery.start_soon, RunRequested(a, 1, 0.0))  # fmt: skip
            slow_attempts = Attempts(ctx, runner, exits.append, fetch=slow)
            slow_attempts.handle(nursery.start_soon, RunRequested(b, 2, 0.0))
            with trio.fail_after(10):
                await started_fetch.wait()
            slow_attempts.handle(nursery.start_soon, KillRequested(b.id, 2, "lease revoked"))
            await wait_for(exits, 2)

    trio.run(main)
    by_id = {e.capsule_id: e for e in exits}
    assert by_id[a.id].exit_status == EXIT_SETUP_FAILED
    assert by_id[a.id].reason == f"cannot fetch input {absent}: no provider for {absent}"
    assert by_id[b.id].exit_status == EXIT_CANCELLED
    assert by_id[b.id].reason == "killed while fetching inputs: lease revoked"
