"""`Connection._flush` back-pressure: every task that waits for the send queue to
drain is woken when it drains. Before, each waiter replaced the shared event, so all
but the last waited for ever: seen as a bulk DAG stream whose provider stopped sending
with its window open while a small send on the same connection went on (a 20 s stall,
then Bitswap took over)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from overlay.core.crypto import KeyPair
from overlay.p2p import connection
from overlay.p2p.connection import P2PStream, upgrade


def test_every_task_waiting_for_the_queue_to_drain_is_woken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def main() -> None:
        kp_a, kp_b = KeyPair.generate(), KeyPair.generate()
        sa, sb = trio.socket.socketpair()
        left, right = trio.SocketStream(sa), trio.SocketStream(sb)

        async def ignore(s: P2PStream) -> None:
            while await s.read():
                pass

        async with trio.open_nursery() as n:
            async def responder() -> None:
                conn_b = await upgrade(right, kp_b, initiator=False)
                await conn_b.run(ignore)

            n.start_soon(responder)
            a = await upgrade(left, kp_a, initiator=True, expected_peer=kp_b.peer_id)
            n.start_soon(a.run, ignore)
            # As if the writer task were mid-send with more than the high-water mark
            # queued behind it: two senders must wait in `_flush`.
            monkeypatch.setattr(connection, "HIGH_WATER_BYTES", 100)
            await a._send_lock.acquire()
            sid = a.session.open_stream()
            a.session.send(sid, b"x" * 1000)
            woken: list[int] = []

            async def sender(i: int) -> None:
                await a._flush()
                woken.append(i)

            n.start_soon(sender, 1)
            n.start_soon(sender, 2)
            await trio.testing.wait_all_tasks_blocked()
            assert woken == []
            a._send_lock.release()
            await a._send_pending()  # the writer drains the queue
            with trio.fail_after(5):
                while len(woken) < 2:
                    await trio.sleep(0.01)
            assert sorted(woken) == [1, 2]
            n.cancel_scope.cancel()

    trio.run(main)
