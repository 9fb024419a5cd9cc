"""pytest plugin for the mypyc-compiled copy (sim/compiled_build.py `--check`).

Loaded with `-p helpers.compiled_probe`; `COLONY_COMPILED_MODULES` names the modules
that must have been compiled. At the end of the session every one of them must be
imported and come from a C extension, not from its `.py`; otherwise the session fails,
so a passing golden test in the copy really ran the compiled code.
"""

from __future__ import annotations

import importlib
import os
import sys

import pytest


def not_compiled(names: list[str]) -> list[str]:
    """The modules of `names` whose imported file is not an extension module."""
    bad = []
    for name in names:
        mod = sys.modules.get(name) or importlib.import_module(name)
        if not str(getattr(mod, "__file__", "")).endswith(".so"):
            bad.append(f"{name} ({getattr(mod, '__file__', '?')})")
    return bad


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    names = [n for n in os.environ.get("COLONY_COMPILED_MODULES", "").split(",") if n]
    if not names:
        print("\ncompiled_probe: COLONY_COMPILED_MODULES is empty", file=sys.stderr)
        session.exitstatus = pytest.ExitCode.USAGE_ERROR
        return
    bad = not_compiled(names)
    loaded = [n for n in names if n in sys.modules]
    print(f"\ncompiled_probe: {len(names) - len(bad)}/{len(names)} modules compiled "
          f"({len(loaded)} imported by the tests)", file=sys.stderr)
    if bad:
        print("compiled_probe: NOT compiled: " + ", ".join(bad), file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
