"""The aiortc ↔ trio bridge and DataChannelStream (overlay/runtime/edge/webrtc_bridge.py):
two real data channel ends in one process (ICE over the host's addresses)."""

from __future__ import annotations

import pytest
import trio
from edge_stack import skip_without_host_candidates

from overlay.runtime.edge.webrtc_bridge import (
    MESSAGE_BYTES,
    DataChannelStream,
    LazyEndpoint,
    WebRtcEndpoint,
    WebRtcError,
    candidate_types,
    connect_pair,
    open_bridge,
    sdp_problem,
)

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _host_candidates() -> None:
    skip_without_host_candidates()


async def read_exactly(s: DataChannelStream, n: int) -> bytes:
    got = b""
    while len(got) < n:
        chunk = await s.receive_some(65536)
        assert chunk, "unexpected EOF"
        got += chunk
    return got


def test_bytes_both_ways_order_and_close_semantics() -> None:
    async def main() -> None:
        async with open_bridge() as br:
            with trio.fail_after(30):
                a, b = await connect_pair(WebRtcEndpoint(br), WebRtcEndpoint(br))
                assert "->" in a.path
                # Writes larger than one SCTP message are cut and arrive in order;
                # receive_some honours max_bytes.
                blob = bytes(range(256)) * (3 * MESSAGE_BYTES // 256 + 7)
                async with trio.open_nursery() as n:
                    n.start_soon(a.send_all, blob)
                    assert await read_exactly(b, len(blob)) == blob
                await b.send_all(b"pong")
                assert await a.receive_some(2) == b"po"
                assert await a.receive_some(10) == b"ng"
                # Close: the other end reads EOF (after draining), its writes fail;
                # our own use after close raises ClosedResourceError.
                await a.send_all(b"last")
                await a.aclose()
                assert await read_exactly(b, 4) == b"last"
                assert await b.receive_some() == b""
                with pytest.raises(trio.BrokenResourceError):
                    await b.send_all(b"x")
                with pytest.raises(trio.ClosedResourceError):
                    await a.send_all(b"x")
                await b.aclose()
                await b.aclose()  # idempotent

    trio.run(main)


def test_a_send_after_the_bridge_stopped_breaks_the_stream() -> None:
    """At daemon shutdown the bridge stops before the connections' writers end: a late
    send must read as a broken stream (the connection closes), not a WebRtcError that
    escapes the transport (CI, stop 32). Whether the channel's close callback reached
    trio first ("closed by peer") or not ("bridge has stopped") is a race; both break."""

    async def main() -> None:
        async with open_bridge() as br:
            with trio.fail_after(30):
                a, _b = await connect_pair(WebRtcEndpoint(br), WebRtcEndpoint(br))
        assert br.stopped
        with pytest.raises(trio.BrokenResourceError, match=r"closed by peer|stopped"):
            await a.send_all(b"late")
        await a.aclose()

    trio.run(main)


def test_receive_buffer_bound_breaks_only_that_stream() -> None:
    """A peer that sends past our receive bound (ignoring flow control) costs its
    channel; the bridge and other channels carry on."""

    async def main() -> None:
        async with open_bridge() as br:
            small = WebRtcEndpoint(br, max_receive_buffer_bytes=256 * 1024)
            with trio.fail_after(30):
                a, b = await connect_pair(WebRtcEndpoint(br), small)
                await a.send_all(b"z" * (1024 * 1024))  # b never reads
                with trio.fail_after(10):
                    while not b.remote_closed:
                        await trio.sleep(0.05)
                with pytest.raises(trio.BrokenResourceError, match="overflow"):
                    await b.receive_some()
                c, d = await connect_pair(WebRtcEndpoint(br), WebRtcEndpoint(br))
                await c.send_all(b"still fine")
                assert await read_exactly(d, 10) == b"still fine"
                for s in (a, b, c, d):
                    await s.aclose()

    trio.run(main)


def test_bad_sdp_refused_before_any_work_and_lazy_start() -> None:
    assert sdp_problem("not an sdp") == "SDP must start with v=0"
    assert "m=application" in (sdp_problem("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n") or "")

    async def main() -> None:
        lazy = LazyEndpoint()
        with pytest.raises(WebRtcError, match="bad offer"):
            await lazy.answer("v=0\r\n")
        assert not lazy.started  # junk did not start the bridge (nor import aiortc)
        offer, session = await lazy.offer()
        assert lazy.started and "host" in candidate_types(offer)
        await session.close()
        lazy.close()

    trio.run(main)
