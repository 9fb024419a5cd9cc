"""Control-API route for tier-1 cells (overlay/runtime/services/cells.py).

| route | reply |
|---|---|
| GET /v1/cells | {cell, site, cap, publisher, cells: [{cell, members, classes, …}]} |

`cells` lists the current cells this node knows (its own included): members and, per
resource class, members offering it and free capacity (gossip/cell_digest.py).
"""

from __future__ import annotations

from overlay.runtime.api.openapi import BOOL, INT, NUM, OBJ, STR, RouteDoc, arr, obj
from overlay.runtime.api.server import ApiServer, Reply, Request
from overlay.runtime.services.cells import CellService

CELL = obj(("cell", "members", "classes"), cell=STR, site=STR, depth=INT, members=INT,
           age_s=NUM, source=STR, mine=BOOL, classes=OBJ)
CELLS = obj(("cell", "cells"), cell=STR, site=STR, cap=INT, publisher=BOOL, cells=arr(CELL))


def add_cell_routes(api: ApiServer, svc: CellService) -> None:
    async def cells(req: Request) -> Reply:
        return svc.cells_json()

    api.add("GET", "/v1/cells", cells, RouteDoc(
        "this node's gossip cell and the cells known through the DHT (members, free "
        "capacity by resource class)", tag="node", response=CELLS))
