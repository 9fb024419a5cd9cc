"""Function executor: real child interpreters calling a module from a temp dir."""

from __future__ import annotations

import json
from pathlib import Path

import executor_helpers as h
import pytest

from overlay.capsule.spec import CapsuleSpec
from overlay.runtime.executors import (
    EXIT_SETUP_FAILED,
    EXIT_TIMEOUT,
    FunctionExecutor,
    executor_for,
    kind_of,
)

pytestmark = pytest.mark.slow

MODULE = """
import asyncio, os, sys, time

def add(a, b, scale=1):
    print("adding", a, b)
    return {"sum": (a + b) * scale, "cwd_is_work": os.getcwd().endswith("/work")}

def boom(msg):
    raise ValueError("boom: " + msg)

def hang():
    time.sleep(1000)

def crash():
    os.abort()

def not_json():
    return {1, 2}

def write_too(name):
    with open(name, "w") as f:
        f.write("side output")
    return name

class Tools:
    @staticmethod
    def twice(x):
        return 2 * x

async def later(x):
    await asyncio.sleep(0)
    return x + 1
"""


@pytest.fixture
def modpath(tmp_path: Path) -> Path:
    d = tmp_path / "mods"
    d.mkdir()
    (d / "colony_fn_testmod.py").write_text(MODULE)
    return d


def fn_spec(modpath: Path, fn: str, *args: object, outputs: tuple[str, ...] = (),
            **kwargs: object) -> CapsuleSpec:  # fmt: skip
    return CapsuleSpec.from_dict({
        "function": f"colony_fn_testmod:{fn}", "args": list(args), "kwargs": kwargs,
        "env": {"PYTHONPATH": str(modpath)}, "outputs": list(outputs),
    })  # fmt: skip


def test_return_value_becomes_the_first_output(tmp_path: Path, modpath: Path) -> None:
    ctx = h.make_ctx(tmp_path)
    spec = fn_spec(modpath, "add", 2, 3, scale=10)
    assert kind_of(spec) == "function"
    res = h.run(executor_for("function"), spec, ctx)
    assert res.exit_status == 0, h.log_text(ctx, res)
    assert json.loads(h.read_cid(ctx, res.outputs[0])) == {"sum": 50, "cwd_is_work": True}
    assert "adding 2 3" in h.log_text(ctx, res)


def test_declared_outputs_follow_the_result(tmp_path: Path, modpath: Path) -> None:
    ctx = h.make_ctx(tmp_path)
    res = h.run(FunctionExecutor(), fn_spec(modpath, "write_too", "side.txt",
                                            outputs=("side.txt",)), ctx)  # fmt: skip
    assert res.exit_status == 0
    assert json.loads(h.read_cid(ctx, res.outputs[0])) == "side.txt"
    assert h.read_cid(ctx, res.outputs[1]) == b"side output"


def test_dotted_attr_and_coroutine_functions(tmp_path: Path, modpath: Path) -> None:
    ctx = h.make_ctx(tmp_path)
    res = h.run(FunctionExecutor(), fn_spec(modpath, "Tools.twice", 21), ctx)
    assert json.loads(h.read_cid(ctx, res.outputs[0])) == 42
    res = h.run(FunctionExecutor(), fn_spec(modpath, "later", 1), ctx, token=2)
    assert json.loads(h.read_cid(ctx, res.outputs[0])) == 2


def test_exception_fails_with_traceback_in_log(tmp_path: Path, modpath: Path) -> None:
    ctx = h.make_ctx(tmp_path)
    res = h.run(FunctionExecutor(), fn_spec(modpath, "boom", "bad input"), ctx)
    assert res.exit_status == 1 and res.outputs == ()
    log = h.log_text(ctx, res)
    assert "Traceback (most recent call last)" in log
    assert "ValueError: boom: bad input" in log and "colony_fn_testmod.py" in log


def test_unencodable_result_fails(tmp_path: Path, modpath: Path) -> None:
    ctx = h.make_ctx(tmp_path)
    res = h.run(FunctionExecutor(), fn_spec(modpath, "not_json"), ctx)
    assert res.exit_status == 1 and "not JSON serializable" in h.log_text(ctx, res)


def test_hang_times_out(tmp_path: Path, modpath: Path) -> None:
    ctx = h.make_ctx(tmp_path)
    res = h.run(FunctionExecutor(), fn_spec(modpath, "hang"), ctx, maxexectime_s=1.0)
    assert res.exit_status == EXIT_TIMEOUT and res.outputs == ()


def test_crash_is_contained(tmp_path: Path, modpath: Path) -> None:
    ctx = h.make_ctx(tmp_path)
    res = h.run(FunctionExecutor(), fn_spec(modpath, "crash"), ctx)
    assert res.exit_status == 128 + 6 and res.reason == "killed by SIGABRT"


def test_unknown_module_and_bad_entry_point(tmp_path: Path, modpath: Path) -> None:
    ctx = h.make_ctx(tmp_path)
    spec = CapsuleSpec(function="no_such_module_xyz:f")
    res = h.run(FunctionExecutor(), spec, ctx)
    assert res.exit_status == 1 and "ModuleNotFoundError" in h.log_text(ctx, res)
    res = h.run(FunctionExecutor(), CapsuleSpec(function="echo"), ctx, token=2)
    assert res.exit_status == EXIT_SETUP_FAILED and "package.module:attr" in res.reason
