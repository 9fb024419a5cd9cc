"""Two real daemons on 127.0.0.1 joined over QUIC: the seed listens on TCP and
`/udp/…/quic-v1`, the other on QUIC only and bootstraps by the seed's QUIC address;
both must see each other alive (SWIM, identify and the DHT all run over QUIC streams)."""

from __future__ import annotations

from pathlib import Path

import pytest
from colony_cluster import Cluster, wait_for

from overlay.runtime.net.ports import free_port

pytestmark = [pytest.mark.timeout(120)]


def _listen(node_home: Path, addrs: list[str]) -> None:
    conf = node_home / "config.toml"
    text = conf.read_text()
    start = text.index("listen = [")
    end = text.index("]", start) + 1
    conf.write_text(text[:start] + "listen = [" + ", ".join(f'"{a}"' for a in addrs) + "]"
                    + text[end:])


def test_daemons_join_over_quic(tmp_path: Path) -> None:
    c = Cluster(tmp_path, 2)
    try:
        c.prepare()
        seed, other = c.nodes
        quic_port = free_port()
        _listen(seed.home, [f"/ip4/127.0.0.1/tcp/{seed.p2p_port}",
                            f"/ip4/127.0.0.1/udp/{quic_port}/quic-v1"])
        _listen(other.home, ["/ip4/127.0.0.1/udp/0/quic-v1"])
        seed.start()
        wait_for(seed.up, 90, "the seed daemon's API")
        other.start([f"/ip4/127.0.0.1/udp/{quic_port}/quic-v1/p2p/{seed.peer_id}"])
        wait_for(other.up, 90, "the QUIC-only daemon's API")
        # `other` has no TCP listener and was given only a QUIC address: whatever
        # the two say to each other goes over QUIC.
        c.wait_converged(60)
    finally:
        c.close()
