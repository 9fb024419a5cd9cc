"""One error family for everything Colony raises on purpose.

Following h11: a `LocalProtocolError` means *we* misused an API (a bug: raise it);
a `RemoteProtocolError` means a *peer* sent something bad (drop the message or the
stream, count it, keep running). Every decoding failure of untrusted bytes is a
`WireError`, itself a `RemoteProtocolError`, so a reader needs exactly one `except`.
"""

from __future__ import annotations


class ColonyError(Exception):
    """Base of every error Colony raises deliberately."""


class LocalProtocolError(ColonyError):
    """The caller used an API wrongly (a bug on our side)."""


class RemoteProtocolError(ColonyError):
    """A peer sent something invalid. Drop it, count it, carry on."""


class WireError(RemoteProtocolError):
    """Bytes from the network (or disk) could not be decoded safely."""


class FrameTooLarge(WireError):
    """A length prefix announced more bytes than the frame limit allows."""


class TruncatedFrame(WireError):
    """Input ended in the middle of a frame or value."""


class MalformedFrame(WireError):
    """Bytes that are not valid for the expected encoding or schema."""


class NonCanonical(WireError):
    """Valid CBOR that is not in canonical form (RFC 8949 §4.2)."""


class BadSignature(WireError):
    """A signature that does not verify, or a signer we did not expect."""


class ExpiredError(RemoteProtocolError):
    """A signed object (certificate, record) whose validity period is over."""


class InvalidCid(ColonyError):
    """A CID string or byte sequence that does not parse."""


class ConfigError(ColonyError):
    """A configuration file, flag or environment variable that is not valid."""
