"""The daemon's control API, assembled from its route modules by area.

| module            | routes                                              |
|-------------------|-----------------------------------------------------|
| routes_node       | /v1/id, /v1/members, /v1/peers, /v1/stats, /v1/leave, /metrics |
| routes_dht        | /v1/dht/findprovs, findpeer, put, get               |
| routes_blocks     | /v1/publish, /v1/fetch                              |
| routes_content    | /v1/cat, /v1/ls, /v1/get (content by CID/path)      |
| routes_events     | /v1/events/send, /v1/events/watch                   |
| routes_capsules, routes_doctor, routes_trust | added by the daemon    |

Routes are thin translations to node commands and queries; each area gets only the
interfaces it uses (overlay/runtime/context.py). Long operations (publish, fetch)
stream NDJSON progress objects and end with one object carrying `"done": true`;
errors come back as `{"error": …}` with a status.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from overlay.runtime.api.routes_blocks import add_block_routes
from overlay.runtime.api.routes_content import add_content_routes
from overlay.runtime.api.routes_dht import add_dht_routes
from overlay.runtime.api.routes_events import add_event_routes
from overlay.runtime.api.routes_node import CoreStats, Lifecycle, add_node_routes
from overlay.runtime.api.server import ApiServer

if TYPE_CHECKING:
    from overlay.core.crypto import KeyPair
    from overlay.runtime.context import Cores, DhtCalls, EventBus, Membership, Network, Spawn
    from overlay.runtime.services.blocks import BlockService


def build_api(
    token: str, *, keypair: KeyPair, node: Lifecycle, cores: Cores, network: Network,
    membership: Membership, dht: DhtCalls, blocks: BlockService, events: EventBus,
    stats: CoreStats, spawn: Spawn,
) -> ApiServer:
    api = ApiServer(token)
    add_node_routes(api, keypair.peer_id, node, network, membership, blocks.store, stats, spawn)
    add_dht_routes(api, dht, keypair)
    add_block_routes(api, blocks, dht, spawn)
    add_content_routes(api, blocks.store)
    add_event_routes(api, cores, events)
    return api
