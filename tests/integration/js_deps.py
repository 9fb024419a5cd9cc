"""Install the npm packages of every JS interop test at once, before the suite runs.

`make js-deps` (a prerequisite of `make test`; .ci/run starts it beside the linters)
runs this. Each test still installs what is missing itself, or skips when node/npm or
the registry is missing; this only moves the installs out of the tests' time and runs
them side by side. Measured on 2026-12-06 (a fresh `npm ci` of each, warm npm cache,
machine busy): 28–153 s each, 7.3 min in all one after another, all of it on the
integration tests' one worker.

Where each lands is where its test looks (`target`): three in a cache directory keyed
by the lock file's hash (node_modules never lands in the repository), three in the
repository's git-ignored node_modules.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
#: JS directory -> its cache name under ~/.cache/colony (None: installed in place).
DIRS: dict[str, str | None] = {
    "js": "js-interop",  # test_transport_js_interop
    "js_bitswap": "js-bitswap",  # test_bitswap_js_interop
    "js_relay": "js-relay",  # test_relay_v2_js_interop, test_relay_v2_js_nat
    "js_car": None,  # test_store_car_interop
    "js_cid": None,  # test_store_cid_interop
    "js_gateway": None,  # test_gateway (@helia/verified-fetch)
}
TIMEOUT_S = 600
#: JS directories installed with `npm install` from their lock instead of `npm ci`:
#: @chainsafe/libp2p-quic lists one optional native package per platform, of which
#: the registry holds only some (linux-x64-gnu; darwin, win32, arm64 and musl 2.1.1
#: answer 404), so npm cannot put the others in the lock and `npm ci` refuses the
#: lock as "out of sync". `npm install` installs the same locked versions.
NPM_INSTALL = {"js_relay"}


def npm_args(name: str) -> list[str]:
    """The npm command line that installs the JS directory `name` from its lock."""
    verb = ["install", "--no-save"] if name in NPM_INSTALL else ["ci"]
    return [*verb, "--no-audit", "--no-fund", "--loglevel=error"]


def target(name: str) -> Path:
    """The directory `npm ci` runs in for the JS directory `name`, as its test has it."""
    src = HERE / name
    cache = DIRS[name]
    if cache is None:
        return src
    lock = (src / "package-lock.json").read_bytes()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "colony" / cache / hashlib.sha256(lock).hexdigest()[:16]


def installed(where: Path) -> bool:
    # npm writes node_modules/.package-lock.json last: present means complete.
    return (where / "node_modules" / ".package-lock.json").exists()


def main() -> int:
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        print("warning: node/npm missing: the JS interop tests will skip", file=sys.stderr)
        return 0
    started: dict[str, tuple[subprocess.Popen[bytes], float]] = {}
    for name in DIRS:
        where = target(name)
        if installed(where):
            continue
        where.mkdir(parents=True, exist_ok=True)
        if where != HERE / name:
            for f in ("package.json", "package-lock.json"):
                shutil.copyfile(HERE / name / f, where / f)
        proc = subprocess.Popen([npm, *npm_args(name)], cwd=where,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        started[name] = (proc, time.monotonic())
    for name, (proc, t0) in started.items():
        try:
            _, err = proc.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            print(f"warning: npm for {name} timed out: its tests install it again or skip",
                  file=sys.stderr)
            continue
        took = time.monotonic() - t0
        if proc.returncode == 0:
            print(f"js-deps: {name} installed in {took:.0f} s")
        else:
            tail = err.decode(errors="replace").strip()[-300:]
            print(f"warning: npm for {name} failed ({proc.returncode}): {tail}: its tests "
                  "install it again or skip", file=sys.stderr)
    if not started:
        print("js-deps: all installed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
