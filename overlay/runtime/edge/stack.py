"""Composition of the edge stack on a running transport (the daemon and the tests):
the WebRTC endpoint, the signal and relay protocols, DCUtR hole punching, the dialer
and the reservation keeper. The dialer itself is overlay/runtime/edge/dialer.py."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import trio

from overlay.core.crypto import KeyPair
from overlay.core.ids import PeerId
from overlay.p2p.dcutr import DcutrConfig
from overlay.runtime.context import Membership
from overlay.runtime.edge.dialback import ReachabilityService
from overlay.runtime.edge.dialer import DialConfig, Dialer
from overlay.runtime.edge.holepunch import HolePunchService
from overlay.runtime.edge.relay import RelayService
from overlay.runtime.edge.relay_v2 import RelayV2Service
from overlay.runtime.edge.signalling import SignalService
from overlay.runtime.net.transport import Transport
from overlay.runtime.process.config import Config
from overlay.runtime.services.trust_state import Trust

if TYPE_CHECKING:
    from trio_typing import TaskStatus

@asynccontextmanager
async def open_edge(
    transport: Transport,
    keypair: KeyPair,
    conf: Config,
    is_member: Callable[[PeerId], bool],
    is_nat: Callable[[], bool] | None = None,
    reachability_of: Callable[[PeerId | None], str] | None = None,
) -> AsyncIterator[Dialer]:
    """Compose the edge stack on a running transport: the asyncio bridge and WebRTC
    endpoint (when `[edge] webrtc`), the signal and relay protocols, the dialer, and
    the reservation keeper. Everything stops when the block exits."""
    from overlay.runtime.edge.relay import RelayLimits
    from overlay.runtime.edge.signalling import SignalConfig

    edge = conf.get("edge", {})
    dial_cfg = DialConfig.from_config(conf)
    async with trio.open_nursery() as nursery:
        endpoint = None
        if edge.get("webrtc", True):
            from overlay.runtime.edge.webrtc_bridge import IceConfig, LazyEndpoint

            endpoint = LazyEndpoint(IceConfig.from_config(conf))
        relay = RelayService(transport, RelayLimits.from_config(conf), is_member)
        dialer = Dialer(
            transport,
            signal=None,
            relay=relay,
            config=dial_cfg,
            nursery=nursery,
            is_nat=is_nat,
            reachability_of=reachability_of,
        )
        signal = SignalService(
            transport,
            keypair,
            endpoint,
            is_member,
            nursery,
            dialer.accept_webrtc,
            SignalConfig(),
        )
        dialer.signal = signal
        relay.on_inbound_circuit = dialer.accept_circuit
        relay_v2 = RelayV2Service(
            transport,
            keypair,
            relay,
            serve_non_members=bool(conf.get("relay", {}).get("serve_non_members", False)),
        )
        dialer.relay_v2 = relay_v2
        dialer.holepunch = HolePunchService(
            transport,
            DcutrConfig(transports=tuple(
                str(x) for x in edge.get("holepunch_transports", ("tcp", "quic"))
                if str(x) in ("tcp", "quic"))),
            enabled=bool(edge.get("holepunch", True)),
            grace_s=float(edge.get("holepunch_grace_s", 5.0)),
            retry_s=float(edge.get("holepunch_retry_s", 40.0)),
            nursery=nursery,
            on_result=dialer.punch_result,
        )
        signal.register()
        relay.register()
        relay_v2.register()
        dialer.holepunch.register()
        nursery.start_soon(
            dialer.keep_reservations, lambda: dialer._via_candidates(transport.peer_id)
        )
        if hasattr(transport, "dial_hook"):
            transport.dial_hook = dialer.connect  # every dial: direct, WebRTC or relay
            transport.circuit_hook = dialer.connect_circuit  # …/p2p-circuit/p2p/<peer>
        try:
            yield dialer
        finally:
            if hasattr(transport, "dial_hook"):
                transport.dial_hook = None
                transport.circuit_hook = None
            nursery.cancel_scope.cancel()
            if endpoint is not None:
                endpoint.close()


async def run_edge(
    transport: Transport,
    keypair: KeyPair,
    conf: Config,
    *,
    trust: Trust,
    membership: Membership,
    reachability: ReachabilityService,
    task_status: TaskStatus[Dialer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """The daemon's edge stack: compose it on `transport`, report the Dialer through
    `task_status`, run until cancelled.

    Membership: with a colony owner key (`trust.enabled`) a member is a peer with a
    valid certificate; in an open colony, a peer gossip lists as alive or suspect.
    NAT'd: what the reachability service (overlay/runtime/edge/dialback.py) concluded.
    """
    from gossip.members import MemberState

    live = (MemberState.ALIVE, MemberState.SUSPECT)

    def is_member(peer: PeerId) -> bool:
        if trust.enabled:
            return bool(trust.is_member(peer, time.time()))
        m = membership.member(peer)
        return m is not None and m.state in live

    def is_nat() -> bool:
        return reachability.core.status.value == "nat"

    def reachability_of(peer: PeerId | None) -> str:
        if peer is None:
            return str(reachability.core.snapshot().get("ad_value", ""))
        m = membership.member(peer)
        if m is None or not (m.is_self or m.state in live) or m.ad is None:
            return ""
        return str(m.ad.reachability or "")

    async with open_edge(transport, keypair, conf, is_member, is_nat, reachability_of) as dialer:
        task_status.started(dialer)
        await trio.sleep_forever()
