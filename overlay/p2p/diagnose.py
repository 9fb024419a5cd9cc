"""What a stalled stream looks like from inside: flow-control and buffer state.

A stream that carries nothing for a long time (a DAG stream waiting on a relayed
connection, a relay splice blocked on its far side) is logged with this state, so a
stall in the field says which side holds the bytes: the sender's window at 0 (the
reader does not grant), bytes buffered and unread (the application stopped reading),
ciphertext left unsent, or nothing anywhere (lost before our session saw it). Over a
relay circuit the connection's byte stream is itself a stream of an outer connection;
its state is given under "outer".
"""

from __future__ import annotations

from typing import Any

from overlay.p2p.connection import Connection, P2PStream


def describe_stream(net: object, depth: int = 0) -> dict[str, Any]:
    """The state of a native stream and its connection; {} for other backends."""
    if not isinstance(net, P2PStream):
        return {}
    conn = net.conn
    out: dict[str, Any] = {
        "sid": net.sid,
        "buffered": net._buffered,
        "eof": net.eof,
        "reset": net.reset_reason,
        "flow": conn.session.flow_state(net.sid),
        "conn": describe_connection(conn),
    }
    inner = getattr(conn.stream, "net", None)  # a TransportStream over another stream
    if inner is not None and depth < 2:
        out["outer"] = describe_stream(inner, depth + 1)
    return out


def describe_connection(conn: Connection) -> dict[str, Any]:
    return {
        "closed": conn.close_reason if conn.closed else False,
        "outbound": conn.session.outbound_bytes,
        "unsent": sum(len(v) for v in conn._unsent),
        "send_locked": conn._send_lock.locked(),
        "bytes_in": conn.bytes_in,
        "bytes_out": conn.bytes_out,
        "streams": conn.session.stream_count,
    }
