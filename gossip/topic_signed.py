"""Signed user messages of a topic: what a Plumtree payload carries (DESIGN §3, §6 tier 2).

A user message is an `Envelope` of kind ``colony-topic-msg`` signed by the publishing
node's key (DESIGN §3: canonical CBOR body, signer key, Ed25519 over a
domain-separated digest), followed by the publisher's certificate chain in colony mode
(as gossip alive claims carry theirs: the chain is self-authenticating, so it is not
under the message signature). The Plumtree payload is the canonical CBOR of::

    [envelope, [certificate envelope, …]]       (the chain is [] in open mode)

    envelope body: {"t": topic name, "e": epoch, "s": seq, "at": time, "d": data}

- `t`, the topic's name (≤ `MAX_NAME_BYTES` UTF-8 bytes): a receiver checks that it
  hashes to the topic id the message arrived on, so a message signed for one topic
  cannot be replayed into another.
- `e` (epoch) and `s` (seq): the publisher's order. The epoch is chosen when the
  publisher's daemon starts (milliseconds since 1970) and only grows; `s` counts 1, 2, …
  inside it. Receivers deliver each publisher's messages in (epoch, seq) order
  (gossip/topic_order.py) and refuse anything at or below what they delivered.
- `at`: the publisher's clock when it signed; a receiver refuses a message older than
  its replay window or more than `CLOCK_SKEW_S` in its future.
- `d`: the user's bytes, at most `MAX_DATA_BYTES`, so that the whole payload stays
  under the tier-2 wire's `MAX_PAYLOAD_BYTES` even with a full chain.

`open_payload` checks everything a receiver can check without state (shape, signature,
topic, field ranges) and raises only the `WireError` family (`BadSignature` for a
signature that does not hold), never anything else for peer input.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from gossip.topic_messages import MAX_PAYLOAD_BYTES, TOPIC_ID_BYTES
from overlay.core.certs import MAX_CHAIN_DEPTH
from overlay.core.crypto import Envelope, KeyPair
from overlay.core.errors import LocalProtocolError, MalformedFrame
from overlay.core.ids import PeerId
from overlay.core.validate import number, uint
from overlay.core.wire import cbor_decode, cbor_encode

MESSAGE_KIND = "colony-topic-msg"
MAX_NAME_BYTES = 256
#: Room for the envelope, the name and a 3-link chain (~1.5 KiB) below the wire limit.
MAX_DATA_BYTES = MAX_PAYLOAD_BYTES - 4 * 1024
MAX_SEQ = (1 << 63) - 1


def topic_id(name: str, colony: bytes | None = None) -> bytes:
    """The 32-byte id of topic `name` (in colony `colony`'s namespace, if given).

    Two colonies using the same name get two swarms: the owner key is hashed in.
    """
    check_name(name)
    scope = colony or b""
    return hashlib.sha256(b"colony/v1/topic\0" + scope + b"\0" + name.encode()).digest()


def check_name(name: str) -> str:
    """A topic name: 1..256 UTF-8 bytes, no NUL or control characters."""
    if not isinstance(name, str) or not name:
        raise MalformedFrame("a topic name is a non-empty string")
    if len(name.encode()) > MAX_NAME_BYTES:
        raise MalformedFrame(f"a topic name is at most {MAX_NAME_BYTES} bytes")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise MalformedFrame("a topic name has no control characters")
    return name


@dataclass(frozen=True, slots=True)
class SignedMessage:
    """A user message whose signature held; `chain` not yet checked against roles."""

    name: str
    publisher: PeerId
    epoch: int
    seq: int
    at: float
    data: bytes
    chain: tuple[Envelope, ...]
    #: The publisher's signed envelope (what a trigger's derived capsule carries).
    env: Envelope | None = None


def seal_payload(keypair: KeyPair, chain: tuple[Envelope, ...], name: str, epoch: int,
                 seq: int, at: float, data: bytes) -> bytes:
    """Sign a user message and encode the Plumtree payload (bounded: else a bug)."""
    return seal_message(keypair, chain, name, epoch, seq, at, data)[0]


def seal_message(keypair: KeyPair, chain: tuple[Envelope, ...], name: str, epoch: int,
                 seq: int, at: float, data: bytes) -> tuple[bytes, SignedMessage]:
    """`seal_payload`, with the message as a receiver's `open_payload` gives it (the
    publisher's own delivery; no need to verify the signature just made)."""
    if len(data) > MAX_DATA_BYTES:
        raise LocalProtocolError(f"topic message of {len(data)} bytes; at most {MAX_DATA_BYTES}")
    if not 0 <= epoch <= MAX_SEQ or not 1 <= seq <= MAX_SEQ:
        raise LocalProtocolError("epoch and seq out of range")
    env = keypair.seal(MESSAGE_KIND, {"t": check_name(name), "e": epoch, "s": seq,
                                      "at": at, "d": data})
    payload = cbor_encode([env.to_wire(), [c.to_wire() for c in chain]])
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise LocalProtocolError(f"signed topic message of {len(payload)} bytes is too large")
    return payload, SignedMessage(name, keypair.peer_id, epoch, seq, at, data, chain, env)


def open_payload(payload: bytes, topic: bytes, colony: bytes | None) -> SignedMessage:
    """Decode and verify a payload received on `topic`; WireError if anything is wrong."""
    if len(topic) != TOPIC_ID_BYTES:
        raise MalformedFrame("bad topic id")
    obj = cbor_decode(payload)
    if not isinstance(obj, list) or len(obj) != 2:
        raise MalformedFrame("a topic message is [envelope, chain]")
    env = Envelope.from_wire(obj[0])
    raw_chain = obj[1]
    if not isinstance(raw_chain, list) or len(raw_chain) > MAX_CHAIN_DEPTH:
        raise MalformedFrame(f"a topic message carries at most {MAX_CHAIN_DEPTH} certificates")
    chain = tuple(Envelope.from_wire(c) for c in raw_chain)
    body = env.open(MESSAGE_KIND)  # BadSignature unless the signer signed exactly this
    return _fields(body, env, chain, topic, colony)


def open_envelope(env: Envelope) -> SignedMessage:
    """A message's signed envelope alone (no chain, no topic id to check it against:
    the name it was published to is inside what was signed); WireError if bad."""
    body = env.open(MESSAGE_KIND)
    return _fields(body, env, (), None, None)


def _fields(body: Any, env: Envelope, chain: tuple[Envelope, ...], topic: bytes | None,
            colony: bytes | None) -> SignedMessage:
    if not isinstance(body, dict) or set(body) != {"t", "e", "s", "at", "d"}:
        raise MalformedFrame("topic message body has the wrong fields")
    name = check_name(body["t"])
    if topic is not None and topic_id(name, colony) != topic:
        raise MalformedFrame(f"message for topic {name!r} arrived on another topic")
    data = body["d"]
    if not isinstance(data, bytes) or len(data) > MAX_DATA_BYTES:
        raise MalformedFrame(f"topic message data must be ≤ {MAX_DATA_BYTES} bytes")
    epoch = uint(body["e"], "epoch", limit=MAX_SEQ + 1)
    seq = uint(body["s"], "seq", limit=MAX_SEQ + 1)
    if seq < 1:
        raise MalformedFrame("seq starts at 1")
    at = number(body["at"], "message time")
    return SignedMessage(name, env.signer_id, epoch, seq, at, data, chain, env)
