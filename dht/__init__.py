"""Kademlia DHT as a sans-IO core (DESIGN §5). See docs/dht.md.

`Kademlia(me, KadConfig(), rng=random.Random(seed))` is the core; its commands and
events are in `dht.api`, its wire messages in `dht.wire`.
"""

from dht.api import (
    AddPeer,
    Bootstrap,
    BootstrapDone,
    ClosestPeers,
    FindNode,
    GetProviders,
    GetValue,
    KadConfig,
    LookupDone,
    ModeChanged,
    PeerAddressesLearned,
    PeerRoleLearned,
    Provide,
    ProvideDone,
    Providers,
    ProvidersFound,
    PutValue,
    ReachabilityLearned,
    RequestFailed,
    StopProviding,
    Stored,
    Value,
)
from dht.core import Kademlia
from dht.stats import DhtStats
from dht.wire import DhtRequest, DhtResponse, KadMessage, MessageType, PeerInfo, Record

__all__ = [
    "AddPeer",
    "Bootstrap",
    "BootstrapDone",
    "ClosestPeers",
    "DhtRequest",
    "DhtResponse",
    "DhtStats",
    "FindNode",
    "GetProviders",
    "GetValue",
    "KadConfig",
    "KadMessage",
    "Kademlia",
    "LookupDone",
    "MessageType",
    "ModeChanged",
    "PeerAddressesLearned",
    "PeerInfo",
    "PeerRoleLearned",
    "Provide",
    "ProvideDone",
    "Providers",
    "ProvidersFound",
    "PutValue",
    "ReachabilityLearned",
    "Record",
    "RequestFailed",
    "StopProviding",
    "Stored",
    "Value",
]
