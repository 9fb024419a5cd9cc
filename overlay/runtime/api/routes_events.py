"""Control-API routes of events: send a user event, watch the node's events.

| method, path          | body / query             | result                            |
|-----------------------|--------------------------|-----------------------------------|
| POST /v1/events/send  | {name, payload, base64?} | {sent: true, bytes}               |
| GET  /v1/events/watch |                          | NDJSON {time, event, <fields>}…   |

A watch is a channel of the event bus (services/events.py): a slow watcher misses
events, it never stalls the node.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from gossip.cells import CellId
from gossip.events import SendUserEvent
from gossip.messages import check_event
from overlay.core.errors import ColonyError
from overlay.core.ids import PeerId
from overlay.runtime.api.openapi import BOOL, INT, NUM, STR, RouteDoc, obj
from overlay.runtime.api.server import ApiError, ApiServer, Request, Response

if TYPE_CHECKING:
    from overlay.runtime.context import Cores, EventBus


def event_json(t: float, ev: object) -> dict[str, object]:
    """An event as JSON: its type and its fields (ids as text, bytes as hex)."""
    out: dict[str, object] = {"time": round(t, 3), "event": type(ev).__name__}
    for name in getattr(ev, "__slots__", ()):
        v = getattr(ev, name)
        if isinstance(v, PeerId):
            v = str(v)
        elif isinstance(v, CellId):  # CellChanged, MemberLeftCell: "site/0110"
            v = v.name()
        elif isinstance(v, bytes):
            v = v.decode("utf-8", "replace") if name == "payload" else v.hex()
        elif not isinstance(v, (int, float, str, bool, type(None))):
            v = str(v)
        out[name] = v
    return out


def add_event_routes(api: ApiServer, cores: Cores, events: EventBus) -> None:
    async def events_send(req: Request) -> object:
        body = req.json()
        payload = body.get("payload", "")
        try:
            data = (base64.b64decode(str(payload), validate=True) if body.get("base64")
                    else str(payload).encode())
        except ValueError as e:
            raise ApiError(400, f"payload is not base64: {e}") from None
        name = str(body.get("name", ""))
        try:  # checked here: the gossip core raises on a bad command, and that is fatal
            check_event(name, data)
        except ColonyError as e:
            raise ApiError(400, str(e)) from None
        await cores.submit_wait(SendUserEvent(name, data))
        return {"sent": True, "bytes": len(data)}

    async def events_watch(req: Request) -> Response:
        recv = events.watch()

        async def gen() -> AsyncIterator[object]:
            async with recv:
                async for t, ev in recv:
                    yield event_json(t, ev)

        return Response(stream=gen())

    api.add("POST", "/v1/events/send", events_send, RouteDoc(
        "gossip a user event to the colony", tag="events",
        body=obj(("name",), name=STR, payload=STR, base64=BOOL),
        response=obj(("sent", "bytes"), sent=BOOL, bytes=INT)))
    api.add("GET", "/v1/events/watch", events_watch, RouteDoc(
        "follow this node's events as they happen", tag="events",
        response=obj(("time", "event"), time=NUM, event=STR), stream=True))
