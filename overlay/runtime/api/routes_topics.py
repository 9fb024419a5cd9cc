"""Control-API routes of topics: publish, subscribe (a stream), list (docs/gossip.md).

| method, path              | body / query               | result                              |
|---------------------------|----------------------------|-------------------------------------|
| POST /v1/topics/publish   | {topic, data, base64?}     | {topic, id, seq, bytes}             |
| GET  /v1/topics/subscribe | ?topic=&base64=            | NDJSON {subscribed}, then messages  |
| GET  /v1/topics           |                            | [{topic, active, passive, …}]       |

A subscription lasts as long as its HTTP stream: the first line `{"subscribed": true,
"topic"}` says the node has joined the topic's swarm; then each message is one line
`{topic, id, publisher, epoch, seq, time, data, hop, gap, local}` (`data` is UTF-8 text
with undecodable bytes replaced, or base64 with `base64=1`). A slow reader loses
messages (counted in /v1/stats drops as `topics.subscriber_slow`), never stalls the
node. Roles (colony mode): 403 when this node lacks the topic's publish or subscribe
role.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

from gossip.topic_pubsub import TopicMessage
from gossip.topic_signed import check_name
from overlay.core.errors import ColonyError, WireError
from overlay.runtime.api.openapi import BOOL, INT, NUM, STR, RouteDoc, obj
from overlay.runtime.api.server import ApiError, ApiServer, Reply, Request, Response
from overlay.runtime.services.topics import TopicRefused, TopicService

MESSAGE_ROW = obj(("topic", "id", "publisher", "seq", "data"), topic=STR, id=STR,
                  publisher=STR, epoch=INT, seq=INT, time=NUM, data=STR, hop=INT, gap=INT,
                  local=BOOL, subscribed=BOOL)
TOPIC_ROW = obj(("topic", "id", "active", "passive"), topic=STR, id=STR, subscribers=INT,
                publish_role=STR, subscribe_role=STR, active={"type": "array", "items": STR},
                passive=INT, eager=INT, lazy=INT, delivered=INT, published=INT,
                publishers=INT, counters={"type": "object"})


def message_json(m: TopicMessage, b64: bool) -> dict[str, object]:
    data = base64.b64encode(m.data).decode() if b64 else m.data.decode("utf-8", "replace")
    return {"topic": m.name, "id": m.msg_id.hex(), "publisher": str(m.publisher),
            "epoch": m.epoch, "seq": m.seq, "time": round(m.at, 6), "data": data,
            "hop": m.hop, "gap": m.gap, "local": m.local}


def _name(v: object) -> str:
    try:
        return check_name(v)  # type: ignore[arg-type]
    except WireError as e:
        raise ApiError(400, str(e)) from None


def add_topic_routes(api: ApiServer, topics: TopicService) -> None:
    async def publish(req: Request) -> Reply:
        body = req.json()
        name = _name(body.get("topic"))
        raw = body.get("data", "")
        if not isinstance(raw, str):
            raise ApiError(400, "data must be a string (text, or base64 with base64: true)")
        try:
            data = base64.b64decode(raw, validate=True) if body.get("base64") else raw.encode()
        except ValueError as e:
            raise ApiError(400, f"data is not base64: {e}") from None
        try:
            p = await topics.publish(name, data)
        except TopicRefused as e:
            raise ApiError(403, str(e)) from None
        except ColonyError as e:
            raise ApiError(400, str(e)) from None
        return {"topic": name, "id": p.msg_id.hex(), "seq": p.seq, "bytes": len(data)}

    async def subscribe(req: Request) -> Response:
        name = _name(req.arg("topic"))
        b64 = req.arg("base64") in ("1", "true")
        try:
            topics.check_subscribe(name)
        except TopicRefused as e:
            raise ApiError(403, str(e)) from None

        async def gen() -> AsyncIterator[object]:
            async with topics.subscription(name) as rx:
                yield {"subscribed": True, "topic": name}
                async for m in rx:
                    if not m.late:  # the stream promises each publisher's order
                        yield message_json(m, b64)

        return Response(stream=gen())

    async def ls(req: Request) -> Reply:
        return topics.topic_rows()  # type: ignore[return-value]

    api.add("POST", "/v1/topics/publish", publish, RouteDoc(
        "publish a signed message to a topic's subscribers", tag="topics",
        body=obj(("topic", "data"), topic=STR, data=STR, base64=BOOL),
        response=obj(("topic", "id", "seq", "bytes"), topic=STR, id=STR, seq=INT, bytes=INT)))
    api.add("GET", "/v1/topics/subscribe", subscribe, RouteDoc(
        "follow a topic's messages (first line: subscribed)", tag="topics",
        query={"topic": STR, "base64": STR}, response=MESSAGE_ROW, stream=True))
    api.add("GET", "/v1/topics", ls, RouteDoc(
        "topics this node is in: views and counters", tag="topics",
        response={"type": "array", "items": TOPIC_ROW}))
