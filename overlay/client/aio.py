"""`AsyncColony`: the SDK for trio and asyncio programs, on top of the sync `Colony`.

Each call runs the sync client in a worker thread through anyio, so one implementation
serves both event loops (anyio picks the running one) and the event loop never blocks
on a socket. Streams (`watch`, `logs`, `events`) become async iterators that fetch one
item per thread hop. The price is a thread hop per call (bench/sdk.py measures it next
to a bare HTTP request); the control API is local, so calls are few and short.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Generator
from pathlib import Path
from typing import ParamSpec, TypeVar

import anyio.to_thread

from overlay.client.sync import Colony
from overlay.client.types import (
    Capsule,
    Fetched,
    JsonDict,
    Member,
    NodeId,
    Progress,
    Published,
    Submitted,
)

P = ParamSpec("P")
T = TypeVar("T")


async def _run(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))


async def _aiter(it: Generator[JsonDict, None, None]) -> AsyncIterator[JsonDict]:
    try:
        while True:
            item = await anyio.to_thread.run_sync(next, it, None)
            if item is None:
                return
            yield item
    finally:
        it.close()  # closes the HTTP connection of a stream left early


async def _abytes(it: Generator[bytes, None, None]) -> AsyncIterator[bytes]:
    try:
        while piece := await anyio.to_thread.run_sync(next, it, b""):
            yield piece
    finally:
        it.close()


class AsyncColony:
    """The async twin of `Colony`: same methods, same results and errors, awaitable."""

    def __init__(self, sync: Colony) -> None:
        self.sync = sync

    @classmethod
    def for_home(cls, home: Path | str, *, timeout_s: float = 60.0) -> AsyncColony:
        return cls(Colony.for_home(home, timeout_s=timeout_s))

    @classmethod
    def connect_to(cls, host: str, port: int, token: str, *, timeout_s: float = 60.0
                   ) -> AsyncColony:
        return cls(Colony(host, port, token, timeout_s=timeout_s))

    async def id(self) -> NodeId:
        return await _run(self.sync.id)

    async def members(self, *, include_all: bool = False, status: str | None = None,
                      labels: dict[str, str] | None = None) -> list[Member]:
        return await _run(self.sync.members, include_all=include_all, status=status,
                          labels=labels)

    async def peers(self) -> list[str]:
        return await _run(self.sync.peers)

    async def connect(self, multiaddr: str) -> JsonDict:
        return await _run(self.sync.connect, multiaddr)

    async def labels(self) -> dict[str, str]:
        return await _run(self.sync.labels)

    async def set_labels(self, set: dict[str, str] | None = None,
                         delete: list[str] | None = None) -> dict[str, str]:
        return await _run(self.sync.set_labels, set, delete)

    async def stats(self) -> JsonDict:
        return await _run(self.sync.stats)

    async def cells(self) -> JsonDict:
        return await _run(self.sync.cells)

    async def doctor(self) -> JsonDict:
        return await _run(self.sync.doctor)

    async def publish(self, path: Path | str, *, cid_version: int | None = None,
                      progress: Callable[[Progress], None] | None = None) -> Published:
        return await _run(self.sync.publish, path, cid_version=cid_version, progress=progress)

    async def fetch(self, cid: str, *, progress: Callable[[Progress], None] | None = None
                    ) -> Fetched:
        return await _run(self.sync.fetch, cid, progress=progress)

    def cat(self, path: str, *, offset: int = 0, length: int | None = None
            ) -> AsyncIterator[bytes]:
        """The file's bytes in pieces, one piece per thread hop."""
        return _abytes(self.sync.cat(path, offset=offset, length=length))

    async def ls(self, path: str) -> JsonDict:
        return await _run(self.sync.ls, path)

    async def get(self, path: str, output: Path | str, *,
                  progress: Callable[[Progress], None] | None = None) -> JsonDict:
        return await _run(self.sync.get, path, output, progress=progress)

    async def submit(self, spec: JsonDict, *, nonce: int | None = None) -> Submitted:
        return await _run(self.sync.submit, spec, nonce=nonce)

    async def submit_workflow(self, workflow: JsonDict, *, nonce: int | None = None
                              ) -> JsonDict:
        return await _run(self.sync.submit_workflow, workflow, nonce=nonce)

    async def ps(self) -> list[Capsule]:
        return await _run(self.sync.ps)

    async def capsule(self, capsule_id: str) -> Capsule:
        return await _run(self.sync.capsule, capsule_id)

    async def wait(self, capsule_id: str, *, timeout_s: float | None = None) -> Capsule:
        return await _run(self.sync.wait, capsule_id, timeout_s=timeout_s)

    async def cancel(self, capsule_id: str, reason: str | None = None) -> JsonDict:
        return await _run(self.sync.cancel, capsule_id, reason)

    async def add_trigger(self, template: JsonDict, *, on: str, name: str = "",
                          schedule: str | None = None, filter: str | None = None,
                          catchup: str | None = None, count: int | None = None,
                          within_s: float | None = None) -> JsonDict:
        return await _run(self.sync.add_trigger, template, on=on, name=name,
                          schedule=schedule, filter=filter, catchup=catchup, count=count,
                          within_s=within_s)

    async def triggers(self) -> list[JsonDict]:
        return await _run(self.sync.triggers)

    async def trigger(self, trigger_id: str) -> JsonDict:
        return await _run(self.sync.trigger, trigger_id)

    async def remove_trigger(self, trigger_id: str) -> JsonDict:
        return await _run(self.sync.remove_trigger, trigger_id)

    async def sync_pull(self, label: str, directory: Path | str) -> JsonDict:
        return await _run(self.sync.sync_pull, label, directory)

    async def sync_push(self, label: str, directory: Path | str, *, base: str | None = None,
                        conflict: str = "keep-newest") -> JsonDict:
        return await _run(self.sync.sync_push, label, directory, base=base, conflict=conflict)

    async def sync_status(self, label: str, directory: Path | str | None = None) -> JsonDict:
        return await _run(self.sync.sync_status, label, directory)

    async def trust(self) -> JsonDict:
        return await _run(self.sync.trust)

    async def set_private(self, cid: str, private: bool = True) -> JsonDict:
        return await _run(self.sync.set_private, cid, private)

    async def revoke(self, revocation_hex: str) -> JsonDict:
        return await _run(self.sync.revoke, revocation_hex)

    async def grants(self) -> JsonDict:
        return await _run(self.sync.grants)

    async def fed_submit(self, colony: str, spec: JsonDict) -> JsonDict:
        return await _run(self.sync.fed_submit, colony, spec)

    async def fed_capsule(self, colony: str, capsule_id: str) -> JsonDict:
        return await _run(self.sync.fed_capsule, colony, capsule_id)

    async def send_event(self, name: str, payload: str = "") -> JsonDict:
        return await _run(self.sync.send_event, name, payload)

    def watch(self, capsule_id: str, *, timeout_s: float | None = None
              ) -> AsyncIterator[JsonDict]:
        return _aiter(self.sync.watch(capsule_id, timeout_s=timeout_s))

    def logs(self, capsule_id: str, *, follow: bool = False) -> AsyncIterator[JsonDict]:
        return _aiter(self.sync.logs(capsule_id, follow=follow))

    def events(self) -> AsyncIterator[JsonDict]:
        return _aiter(self.sync.events())

    async def topic_publish(self, topic: str, data: bytes | str) -> JsonDict:
        return await _run(self.sync.topic_publish, topic, data)

    def topic_subscribe(self, topic: str, *, base64_data: bool = False
                        ) -> AsyncIterator[JsonDict]:
        return _aiter(self.sync.topic_subscribe(topic, base64_data=base64_data))

    async def topics(self) -> list[JsonDict]:
        return await _run(self.sync.topics)


__all__ = ["AsyncColony"]
