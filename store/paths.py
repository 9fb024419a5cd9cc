"""Content paths: ``CID/a/b.txt`` and ``/ipfs/CID/a/b.txt`` resolved through UnixFS.

Spec: ipfs/specs ``http-gateways/PATH_GATEWAY.md`` (``/ipfs/{cid}[/{path}]``) and
UNIXFS.md (a directory's entries are its dag-pb links, named). `parse_path` checks the
text, `resolve` walks it inside one read transaction of a `Reader`; both are pure
(no files, no network) so the CLI and any later HTTP route share them.

Invariants:

- A path never leaves its root: segments ``.`` and ``..``, empty segments (``a//b``),
  backslashes, NUL and percent-encoded separators or dots (``%2F``, ``%2e%2e``) are
  refused before anything is read. Only one trailing ``/`` is tolerated.
- Bounded work: at most `MAX_PATH_CHARS` characters, `MAX_PATH_DEPTH` segments,
  `MAX_SEGMENT_BYTES` bytes per segment.
- Every block on the way is hash-checked by the `Reader` before it is decoded.
- HAMT-sharded directories (UnixFS type 5, as kubo writes above its threshold) are
  resolved by the entry name's murmur3 hash, one shard per level (store/hamt.py); a
  shard with a hash type other than murmur3-x64-64 (0x22), a fanout that is not a
  power of two, or a bitfield that disagrees with its links is refused by name.
  Symlinks on the way are not followed (their target is outside the DAG's control).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from overlay.core.cid import RAW, Cid
from overlay.core.errors import ColonyError, InvalidCid, WireError
from store import hamt
from store.blockstore import Reader
from store.unixfs import DataType, PBLink, PBNode, UnixFSData, decode_pbnode, decode_unixfs

MAX_PATH_CHARS = 4096
MAX_PATH_DEPTH = 64
MAX_SEGMENT_BYTES = 255
#: Percent-encodings of ``/``, ``\``, ``.`` and NUL: a path that hides them is refused.
_ENCODED = re.compile(r"%(2f|5c|2e|00)", re.IGNORECASE)


class PathError(ColonyError):
    """A content path that is malformed, unsafe, too long, or does not resolve."""


@dataclass(frozen=True, slots=True)
class ContentPath:
    root: Cid
    segments: tuple[str, ...]

    def __str__(self) -> str:
        return "/".join((str(self.root), *self.segments))

    def prefix(self, n: int) -> str:
        """The text of the root and its first `n` segments (for error messages)."""
        return "/".join((str(self.root), *self.segments[:n]))


def _check_segment(seg: str, text: str) -> str:
    if seg == "":
        raise PathError(f"path {text!r} has an empty segment (`//`)")
    if seg in (".", ".."):
        raise PathError(f"path {text!r}: segment {seg!r} is refused (no relative paths)")
    if "\\" in seg or "\0" in seg:
        raise PathError(f"path {text!r}: segment {seg!r} holds a backslash or NUL")
    if _ENCODED.search(seg):
        raise PathError(
            f"path {text!r}: segment {seg!r} holds a percent-encoded separator, dot or NUL"
        )
    if len(seg.encode()) > MAX_SEGMENT_BYTES:
        raise PathError(f"path {text!r}: a segment is longer than {MAX_SEGMENT_BYTES} bytes")
    return seg


def parse_path(text: str) -> ContentPath:
    """Parse ``CID``, ``CID/a/b`` or ``/ipfs/CID/a/b`` (a trailing ``/`` is allowed)."""
    if len(text) > MAX_PATH_CHARS:
        raise PathError(f"path of {len(text)} characters; at most {MAX_PATH_CHARS}")
    s = text.strip()
    if s.startswith("/ipfs/"):
        s = s[len("/ipfs/"):]
    elif s.startswith("/"):
        raise PathError(f"path {text!r}: expected CID/… or /ipfs/CID/…")
    if s.endswith("/"):
        s = s[:-1]
    parts = s.split("/")
    try:
        root = Cid.parse(parts[0])
    except InvalidCid as e:
        raise PathError(f"path {text!r}: {e}") from None
    segs = tuple(_check_segment(p, text) for p in parts[1:])
    if len(segs) > MAX_PATH_DEPTH:
        raise PathError(f"path {text!r} has {len(segs)} segments; at most {MAX_PATH_DEPTH}")
    return ContentPath(root, segs)


def resolve(r: Reader, path: ContentPath) -> Cid:
    """The CID the path names, walking its directories in `r` (blocks hash-checked)."""
    cur = path.root
    for depth, name in enumerate(path.segments):
        here = path.prefix(depth)
        block = r.read(cur, context=f"resolving {path}")
        if cur.codec == RAW:
            raise PathError(f"{here} is a file, not a directory")
        try:
            node = decode_pbnode(block)
            if node.data is None:
                raise PathError(f"{here} ({cur}) is a dag-pb node without UnixFS data")
            kind = decode_unixfs(node.data).type
        except WireError as e:
            raise PathError(f"{here} ({cur}) is not valid dag-pb/UnixFS: {e}") from None
        if kind in (DataType.FILE, DataType.RAW):
            raise PathError(f"{here} is a file, not a directory")
        if kind is DataType.SYMLINK:
            raise PathError(f"{here} is a symlink; symlinks inside paths are not followed")
        if kind is DataType.HAMT_SHARD:
            cur = _hamt_lookup(r, cur, name, here)
            continue
        if kind is not DataType.DIRECTORY:
            raise PathError(f"{here} is a UnixFS {kind.name} node, not a directory")
        found = _link_cid(node.links, name, here, 0)
        if found is None:
            raise PathError(f"no entry {name} in directory {here}")
        cur = found
    return cur


def _link_cid(links: tuple[PBLink, ...], name: str, here: str, pad: int) -> Cid | None:
    """The CID of the link named `name` after a `pad`-character bucket prefix."""
    for lk in links:
        if lk.name is not None and len(lk.name) > pad and lk.name[pad:] == name:
            try:
                return Cid.from_bytes(lk.hash)
            except InvalidCid as e:
                raise PathError(f"{here}: entry {name!r} has a bad CID: {e}") from None
    return None


def _hamt_lookup(r: Reader, root: Cid, name: str, here: str) -> Cid:
    """The entry `name` of the HAMT-sharded directory `root`, by its hash (store/hamt.py)."""

    def read(cid: Cid) -> tuple[PBNode, UnixFSData]:
        try:
            node = decode_pbnode(r.read(cid, context=f"resolving {here}"))
            return node, decode_unixfs(node.data if node.data is not None else b"")
        except WireError as e:
            raise PathError(f"{here}: HAMT shard {cid} is not valid dag-pb/UnixFS: {e}"
                            ) from None

    try:
        found = hamt.find(read, root, name)
    except (hamt.HamtError, InvalidCid) as e:
        raise PathError(f"{here}: {e}") from None
    if found is None:
        raise PathError(f"no entry {name} in directory {here} (HAMT-sharded)")
    return found


__all__ = ["MAX_PATH_CHARS", "MAX_PATH_DEPTH", "ContentPath", "PathError", "parse_path",
           "resolve"]
