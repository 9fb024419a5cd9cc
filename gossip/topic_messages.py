"""Tier-2 wire messages: HyParView membership and Plumtree broadcast, per topic.

Every message is a CBOR array `[tag, topic, …]` where `topic` is a 32-byte topic id
(DESIGN §6, tier 2). The tags:

    HyParView (Leitão et al., DSN 2007, §4)       Plumtree (Leitão et al., SRDS 2007, §3)
    [20, topic]                        Join       [30, topic, id, round, payload]  Gossip
    [21, topic, peer, ttl]             FwdJoin    [31, topic, [[id, round]…]]      IHave
    [22, topic, high]                  Neighbor   [32, topic, id|null, round]      Graft
    [23, topic, accepted]              NbrReply   [33, topic]                      Prune
    [24, topic, alive]                 Disconnect
    [25, topic, origin, [peer…], ttl]  Shuffle
    [26, topic, [peer…]]               ShuffleReply

`id` is sha256(payload) (32 bytes): a receiver recomputes it, so a peer cannot make one
id mean two payloads. `round` is the number of hops the payload has travelled.

Decoding (`decode_topic_message`) range-checks every field and bounds every list, and
raises only the `WireError` family. Limits: a TTL ≤ `MAX_TTL`, a round < 2^16, at most
`MAX_SHUFFLE_PEERS` peers in a shuffle, `MAX_IHAVES` ids in one IHAVE and
`MAX_PAYLOAD_BYTES` of payload; an encoder that would exceed them is a bug
(`LocalProtocolError`), not a message that a peer would then refuse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from overlay.core.errors import LocalProtocolError, MalformedFrame
from overlay.core.ids import PeerId
from overlay.core.validate import integer, uint

TOPIC_ID_BYTES = 32
MESSAGE_ID_BYTES = 32
MAX_TTL = 32
MAX_ROUND = (1 << 16) - 1
MAX_SHUFFLE_PEERS = 64
MAX_IHAVES = 512
MAX_PAYLOAD_BYTES = 64 * 1024


def _topic(v: Any) -> bytes:
    if not isinstance(v, bytes) or len(v) != TOPIC_ID_BYTES:
        raise MalformedFrame(f"topic id must be {TOPIC_ID_BYTES} bytes")
    return v


def _msg_id(v: Any) -> bytes:
    if not isinstance(v, bytes) or len(v) != MESSAGE_ID_BYTES:
        raise MalformedFrame(f"message id must be {MESSAGE_ID_BYTES} bytes")
    return v


def _peer(v: Any, what: str) -> PeerId:
    if not isinstance(v, bytes):
        raise MalformedFrame(f"{what} must be peer id bytes")
    return PeerId.from_bytes(v)


def _peers(v: Any, what: str) -> tuple[PeerId, ...]:
    if not isinstance(v, list) or len(v) > MAX_SHUFFLE_PEERS:
        raise MalformedFrame(f"{what} must be a list of at most {MAX_SHUFFLE_PEERS} peers")
    return tuple(_peer(p, what) for p in v)


def _flag(v: Any, what: str) -> bool:
    if type(v) is not bool:
        raise MalformedFrame(f"{what} must be a boolean")
    return v


def _ttl(v: Any) -> int:
    return integer(v, "ttl", 0, MAX_TTL)


def _round(v: Any) -> int:
    return integer(v, "round", 0, MAX_ROUND)


def _arity(f: list[Any], n: int, what: str) -> None:
    if len(f) != n:
        raise MalformedFrame(f"{what} must have {n} fields, got {len(f)}")


def _check_peers_out(peers: tuple[PeerId, ...]) -> None:
    if len(peers) > MAX_SHUFFLE_PEERS:
        raise LocalProtocolError(f"{len(peers)} peers exceed {MAX_SHUFFLE_PEERS}")


# ------------------------------------------------------------------ HyParView


@dataclass(frozen=True, slots=True)
class Join:
    """A new node asks its contact to take it into its active view (§4.2)."""

    topic: bytes
    TAG = 20

    def to_wire(self) -> list[Any]:
        return [self.TAG, self.topic]

    @classmethod
    def from_fields(cls, f: list[Any]) -> Join:
        _arity(f, 2, "join")
        return cls(_topic(f[1]))


@dataclass(frozen=True, slots=True)
class ForwardJoin:
    """The random walk that introduces `peer` (ARWL hops; passive at PRWL)."""

    topic: bytes
    peer: PeerId
    ttl: int
    TAG = 21

    def to_wire(self) -> list[Any]:
        return [self.TAG, self.topic, self.peer.raw, self.ttl]

    @classmethod
    def from_fields(cls, f: list[Any]) -> ForwardJoin:
        _arity(f, 4, "forward-join")
        return cls(_topic(f[1]), _peer(f[2], "forward-join peer"), _ttl(f[3]))


@dataclass(frozen=True, slots=True)
class Neighbor:
    """Ask to become an active neighbour; `high` may not be refused (§4.3)."""

    topic: bytes
    high: bool
    TAG = 22

    def to_wire(self) -> list[Any]:
        return [self.TAG, self.topic, self.high]

    @classmethod
    def from_fields(cls, f: list[Any]) -> Neighbor:
        _arity(f, 3, "neighbor")
        return cls(_topic(f[1]), _flag(f[2], "neighbor priority"))


@dataclass(frozen=True, slots=True)
class NeighborReply:
    """Answer to `Neighbor` or `Join`: accepted (we are neighbours now) or refused."""

    topic: bytes
    accepted: bool
    TAG = 23

    def to_wire(self) -> list[Any]:
        return [self.TAG, self.topic, self.accepted]

    @classmethod
    def from_fields(cls, f: list[Any]) -> NeighborReply:
        _arity(f, 3, "neighbor-reply")
        return cls(_topic(f[1]), _flag(f[2], "neighbor-reply accepted"))


@dataclass(frozen=True, slots=True)
class Disconnect:
    """We dropped you from our active view; `alive`: keep us in your passive view."""

    topic: bytes
    alive: bool
    TAG = 24

    def to_wire(self) -> list[Any]:
        return [self.TAG, self.topic, self.alive]

    @classmethod
    def from_fields(cls, f: list[Any]) -> Disconnect:
        _arity(f, 3, "disconnect")
        return cls(_topic(f[1]), _flag(f[2], "disconnect alive"))


@dataclass(frozen=True, slots=True)
class Shuffle:
    """A random walk carrying a sample of `origin`'s views (§4.4)."""

    topic: bytes
    origin: PeerId
    peers: tuple[PeerId, ...]
    ttl: int
    TAG = 25

    def to_wire(self) -> list[Any]:
        _check_peers_out(self.peers)
        return [self.TAG, self.topic, self.origin.raw, [p.raw for p in self.peers], self.ttl]

    @classmethod
    def from_fields(cls, f: list[Any]) -> Shuffle:
        _arity(f, 5, "shuffle")
        return cls(_topic(f[1]), _peer(f[2], "shuffle origin"),
                   _peers(f[3], "shuffle peers"), _ttl(f[4]))


@dataclass(frozen=True, slots=True)
class ShuffleReply:
    """The walk's end answers the origin with a sample of its passive view."""

    topic: bytes
    peers: tuple[PeerId, ...]
    TAG = 26

    def to_wire(self) -> list[Any]:
        _check_peers_out(self.peers)
        return [self.TAG, self.topic, [p.raw for p in self.peers]]

    @classmethod
    def from_fields(cls, f: list[Any]) -> ShuffleReply:
        _arity(f, 3, "shuffle-reply")
        return cls(_topic(f[1]), _peers(f[2], "shuffle-reply peers"))


# ------------------------------------------------------------------ Plumtree


@dataclass(frozen=True, slots=True)
class Gossip:
    """The payload itself, eager-pushed (or sent in answer to a GRAFT)."""

    topic: bytes
    msg_id: bytes
    round: int
    payload: bytes
    TAG = 30

    def to_wire(self) -> list[Any]:
        if len(self.payload) > MAX_PAYLOAD_BYTES:
            raise LocalProtocolError(f"payload of {len(self.payload)} bytes is too large")
        return [self.TAG, self.topic, self.msg_id, self.round, self.payload]

    @classmethod
    def from_fields(cls, f: list[Any]) -> Gossip:
        _arity(f, 5, "gossip")
        payload = f[4]
        if not isinstance(payload, bytes) or len(payload) > MAX_PAYLOAD_BYTES:
            raise MalformedFrame(f"gossip payload must be ≤ {MAX_PAYLOAD_BYTES} bytes")
        return cls(_topic(f[1]), _msg_id(f[2]), _round(f[3]), payload)


@dataclass(frozen=True, slots=True)
class IHave:
    """Lazy push: ids (with the round they were at) the sender can serve."""

    topic: bytes
    items: tuple[tuple[bytes, int], ...]
    TAG = 31

    def to_wire(self) -> list[Any]:
        if len(self.items) > MAX_IHAVES:
            raise LocalProtocolError(f"{len(self.items)} ihaves exceed {MAX_IHAVES}")
        return [self.TAG, self.topic, [[i, r] for i, r in self.items]]

    @classmethod
    def from_fields(cls, f: list[Any]) -> IHave:
        _arity(f, 3, "ihave")
        raw = f[2]
        if not isinstance(raw, list) or len(raw) > MAX_IHAVES:
            raise MalformedFrame(f"ihave must list at most {MAX_IHAVES} ids")
        items = []
        for it in raw:
            if not isinstance(it, list) or len(it) != 2:
                raise MalformedFrame("ihave item must be [id, round]")
            items.append((_msg_id(it[0]), _round(it[1])))
        return cls(_topic(f[1]), tuple(items))


@dataclass(frozen=True, slots=True)
class Graft:
    """Make the link eager again; with `msg_id`, also send that payload."""

    topic: bytes
    msg_id: bytes | None
    round: int
    TAG = 32

    def to_wire(self) -> list[Any]:
        return [self.TAG, self.topic, self.msg_id, self.round]

    @classmethod
    def from_fields(cls, f: list[Any]) -> Graft:
        _arity(f, 4, "graft")
        mid = None if f[2] is None else _msg_id(f[2])
        return cls(_topic(f[1]), mid, _round(f[3]))


@dataclass(frozen=True, slots=True)
class Prune:
    """A duplicate arrived over this link: make it lazy."""

    topic: bytes
    TAG = 33

    def to_wire(self) -> list[Any]:
        return [self.TAG, self.topic]

    @classmethod
    def from_fields(cls, f: list[Any]) -> Prune:
        _arity(f, 2, "prune")
        return cls(_topic(f[1]))


MembershipMessage = (
    Join | ForwardJoin | Neighbor | NeighborReply | Disconnect | Shuffle | ShuffleReply
)
BroadcastMessage = Gossip | IHave | Graft | Prune
TopicMessage = MembershipMessage | BroadcastMessage

_BY_TAG: dict[int, Any] = {
    c.TAG: c
    for c in (Join, ForwardJoin, Neighbor, NeighborReply, Disconnect, Shuffle,
              ShuffleReply, Gossip, IHave, Graft, Prune)
}
MEMBERSHIP_TAGS = frozenset(range(20, 27))


def decode_topic_message(obj: Any) -> TopicMessage:
    """Decode one tier-2 message from its CBOR value; `WireError` on anything bad."""
    if not isinstance(obj, list) or not obj:
        raise MalformedFrame("topic message must be a non-empty array")
    tag = uint(obj[0], "topic message tag", limit=256)
    cls = _BY_TAG.get(tag)
    if cls is None:
        raise MalformedFrame(f"unknown topic message tag {tag}")
    msg: TopicMessage = cls.from_fields(obj)
    return msg
