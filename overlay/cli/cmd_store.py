"""Block store commands in the style of kubo: add, cat, get, ls, pin, gc, repo, block.

These work directly on the node's LMDB store at ``$COLONY_HOME/blocks`` (LMDB allows
several processes at once, so they also work while the daemon runs). Every command
except ``add --only-hash`` needs a node created by ``colony init``. Errors print one
line naming the CID or path and exit with status 1 (``repo verify`` exits 1 when it
finds damage); usage errors exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from overlay.cli.fmt import Command, Subparsers, help_command
from overlay.cli.fmt import human_bytes as _human
from overlay.core.errors import WireError

if TYPE_CHECKING:
    from overlay.core.cid import Cid
    from store.blockstore import BlockStore
    from store.importer import Added, Importer


def _store(args: argparse.Namespace) -> BlockStore:
    from overlay.runtime.process import config as cfg
    from store.blockstore import open_home_store

    return open_home_store(args.home, cfg.load(args.home))




@contextmanager
def _progress(
    enabled: bool, total: int | None, desc: str
) -> Iterator[Callable[[int], None] | None]:
    """A tqdm bar on stderr when it is a terminal; otherwise no callback at all."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm

    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
              file=sys.stderr, leave=False) as bar:
        yield bar.update


def _tree_bytes(paths: list[Path]) -> int | None:
    """Total bytes to import (for the progress bar); None when it cannot be known."""
    total = 0
    budget = 100_000  # stop counting huge trees; the bar then shows a rate only
    stack = list(paths)
    while stack and budget > 0:
        budget -= 1
        p = stack.pop()
        try:
            if p.is_dir() and not p.is_symlink():
                stack.extend(p.iterdir())
            elif p.is_file():
                total += p.stat().st_size
        except OSError:
            return None
    return total if not stack else None


def _cid(text: str) -> Cid:
    from overlay.core.cid import Cid

    return Cid.parse(text)


def _target(store: BlockStore, text: str) -> Cid:
    """The CID named by ``CID``, ``CID/a/b`` or ``/ipfs/CID/a/b`` (store/paths.py)."""
    from store.paths import parse_path, resolve

    path = parse_path(text)
    if not path.segments:
        return path.root
    with store.reader() as r:
        return resolve(r, path)


def _emit_json(obj: object) -> None:
    json.dump(obj, sys.stdout, indent=None)
    sys.stdout.write("\n")


# ---------------------------------------------------------------- add / cat / get / ls


def _add(args: argparse.Namespace) -> int:
    from overlay.runtime.process import config as cfg
    from store.blockstore import open_home_store
    from store.importer import Importer, ImportOptions
    from store.pins import Pins

    conf = cfg.load(args.home)
    version = args.cid_version if args.cid_version is not None else conf["store"]["cid_version"]
    opts = ImportOptions(cid_version=version, raw_leaves=args.raw_leaves)
    paths = [Path(p) for p in args.paths]

    entries: list[dict[str, object]] = []

    def show(a: Added) -> None:
        if args.json:  # one JSON document at the end: every entry, roots marked
            entries.append({"path": a.path, "cid": str(a.cid), "size": a.size,
                            "tsize": a.tsize, "kind": a.kind})
            return
        if args.quieter:
            return
        if args.quiet:
            print(a.cid, flush=False)
        else:
            print(f"added {a.cid} {a.path}" if a.path else f"added {a.cid}")

    store = None if args.only_hash else open_home_store(args.home, conf)
    try:
        total = None if args.paths == ["-"] else _tree_bytes(paths)
        quiet = args.quieter or args.quiet or args.json
        with _progress(not quiet, total, "add") as prog:
            imp = Importer(store, opts, progress=prog, on_entry=show)
            roots: list[Added] = []
            if store is None:
                roots = [_add_one(imp, p, args.recursive) for p in args.paths]
            else:
                with store.lock(exclusive=False):
                    for p in args.paths:
                        roots.append(_add_one(imp, p, args.recursive))
                        if args.pin:
                            Pins(store).add(roots[-1].cid, recursive=True)
        for w in imp.warnings:
            print(f"colony: warning: {w}", file=sys.stderr)
        if args.json:
            print(json.dumps({"entries": entries, "roots": [str(r.cid) for r in roots]}))
        elif args.quieter:
            for r in roots:
                print(r.cid)
    finally:
        if store is not None:
            store.close()
    return 0


def _add_one(imp: Importer, path: str, recursive: bool) -> Added:
    if path == "-":
        return imp.add_stream(sys.stdin.buffer, "")
    return imp.add_path(Path(path), recursive=recursive)


def _inline(text: str) -> bytes | None:
    """The bytes of a raw identity CID (its data is the CID; no node needed)."""
    from overlay.core.cid import RAW
    from store.paths import parse_path

    path = parse_path(text)
    root = path.root
    return root.digest if not path.segments and root.is_identity and root.codec == RAW else None


def _cat(args: argparse.Namespace) -> int:
    from store.exporter import Exporter

    data = _inline(args.cid)
    if data is not None:
        sys.stdout.buffer.write(data)
        return 0
    with _store(args) as store:
        cid = _target(store, args.cid)
        out = sys.stdout.buffer
        Exporter(store).cat(cid, out.write)
        out.flush()
    return 0


def _get(args: argparse.Namespace) -> int:
    from store.blockstore import StoreError
    from store.exporter import Exporter
    from store.paths import parse_path

    path = parse_path(args.cid)
    data = _inline(args.cid)
    if data is not None:
        target = Path(args.output or str(path.root))
        try:
            with open(target, "xb") as f:
                f.write(data)
        except OSError as e:
            raise StoreError(f"{target}: {e.strerror or e}") from None
        print(f"saved {path.root} to {target}", file=sys.stderr)
        return 0
    with _store(args) as store:
        cid = _target(store, args.cid)
        out = Path(args.output or (path.segments[-1] if path.segments else str(cid)))
        ex = Exporter(store)
        info = ex.stat(cid)
        total = info.size if info.kind == "file" else None
        with _progress(True, total, "get") as prog:
            ex.get(cid, out, prog)
    print(f"saved {cid} to {out}", file=sys.stderr)
    return 0


def _ls(args: argparse.Namespace) -> int:
    from store.exporter import Exporter

    with _store(args) as store:
        cid = _target(store, args.cid)
        entries = Exporter(store).ls(cid)
    if args.json:
        _emit_json({"cid": str(cid), "entries": [
            {"name": e.name, "cid": str(e.cid), "type": e.kind, "size": e.size,
             "tsize": e.tsize} for e in entries]})
        return 0
    for e in entries:
        suffix = "/" if e.kind == "directory" else ""
        print(f"{e.cid} {e.size:>12} {e.name}{suffix}")
    return 0


# ---------------------------------------------------------------- pins, gc, repo


def _pin_add(args: argparse.Namespace) -> int:
    from store.pins import Pins

    with _store(args) as store:
        pins = [Pins(store).add(_cid(text), recursive=not args.direct, name=args.name)
                for text in args.cids]
    if args.json:
        print(json.dumps([{"cid": str(p.cid), "mode": p.mode.value} for p in pins]))
    for pin in [] if args.json else pins:
        print(f"pinned {pin.cid} {pin.mode.value}")
    return 0


def _pin_rm(args: argparse.Namespace) -> int:
    from store.pins import Pins

    rows: list[dict[str, object]] = []
    with _store(args) as store:
        for text in args.cids:
            left = Pins(store).rm(_cid(text), name=args.name)
            rows.append({"cid": text, "pinned": left is not None,
                         "names": list(left.names) if left else []})
            if args.json:
                continue
            if left is None:
                print(f"unpinned {text}")
            else:
                print(f"removed name {args.name!r}; {text} stays pinned as "
                      f"{', '.join(left.names)}")
    if args.json:
        _emit_json(rows)
    return 0


def _pin_ls(args: argparse.Namespace) -> int:
    from store.pins import PinMode, Pins

    mode = None if args.type == "all" else PinMode(args.type)
    with _store(args) as store:
        pins = Pins(store).ls(mode)
    if args.name is not None:
        pins = [p for p in pins if args.name in p.names]
    if args.json:
        _emit_json({"pins": [{"cid": str(p.cid), "type": p.mode.value, "names": list(p.names)}
                             for p in pins]})
        return 0
    for p in pins:
        names = f" {','.join(p.names)}" if p.names else ""
        print(f"{p.cid} {p.mode.value}{names}")
    return 0


def _gc(args: argparse.Namespace) -> int:
    from store import gc

    with _store(args) as store:
        res = gc.collect(store)
    if args.json:
        _emit_json({"removed_blocks": res.removed_blocks, "removed_bytes": res.removed_bytes,
                    "kept_blocks": res.kept_blocks, "missing": res.missing})
    else:
        print(f"removed {res.removed_blocks} blocks ({_human(res.removed_bytes)}); "
              f"kept {res.kept_blocks}")
        if res.missing:
            print(f"warning: {res.missing} pinned blocks are missing", file=sys.stderr)
    return 0


def _repo_stat(args: argparse.Namespace) -> int:
    with _store(args) as store:
        st = store.stat()
    if args.json:
        _emit_json({"blocks": st.blocks, "bytes": st.bytes, "pins": st.pins,
                    "file_size": st.file_size, "map_size": st.map_size, "path": st.path})
        return 0
    print(f"NumObjects:  {st.blocks}")
    print(f"RepoSize:    {st.bytes} ({_human(st.bytes)})")
    print(f"FileSize:    {st.file_size} ({_human(st.file_size)})")
    print(f"MapSize:     {st.map_size} ({_human(st.map_size)})")
    print(f"Pins:        {st.pins}")
    print(f"RepoPath:    {st.path}")
    return 0


def _repo_verify(args: argparse.Namespace) -> int:
    from overlay.core.cid import DAG_PB

    with _store(args) as store:
        st = store.stat()
        with _progress(True, st.bytes, "verify") as prog:
            bad = store.verify_all(prog)
    if args.json:
        _emit_json({"checked": st.blocks, "corrupt": [str(c) for c in bad]})
    else:
        for c in bad:
            extra = f" ({c.with_version(0)})" if c.codec == DAG_PB else ""
            print(f"block {c}{extra} is corrupt")
        print(f"verified {st.blocks} blocks: "
              + ("all good" if not bad else f"{len(bad)} corrupt"))
    return 1 if bad else 0


# ---------------------------------------------------------------- raw blocks


def _block_get(args: argparse.Namespace) -> int:
    cid = _cid(args.cid)
    with _store(args) as store, store.reader() as r:
        out = sys.stdout.buffer
        out.write(r.read(cid))
        out.flush()
    return 0


def _block_put(args: argparse.Namespace) -> int:
    from overlay.core.cid import DAG_PB, RAW, Cid
    from store.blockstore import StoreError
    from store.pins import Pins
    from store.unixfs import decode_pbnode

    codec = RAW if args.format == "raw" else DAG_PB
    version = args.cid_version
    if codec == RAW and version == 0:
        raise StoreError("a raw block needs CIDv1 (CIDv0 is always dag-pb)")
    src = sys.stdin.buffer if args.file == "-" else None
    try:
        data = src.read() if src is not None else Path(args.file).read_bytes()
    except OSError as e:
        raise StoreError(f"{args.file}: {e.strerror or e}") from None
    if len(data) > 2 * 1024 * 1024:
        raise StoreError(f"{args.file}: {len(data)} bytes; a block holds at most 2 MiB "
                         "(use `colony add` for files)")
    cid = Cid.of(codec, data, version)
    with _store(args) as store:
        if codec == DAG_PB:
            try:
                decode_pbnode(data)
            except WireError as e:
                raise StoreError(f"{args.file}: not a valid dag-pb block: {e}") from None
        store.put(cid, data)
        if args.pin:
            Pins(store).add(cid, recursive=False)
    print(json.dumps({"cid": str(cid), "size": len(data)}) if args.json else cid)
    return 0


def _block_stat(args: argparse.Namespace) -> int:
    cid = _cid(args.cid)
    with _store(args) as store, store.reader() as r:
        size = len(r.read(cid))
    if args.json:
        _emit_json({"cid": str(cid), "size": size})
    else:
        print(f"Key: {cid}\nSize: {size}")
    return 0


def _block_rm(args: argparse.Namespace) -> int:
    from store import gc

    cids = [_cid(t) for t in args.cids]
    status = 0
    with _store(args) as store, store.lock(exclusive=True):
        live = set() if args.force else gc.mark(store)[0]
        rows: list[dict[str, object]] = []
        for cid in cids:
            if cid.multihash in live:
                print(f"colony: error: {cid} is pinned (directly or inside a pinned DAG); "
                      "unpin it first or use --force", file=sys.stderr)
                status = 1
                rows.append({"cid": str(cid), "removed": False, "error": "pinned"})
            elif store.delete(cid):
                rows.append({"cid": str(cid), "removed": True, "error": None})
                if not args.json:
                    print(f"removed {cid}")
            else:
                print(f"colony: error: block {cid} not found in the local store",
                      file=sys.stderr)
                status = 1
                rows.append({"cid": str(cid), "removed": False, "error": "not_found"})
    if args.json:
        _emit_json(rows)
    return status


# ---------------------------------------------------------------- registration

_FMT = argparse.RawDescriptionHelpFormatter


def _cmd(sub: Subparsers, common: argparse.ArgumentParser, name: str, help_: str, desc: str,
         func: Command) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        name, parents=[common], help=help_, description=desc, formatter_class=_FMT)
    p.set_defaults(func=func)
    return p


def register(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = _cmd(sub, common, "add", "import files or directories; print their CIDs", """\
Import files (or with -r directory trees) into the local block store, chunked in
256 KiB pieces as a balanced UnixFS DAG, and pin them. CIDs are those `ipfs add`
gives: CIDv1 with raw leaves by default ([store] cid_version), --cid-version 0 for
kubo's default Qm… CIDs. Re-running an interrupted add resumes: stored blocks are
not written again.

examples:
  colony add notes.txt                  added bafkrei… notes.txt
  colony add -r dataset/                every file and directory, root last
  colony add --cid-version 0 hello.txt  QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN
  tar c dir | colony add -Q -           read stdin, print only the CID
  colony add -n big.iso                 compute the CID without storing anything""",
             _add)
    p.add_argument("paths", nargs="+", metavar="PATH", help="file, directory (with -r) or -")
    p.add_argument("-r", "--recursive", action="store_true", help="add directory trees")
    p.add_argument("--cid-version", type=int, choices=(0, 1), default=None,
                   help="CID version (default: [store] cid_version, normally 1)")
    p.add_argument("--raw-leaves", action=argparse.BooleanOptionalAction, default=None,
                   help="store chunks as raw blocks (default: yes for CIDv1, no for v0)")
    p.add_argument("--pin", action=argparse.BooleanOptionalAction, default=True,
                   help="pin the added roots recursively (default: yes)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only CIDs")
    p.add_argument("-Q", "--quieter", action="store_true",
                   help="print only the CID of each root")
    p.add_argument("-n", "--only-hash", action="store_true",
                   help="compute CIDs without writing to the store")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object: every entry (path, cid, size, kind) and the roots")

    p = _cmd(sub, common, "cat", "write a file's contents to stdout", """\
Stream a UnixFS file (or a raw block) from the local store to stdout. Every block is
hash-checked as it is read; a missing or corrupt block stops with an error naming it.

example:
  colony cat bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am""", _cat)
    p.add_argument("cid", metavar="CID[/PATH]")

    p = _cmd(sub, common, "get", "save a file or directory tree to disk", """\
Write a file, directory tree or symlink from the local store to PATH (default: the
CID, in the current directory). PATH must not exist yet.

example:
  colony get bafybei… -o dataset-copy""", _get)
    p.add_argument("cid", metavar="CID[/PATH]")
    p.add_argument("-o", "--output", metavar="PATH", help="where to write (must not exist)")

    p = _cmd(sub, common, "ls", "list a directory's entries", """\
List a UnixFS directory: CID, size and name of each entry (directories end in /).

example:
  colony ls --json bafybei…""", _ls)
    p.add_argument("cid", metavar="CID[/PATH]")
    p.add_argument("--json", action="store_true", help="print JSON")

    pin = sub.add_parser("pin", parents=[common], help="keep content from gc: add, rm, ls",
                         description="Pins keep blocks from garbage collection. A recursive "
                         "pin keeps a whole DAG, a direct pin one block; pins may be named.",
                         formatter_class=_FMT)
    pin.set_defaults(func=help_command(pin))
    psub = pin.add_subparsers(dest="pin_command", metavar="COMMAND")
    p = _cmd(psub, common, "add", "pin CIDs (recursively by default)", """\
examples:
  colony pin add bafybei…
  colony pin add --name dataset-v2 bafybei…
  colony pin add --direct bafkrei…""", _pin_add)
    p.add_argument("cids", nargs="+", metavar="CID")
    p.add_argument("--direct", action="store_true", help="pin the block only, not its DAG")
    p.add_argument("--name", help="a label for this pin")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = _cmd(psub, common, "rm", "unpin CIDs (or remove one name)", """\
examples:
  colony pin rm bafybei…
  colony pin rm --name dataset-v2 bafybei…   (stays pinned while other names remain)""",
             _pin_rm)
    p.add_argument("cids", nargs="+", metavar="CID")
    p.add_argument("--name", help="remove only this name")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = _cmd(psub, common, "ls", "list pins", "example:\n  colony pin ls --type recursive",
             _pin_ls)
    p.add_argument("--type", choices=("all", "recursive", "direct"), default="all")
    p.add_argument("--name", help="only pins with this name")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = _cmd(sub, common, "gc", "delete blocks no pin reaches", """\
Mark every block reachable from a pin, delete the rest. Refuses to run while an add is
in progress on this store.

example:
  colony gc""", _gc)
    p.add_argument("--json", action="store_true", help="print JSON")

    repo = sub.add_parser("repo", parents=[common], help="store statistics and integrity",
                          description="Inspect the block store.", formatter_class=_FMT)
    repo.set_defaults(func=help_command(repo))
    rsub = repo.add_subparsers(dest="repo_command", metavar="COMMAND")
    p = _cmd(rsub, common, "stat", "blocks, bytes, pins, file and map size",
             "example:\n  colony repo stat --json", _repo_stat)
    p.add_argument("--json", action="store_true", help="print JSON")
    p = _cmd(rsub, common, "verify", "rehash every block and list corrupt ones", """\
Read every block and check it against its key. Lists each corrupt block and exits
with status 1 if there is any; nothing is modified.

example:
  colony repo verify""", _repo_verify)
    p.add_argument("--json", action="store_true", help="print JSON")

    block = sub.add_parser("block", parents=[common], help="raw blocks: get, put, stat, rm",
                           description="Work with single blocks by CID.",
                           formatter_class=_FMT)
    block.set_defaults(func=help_command(block))
    bsub = block.add_subparsers(dest="block_command", metavar="COMMAND")
    p = _cmd(bsub, common, "get", "write a block's bytes to stdout",
             "example:\n  colony block get bafkrei… > block.bin", _block_get)
    p.add_argument("cid", metavar="CID")
    p = _cmd(bsub, common, "put", "store a file (or stdin) as one block; print its CID", """\
examples:
  colony block put block.bin                 raw, CIDv1
  colony block put --format dag-pb node.pb   dag-pb (validated), CIDv1
  echo hi | colony block put -""", _block_put)
    p.add_argument("file", metavar="FILE", help="file or - for stdin")
    p.add_argument("--format", choices=("raw", "dag-pb"), default="raw")
    p.add_argument("--cid-version", type=int, choices=(0, 1), default=1)
    p.add_argument("--pin", action="store_true", help="pin the block directly")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = _cmd(bsub, common, "stat", "a block's size",
             "example:\n  colony block stat bafkrei…", _block_stat)
    p.add_argument("cid", metavar="CID")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = _cmd(bsub, common, "rm", "delete blocks (refuses pinned ones)",
             "example:\n  colony block rm bafkrei…", _block_rm)
    p.add_argument("cids", nargs="+", metavar="CID")
    p.add_argument("--force", action="store_true", help="delete even if pinned")
    p.add_argument("--json", action="store_true", help="print JSON")

