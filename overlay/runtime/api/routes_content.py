"""Control-API routes that read content by path: cat, ls, get (`colony cat|ls|get`
over the API, kubo's `/api/v0/cat|ls|get` in this API's style).

| method, path                          | result                                            |
|---------------------------------------|---------------------------------------------------|
| GET /v1/cat?arg=P[&offset=N&length=N] | the file's bytes (application/octet-stream)       |
| GET /v1/ls?arg=P                      | {path, cid, kind, size, entries: [{name, cid, …}]} |
| POST /v1/get {arg, output}            | NDJSON {phase, bytes}…, last {done, cid, output…} |

`P` is `CID`, `CID/a/b` or `/ipfs/CID/a/b` (store/paths.py: unsafe paths refused with
a 400 before anything is read). The API is the node owner's (bearer token), so these
read every local block, private ones too; they never fetch (run `fetch` first).
`cat` streams from short read transactions on worker threads, as the gateway does
(overlay/runtime/gateway/dag.py), so a slow reader of a large file holds no
transaction. `get` writes on the daemon's host, like `publish` reads there; the
output path must not exist.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import trio

from overlay.core.cid import Cid
from overlay.runtime.api.openapi import BOOL, INT, STR, RouteDoc, arr, obj
from overlay.runtime.api.server import ApiError, ApiServer, Request, Response
from overlay.runtime.gateway.dag import (
    BadContent,
    NotServed,
    file_bytes,
    load_node,
    resolve_path,
    serve_all,
)
from store.blockstore import BlockNotFound, BlockStore
from store.exporter import BadDag, Exporter, NodeInfo
from store.paths import ContentPath, PathError, parse_path

PROGRESS_INTERVAL_S = 0.25


def _path(text: object) -> ContentPath:
    if not isinstance(text, str) or not text:
        raise ApiError(400, "arg (a CID or CID/path) is required")
    try:
        return parse_path(text)
    except PathError as e:
        raise ApiError(400, str(e)) from None


def _target(store: BlockStore, path: ContentPath) -> Cid:
    """The CID `path` names (runs on a worker thread); 404 when it does not resolve."""
    try:
        return resolve_path(store, path, serve_all).target
    except (NotServed, BlockNotFound) as e:
        raise ApiError(404, f"{e} (resolving {path}); fetch it first") from None
    except (PathError, BadContent) as e:
        raise ApiError(404, str(e)) from None


def _int_arg(req: Request, name: str) -> int | None:
    v = req.arg(name)
    if v is None:
        return None
    if not v.isdigit() or len(v) > 19:
        raise ApiError(400, f"{name} must be a non-negative integer, not {v!r:.40}")
    return int(v)


def _get_route(store: BlockStore) -> Callable[[Request], Awaitable[Response]]:
    """`POST /v1/get`: the exporter writes the tree on a worker thread while the
    stream reports its progress."""

    async def get(req: Request) -> Response:
        body = req.json()
        path = _path(body.get("arg"))
        output = body.get("output")
        if not isinstance(output, str) or not output:
            raise ApiError(400, "output (a new path on the daemon's host) is required")
        out = Path(output)
        if out.exists() or out.is_symlink():
            raise ApiError(409, f"{out} already exists; choose a new output path")
        exporter = Exporter(store)
        done = [0]

        def run() -> NodeInfo:
            return exporter.get(_target(store, path), out,
                                progress=lambda n: done.__setitem__(0, done[0] + n))

        async def gen() -> AsyncIterator[object]:
            # A plain thread, not a nursery task: an async generator must not yield
            # inside a nursery (a client that leaves would strand it).
            result: list[NodeInfo | Exception] = []

            def work() -> None:
                try:
                    result.append(run())
                except Exception as e:  # raised below, in the stream
                    result.append(e)

            threading.Thread(target=work, name="api-get", daemon=True).start()
            while not result:
                yield {"phase": "get", "bytes": done[0]}
                with trio.move_on_after(PROGRESS_INTERVAL_S):
                    while not result:
                        await trio.sleep(0.02)
            info = result[0]
            if isinstance(info, Exception):
                raise info
            yield {"done": True, "cid": str(info.cid), "kind": info.kind, "size": info.size,
                   "bytes": done[0], "output": str(out)}

        return Response(stream=gen())

    return get


def add_content_routes(api: ApiServer, store: BlockStore) -> None:
    async def cat(req: Request) -> Response:
        path = _path(req.arg("arg"))
        offset, length = _int_arg(req, "offset") or 0, _int_arg(req, "length")

        def plan() -> tuple[Cid, int, int]:
            node = load_node(store, _target(store, path), serve_all)
            if node.kind != "file":
                raise ApiError(400, f"{path} is a {node.kind}, not a file: use ls or get")
            end = node.size if length is None else min(node.size, offset + length)
            return node.cid, min(offset, node.size), end

        try:
            cid, lo, hi = await trio.to_thread.run_sync(plan)
        except NotServed as e:
            raise ApiError(404, f"{e} ({path}); fetch it first") from None
        return Response(content_type="application/octet-stream",
                        headers=[("x-colony-cid", str(cid)), ("x-colony-bytes", str(hi - lo))],
                        byte_stream=lambda: file_bytes(store, cid, lo, hi, serve_all))

    async def ls(req: Request) -> object:
        path = _path(req.arg("arg"))
        exporter = Exporter(store)

        def listing() -> object:
            cid = _target(store, path)
            info = _stat(exporter, cid)
            entries = exporter.ls(cid) if info.kind == "directory" else []
            return {"path": str(path), "cid": str(cid), "kind": info.kind, "size": info.size,
                    "entries": [{"name": e.name, "cid": str(e.cid), "kind": e.kind,
                                 "size": e.size, "tsize": e.tsize} for e in entries]}

        return await trio.to_thread.run_sync(listing)

    api.add("GET", "/v1/cat", cat, RouteDoc(
        "the bytes of a file by CID or CID/path (hash-checked as read)", tag="data",
        query={"arg": STR, "offset": INT, "length": INT}, media="application/octet-stream"))
    api.add("GET", "/v1/ls", ls, RouteDoc(
        "a directory's entries (or a file's own entry) by CID or CID/path", tag="data",
        query={"arg": STR}, response=obj(
            ("path", "cid", "kind", "size", "entries"), path=STR, cid=STR, kind=STR, size=INT,
            entries=arr(obj(("name", "cid", "kind", "size", "tsize"), name=STR, cid=STR,
                            kind=STR, size=INT, tsize=INT)))))
    api.add("POST", "/v1/get", _get_route(store), RouteDoc(
        "write a file, directory tree or symlink by CID or CID/path to a new path on the "
        "daemon's host", tag="data", body=obj(("arg", "output"), arg=STR, output=STR),
        response=obj((), phase=STR, bytes=INT, done=BOOL, cid=STR, kind=STR, size=INT,
                     output=STR), stream=True))



def _stat(exporter: Exporter, cid: Cid) -> NodeInfo:
    try:
        return exporter.stat(cid)
    except BadDag as e:
        raise ApiError(422, str(e)) from None


__all__ = ["add_content_routes"]
