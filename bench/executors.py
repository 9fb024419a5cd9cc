"""Executor benchmarks: what one capsule attempt costs beyond starting its process.

1. Subprocess attempts per second for the command ``true`` (sequential): fresh run dir,
   process group, rlimits, log import and pin into a real LMDB store, clean-up — next to
   bare ``trio.run_process(["true"])`` measured in the same run (the limit), and the
   ratio.
2. Function attempts per second (a call returning a small dict: a Python start-up,
   import, JSON result imported as an output), next to bare ``python -c pass``.
3. Output import: a capsule writing a 64 MiB random file; MB/s from process exit to
   result (output, log, pins), next to `Importer.add_path` of the same file (still in
   the page cache) into a fresh store (the limit).

Run: .venv/bin/python bench/executors.py [--n 40]
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile
import time

# Run as a script, this file's directory comes first on sys.path: put the repository
# root there instead (as bench/gossip.py does).
_HERE = pathlib.Path(__file__).resolve().parent
if sys.path and pathlib.Path(sys.path[0] or ".").resolve() == _HERE:
    sys.path[0] = str(_HERE.parent)

import structlog  # noqa: E402
import trio  # noqa: E402

from overlay.capsule.spec import CapsuleSpec  # noqa: E402
from overlay.runtime.executors import (  # noqa: E402
    BaseExecutor,
    ExecContext,
    ExecRequest,
    FunctionExecutor,
    KillSwitch,
    SubprocessExecutor,
)
from store.blockstore import BlockStore  # noqa: E402
from store.importer import Importer  # noqa: E402

CAPSULE = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"


async def _attempts(ex: BaseExecutor, spec: CapsuleSpec, ctx: ExecContext, n: int) -> float:
    t = time.perf_counter()
    for i in range(n):
        res = await ex.run(ExecRequest(CAPSULE, i + 1, spec, 60), ctx, KillSwitch())
        assert res.exit_status == 0, res.reason
    return n / (time.perf_counter() - t)


async def _bare(argv: list[str], n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        await trio.run_process(argv)
    return n / (time.perf_counter() - t)


async def main(n: int) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        ctx = ExecContext(store=BlockStore(root / "blocks"), workdir_root=root / "runs")
        limit = await _bare(["true"], n)
        rate = await _attempts(SubprocessExecutor(), CapsuleSpec(command=("true",)), ctx, n)
        print(f"subprocess attempts: {rate:,.0f}/s  bare spawn of true: {limit:,.0f}/s  "
              f"ratio {rate / limit:.2f}")  # fmt: skip

        mods = root / "mods"
        mods.mkdir()
        (mods / "bench_fn.py").write_text("def f(x):\n    return {'x': x}\n")
        fspec = CapsuleSpec(function="bench_fn:f", args=(1,), env=(("PYTHONPATH", str(mods)),))
        m = max(5, n // 4)
        limit = await _bare([sys.executable, "-c", "pass"], m)
        rate = await _attempts(FunctionExecutor(), fspec, ctx, m)
        print(f"function attempts: {rate:,.1f}/s  bare python -c pass: {limit:,.1f}/s  "
              f"ratio {rate / limit:.2f}")  # fmt: skip

        size = 64 << 20
        wspec = CapsuleSpec(command=("sh", "-c", f"head -c {size} /dev/urandom > out.bin"),
                            outputs=("out.bin",))  # fmt: skip
        ctx.keep_rundirs = True  # the same bytes are then imported directly, for the limit
        res = await SubprocessExecutor().run(ExecRequest(CAPSULE, 10_000, wspec, 120), ctx,
                                             KillSwitch())  # fmt: skip
        assert res.exit_status == 0
        # Import time = from process exit to result (outputs, log, pins).
        import_s = time.time() - res.finished
        data = root / "runs" / f"{CAPSULE}.10000" / "work" / "out.bin"
        store2 = BlockStore(root / "blocks2")
        t = time.perf_counter()
        Importer(store2).add_path(data)
        direct_s = time.perf_counter() - t
        mb = size / 1e6
        print(f"output import: {mb / import_s:,.0f} MB/s  direct add_path: "
              f"{mb / direct_s:,.0f} MB/s  ratio {direct_s / import_s:.2f}")  # fmt: skip


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=40)
    trio.run(main, ap.parse_args().n)
