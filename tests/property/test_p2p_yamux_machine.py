"""Two Yamux sessions driven by random application actions (hypothesis state
machine, no sockets): between two correct peers no MuxerError ever happens, every
byte arrives in order on its stream, nothing is received past the window granted,
and a reset or closed stream takes no more data."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from overlay.p2p import yamux


class YamuxPair(RuleBasedStateMachine):
    @initialize()
    def setup(self) -> None:
        self.sides = {"c": yamux.Session(client=True, max_window=1 << 20),
                      "s": yamux.Session(client=False, max_window=1 << 20)}
        self.sent: dict[tuple[str, int], bytearray] = {}  # (sender, sid) -> bytes
        self.got: dict[tuple[str, int], bytearray] = {}  # bytes seen by the receiver
        self.unread: dict[tuple[str, int], int] = {}  # received, not yet consumed
        self.open: list[tuple[str, int]] = []  # (opener, sid) usable for sending
        self.reset: set[int] = set()

    def _other(self, side: str) -> str:
        return "s" if side == "c" else "c"

    @rule(side=st.sampled_from(["c", "s"]))
    def open_stream(self, side: str) -> None:
        sid = self.sides[side].open_stream()
        self.open.append((side, sid))
        self.sent[(side, sid)] = bytearray()
        self.got[(side, sid)] = bytearray()

    @precondition(lambda self: self.open)
    @rule(i=st.integers(0, 100), size=st.integers(0, 300_000), from_opener=st.booleans())
    def send(self, i: int, size: int, from_opener: bool) -> None:
        opener, sid = self.open[i % len(self.open)]
        side = opener if from_opener else self._other(opener)
        sess = self.sides[side]
        if sid not in sess._streams or not sess.is_open(sid):
            return  # the peer has not seen the SYN yet, or this side closed
        data = bytes([sid % 251]) * size
        n = sess.send(sid, data)
        assert n <= size
        self.sent.setdefault((side, sid), bytearray()).extend(data[:n])

    @rule(side=st.sampled_from(["c", "s"]))
    def pump(self, side: str) -> None:
        dst = self._other(side)
        wire = b"".join(bytes(p) for p in self.sides[side].take_outbound())
        for ev in self.sides[dst].receive_data(wire):  # never raises between peers
            if isinstance(ev, yamux.DataReceived):
                key = (side, ev.sid)
                self.got.setdefault(key, bytearray()).extend(ev.data)
                self.unread[key] = self.unread.get(key, 0) + len(ev.data)

    @precondition(lambda self: self.unread)
    @rule(i=st.integers(0, 100), frac=st.floats(0, 1))
    def consume(self, i: int, frac: float) -> None:
        keys = sorted(self.unread)
        sender, sid = keys[i % len(keys)]
        n = int(self.unread[(sender, sid)] * frac)
        self.unread[(sender, sid)] -= n
        self.sides[self._other(sender)].consumed(sid, n)

    @precondition(lambda self: self.open)
    @rule(i=st.integers(0, 100), reset=st.booleans())
    def end(self, i: int, reset: bool) -> None:
        opener, sid = self.open.pop(i % len(self.open))
        if reset:
            self.sides[opener].reset_stream(sid)
            self.reset.add(sid)
        else:
            self.sides[opener].close_stream(sid)

    @invariant()
    def bytes_arrive_in_order(self) -> None:
        for key, got in self.got.items():
            sent = self.sent.get(key, bytearray())
            if key[1] not in self.reset:
                assert sent[: len(got)] == got

    @invariant()
    def nothing_past_the_window(self) -> None:
        assert all(n <= 1 << 20 for n in self.unread.values())


YamuxPair.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
test_yamux_pair = YamuxPair.TestCase
