"""Peer ids are libp2p peer ids; keys and distances follow Kademlia."""

import hashlib

import pytest

from overlay.core.crypto import KeyPair
from overlay.core.errors import WireError
from overlay.core.ids import PeerId, common_prefix_len, distance, key_of_bytes


def test_ed25519_peer_id_has_libp2p_form() -> None:
    kp = KeyPair(bytes(32))
    pid = kp.peer_id
    text = pid.to_base58()
    assert text.startswith("12D3KooW")
    assert PeerId.from_base58(text) == pid
    assert pid.ed25519_public_key() == kp.public.raw
    assert pid.key == int.from_bytes(hashlib.sha256(pid.raw).digest(), "big")


def test_peer_id_equality_ignores_cached_key() -> None:
    a = KeyPair(bytes(range(32))).peer_id
    b = PeerId(a.raw)
    assert a == b and hash(a) == hash(b)


@pytest.mark.parametrize(
    "raw",
    [b"", b"\x00", b"\x12\x20" + b"x" * 31, b"\x11\x04abcd", b"\x00\x05abc"],
)
def test_invalid_peer_id_bytes_raise(raw: bytes) -> None:
    with pytest.raises(WireError):
        PeerId.from_bytes(raw)


def test_distance_and_prefix() -> None:
    assert distance(5, 5) == 0
    assert common_prefix_len(0, 0) == 256
    assert common_prefix_len(0, 1 << 255) == 0
    assert common_prefix_len(0, 1) == 255
    assert key_of_bytes(b"abc") == int(hashlib.sha256(b"abc").hexdigest(), 16)
