"""Subprocess executor against real processes and a real LMDB store."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import executor_helpers as h
import pytest
import trio

from overlay.capsule.spec import CapsuleSpec, Conditions
from overlay.core.cid import RAW, Cid
from overlay.runtime.executors import (
    EXIT_CANCELLED,
    EXIT_OUTPUT_MISSING,
    EXIT_SETUP_FAILED,
    EXIT_TIMEOUT,
    ExecRequest,
    InputMissing,
    KillSwitch,
    SubprocessExecutor,
)
from store.blockstore import BlockStore
from store.exporter import Exporter
from store.importer import ImportOptions
from store.pins import Pins

pytestmark = pytest.mark.slow
PY = sys.executable


def test_exit_zero_outputs_round_trip_and_are_pinned(tmp_path: Path) -> None:
    ctx = h.make_ctx(tmp_path)
    script = (
        "import os, sys\n"
        "data = bytes(range(256)) * 4096 + b'tail'\n"  # > 1 chunk: a real DAG
        "open('big.bin', 'wb').write(data)\n"
        "os.makedirs('tree/sub')\n"
        "open('tree/a.txt', 'w').write('alpha')\n"
        "open('tree/sub/b.txt', 'w').write('beta')\n"
        "print('to stdout'); print('to stderr', file=sys.stderr)\n"
    )
    spec = CapsuleSpec(command=(PY, "-c", script), outputs=("big.bin", "tree"))
    res = h.run(SubprocessExecutor(), spec, ctx)
    assert res.exit_status == 0 and res.reason == ""
    assert len(res.outputs) == 2 and res.missing_outputs == ()
    assert res.output_cids == {"big.bin": res.outputs[0], "tree": res.outputs[1]}
    assert h.read_cid(ctx, res.outputs[0]) == bytes(range(256)) * 4096 + b"tail"
    # The directory exports back to the same tree, byte for byte.
    out = tmp_path / "exported"
    Exporter(ctx.store).get(Cid.parse(res.outputs[1]), out)
    assert (out / "a.txt").read_text() == "alpha"
    assert (out / "sub" / "b.txt").read_text() == "beta"
    log = h.log_text(ctx, res)
    assert "to stdout" in log and "to stderr" in log and "[colony] exit status 0" in log
    assert res.started <= res.finished
    pinned = {str(p.cid) for p in Pins(ctx.store).by_name(f"capsule/{h.CAPSULE_ID}")}
    assert pinned == {*res.outputs, res.log_cid}
    to_exited = res.to_exited()
    assert (to_exited.capsule_id, to_exited.token, to_exited.outputs) == (
        h.CAPSULE_ID, 1, res.outputs)  # fmt: skip
    # The run directory is gone; nothing of the attempt is left on disk.
    assert list((tmp_path / "runs").iterdir()) == []


def test_nonzero_exit_is_reported_with_log(tmp_path: Path) -> None:
    ctx = h.make_ctx(tmp_path)
    spec = CapsuleSpec(command=("sh", "-c", "echo failing >&2; exit 3"), outputs=("never",))
    res = h.run(SubprocessExecutor(), spec, ctx)
    assert res.exit_status == 3 and res.reason == "exit status 3"
    assert res.outputs == () and res.missing_outputs == ("never",)
    assert "failing" in h.log_text(ctx, res)


def test_exit_zero_without_declared_output_fails(tmp_path: Path) -> None:
    ctx = h.make_ctx(tmp_path)
    res = h.run(SubprocessExecutor(), CapsuleSpec(command=("true",), outputs=("out.txt",)), ctx)
    assert res.exit_status == EXIT_OUTPUT_MISSING
    assert "out.txt" in res.reason


def test_outputs_cannot_escape_the_work_dir(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("do not publish")
    ctx = h.make_ctx(tmp_path)
    spec = CapsuleSpec(command=("ln", "-s", str(secret), "link"),
                       outputs=("link", "../secret.txt"))  # fmt: skip
    res = h.run(SubprocessExecutor(), spec, ctx)
    assert res.exit_status == EXIT_OUTPUT_MISSING
    assert res.outputs == () and set(res.missing_outputs) == {"link", "../secret.txt"}


def test_command_not_found_is_a_setup_failure(tmp_path: Path) -> None:
    ctx = h.make_ctx(tmp_path)
    res = h.run(SubprocessExecutor(), CapsuleSpec(command=("no-such-command-xyz",)), ctx)
    assert res.exit_status == EXIT_SETUP_FAILED
    assert "no-such-command-xyz" in res.reason and "cannot start" in h.log_text(ctx, res)


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    """A child that forks a grandchild `sleep 1000`, both ignoring SIGTERM: the group is
    sent SIGTERM, then SIGKILL after the grace period; nothing survives."""
    ctx = h.make_ctx(tmp_path, grace_s=0.3)
    pids = tmp_path / "pids"
    script = 'trap "" TERM; sleep 1000 & echo "$$ $!" > "$PIDFILE"; wait; wait'
    spec = CapsuleSpec(command=("sh", "-c", script), env=(("PIDFILE", str(pids)),))
    res = h.run(SubprocessExecutor(), spec, ctx, maxexectime_s=1.0)
    assert res.exit_status == EXIT_TIMEOUT
    assert "maxexectime 1s exceeded" in res.reason and "SIGKILL" in res.reason
    leader, grandchild = (int(x) for x in pids.read_text().split())
    assert os.getpgid(os.getpid()) != leader  # the capsule had its own group

    async def check() -> None:
        await h.wait_group_gone(leader)

    trio.run(check)
    assert h.live_in_group(leader) == []
    assert grandchild not in h.live_in_group(leader)


def test_kill_mid_run_stops_the_group_and_still_reports(tmp_path: Path) -> None:
    ctx = h.make_ctx(tmp_path)
    pids = tmp_path / "pids"
    spec = CapsuleSpec(command=("sh", "-c", 'sleep 1000 & echo "$$ $!" > "$PIDFILE"; wait'),
                       env=(("PIDFILE", str(pids)),))  # fmt: skip

    async def kill_when_started(kill: KillSwitch) -> None:
        await h.wait_for_file(pids)
        kill.kill("lease revoked")

    res = h.run(SubprocessExecutor(), spec, ctx, during=kill_when_started)
    assert res.exit_status == EXIT_CANCELLED and res.reason.startswith("lease revoked")
    assert res.log_cid  # the partial log is still imported
    leader = int(pids.read_text().split()[0])
    trio.run(h.wait_group_gone, leader)


def test_cancelling_the_caller_kills_the_group_and_propagates(tmp_path: Path) -> None:
    """Daemon shutdown: the task awaiting run() is cancelled; no process may survive."""
    ctx = h.make_ctx(tmp_path)
    pids = tmp_path / "pids"
    spec = CapsuleSpec(command=("sh", "-c", 'sleep 1000 & echo "$$ $!" > "$PIDFILE"; wait'),
                       env=(("PIDFILE", str(pids)),))  # fmt: skip
    finished = []

    async def main() -> None:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:

                async def attempt() -> None:
                    await SubprocessExecutor().run(
                        ExecRequest(h.CAPSULE_ID, 1, spec, 0.0), ctx, KillSwitch()
                    )
                    finished.append(True)

                nursery.start_soon(attempt)
                await h.wait_for_file(pids)
                nursery.cancel_scope.cancel()
        await h.wait_group_gone(int(pids.read_text().split()[0]))

    trio.run(main)
    assert finished == []  # run() did not return normally: Cancelled propagated
    assert list((tmp_path / "runs").iterdir()) == []


def test_daemon_environment_does_not_leak(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLONY_DAEMON_SECRET", "hunter2")
    ctx = h.make_ctx(tmp_path)
    spec = CapsuleSpec(command=("env",), env=(("GREETING", "hello capsule"),))
    res = h.run(SubprocessExecutor(), spec, ctx)
    assert res.exit_status == 0
    env = dict(line.split("=", 1) for line in h.log_text(ctx, res).splitlines() if "=" in line)
    assert "COLONY_DAEMON_SECRET" not in env and "hunter2" not in h.log_text(ctx, res)
    assert env["GREETING"] == "hello capsule"
    assert env["PATH"] == "/usr/local/bin:/usr/bin:/bin"
    assert env["COLONY_CAPSULE_ID"] == h.CAPSULE_ID and env["COLONY_TOKEN"] == "1"
    assert env["HOME"].endswith("/work")


def test_memory_limit_is_enforced(tmp_path: Path) -> None:
    ctx = h.make_ctx(tmp_path)
    alloc = "b = bytearray(400 << 20); print('allocated', len(b))"
    spec = CapsuleSpec(command=(PY, "-c", alloc), conditions=Conditions(mem_mib=150))
    res = h.run(SubprocessExecutor(), spec, ctx)
    assert res.exit_status == 1
    log = h.log_text(ctx, res)
    assert "MemoryError" in log and "allocated" not in log
    # The same program without the condition succeeds: the limit made the difference.
    ok = h.run(SubprocessExecutor(), CapsuleSpec(command=(PY, "-c", alloc)), ctx, token=2)
    assert ok.exit_status == 0 and f"allocated {400 << 20}" in h.log_text(ctx, ok)


def test_cpu_seconds_limit_ends_a_spinning_process(tmp_path: Path) -> None:
    """RLIMIT_CPU = maxexectime × cores + slack: SIGXCPU (128+24) before the wall clock."""
    ctx = h.make_ctx(tmp_path)
    ctx.limits = type(ctx.limits)(cpu_slack_s=0.0, kill_grace_s=0.3)
    spec = CapsuleSpec(command=(PY, "-c", "while True: pass"))
    res = h.run(SubprocessExecutor(), spec, ctx, maxexectime_s=1.0)
    # Either the CPU limit (SIGXCPU) or the wall-clock timer fires first; both end it.
    assert res.exit_status in (128 + 24, EXIT_TIMEOUT)


def test_missing_input_raises_naming_the_cid(tmp_path: Path) -> None:
    ctx = h.make_ctx(tmp_path)
    absent = str(Cid.of(RAW, b"never stored"))
    spec = CapsuleSpec(command=("true",), inputs=(absent,))
    with pytest.raises(InputMissing) as err:
        h.run(SubprocessExecutor(), spec, ctx)
    assert err.value.input_cid == absent and absent in str(err.value)
    assert not (tmp_path / "runs").exists() or list((tmp_path / "runs").iterdir()) == []


def test_partially_present_input_names_the_missing_block(tmp_path: Path) -> None:
    ctx = h.make_ctx(tmp_path)
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(600 * 1024))  # three 256 KiB chunks
    root = Cid.parse(h.add_path(ctx, src))
    leaves = [c for c in _leaf_cids(ctx.store, root)]
    ctx.store.delete(leaves[1])
    spec = CapsuleSpec(command=("true",), inputs=(str(root),))
    with pytest.raises(InputMissing) as err:
        h.run(SubprocessExecutor(), spec, ctx)
    assert err.value.input_cid == str(root) and err.value.block == str(leaves[1])
    assert str(leaves[1]) in str(err.value)


def _leaf_cids(store: BlockStore, root: Cid) -> list[Cid]:
    with store.reader() as r:
        links = r.links(root.multihash) or []
    return [Cid.from_bytes(raw) for raw in links]


def test_inputs_are_materialised_in_the_work_dir(tmp_path: Path) -> None:
    ctx = h.make_ctx(tmp_path)
    f = tmp_path / "data.bin"
    f.write_bytes(os.urandom(300 * 1024))
    d = tmp_path / "dataset"
    (d / "nested").mkdir(parents=True)
    (d / "nested" / "x.txt").write_text("x marks the spot")
    file_cid, dir_cid = h.add_path(ctx, f), h.add_path(ctx, d)
    script = (
        f'cp "$COLONY_INPUTS/{file_cid}" copy.bin && '
        f"cp -r inputs/{dir_cid} copy-dir && cat copy-dir/nested/x.txt"
    )
    spec = CapsuleSpec(command=("sh", "-c", script), inputs=(file_cid, dir_cid),
                       outputs=("copy.bin", "copy-dir"))  # fmt: skip
    res = h.run(SubprocessExecutor(), spec, ctx)
    assert res.exit_status == 0, h.log_text(ctx, res)
    # Same bytes and same import options: the copies have the inputs' CIDs.
    assert res.outputs == (file_cid, dir_cid)
    assert "x marks the spot" in h.log_text(ctx, res)


def test_output_import_uses_the_configured_cid_version(tmp_path: Path) -> None:
    ctx = h.make_ctx(tmp_path)
    ctx.import_options = ImportOptions(cid_version=0)
    spec = CapsuleSpec(command=("sh", "-c", "printf 'hello\\n' > hello.txt"),
                       outputs=("hello.txt",))  # fmt: skip
    res = h.run(SubprocessExecutor(), spec, ctx)
    # DESIGN §4 test vector: `ipfs add` of "hello\n".
    assert res.outputs == ("QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN",)


def test_kill_before_start_runs_nothing(tmp_path: Path) -> None:
    ctx = h.make_ctx(tmp_path)
    marker = tmp_path / "ran"
    spec = CapsuleSpec(command=("touch", str(marker)))

    async def main() -> None:
        kill = KillSwitch()
        kill.kill("superseded by lease 2")
        with trio.fail_after(30):
            res = await SubprocessExecutor().run(ExecRequest(h.CAPSULE_ID, 1, spec, 0), ctx, kill)
        assert res.exit_status == EXIT_CANCELLED
        assert res.reason == "killed before start: superseded by lease 2"
        assert "superseded by lease 2" in h.log_text(ctx, res)

    trio.run(main)
    assert not marker.exists()
