"""`GET /v1/doctor`: what `colony doctor` shows from a running daemon.

Reachability (dial-back status, NAT mapping, observed addresses), how each connected
peer is reached (direct / webrtc / relayed, and relays in use — from the edge
dialer when the daemon runs one, `Dialer.status()`; otherwise every transport
connection is direct), clock offsets measured in dial-back exchanges, member
counts, and the local checks of overlay/runtime/edge/doctor_checks.py. The route
reads what it shows from `DoctorSources` (narrow interfaces), not the daemon.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from overlay.core.ids import PeerId
from overlay.runtime.api.openapi import ANY, OBJ, RouteDoc, arr, obj
from overlay.runtime.api.server import ApiServer, Reply, Request, Response
from overlay.runtime.context import Membership
from overlay.runtime.edge import doctor_checks as dc
from overlay.runtime.edge.dialback import (
    DialbackNetwork,
    ReachabilityService,
    ReachabilitySnapshot,
)
from overlay.runtime.edge.dialer import Dialer, DialerStatus, PathJson
from overlay.runtime.process.config import Config
from store.blockstore import BlockStore


@dataclass(frozen=True, slots=True)
class DoctorSources:
    """What the doctor report reads. `dialer()` is None until (or unless) the daemon
    runs its edge stack."""

    me: PeerId
    home: Path
    conf: Config
    network: DialbackNetwork
    membership: Membership
    store: BlockStore
    reachability: ReachabilityService
    dialer: Callable[[], Dialer | None]


class BareConnections(TypedDict):
    """`connections` before the dialer started: every connection is direct."""

    peers: dict[str, PathJson]
    counts: dict[str, int]
    relays_in_use: list[str]


def _connections(d: DoctorSources) -> DialerStatus | BareConnections:
    dialer = d.dialer()
    status: DialerStatus | BareConnections
    if dialer is not None:
        status = dialer.status()
    else:
        peers = {str(p): PathJson(kind="direct", via=None, detail="", since=0.0)
                 for p in d.network.connected_peers()}
        status = {"peers": peers, "counts": {"direct": len(peers), "webrtc": 0, "relayed": 0},
                  "relays_in_use": []}
    by_id = {str(p): p for p in d.network.connected_peers()}
    for peer, info in status["peers"].items():
        if info["kind"] == "direct" and "remote" not in info and peer in by_id:
            ra = d.network.remote_addr(by_id[peer])
            info["remote"] = f"{ra[0]}:{ra[1]}" if ra else None
    return status


def reachability_check(snap: ReachabilitySnapshot, listen: list[str]) -> dc.Check:
    status = snap["status"]
    n = sum(1 for a in snap["answers"].values() if a["ok"] == (status == "public"))
    if status == "public":
        return dc.Check("reachability", True,
                        f"publicly reachable: {n} member(s) dialled back successfully")
    if status == "nat":
        port = listen[0].split("/tcp/")[-1].split("/")[0] if listen else "4001"
        return dc.Check("reachability", False,
                        f"behind NAT or firewall: {n} member(s) could not dial back",
                        "normal for an edge node: peers reach it through WebRTC or a relay; "
                        f"forward TCP port {port} on the router to make it public")
    return dc.Check("reachability", False,
                    f"not determined yet ({len(snap['answers'])} dial-back answer(s))",
                    "needs connected members to dial back; wait, or check [network] bootstrap")


def dht_mode_check(status: str, conf: Config) -> dc.Check:
    """A node others cannot dial should not ask to be in their routing tables."""
    mode = str(conf["dht"].get("mode", "auto"))
    if mode == "auto":
        serving = "client" if status == "nat" else "server"
        return dc.Check("dht_mode", True, f"DHT auto mode: {serving} (reachability {status})")
    if status == "nat" and mode == "server":
        return dc.Check("dht_mode", False, "DHT server mode behind a NAT: members that "
                        "add this node to their routing tables cannot reach it",
                        'set [dht] mode = "auto" or "client" (docs/edge.md)')
    if status == "public" and mode == "client":
        return dc.Check("dht_mode", True, "DHT client mode on a public node",
                        'it could serve the DHT: [dht] mode = "server"')
    return dc.Check("dht_mode", True, f"DHT {mode} mode")


def doctor_report(d: DoctorSources) -> dict[str, object]:
    from store.blockstore import MAX_MAP_SIZE

    snap = d.reachability.snapshot()
    listen = d.network.listen_addrs
    conns = _connections(d)
    counts: dict[str, int] = {}
    for m in d.membership.list_members(include_gone=True):
        counts[m.state.name.lower()] = counts.get(m.state.name.lower(), 0) + 1
    st = d.store.stat()
    checks = [
        reachability_check(snap, listen),
        dc.stun_check(snap["stun"], snap["stun_error"]),
        dc.clock_check(snap["clock_offsets_s"], snap["clock_uncertainty_s"]),
        dht_mode_check(snap["status"], d.conf),
        *dc.store_checks(d.home, st.map_size, st.file_size, MAX_MAP_SIZE),
        *dc.config_checks(d.home, d.conf),
    ]
    c = conns["counts"]
    connected = d.network.connected_peers()
    checks.insert(1, dc.Check(
        "connections", bool(connected),
        f"{len(connected)} connected peer(s): {c.get('direct', 0)} direct, "
        f"{c.get('webrtc', 0)} webrtc, {c.get('relayed', 0)} relayed"
        + (f"; relays in use: {', '.join(conns['relays_in_use'])}"
           if conns["relays_in_use"] else ""),
        "" if connected else "no peer connected: check bootstrap and the network"))
    return {
        "daemon": True,
        "id": str(d.me),
        "listen_addrs": listen,
        "reachability": snap,
        "connections": conns,
        "members": counts,
        "store": {"map_size": st.map_size, "file_size": st.file_size, "bytes": st.bytes,
                  "blocks": st.blocks},
        "checks": [ch.as_dict() for ch in checks],
    }


def add_doctor_routes(api: ApiServer, d: DoctorSources) -> None:
    async def doctor(req: Request) -> Reply:
        return Response(body=doctor_report(d))

    api.add("GET", "/v1/doctor", doctor, RouteDoc(
        "the `colony doctor` report: reachability, NAT, members, store, checks",
        tag="node", response=obj(("checks",), checks=arr(OBJ), members=ANY, store=OBJ)))
