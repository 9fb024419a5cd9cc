"""Control-API routes of blocks: publish a file or directory, fetch a DAG.

| method, path     | body                 | NDJSON stream                                    |
|------------------|----------------------|--------------------------------------------------|
| POST /v1/publish | {path, cid_version?} | {phase: import / provide, …}, last {done, cid, …} |
| POST /v1/fetch   | {cid}                | {phase: providers}, progress…, last the final one |

Both stream progress every `PROGRESS_INTERVAL_S` and end with one object carrying
`"done": true`; errors come back as `{"error": …}`. A fetch uses the one fetch of
services/blocks.py; like kubo, a node that holds a DAG provides it afterwards (in the
background: the fetch is already complete), so later fetches spread over every holder —
its root and inner blocks, not its leaves (kubo's "roots"-like strategy; the publisher
announces every block: `BlockService.dag_multihashes`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
import trio

from dht.api import Provide
from overlay.core.errors import ColonyError
from overlay.runtime.api.openapi import ANY, BOOL, INT, OBJ, STR, RouteDoc, nullable, obj
from overlay.runtime.api.params import cid_arg
from overlay.runtime.api.server import ApiError, ApiServer, Request, Response
from overlay.runtime.services.fetch import FetchProgress
from store.importer import Added, Importer, ImportOptions

if TYPE_CHECKING:
    from overlay.runtime.context import DhtCalls, Spawn
    from overlay.runtime.services.blocks import BlockService

log = structlog.get_logger("colony.api")

PROGRESS_INTERVAL_S = 0.25
#: Provider announcements of a published or fetched DAG may take this long.
PROVIDE_TIMEOUT_S = 300


async def _provide_quietly(dht: DhtCalls, keys: tuple[bytes, ...]) -> None:
    try:
        await dht.call(lambda rid: Provide(rid, keys), timeout_s=PROVIDE_TIMEOUT_S)
    except ColonyError as e:
        log.warning("provide_after_fetch_failed", error=str(e), blocks=len(keys))


def add_block_routes(api: ApiServer, blocks: BlockService, dht: DhtCalls, spawn: Spawn) -> None:
    async def publish(req: Request) -> Response:
        body = req.json()
        path = Path(str(body.get("path", "")))
        version = body.get("cid_version")
        if version is not None and (type(version) is not int or version not in (0, 1)):
            raise ApiError(400, f"cid_version must be 0 or 1, not {version!r}")
        opts = ImportOptions(cid_version=1 if version is None else version)
        done_bytes = [0]

        def count(n: int) -> None:
            done_bytes[0] += n

        def do_import() -> Added:
            return Importer(blocks.store, opts, progress=count).add_path(path, recursive=True)

        async def gen() -> AsyncIterator[object]:
            async with trio.open_nursery() as n:
                result: list[Added | Exception] = []

                async def run() -> None:
                    # Kept, then raised outside the nursery: raised inside, it left as an
                    # exception group the server did not catch, and a bad path given to
                    # the API stopped the daemon.
                    try:
                        result.append(await trio.to_thread.run_sync(do_import))
                    except Exception as e:
                        result.append(e)

                n.start_soon(run)
                while not result:
                    yield {"phase": "import", "bytes": done_bytes[0]}
                    with trio.move_on_after(PROGRESS_INTERVAL_S):
                        while not result:
                            await trio.sleep(0.02)
            added = result[0]
            if isinstance(added, Exception):
                raise added
            keys = blocks.dag_multihashes(added.cid)
            yield {"phase": "provide", "blocks": len(keys), "bytes": done_bytes[0]}
            ev = await dht.call(lambda rid: Provide(rid, tuple(keys)), timeout_s=PROVIDE_TIMEOUT_S)
            yield {"done": True, "cid": str(added.cid), "size": added.size, "blocks": len(keys),
                   "provide": {"regions": ev.regions, "lookups": ev.lookups,
                               "messages": ev.messages}}

        return Response(stream=gen())

    async def fetch(req: Request) -> Response:
        body = req.json()
        cid = cid_arg(body.get("cid"))

        async def gen() -> AsyncIterator[object]:
            # Providers whose answer comes after the lookup's walk join the bulk stream
            # while it runs (services/blocks.py, `search`).
            async with blocks.search(cid) as found:
                providers = found.providers
                if not providers and not blocks.store.has(cid):
                    raise ApiError(404, f"no providers found for {cid} and no peers connected")
                yield {"phase": "providers", "providers": [str(p) for p in providers]}
                await blocks.before_fetch(cid, providers)  # colony mode: its private mark
                try:
                    streamed = FetchProgress(str(cid), providers_found=found.found)
                    async with trio.open_nursery() as n:  # bulk stream from colony peers first
                        done = trio.Event()

                        async def stream() -> None:
                            await blocks.stream(cid, list(providers), streamed, found.more)
                            done.set()

                        n.start_soon(stream)
                        while not done.is_set():
                            streamed.providers_late = found.late
                            yield streamed.as_dict()
                            with trio.move_on_after(PROGRESS_INTERVAL_S):
                                await done.wait()
                    fetching = blocks.begin(cid, providers, streamed)
                    try:
                        while not fetching.progress.done:
                            yield fetching.progress.as_dict()
                            await fetching.wait(PROGRESS_INTERVAL_S)
                    finally:
                        # The client went away (the server closes this generator) or
                        # the fetch failed: withdraw its wants, as kubo does.
                        fetching.abandon()
                    result = fetching.finish()
                    result.providers_late = found.late
                    final = result.as_dict()
                finally:
                    blocks.after_fetch(cid)
            # The root and the inner blocks only: every fetch looks up a root (of the
            # DAG or of a sub-DAG) and then asks those providers for each block, so
            # announcing 1,031 keys for a 256 MiB file (≈ 1.2 CPU s per GiB fetched
            # here, and a record on k peers each) bought only lookups of single
            # leaves, which the publisher's records still answer (issue #16).
            spawn(_provide_quietly, dht, tuple(blocks.dag_multihashes(cid, inner_only=True)))
            yield final

        return Response(stream=gen())

    api.add("POST", "/v1/publish", publish, RouteDoc(
        "import a file or directory on this host and announce it in the DHT", tag="data",
        body=obj(("path",), path=STR, cid_version=nullable({"enum": [0, 1]})),
        response=obj((), phase=STR, bytes=INT, done=BOOL, cid=STR, size=INT, blocks=INT,
                      provide=OBJ), stream=True))
    api.add("POST", "/v1/fetch", fetch, RouteDoc(
        "fetch a DAG by CID from its providers (resumable), with progress", tag="data",
        body=obj(("cid",), cid=STR),
        response=obj((), phase=STR, providers=ANY, providers_found=INT, providers_late=INT,
                     done=BOOL, blocks_fetched=INT, bytes_fetched=INT, blocks_local=INT),
        stream=True))
