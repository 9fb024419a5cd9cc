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

from gossip.events import SendUserEvent
from overlay.core.ids import PeerId
from overlay.runtime.api.server import ApiServer, Request, Response

if TYPE_CHECKING:
    from overlay.runtime.context import Cores, EventBus


def event_json(t: float, ev: object) -> dict[str, object]:
    """An event as JSON: its type and its fields (ids as text, bytes as hex)."""
    out: dict[str, object] = {"time": round(t, 3), "event": type(ev).__name__}
    for name in getattr(ev, "__slots__", ()):
        v = getattr(ev, name)
        if isinstance(v, PeerId):
            v = str(v)
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
        data = base64.b64decode(payload) if body.get("base64") else str(payload).encode()
        await cores.submit_wait(SendUserEvent(str(body.get("name", "")), data))
        return {"sent": True, "bytes": len(data)}

    async def events_watch(req: Request) -> Response:
        recv = events.watch()

        async def gen() -> AsyncIterator[object]:
            async with recv:
                async for t, ev in recv:
                    yield event_json(t, ev)

        return Response(stream=gen())

    api.add("POST", "/v1/events/send", events_send)
    api.add("GET", "/v1/events/watch", events_watch)
