"""Event handler scripts (serf's `event_handlers`): run a local command on node events.

`[handlers] scripts` in config.toml lists `FILTER=COMMAND` strings; a FILTER is one or
more comma-separated event kinds, the same words serf uses:

| filter            | runs on                                                   |
|-------------------|-----------------------------------------------------------|
| `member-join`     | a member joined (`MemberJoined`)                          |
| `member-leave`    | a member left gracefully (`MemberLeft`)                   |
| `member-failed`   | a member was declared dead (`MemberFailed`)               |
| `member-update`   | a member refuted a suspicion, changed addresses or its ad |
| `member-reap`     | a gone member's tombstone expired                         |
| `user`, `user:NAME` | any user event, or the one named NAME                   |
| `topic:NAME`      | a message of topic NAME (the node subscribes while it runs) |
| `*`               | every one of the above but topics (they need a name)      |

The command runs through `/bin/sh -c` in the node's home, as serf does, with the event
in its environment (`COLONY_EVENT`, `COLONY_SELF_ID`, `COLONY_API`, and for user events
`COLONY_USER_EVENT`, `COLONY_USER_LTIME`, `COLONY_USER_SENDER`; serf's `SERF_EVENT`,
`SERF_SELF_NAME`, `SERF_USER_EVENT` and `SERF_USER_LTIME` are set too, so serf scripts
run unchanged) and on stdin: a user event's payload, or for member events one line
`<peer id>\\t<addresses, comma-separated>\\t<incarnation>`. A topic message's data is
on stdin, with `COLONY_TOPIC`, `COLONY_TOPIC_PUBLISHER` and `COLONY_TOPIC_SEQ`
(serf has no topics: `SERF_EVENT` is `topic`). Topic messages reach only a topic's
subscribers, so a node with a `topic:NAME` handler subscribes to NAME for as long as
it runs (services/topics.py, through the narrow `TopicFeed`); a node that may not
(colony mode, no subscribe role) logs why and counts it (`handlers.topic_refused`).

Why this shape: the node must never wait for a script. `on_event` runs on the driver's
task, so it only offers the event to each matching handler's bounded queue
(`[handlers] queue`, default 256); a full queue drops the event and counts it
(`handlers.queue_full` in `/v1/stats` drops). Each handler has one worker that runs its
events in order (serf runs a handler's invocations one after another too), each bounded
by `[handlers] timeout_s`: a script still running then is sent SIGTERM, and SIGKILL
2 s later, with its whole process group, and counted (`handlers.timed_out`). A failing
script (non-zero exit, or one that cannot start) is logged with the tail of its output
and counted (`handlers.failed`); the next event runs as usual.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import structlog
import trio

from gossip.events import (
    MemberFailed,
    MemberJoined,
    MemberLeft,
    MemberReaped,
    MemberUpdated,
    UserEventReceived,
    UserEventSent,
)
from gossip.topic_pubsub import TopicMessage
from overlay.core.errors import ColonyError, ConfigError
from overlay.core.ids import PeerId
from overlay.runtime.context import Membership, TopicFeed

log = structlog.get_logger("colony.handlers")

MEMBER_KINDS = {
    MemberJoined: "member-join",
    MemberLeft: "member-leave",
    MemberFailed: "member-failed",
    MemberUpdated: "member-update",
    MemberReaped: "member-reap",
}
KINDS = frozenset(MEMBER_KINDS.values()) | {"user"}
#: Kinds `*` does not cover: a topic must be named (following it costs a subscription).
NAMED_KINDS = frozenset({"topic"})
#: SIGTERM → SIGKILL grace for a script past its timeout.
KILL_GRACE_S = 2.0
#: Bytes of a script's output kept for the log line.
OUTPUT_TAIL = 2048


@dataclass(frozen=True, slots=True)
class HandlerEvent:
    """One event as a script sees it."""

    kind: str  # a word of KINDS
    name: str  # the user event's name; "" for member events
    stdin: bytes
    env: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    """One `FILTER=COMMAND` entry of `[handlers] scripts`."""

    filters: tuple[tuple[str, str], ...]  # (kind, name); name "" matches every name
    command: str

    @classmethod
    def parse(cls, text: str) -> HandlerSpec:
        """Parse `member-join,user:deploy=./script.sh`; ConfigError names what is wrong."""
        where = f"[handlers] scripts entry {text!r}"
        head, sep, command = text.partition("=")
        if not sep or not command.strip():
            raise ConfigError(f"{where}: expected FILTER=COMMAND, e.g. member-join=./on-join.sh")
        filters: list[tuple[str, str]] = []
        for word in (w.strip() for w in head.split(",")):
            if word == "*":
                filters.extend((k, "") for k in sorted(KINDS))
                continue
            kind, _, name = word.partition(":")
            if kind not in KINDS | NAMED_KINDS:
                raise ConfigError(f"{where}: unknown event {word!r}; known: "
                                  f"{', '.join(sorted(KINDS))}, user:NAME, topic:NAME, *")
            if name and kind not in ("user", "topic"):
                raise ConfigError(f"{where}: only user events and topics take a name ({word!r})")
            if kind in NAMED_KINDS and not name:
                raise ConfigError(f"{where}: a topic handler names its topic (topic:NAME)")
            filters.append((kind, name))
        return cls(tuple(filters), command.strip())

    def matches(self, ev: HandlerEvent) -> bool:
        return any(kind == ev.kind and (not name or name == ev.name)
                   for kind, name in self.filters)

    @property
    def topics(self) -> frozenset[str]:
        return frozenset(name for kind, name in self.filters if kind == "topic")


def describe(ev: object, membership: Membership | None) -> HandlerEvent | None:
    """The script's view of a node event, or None for events no handler takes."""
    if isinstance(ev, TopicMessage):
        return HandlerEvent("topic", ev.name, ev.data, {
            "COLONY_TOPIC": ev.name, "COLONY_TOPIC_PUBLISHER": str(ev.publisher),
            "COLONY_TOPIC_SEQ": str(ev.seq),
        })
    if isinstance(ev, UserEventReceived | UserEventSent):  # serf runs its own events too
        return HandlerEvent("user", ev.name, ev.payload, {
            "COLONY_USER_EVENT": ev.name, "COLONY_USER_LTIME": str(ev.lamport),
            "COLONY_USER_SENDER": str(ev.sender),
            "SERF_USER_EVENT": ev.name, "SERF_USER_LTIME": str(ev.lamport),
        })
    kind = MEMBER_KINDS.get(type(ev))
    if kind is None:
        return None
    peer: PeerId = ev.peer  # type: ignore[attr-defined]  # every MEMBER_KINDS event has one
    addrs: tuple[str, ...] = getattr(ev, "addrs", ())
    incarnation: int = getattr(ev, "incarnation", 0)
    if not addrs and membership is not None:
        info = membership.member(peer)
        addrs = info.addrs if info is not None else ()
    line = f"{peer}\t{','.join(addrs)}\t{incarnation}\n"
    return HandlerEvent(kind, "", line.encode(), {"COLONY_MEMBER_ID": str(peer)})


@dataclass
class HandlerStats:
    ran: int = 0
    failed: int = 0
    timed_out: int = 0
    queue_full: int = 0
    topic_refused: int = 0


@dataclass
class _Handler:
    spec: HandlerSpec
    send: trio.MemorySendChannel[HandlerEvent]
    recv: trio.MemoryReceiveChannel[HandlerEvent]
    busy: bool = field(default=False)


class EventHandlers:
    """Runs `[handlers] scripts` on node events; never blocks the caller of `on_event`."""

    def __init__(self, specs: Iterable[HandlerSpec], *, home: Path, self_id: PeerId,
                 api: str = "", timeout_s: float = 60.0, queue: int = 256,
                 membership: Membership | None = None) -> None:
        self.home = home
        self.timeout_s = timeout_s
        self.membership = membership
        self.stats = HandlerStats()
        self._base_env = {
            "COLONY_SELF_ID": str(self_id), "COLONY_HOME": str(home), "COLONY_API": api,
            "SERF_SELF_NAME": str(self_id),
        }
        #: Where `topic:NAME` handlers get their messages (the daemon sets it).
        self.topics: TopicFeed | None = None
        self._handlers: list[_Handler] = []
        for spec in specs:
            send, recv = trio.open_memory_channel[HandlerEvent](max(1, queue))
            self._handlers.append(_Handler(spec, send, recv))

    @classmethod
    def from_config(cls, section: Mapping[str, object], **kw: object) -> EventHandlers:
        """Build from `[handlers]`; ConfigError for an entry that does not parse."""
        scripts = section.get("scripts", [])
        assert isinstance(scripts, list)
        timeout, queue = section.get("timeout_s", 60), section.get("queue", 256)
        assert isinstance(timeout, int | float) and isinstance(queue, int)
        if timeout <= 0 or queue <= 0:
            raise ConfigError("[handlers] timeout_s and queue must be positive")
        specs = [HandlerSpec.parse(str(s)) for s in scripts]
        return cls(specs, timeout_s=float(timeout), queue=queue, **kw)  # type: ignore[arg-type]

    def __bool__(self) -> bool:
        return bool(self._handlers)

    def set_api(self, api: str) -> None:
        """The control API's address, known once it listens (`COLONY_API`)."""
        self._base_env["COLONY_API"] = api

    def on_event(self, ev: object) -> None:
        """EventBus subscriber: queue `ev` for every handler it matches."""
        if not self._handlers:
            return
        hev = describe(ev, self.membership)
        if hev is None:
            return
        for h in self._handlers:
            if h.spec.matches(hev):
                try:
                    h.send.send_nowait(hev)
                except trio.WouldBlock:
                    self.stats.queue_full += 1
                    log.warning("handler_queue_full", command=h.spec.command, kind=hev.kind)

    async def run(self) -> None:
        """One worker per handler, one follower per topic handled, until cancelled."""
        async with trio.open_nursery() as n:
            for h in self._handlers:
                n.start_soon(self._worker, h)
            for name in sorted(frozenset().union(*(h.spec.topics for h in self._handlers))):
                n.start_soon(self._follow_topic, name)

    async def _follow_topic(self, name: str) -> None:
        if self.topics is None:
            self.stats.topic_refused += 1
            log.warning("handler_topic_refused", topic=name, error="no topic service")
            return
        try:
            async with self.topics.subscription(name) as rx:
                async for msg in rx:
                    self.on_event(msg)
        except ColonyError as e:
            self.stats.topic_refused += 1
            log.warning("handler_topic_refused", topic=name, error=str(e))

    async def _worker(self, h: _Handler) -> None:
        async for hev in h.recv:
            h.busy = True
            try:
                await self.run_one(h.spec, hev)
            finally:
                h.busy = False

    async def run_one(self, spec: HandlerSpec, hev: HandlerEvent) -> int | None:
        """Run `spec` for `hev`; its exit status, or None if it timed out or can't start."""
        env = dict(os.environ)
        env.update(self._base_env)
        env.update({"COLONY_EVENT": hev.kind, "SERF_EVENT": hev.kind}, **hev.env)
        try:
            proc = await trio.lowlevel.open_process(
                ["/bin/sh", "-c", spec.command], cwd=str(self.home), env=env,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                start_new_session=True)  # fmt: skip
        except OSError as e:
            self.stats.failed += 1
            log.warning("handler_cannot_start", command=spec.command, error=str(e))
            return None
        output = bytearray()
        drained = trio.Event()
        with trio.move_on_after(self.timeout_s) as timer:
            async with trio.open_nursery() as n:
                n.start_soon(_feed, proc, hev.stdin)
                n.start_soon(_collect, proc, output, drained)
                await proc.wait()
                # A child it left running may hold the pipe open: read what is there, go on.
                with trio.move_on_after(0.5):
                    await drained.wait()
                n.cancel_scope.cancel()
        if timer.cancelled_caught:
            with trio.CancelScope(shield=True):
                await _terminate(proc)
            self.stats.timed_out += 1
            log.warning("handler_timed_out", command=spec.command, kind=hev.kind,
                        timeout_s=self.timeout_s, output=_tail(output))
            return None
        _killpg(proc.pid, signal.SIGKILL)  # whatever it left behind in its group
        rc = proc.returncode
        assert rc is not None
        self.stats.ran += 1
        if rc != 0:
            self.stats.failed += 1
            log.warning("handler_failed", command=spec.command, kind=hev.kind, status=rc,
                        output=_tail(output))
        else:
            log.info("handler_ran", command=spec.command, kind=hev.kind, name=hev.name,
                     output=_tail(output))
        return rc


async def _feed(proc: trio.Process, data: bytes) -> None:
    assert proc.stdin is not None
    try:
        # A script that does not read its stdin closes it: that is fine.
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            if data:
                await proc.stdin.send_all(data)
    finally:
        await proc.stdin.aclose()


async def _collect(proc: trio.Process, out: bytearray, drained: trio.Event) -> None:
    """Keep the last OUTPUT_TAIL bytes; read everything so the script never blocks."""
    assert proc.stdout is not None
    async for chunk in proc.stdout:
        out += chunk
        if len(out) > 2 * OUTPUT_TAIL:
            del out[:-OUTPUT_TAIL]
    drained.set()


def _tail(out: bytearray) -> str:
    return bytes(out[-OUTPUT_TAIL:]).decode(errors="replace").strip()


def _killpg(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is gone
        os.killpg(pid, sig)


async def _terminate(proc: trio.Process) -> None:
    _killpg(proc.pid, signal.SIGTERM)
    with trio.move_on_after(KILL_GRACE_S):
        await proc.wait()
    _killpg(proc.pid, signal.SIGKILL)
    await proc.wait()
