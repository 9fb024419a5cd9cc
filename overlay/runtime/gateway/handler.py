"""The gateway's answers: `GET`/`HEAD /ipfs/{cid}[/{path}]` as a raw block, a CAR
stream, a file's bytes or a directory's HTML listing.

Spec: ipfs/specs TRUSTLESS_GATEWAY.md (raw blocks, CARs with `dag-scope` and
`entity-bytes`, `order=dfs`, `dups`) and PATH_GATEWAY.md (deserialised files with
`Range`, directory URLs normalised to a trailing `/` by a 301, `index.html`,
ETag / `If-None-Match` → 304, `Cache-Control: public, max-age=29030400, immutable`,
`X-Ipfs-Path`, `X-Ipfs-Roots`, status codes).

`Planner.plan` runs on a worker thread (it reads the store) and decides everything
before the status line is sent: the path resolves, the terminal block exists, is
served by the policy and is valid UnixFS where that matters, so a refusal is a clear
status with a one-line reason (400 malformed, 404 not here or not public, 406 format
not produced, 416 bad range). Only a block missing *below* the first one can still
cut a started body short (the spec's streaming rule).

ETags: raw `"CID.raw"`, CAR `"CID.car.<12 hex of path, scope, bytes, dups>"` (our CAR
is deterministic), file `"CID"` (of the path's target; a 206 carries the whole
file's ETag, RFC 9110 §13.1), listing `"DirIndex-<version>_CID-CID"`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import structlog

from overlay.core.cid import Cid
from overlay.core.dagcbor import encode_car_header
from overlay.core.errors import InvalidCid
from overlay.core.multiformats import encode_varint
from overlay.runtime.gateway import present
from overlay.runtime.gateway.dag import (
    BadContent,
    Node,
    NotServed,
    Policy,
    Resolved,
    dag_blocks,
    dir_entries,
    entity_blocks,
    file_bytes,
    find_entry,
    load_node,
    resolve_path,
)
from overlay.runtime.gateway.httpserver import HttpRequest, Reply
from overlay.runtime.gateway.request import (
    CAR_TYPE,
    RAW_TYPE,
    CarParams,
    Format,
    HttpError,
    byte_range,
    content_path,
    etag_matches,
    negotiate,
    query,
    resolve_entity_bytes,
)
from store.blockstore import BlockStore, StoreError
from store.paths import ContentPath, PathError

log = structlog.get_logger("colony.gateway")

IMMUTABLE = "public, max-age=29030400, immutable"
TEXT = "text/plain; charset=utf-8"
USAGE = (b"Colony trustless gateway (read-only).\n"
         b"GET /ipfs/{cid}[/{path}]  Accept: application/vnd.ipld.raw | application/vnd.ipld.car"
         b" | anything else for the file or a directory listing\n")


def text_reply(status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    return Reply(status, [("content-type", TEXT), *headers], (message.rstrip() + "\n").encode())


@dataclass(frozen=True, slots=True)
class _Ctx:
    """One request, parsed."""

    req: HttpRequest
    path: ContentPath
    fmt: Format
    q: dict[str, str]

    def common(self, r: Resolved, etag: str, *more: tuple[str, str]) -> list[tuple[str, str]]:
        return [*more, ("etag", etag), ("cache-control", IMMUTABLE), ("vary", "Accept"),
                ("x-ipfs-path", self.req.path),
                ("x-ipfs-roots", ",".join(str(c) for c in r.roots))]


class Planner:
    """Turns a request into a `Reply` from the block store under a serving policy."""

    def __init__(self, store: BlockStore, policy: Policy) -> None:
        self.store = store
        self.policy = policy

    def plan(self, req: HttpRequest) -> Reply:
        try:
            return self._plan(req)
        except HttpError as e:
            return text_reply(e.status, str(e), e.headers)
        except (NotServed, PathError, BadContent) as e:
            # PATH_GATEWAY.md: 404 when the path cannot be walked, the DAG is invalid
            # or the content is not retrievable here (private data looks absent).
            return text_reply(404, str(e))
        except InvalidCid as e:  # e.g. a hash we cannot verify: never stored here
            return text_reply(400, str(e))
        except StoreError as e:  # a corrupt block, a failing disk: our fault
            log.error("gateway_store_error", path=req.path, error=str(e))
            return text_reply(500, str(e))

    def _plan(self, req: HttpRequest) -> Reply:
        if req.method not in ("GET", "HEAD"):
            raise HttpError(405, f"{req.method} is not served: this gateway is read-only",
                            (("allow", "GET, HEAD"),))
        if req.path in ("/", "/ipfs", "/ipfs/"):
            return Reply(200, [("content-type", TEXT)], USAGE)
        if req.path.startswith("/ipns/"):
            raise HttpError(501, "/ipns/ names are not resolved by this gateway; use /ipfs/CID")
        if not req.path.startswith("/ipfs/"):
            raise HttpError(404, f"no such path {req.path!r}; expected /ipfs/CID[/path]")
        q = query(req.query)
        ctx = _Ctx(req, content_path(req.path), negotiate(q, req.header("accept")), q)
        resolved = resolve_path(self.store, ctx.path, self.policy)
        if ctx.fmt.kind == "raw":
            return self._raw(ctx, resolved)
        if ctx.fmt.kind == "car":
            return self._car(ctx, resolved, ctx.fmt.car)
        return self._plain(ctx, resolved)

    # ------------------------------------------------------------ trustless

    def _raw(self, ctx: _Ctx, r: Resolved) -> Reply:
        node = load_node(self.store, r.target, self.policy)
        etag = f'"{r.target}.raw"'
        headers = ctx.common(
            r, etag, ("content-type", RAW_TYPE), ("x-content-type-options", "nosniff"),
            ("content-disposition", f'attachment; filename="{r.target}.bin"'),
            ("accept-ranges", "bytes"))
        if ctx.fmt.from_accept:
            headers.append(("content-location", f"{ctx.req.path}?format=raw"))
        if etag_matches(ctx.req.header("if-none-match"), etag):
            return Reply(304, headers)
        rng = byte_range(ctx.req.header("range"), len(node.block))
        if rng is None:
            return Reply(200, headers, node.block)
        lo, hi = rng
        headers.append(("content-range", f"bytes {lo}-{hi - 1}/{len(node.block)}"))
        return Reply(206, headers, node.block[lo:hi])

    def _car(self, ctx: _Ctx, r: Resolved, car: CarParams) -> Reply:
        node = load_node(self.store, r.target, self.policy)
        span = None
        if car.entity_bytes is not None and node.kind == "file":
            span = resolve_entity_bytes(car.entity_bytes, node.size)
        tag = hashlib.sha256(f"{ctx.path}|{car.tag()}".encode()).hexdigest()[:12]
        etag = f'"{r.path.root}.car.{tag}"'
        dups = "y" if car.dups else "n"
        headers = ctx.common(
            r, etag, ("content-type", f"{CAR_TYPE}; version=1; order=dfs; dups={dups}"),
            ("x-content-type-options", "nosniff"),
            ("content-disposition", f'attachment; filename="{r.path.root}.car"'))
        if ctx.fmt.from_accept:
            headers.append(("content-location", f"{ctx.req.path}?format=car&dag-scope="
                                                 f"{car.scope}&car-dups={dups}"))
        if etag_matches(ctx.req.header("if-none-match"), etag):
            return Reply(304, headers)
        store, policy = self.store, self.policy

        def body() -> Iterator[bytes]:
            header = encode_car_header([r.path.root.to_bytes()])
            yield encode_varint(len(header)) + header
            seen: set[bytes] = set()
            for cid, block in _car_blocks(store, r, node, car, span, policy):
                if cid.is_identity:  # TRUSTLESS_GATEWAY.md: never identity blocks
                    continue
                if not car.dups:
                    if cid.multihash in seen:
                        continue
                    seen.add(cid.multihash)
                cb = cid.to_bytes()
                # One piece per section: a copy of the block costs less than sending
                # its 40-byte prefix on its own (a syscall and a chunk header).
                yield b"".join((encode_varint(len(cb) + len(block)), cb, block))

        return Reply(200, headers, stream=body)

    # ------------------------------------------------------------ deserialised

    def _plain(self, ctx: _Ctx, r: Resolved) -> Reply:
        node = load_node(self.store, r.target, self.policy)
        if node.kind in ("directory", "hamt"):
            if not ctx.req.path.endswith("/"):
                loc = ctx.req.path + "/" + (f"?{ctx.req.query}" if ctx.req.query else "")
                return Reply(301, [("location", loc), ("content-type", TEXT)],
                             f"a directory: see {loc}\n".encode())
            index = find_entry(self.store, node, "index.html", self.policy)
            if index is not None:
                inode = load_node(self.store, index, self.policy)
                if inode.kind == "file":
                    return self._file(ctx, r, inode, "index.html")
            return self._listing(ctx, r, node)
        if node.kind == "file":
            name = ctx.q.get("filename") or (ctx.path.segments[-1] if ctx.path.segments else "")
            return self._file(ctx, r, node, name)
        if node.kind == "symlink":
            assert node.fs is not None
            return Reply(200, ctx.common(r, f'"{r.target}"', ("content-type", TEXT)),
                         bytes(node.fs.data))
        raise HttpError(406, f"{r.target} is a {node.cid.codec_name} block, not UnixFS: ask "
                             "for it with ?format=raw or ?format=car")

    def _file(self, ctx: _Ctx, r: Resolved, node: Node, name: str) -> Reply:
        etag = f'"{node.cid}"'
        ctype = present.by_name(name) if name else None
        if ctype is None:
            head = b"".join(bytes(p) for p in file_bytes(
                self.store, node.cid, 0, min(node.size, present.SNIFF_BYTES), self.policy))
            ctype = present.sniff(head)
        headers = ctx.common(r, etag, ("content-type", ctype), ("accept-ranges", "bytes"))
        if "filename" in ctx.q:
            kind = "attachment" if ctx.q.get("download") == "true" else "inline"
            safe = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_"
                           for c in ctx.q["filename"])
            headers.append(("content-disposition", f'{kind}; filename="{safe}"'))
        if etag_matches(ctx.req.header("if-none-match"), etag):
            return Reply(304, headers)
        rng = byte_range(ctx.req.header("range"), node.size)
        lo, hi, status = 0, node.size, 200
        if rng is not None:
            lo, hi, status = rng[0], rng[1], 206
            headers.append(("content-range", f"bytes {lo}-{hi - 1}/{node.size}"))
        store, policy, cid = self.store, self.policy, node.cid
        return Reply(status, headers, stream=lambda: file_bytes(store, cid, lo, hi, policy),
                     length=hi - lo)

    def _listing(self, ctx: _Ctx, r: Resolved, node: Node) -> Reply:
        etag = f'"DirIndex-{present.LISTING_VERSION}_CID-{node.cid}"'
        headers = ctx.common(r, etag, ("content-type", "text/html; charset=utf-8"))
        if etag_matches(ctx.req.header("if-none-match"), etag):
            return Reply(304, headers)
        entries = dir_entries(self.store, node, self.policy)
        return Reply(200, headers, present.listing(ctx.req.path, str(node.cid), entries))


def _car_blocks(
    store: BlockStore, r: Resolved, node: Node, car: CarParams,
    span: tuple[int, int] | None, policy: Policy,
) -> Iterator[tuple[Cid, bytes]]:
    """The CAR's blocks: those the path walk needed, then the scope at its end."""
    for cid in r.path_blocks:
        yield cid, load_node(store, cid, policy).block
    if car.scope == "block":
        yield node.cid, node.block
    elif car.scope == "entity":
        yield from entity_blocks(store, node, span, policy)
    else:
        yield from dag_blocks(store, node.cid, policy, dedup=not car.dups)


__all__ = ["IMMUTABLE", "Planner", "text_reply"]
