"""Event handler scripts: parsing, matching, and real /bin/sh runs (env, stdin, timeout).

The runs are real subprocesses with short commands; the timeout test uses a 0.3 s limit
on `sleep 30`, so the kill path (SIGTERM to the group) is exercised, not simulated.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from gossip.events import MemberFailed, MemberJoined, MemberLeft, UserEventReceived
from gossip.topic_pubsub import TopicMessage
from overlay.core.crypto import KeyPair
from overlay.core.errors import ConfigError
from overlay.runtime.services.handlers import EventHandlers, HandlerSpec, describe

PEER = KeyPair.generate().peer_id
OTHER = KeyPair.generate().peer_id


@pytest.mark.parametrize(("text", "reason"), [
    ("member-join", "expected FILTER=COMMAND"),
    ("member-join=", "expected FILTER=COMMAND"),
    ("member-joined=./x", "unknown event 'member-joined'"),
    ("member-join:x=./x", "only user events and topics take a name"),
    ("topic=./x", "a topic handler names its topic"),
    ("query:load=./x", "unknown event 'query:load'"),
])
def test_bad_entries_are_refused_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        HandlerSpec.parse(text)


def test_filters_match_as_serf_does() -> None:
    spec = HandlerSpec.parse("member-join, user:deploy = ./on.sh arg")
    assert spec.command == "./on.sh arg"
    join = describe(MemberJoined(PEER, 3, ("/ip4/1.2.3.4/tcp/1",)), None)
    deploy = describe(UserEventReceived(OTHER, "deploy", b"v2", 7, 1), None)
    other = describe(UserEventReceived(OTHER, "other", b"", 8, 2), None)
    left = describe(MemberLeft(PEER, 3), None)
    assert join and deploy and other and left
    assert spec.matches(join) and spec.matches(deploy)
    assert not spec.matches(other) and not spec.matches(left)
    every = HandlerSpec.parse("*=true")
    assert all(every.matches(e) for e in (join, deploy, other, left))
    assert describe(object(), None) is None
    news = describe(TopicMessage("news", b"id", OTHER, 1, 4, 0.0, b"hi", 1, 0, False), None)
    assert news is not None and news.stdin == b"hi" and news.env["COLONY_TOPIC_SEQ"] == "4"
    assert not every.matches(news)  # `*` does not subscribe the node to every topic
    topic = HandlerSpec.parse("topic:news,user=./t.sh")
    assert topic.matches(news) and topic.topics == {"news"}
    assert not topic.matches(describe(  # type: ignore[arg-type]
        TopicMessage("other", b"id", OTHER, 1, 4, 0.0, b"", 1, 0, False), None))


def test_member_event_line_and_user_event_env() -> None:
    join = describe(MemberJoined(PEER, 3, ("/ip4/1.2.3.4/tcp/1", "/ip4/5.6.7.8/tcp/2")), None)
    assert join is not None and join.kind == "member-join"
    assert join.stdin == f"{PEER}\t/ip4/1.2.3.4/tcp/1,/ip4/5.6.7.8/tcp/2\t3\n".encode()
    failed = describe(MemberFailed(PEER, 4, OTHER), None)
    assert failed is not None and failed.stdin == f"{PEER}\t\t4\n".encode()
    user = describe(UserEventReceived(OTHER, "deploy", b"payload", 7, 1), None)
    assert user is not None and user.stdin == b"payload"
    assert user.env["COLONY_USER_EVENT"] == "deploy" and user.env["SERF_USER_LTIME"] == "7"


def _handlers(tmp: Path, *scripts: str, timeout_s: float = 10.0, queue: int = 8
              ) -> EventHandlers:
    return EventHandlers.from_config(
        {"scripts": list(scripts), "timeout_s": timeout_s, "queue": queue},
        home=tmp, self_id=PEER, api="127.0.0.1:9")


def test_a_script_sees_the_event_in_env_and_stdin(tmp_path: Path) -> None:
    h = _handlers(tmp_path, 'user=env | grep -E "^(COLONY|SERF)_" | sort > env.txt; '
                            'cat > stdin.txt')

    async def main() -> None:
        async with trio.open_nursery() as n:
            n.start_soon(h.run)
            h.on_event(UserEventReceived(OTHER, "deploy", b"v2 payload", 7, 1))
            with trio.fail_after(10):
                while h.stats.ran < 1:
                    await trio.sleep(0.02)
            n.cancel_scope.cancel()

    trio.run(main)
    env = dict(line.split("=", 1) for line in (tmp_path / "env.txt").read_text().splitlines())
    assert env["COLONY_EVENT"] == env["SERF_EVENT"] == "user"
    assert env["COLONY_USER_EVENT"] == env["SERF_USER_EVENT"] == "deploy"
    assert env["COLONY_USER_LTIME"] == "7" and env["COLONY_USER_SENDER"] == str(OTHER)
    assert env["COLONY_SELF_ID"] == env["SERF_SELF_NAME"] == str(PEER)
    assert env["COLONY_API"] == "127.0.0.1:9" and env["COLONY_HOME"] == str(tmp_path)
    assert (tmp_path / "stdin.txt").read_bytes() == b"v2 payload"
    assert h.stats.failed == 0


def test_a_slow_script_is_killed_and_the_next_event_still_runs(tmp_path: Path) -> None:
    h = _handlers(tmp_path, "user:slow=sleep 30", "user:slow=echo ran >> ok.txt",
                  timeout_s=0.3)

    async def main() -> None:
        async with trio.open_nursery() as n:
            n.start_soon(h.run)
            for i in range(2):
                h.on_event(UserEventReceived(OTHER, "slow", b"", i, i))
            with trio.fail_after(10):
                while h.stats.timed_out < 2 or h.stats.ran < 2:
                    await trio.sleep(0.02)
            n.cancel_scope.cancel()

    trio.run(main)
    assert h.stats.timed_out == 2  # each `sleep 30` was killed at 0.3 s
    assert (tmp_path / "ok.txt").read_text() == "ran\nran\n"  # the other handler ran both


def test_failures_and_full_queues_are_counted_not_raised(tmp_path: Path) -> None:
    h = _handlers(tmp_path, "member-join=exit 3", queue=2)
    for i in range(5):  # no worker runs yet: 2 queue, 3 are dropped
        h.on_event(MemberJoined(PEER, i))
    assert h.stats.queue_full == 3

    async def main() -> None:
        async with trio.open_nursery() as n:
            n.start_soon(h.run)
            with trio.fail_after(10):
                while h.stats.ran < 2:
                    await trio.sleep(0.02)
            n.cancel_scope.cancel()

    trio.run(main)
    assert h.stats.failed == 2


def test_no_handlers_means_nothing_to_run(tmp_path: Path) -> None:
    h = _handlers(tmp_path)
    assert not h
    h.on_event(MemberJoined(PEER, 1))
    assert h.stats.queue_full == 0


def test_bad_limits_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must be positive"):
        _handlers(tmp_path, timeout_s=0)
