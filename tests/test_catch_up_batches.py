"""Catch-up in slices (``send_many``), reads started ahead, and the frames
the WebSocket protocol writes for a slice (issue 18: replay rate)."""

from __future__ import annotations

import json
from typing import Any

from autobahn.exception import PayloadExceededError
from autobahn.twisted.websocket import WebSocketServerFactory
from twisted.internet.defer import Deferred
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from spinrt.sessions import session as session_module
from spinrt.sessions import subscription as subscription_module
from spinrt.web.ws import SpinServerProtocol
from tests.test_session_unit import FakeStore, make_session


class LaterStore(FakeStore):
    """Reads answer when the test says so (as the store thread does)."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[tuple[Deferred, str, int]] = []

    def read_events(self, sid: str, after: int, limit: int = 1000, max_bytes: int = 0) -> Deferred:
        self.reads += 1
        d: Deferred = Deferred()
        self.pending.append((d, sid, after))
        return d

    def answer(self, limit: int = 7) -> int:
        """Answer the reads waiting now from what is flushed at this moment."""
        waiting, self.pending = self.pending, []
        for d, sid, after in waiting:
            flushed = self.flushed.get(sid, 0)
            d.callback([(s, b) for s, b in sorted(self.events.get(sid, {}).items()) if after < s <= flushed][:limit])
        return len(waiting)


class SliceSink:
    """Takes slices; becomes unwritable after `room` bytes until the test refills it."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.frames: list[dict[str, Any]] = []
        self.slices: list[int] = []
        self.sent_bytes = 0

    @property
    def writable(self) -> bool:
        return self.sent_bytes < self.room

    def send(self, frame: bytes) -> None:
        assert self.writable, "sent to a full socket"
        self.frames.append(json.loads(frame))
        self.sent_bytes += len(frame)

    def send_many(self, frames: list[bytes], last_seq: int) -> None:
        assert self.writable, "sent to a full socket"
        self.slices.append(sum(len(f) for f in frames))
        for frame in frames:
            self.frames.append(json.loads(frame))
            self.sent_bytes += len(frame)
        assert self.frames[-1]["seq"] == last_seq

    def seqs(self) -> list[int]:
        return [f["seq"] for f in self.frames]


def stored_session(store: FakeStore, events: int, text: int = 50) -> Any:
    """A session whose `events` events are all in the store, none in memory."""
    session = make_session(store)
    old = session_module.TAIL_BYTES
    session_module.TAIL_BYTES = 1
    try:
        for _ in range(events):
            session.emit("stream", run="r", name="stdout", text="x" * text)
        store.flush()
        session.trim_tail()
    finally:
        session_module.TAIL_BYTES = old
    assert session.tail_from(1) is None
    return session


class SliceTests(unittest.TestCase):
    def setUp(self) -> None:
        self.patch(subscription_module, "SEND_SLICE_BYTES", 500)

    def test_replay_from_the_store_in_slices_exactly_once(self) -> None:
        store = LaterStore()
        session = stored_session(store, 60)
        sink = SliceSink(room=10**9)
        session.subscribe(sink, 0)
        # Each answer gives 7 rows; the next read is already waiting for it.
        rounds = 0
        while store.pending:
            self.assertLessEqual(len(store.pending), 1)
            store.answer()
            rounds += 1
        self.assertEqual(sink.seqs(), list(range(1, 61)))
        self.assertEqual(rounds, 9)  # ceil(60 / 7): no read was made twice
        frame = len(json.dumps(sink.frames[0]))
        self.assertTrue(all(size < 500 + frame + 10 for size in sink.slices), sink.slices)

    def test_a_full_socket_keeps_the_rest_and_resumes_where_it_stopped(self) -> None:
        store = LaterStore()
        session = stored_session(store, 60)
        sink = SliceSink(room=700)
        sub = session.subscribe(sink, 0)
        store.answer(limit=100)  # one read holds all 60
        stopped_at = len(sink.frames)
        self.assertTrue(0 < stopped_at < 60, stopped_at)
        self.assertEqual(store.pending, [])  # nothing more to read ahead
        while len(sink.frames) < 60:
            sink.room += 700
            sub.pump()
            self.assertEqual(store.pending, [])  # the kept rest, not a new read
        self.assertEqual(sink.seqs(), list(range(1, 61)))
        sink.room = 10**9
        sub.pump()
        self.assertTrue(sub.live)
        session.emit("ping")
        self.assertEqual(sink.seqs()[-1], 61)

    def test_a_read_ahead_that_ran_before_a_commit_is_read_again(self) -> None:
        store = LaterStore()
        session = stored_session(store, 10)
        old = session_module.TAIL_BYTES
        self.patch(session_module, "TAIL_BYTES", 1)
        for _ in range(10):  # 11-20: in memory only, not yet flushed
            session.emit("stream", run="r", name="stdout", text="y")
        sink = SliceSink(room=10**9)
        sub = session.subscribe(sink, 0)
        self.assertEqual(store.answer(), 1)  # 1-7; the read ahead of 8-10 is waiting
        self.assertEqual(sink.seqs(), list(range(1, 8)))
        store.answer(limit=2)  # the read ahead comes back short: 8-9
        self.assertEqual(sink.seqs(), list(range(1, 10)))
        # 10 is in the store but the tail now starts at 11 and the read
        # ahead of 10 ran before 11-20 were committed: committing them and
        # dropping them from memory must not lose 11-20.
        store.answer(limit=0)  # empty: read again
        store.flush()
        session.trim_tail()
        session_module.TAIL_BYTES = old
        while store.pending:
            store.answer()
        self.assertEqual(sink.seqs(), list(range(1, 21)))
        self.assertTrue(sub.live)

    def test_rows_missing_from_the_store_are_skipped_once(self) -> None:
        store = LaterStore()
        session = stored_session(store, 30)
        for seq in range(10, 15):
            del store.events[session.id][seq]
        sink = SliceSink(room=10**9)
        session.subscribe(sink, 0)
        while store.pending:
            store.answer()
        self.assertEqual(sink.seqs(), list(range(1, 10)) + list(range(15, 31)))

    def test_closing_drops_a_read_in_flight(self) -> None:
        store = LaterStore()
        session = stored_session(store, 30)
        sink = SliceSink(room=10**9)
        sub = session.subscribe(sink, 0)
        store.answer()
        self.assertEqual(len(store.pending), 1)
        sub.close()
        d = store.pending[0][0]
        store.pending = []
        d.errback(RuntimeError("store gone"))  # no unhandled error is left behind
        self.assertEqual(sink.seqs(), list(range(1, 8)))
        self.assertNotIn(sub, session.subscribers)


class FramesTests(unittest.TestCase):
    def protocol(self, **options: Any) -> tuple[SpinServerProtocol, StringTransport]:
        factory = WebSocketServerFactory()
        factory.protocol = SpinServerProtocol
        factory.setProtocolOptions(openHandshakeTimeout=0, **options)  # no timer left behind
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.state = protocol.STATE_OPEN
        protocol.websocket_version = 13
        transport.clear()
        return protocol, transport

    def test_one_write_holds_what_send_message_writes_for_each(self) -> None:
        frames = [b"a" * n for n in (0, 1, 125, 126, 127, 65535, 65536, 70000)]
        protocol, transport = self.protocol()
        for frame in frames:
            protocol.sendMessage(frame)
        expected = transport.value()
        transport.clear()
        protocol._send_frames(frames)
        self.assertEqual(transport.value(), expected)
        self.assertEqual(transport.value()[:4], b"\x81\x00\x81\x01")

    def test_a_message_over_the_incoming_limit_is_still_sent_whole(self) -> None:
        """--max-message-size limits what comes in: an event made from a
        request under it may be over it by its envelope, and goes out."""
        protocol, transport = self.protocol(maxMessagePayloadSize=1000)
        protocol._send_frames([b"x", b"y" * 1001, b"z"])
        self.assertEqual(transport.value(), b"\x81\x01x" + b"\x81\x7e\x03\xe9" + b"y" * 1001 + b"\x81\x01z")
        with self.assertRaises(PayloadExceededError):  # Autobahn's own path would refuse it
            protocol.sendMessage(b"y" * 1001)

    def test_compression_goes_through_send_message(self) -> None:
        protocol, transport = self.protocol()
        sent: list[bytes] = []
        protocol.sendMessage = lambda payload, isBinary=False: sent.append(payload)  # type: ignore[method-assign]
        protocol._perMessageCompress = object()
        protocol._send_frames([b"a", b"b"])
        self.assertEqual(sent, [b"a", b"b"])
        self.assertEqual(transport.value(), b"")
