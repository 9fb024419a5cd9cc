"""`colony dag export|import`: move DAGs as CAR files (ipld.io/specs/transport/car).

Like the other store commands these work directly on the node's LMDB store at
``$COLONY_HOME/blocks`` (LMDB allows several processes, so also while the daemon
runs). Export writes a CARv1, depth-first, each block once; import reads CARv1 and
CARv2, verifies every block against its CID before storing it, and refuses malformed
files with one error line (exit 1).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from overlay.cli.cmd_store import _cmd, _emit_json, _progress, _store
from overlay.cli.fmt import Subparsers, help_command

if TYPE_CHECKING:
    pass


def _export(args: argparse.Namespace) -> int:
    from overlay.core.cid import Cid
    from store.car import export_car

    root = Cid.parse(args.cid)
    with _store(args) as store:
        if args.output:
            try:
                with open(args.output, "wb") as f, _progress(True, None, "export") as prog:
                    export_car(store, root, f.write, prog)
            except BaseException:
                Path(args.output).unlink(missing_ok=True)  # no half-written CAR left behind
                raise
        else:
            out = sys.stdout.buffer
            with _progress(True, None, "export") as prog:
                export_car(store, root, out.write, prog)
            out.flush()
    return 0


def _import(args: argparse.Namespace) -> int:
    from store.car import import_car
    from store.pins import Pins

    for name in args.files:
        if not Path(name).is_file():
            print(f"colony: error: {name}: no such file", file=sys.stderr)
            return 1
    results = []
    with _store(args) as store, store.lock(exclusive=False):
        for name in args.files:
            total = Path(name).stat().st_size
            with _progress(not args.json, total, "import") as prog, open(name, "rb") as f:
                got = import_car(store, f, prog)
            if args.pin:
                for r in got.roots:
                    Pins(store).add(r, recursive=True)
            results.append((name, got))
    if args.json:
        _emit_json([{"file": n, "roots": [str(r) for r in g.roots], "blocks": g.blocks,
                     "new": g.new, "bytes": g.nbytes} for n, g in results])
        return 0
    for _, got in results:
        for r in got.roots:
            print(f"imported {r}" + (" (pinned)" if args.pin else ""))
    return 0


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    dag = sub.add_parser("dag", parents=[common], help="DAGs as CAR files: export, import",
                         description="Move whole DAGs in and out of the local store as "
                         "CAR files, the IPFS ecosystem's archive format.",
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    dag.set_defaults(func=help_command(dag))
    dsub = dag.add_subparsers(dest="dag_command", metavar="COMMAND")
    p = _cmd(dsub, common, "export", "write a DAG as a CARv1 file", """\
Write the DAG under CID (every block it reaches, depth-first, each once) as a CARv1
with CID as its root, to stdout or FILE. Every block is hash-checked as it is read;
a missing block stops with an error naming it. The result is what `ipfs dag export`
writes and what `ipfs dag import`, helia and @ipld/car read.

examples:
  colony dag export bafybei… > dataset.car
  colony dag export bafybei… -o dataset.car""", _export)
    p.add_argument("cid", metavar="CID")
    p.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    p = _cmd(dsub, common, "import", "store the blocks of CAR files; print their roots", """\
Read CARv1 or CARv2 files (made by `colony dag export`, `ipfs dag export`, helia or
@ipld/car), verify every block against its CID and store it, then pin the roots
(recursively; --no-pin to skip). A malformed or truncated file, a block that does not
match its CID, or a CID we cannot verify (hashes other than sha2-256 and identity,
codecs other than raw and dag-pb) is refused with an error; no unverified block is
ever stored.

examples:
  colony dag import dataset.car          imported bafybei… (pinned)
  colony dag import --no-pin a.car b.car
  colony dag import --json dataset.car""", _import)
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--pin", action=argparse.BooleanOptionalAction, default=True,
                   help="pin the roots recursively (default: yes)")
    p.add_argument("--json", action="store_true", help="print JSON")
