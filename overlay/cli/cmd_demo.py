"""`colony demo`: the end-to-end tour on a throw-away node.

Creates a node in a temporary directory (or ``--home``), generates a small,
deterministic dataset (a few files in nested directories, one larger than a 256 KiB
chunk), imports it, reads every file back and checks the bytes, then shows the DAG as
a tree with CIDs and sizes and the repo statistics. Exit status 0 means every check
passed. Then a local colony of daemons on 127.0.0.1 shares the dataset and runs a
capsule over it (overlay/cli/demo_colony.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from overlay.cli.cmd_node import init_home
from overlay.cli.fmt import Subparsers
from overlay.cli.fmt import human_bytes as _human
from overlay.core.errors import ColonyError

if TYPE_CHECKING:
    from overlay.core.cid import Cid
    from store.blockstore import BlockStore
    from store.exporter import Exporter

#: name → size in bytes; contents are a seeded stream so every run has the same CIDs.
SAMPLE_FILES: dict[str, int] = {
    "README.txt": 0,  # written as text below
    "data/measurements.csv": 40_000,
    "data/raw/sensor-a.bin": 700_000,  # three chunks: a two-level DAG
    "data/raw/sensor-b.bin": 262_144,  # exactly one chunk
    "docs/empty.txt": 0,
}
README = b"Colony demo dataset.\nEvery byte here is deterministic, so the CIDs are too.\n"


def sample_bytes(name: str, size: int) -> bytes:
    """Deterministic pseudo-random bytes (sha256 in counter mode, seeded by name)."""
    import hashlib

    out = bytearray()
    seed = name.encode()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(seed + counter.to_bytes(8, "big")).digest()
        counter += 1
    return bytes(out[:size])


def make_dataset(root: Path) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for rel, size in SAMPLE_FILES.items():
        data = README if rel == "README.txt" else sample_bytes(rel, size)
        if rel.endswith(".csv"):
            rows = [f"{i},{b}" for i, b in enumerate(data[:4000])]
            data = ("id,value\n" + "\n".join(rows) + "\n").encode()
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        files[rel] = data
    return files




def _tree(ex: Exporter, cid: Cid, name: str, out: list[str], prefix: str = "",
          last: bool = True, root: bool = True) -> None:
    """Render the DAG like `tree`: one line per entry with its size and CID."""
    info = ex.stat(cid)
    branch = "" if root else ("└── " if last else "├── ")
    out.append(f"{prefix}{branch}{name}  {_human(info.size)}  {cid}")
    if info.kind != "directory":
        return
    entries = ex.ls(cid)
    child_prefix = prefix if root else prefix + ("    " if last else "│   ")
    for i, e in enumerate(entries):
        label = e.name + ("/" if e.kind == "directory" else "")
        _tree(ex, e.cid, label, out, child_prefix, i == len(entries) - 1, False)


def run_demo(home: Path, out: TextIO | None = None, *, kept: bool = True, nodes: int = 5) -> int:
    from store.blockstore import open_home_store
    from store.exporter import Exporter
    from store.importer import Importer, ImportOptions
    from store.pins import Pins

    # Flushed: through a pipe (`colony demo | tee`, a test) each step shows as it
    # happens, not in 8 KiB blocks at the end.
    def say(*a: object) -> None:
        print(*a, file=out, flush=True)

    say(f"1. creating a node in {home}")
    kp = init_home(home, quiet=True)
    say(f"   peer id {kp.peer_id}")
    work = home / "demo-dataset"
    files = make_dataset(work)
    total = sum(len(v) for v in files.values())
    say(f"2. generated a sample dataset: {len(files)} files, {_human(total)} in {work}")
    store: BlockStore = open_home_store(home)
    try:
        imp = Importer(store, ImportOptions(cid_version=1))
        root = imp.add_path(work, recursive=True)
        Pins(store).add(root.cid, name="demo-dataset")
        say(f"3. imported and pinned it: {root.cid}")
        v0 = Importer(None, ImportOptions(cid_version=0)).add_path(work, recursive=True)
        say(f"   (as `ipfs add -r` would name it, CIDv0: {v0.cid})")
        ex = Exporter(store)
        say("4. reading every file back through the DAG and comparing bytes")
        checked = 0
        restored = home / "restored"
        ex.get(root.cid, restored)
        for rel, data in files.items():
            got = (restored / rel).read_bytes()
            if got != data:
                raise ColonyError(f"demo: {rel} read back differs from what was imported")
            checked += 1
        say(f"   {checked}/{len(files)} files identical")
        say("5. the DAG (name, size, CID):")
        lines: list[str] = []
        _tree(ex, root.cid, "demo-dataset/", lines)
        for line in lines:
            say("   " + line)
        st = store.stat()
        say("6. repo stats:")
        say(f"   {st.blocks} blocks, {_human(st.bytes)} of block data, {st.pins} pin(s), "
            f"LMDB file {_human(st.file_size)}")
        bad = store.verify_all()
        say(f"   verify: {'all blocks hash to their CIDs' if not bad else f'{len(bad)} corrupt'}")
        if bad:
            return 1
    finally:
        store.close()
    if nodes > 1:
        from overlay.cli.demo_colony import run_colony_demo

        big = work / "data" / "raw" / "camera.bin"
        big.write_bytes(sample_bytes("camera", 6 * 1024 * 1024))
        run_colony_demo(colony_root(home), nodes, work, say)
    if kept:
        say(f"demo complete: explore with `colony --home {home} ls {root.cid}`")
        if nodes > 1:
            say(f"   (the colony's homes, daemon logs and capsule spec: {colony_root(home)})")
    else:
        say("demo complete (the throw-away nodes are removed; --home DIR keeps one)")
    return 0


def colony_root(home: Path) -> Path:
    """Where the local colony's node homes go: next to the demo node."""
    return home.with_name(home.name + "-colony")


def _demo(args: argparse.Namespace) -> int:
    import shutil
    import tempfile

    if args.demo_home is not None:
        return run_demo(args.demo_home, nodes=args.nodes)
    tmp = Path(tempfile.mkdtemp(prefix="colony-demo-"))
    try:
        return run_demo(tmp / "node", kept=args.keep, nodes=args.nodes)
    finally:
        if args.keep:
            print(f"(kept {tmp})", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    # Not built on `common`: its --home defaults to $COLONY_HOME, while the demo's
    # --home defaults to a fresh temp dir (argparse shares parent actions, so the
    # default cannot be overridden per command).
    p = sub.add_parser(
        "demo",
        help="run the end-to-end demo on a throw-away node",
        description="Create a node in a temporary directory, import a generated dataset, "
        "read it back and verify it, and show its CIDs and the repo statistics; then start "
        "a local colony of daemons on 127.0.0.1, publish the dataset on one node, fetch it "
        "on two others (from several providers) and verify it; submit a capsule (a shell "
        "command over the dataset's CID) from a node that lacks it, follow its placement "
        "and run, and read its output by CID on another node. Every daemon is stopped at "
        "the end, also on Ctrl-C.\n\n"
        "examples:\n  colony demo\n  colony demo --home /tmp/demo-node   "
        "(a new node there, kept to explore afterwards)\n  colony demo --nodes 1   "
        "(the single-node tour only)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--home", dest="demo_home", type=Path, default=None,
                   help="create the demo node here (must not hold a node yet); "
                   "default: a temporary directory, removed afterwards")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error", "critical"),
                   default=None, help="log verbosity")
    p.set_defaults(home=None)
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument("--nodes", type=int, default=5,
                   help="daemons in the local colony part (1 = single-node tour only)")
    p.set_defaults(func=_demo)
