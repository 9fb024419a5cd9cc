"""The node's Ed25519 identity file.

Stored as a libp2p protobuf `PrivateKey` (Type = Ed25519, Data = seed ‖ public key),
the format go-libp2p and js-libp2p use, so the key can be moved between tools. The
file must be mode 0600: a key readable by others is refused, as ssh refuses one.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from overlay.core.crypto import KeyPair
from overlay.core.errors import ConfigError

KEY_FILE = "identity.key"
_PB_PREFIX = b"\x08\x01\x12\x40"  # Type=Ed25519 (1), Data = 64 bytes


def write_identity(path: Path, keypair: KeyPair) -> None:
    data = _PB_PREFIX + keypair.seed + keypair.public.raw
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def load_identity(path: Path) -> KeyPair:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ConfigError(
            f"no identity key at {path}; run `colony init` first (or set COLONY_HOME)"
        ) from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"identity key {path} is accessible by group or others "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); run `chmod 600 {path}`"
        )
    data = path.read_bytes()
    if len(data) != 68 or not data.startswith(_PB_PREFIX):
        raise ConfigError(f"identity key {path} is not a libp2p Ed25519 private key")
    kp = KeyPair(data[4:36])
    if kp.public.raw != data[36:]:
        raise ConfigError(f"identity key {path} is corrupt (public key does not match seed)")
    return kp
