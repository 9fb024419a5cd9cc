"""Child side of the function executor: import ``module:attr``, call it, write JSON.

Run as ``python -P fnrunner.py CALL_JSON RESULT_JSON`` in the capsule's work dir
(``-P``: this file's directory must not shadow stdlib modules such as ``subprocess``).
Standard library only, so it works with any interpreter the node is configured with.

CALL_JSON holds ``{"function": "pkg.mod:attr", "args": [...], "kwargs": {...}}``. The
work dir is put first on ``sys.path`` (as ``python -m`` does); PYTHONPATH from the
capsule's env applies too. The return value (awaited if it is a coroutine) is written
as JSON to RESULT_JSON via a temp file and rename, so a half-written result is never
seen. An exception prints its traceback to stderr (the capsule log) and exits 1; a
value JSON cannot encode does the same.
"""

import asyncio
import importlib
import inspect
import json
import os
import sys
import traceback
from collections.abc import Awaitable
from typing import Any


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: fnrunner.py CALL_JSON RESULT_JSON", file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        call = json.load(f)
    sys.path.insert(0, os.getcwd())
    try:
        module_name, _, attr = call["function"].partition(":")
        target: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
        value = target(*call["args"], **call["kwargs"])
        if inspect.isawaitable(value):
            value = asyncio.run(_await(value))
        text = json.dumps(value, allow_nan=False)
    except Exception:  # SystemExit passes: a function may choose its exit code
        traceback.print_exc()
        sys.stderr.flush()
        return 1
    tmp = argv[2] + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, argv[2])
    return 0


async def _await(aw: Awaitable[Any]) -> Any:
    return await aw


if __name__ == "__main__":
    sys.exit(main(sys.argv))
