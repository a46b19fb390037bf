"""The fast reading of clients' text frames (spinrt.web.wsframes): what it
takes, what it leaves to Autobahn, and the runtime answering the same over a
raw TCP connection whichever path a frame takes (RFC 6455); and frames
written at once (ws._write_now) arriving whole and in order however full
the socket is."""

from __future__ import annotations

import base64
import json
import os
import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.trial import unittest

from spinrt.web import ws
from spinrt.web.wsframes import take_messages, unmask

from .support import TOKEN, sleep, start_runtime

KEY = b"\x37\xfa\x21\x3d"


def frame(payload: bytes, *, fin: bool = True, opcode: int = 1, rsv: int = 0, key: bytes | None = KEY,
          length_bytes: int | None = None) -> bytes:
    """A frame as RFC 6455 section 5.2 lays it out; ``length_bytes`` forces
    the 16-bit (2) or 64-bit (8) length form even where a shorter one fits."""
    first = (0x80 if fin else 0) | rsv << 4 | opcode
    n = len(payload)
    masked = 0x80 if key is not None else 0
    if length_bytes is None:
        length_bytes = 0 if n <= 125 else 2 if n <= 0xFFFF else 8
    if length_bytes == 0:
        head = bytes([first, masked | n])
    elif length_bytes == 2:
        head = bytes([first, masked | 126]) + struct.pack("!H", n)
    else:
        head = bytes([first, masked | 127]) + struct.pack("!Q", n)
    if key is None:
        return head + payload
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class Unmask(unittest.TestCase):
    @given(st.binary(max_size=300), st.binary(min_size=4, max_size=4))
    @settings(max_examples=200, deadline=None)
    def test_is_the_xor_of_the_repeated_key(self, payload: bytes, key: bytes) -> None:
        expected = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        self.assertEqual(unmask(payload, key), expected)
        self.assertEqual(unmask(expected, key), payload)


class TakeMessages(unittest.TestCase):
    def test_whole_text_frames_of_every_length_form(self) -> None:
        payloads = [b"", b'{"id":1,"op":"ping"}', "\u00e9t\u00e9 \u2603 \U0001f600".encode(), b"x" * 126,
                    b"y" * 65535, b"z" * 65536]
        data = b"".join(frame(p) for p in payloads)
        taken = take_messages(data)
        self.assertEqual([p for p, _ in taken], payloads)
        self.assertEqual(taken[-1][1], len(data))
        ends = [end for _, end in taken]
        self.assertEqual(ends, sorted(ends))

    def test_stops_at_the_first_frame_it_does_not_take(self) -> None:
        good = frame(b'{"id":1,"op":"ping"}')
        others = {
            "fragment": frame(b"part", fin=False),
            "continuation": frame(b"part", opcode=0),
            "binary": frame(b"\x00\x01", opcode=2),
            "ping": frame(b"", opcode=9),
            "close": frame(struct.pack("!H", 1000), opcode=8),
            "compressed": frame(b"abc", rsv=4),
            "unmasked": frame(b"abc", key=None),
            "16-bit length under 126": frame(b"abc", length_bytes=2),
            "64-bit length under 65536": frame(b"abc", length_bytes=8),
            "invalid UTF-8": frame(b"\xff\xfe"),
            "a lone surrogate": frame(b"\xed\xa0\x80"),
            "cut UTF-8": frame("\u2603".encode()[:2]),
            "over the limit": frame(b"x" * 101),
            "header cut short": frame(b"x" * 200)[:3],
            "payload cut short": frame(b"abc")[:-1],
        }
        for name, other in others.items():
            taken = take_messages(good + other + good, limit=100)
            self.assertEqual(taken, [(b'{"id":1,"op":"ping"}', len(good))], name)
            self.assertEqual(take_messages(other, limit=100), [], name)

    def test_a_64_bit_length_with_its_top_bit_set_is_not_taken(self) -> None:
        data = bytes([0x81, 0x80 | 127]) + struct.pack("!Q", 1 << 63) + KEY
        self.assertEqual(take_messages(data), [])

    def test_the_limit_is_inclusive_and_zero_means_none(self) -> None:
        self.assertEqual(len(take_messages(frame(b"x" * 100), limit=100)), 1)
        self.assertEqual(len(take_messages(frame(b"x" * 70000), limit=0)), 1)


class _Raw(Protocol):
    """A WebSocket client at the byte level: the handshake, then whatever
    bytes the test writes; collects the server's text messages and its close
    code."""

    def __init__(self) -> None:
        self.buffer = b""
        self.open = False
        self.opened: defer.Deferred[None] = defer.Deferred()
        self.messages: list[dict] = []
        self.opcodes: list[int] = []  # of every frame, in order
        self.close_code: int | None = None
        self.lost: defer.Deferred[None] = defer.Deferred()
        self._waiting: tuple[int, defer.Deferred[None]] | None = None

    def connectionMade(self) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write(("GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                              f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                              "Sec-WebSocket-Protocol: spin.v1\r\n"
                              f"Authorization: Bearer {TOKEN}\r\n\r\n").encode())

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if not self.open:
            if b"\r\n\r\n" not in self.buffer:
                return
            head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            assert head.startswith(b"HTTP/1.1 101"), head
            self.open = True
            self.opened.callback(None)
        while len(self.buffer) >= 2:
            opcode, n, at = self.buffer[0] & 0x0F, self.buffer[1] & 0x7F, 2
            if n == 126:
                n, at = struct.unpack("!H", self.buffer[2:4])[0], 4
            elif n == 127:
                n, at = struct.unpack("!Q", self.buffer[2:10])[0], 10
            if len(self.buffer) < at + n:
                return
            payload, self.buffer = self.buffer[at:at + n], self.buffer[at + n:]
            self.opcodes.append(opcode)
            if opcode == 1:
                self.messages.append(json.loads(payload))
            elif opcode == 8:
                self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
        if self._waiting is not None and len(self.messages) >= self._waiting[0]:
            self._waiting, d = None, self._waiting[1]
            d.callback(None)

    def connectionLost(self, reason: object) -> None:
        self.lost.callback(None)

    def replies(self, count: int) -> defer.Deferred[None]:
        """Fires once ``count`` messages other than the welcome have come."""
        d: defer.Deferred[None] = defer.Deferred()
        self._waiting = (count + 1, d)
        self.dataReceived(b"")
        return d.addTimeout(10, reactor)

    def answers(self) -> list[int]:
        return [m["re"] for m in self.messages if "re" in m]


def ping(rid: int) -> bytes:
    return json.dumps({"id": rid, "op": "ping"}).encode()


class RawClientTest(unittest.TestCase):
    timeout = 60
    runtime_args: tuple[str, ...] = ()

    async def setUp(self) -> None:
        self.service = await start_runtime(self, *self.runtime_args)
        self.port = self.service.addresses[0]["port"]

    async def connect(self) -> _Raw:
        factory = Factory.forProtocol(_Raw)
        raw = await TCP4ClientEndpoint(reactor, "127.0.0.1", self.port).connect(factory)
        self.addCleanup(lambda: raw.transport.abortConnection() if not raw.lost.called else None)
        await raw.opened
        return raw

    async def request(self, raw: _Raw, rid: int, op: str, **params: object) -> dict:
        raw.transport.write(frame(json.dumps({"id": rid, "op": op, **params}).encode()))
        while not any(m.get("re") == rid for m in raw.messages):
            await sleep(0.01)
        return next(m for m in raw.messages if m.get("re") == rid)


class OverTheWire(RawClientTest):
    runtime_args = ("--max-message-size", "4096")

    async def test_several_messages_in_one_write_are_all_answered_in_order(self) -> None:
        raw = await self.connect()
        raw.transport.write(b"".join(frame(ping(i)) for i in range(1, 6)))
        await raw.replies(5)
        self.assertEqual(raw.answers(), [1, 2, 3, 4, 5])

    async def test_a_message_cut_anywhere_or_in_fragments_is_answered(self) -> None:
        raw = await self.connect()
        one = frame(ping(1))
        for byte in one:  # a byte per write: Autobahn's parser reassembles it
            raw.transport.write(bytes([byte]))
            await defer.succeed(None)
        await raw.replies(1)
        body = ping(2)
        raw.transport.write(frame(body[:5], fin=False) + frame(body[5:], opcode=0) + frame(ping(3)))
        await raw.replies(3)
        # A ping between two requests is answered (pong) and changes nothing.
        raw.transport.write(frame(ping(4)) + frame(b"hi", opcode=9) + frame(ping(5)))
        await raw.replies(5)
        self.assertEqual(raw.answers(), [1, 2, 3, 4, 5])

    async def test_invalid_utf8_after_a_good_message_closes_1007(self) -> None:
        raw = await self.connect()
        raw.transport.write(frame(ping(1)) + frame(b'{"id":2,"op":"ping","x":"\xff"}'))
        await raw.lost
        self.assertEqual(raw.answers(), [1])
        self.assertEqual(raw.close_code, 1007)
        await sleep(1.5)  # Autobahn's own timer of that close (a batched one, not cancelled) runs out

    async def test_an_unmasked_frame_closes_1002(self) -> None:
        raw = await self.connect()
        raw.transport.write(frame(ping(1)) + frame(ping(2), key=None))
        await raw.lost
        self.assertEqual(raw.answers(), [1])
        self.assertEqual(raw.close_code, 1002)

    async def test_an_oversized_message_closes_1009(self) -> None:
        raw = await self.connect()
        raw.transport.write(frame(ping(1)) + frame(b" " * 5000 + ping(2)))
        await raw.lost
        self.assertEqual(raw.answers(), [1])
        self.assertEqual(raw.close_code, 1009)


    async def test_an_event_over_the_size_limit_is_sent_whole(self) -> None:
        """run.queued repeats the cell's source: a source just under the
        request limit makes an event over it. The limit is on what comes in:
        the event goes out whole, the run runs, and the next request in the
        same read is answered on the same connection."""
        raw = await self.connect()
        sid = (await self.request(raw, 1, "session.create"))["session"]["id"]
        source = "true " + "#" * 3985
        request = frame(json.dumps({"id": 2, "op": "cell.run", "session": sid,
                                    "cell": {"type": "shell", "source": source}}).encode())
        self.assertLessEqual(len(request) - 8, 4096)  # its payload: under the limit
        raw.transport.write(request + frame(ping(3)))
        while not any(m.get("event") == "run.finished" for m in raw.messages):
            self.assertFalse(raw.lost.called)
            await sleep(0.02)
        queued = next(m for m in raw.messages if m.get("event") == "run.queued")
        self.assertEqual(queued["source"], source)
        self.assertGreater(len(json.dumps(queued, separators=(",", ":"))), 4096)
        self.assertEqual(raw.answers(), [1, 2, 3])
        self.assertEqual(next(m for m in raw.messages if m.get("event") == "run.finished")["status"], "ok")
        self.assertIsNone(raw.close_code)


class WrittenAtOnce(RawClientTest):
    async def test_a_reply_and_the_events_it_causes_leave_in_one_write(self) -> None:
        """cell.run's reply, run.queued and run.started go to the socket in
        one write (the client wakes once for them), in log order, and
        run.finished later in its own."""
        writes: list[bytes] = []
        real = ws._write_now

        def recording(transport: object, data: bytes) -> None:
            writes.append(data)
            real(transport, data)

        self.patch(ws, "_write_now", recording)
        raw = await self.connect()
        sid = (await self.request(raw, 1, "session.create"))["session"]["id"]
        await self.request(raw, 2, "cell.run", session=sid, cell={"type": "shell", "source": "sleep 0.3"})
        while not any(m.get("event") == "run.finished" for m in raw.messages):
            await sleep(0.02)
        ours = [w for w in writes if b'"re":2' in w or b'"event":"run.' in w]
        self.assertEqual(len(ours), 2, ours)
        first = ours[0]
        self.assertLess(first.index(b'"event":"run.queued"'), first.index(b'"event":"run.started"'))
        self.assertIn(b'"re":2', first)
        self.assertIn(b'"event":"run.finished"', ours[1])

    async def test_a_frame_autobahn_writes_goes_after_the_replies_held_before_it(self) -> None:
        """A ping written by Autobahn itself while a read's replies are held
        (here: right after each request is handled) comes after them."""
        real = ws.SpinServerProtocol.onMessage

        def then_ping(protocol: ws.SpinServerProtocol, payload: bytes, is_binary: bool) -> None:
            real(protocol, payload, is_binary)
            protocol.sendPing(b"p")

        self.patch(ws.SpinServerProtocol, "onMessage", then_ping)
        raw = await self.connect()
        raw.transport.write(frame(ping(1)) + frame(ping(2)))
        await raw.replies(2)
        while raw.opcodes.count(9) < 2:
            await sleep(0.01)
        self.assertEqual(raw.opcodes[1:], [1, 9, 1, 9])  # after the welcome: reply, ping, reply, ping
        self.assertEqual(raw.answers(), [1, 2])

    async def test_a_catch_up_from_memory_is_written_in_pieces(self) -> None:
        """An attach that replays a session's tail from memory during the
        read holds at most CORK_BYTES before writing, so the transport's
        backpressure sees the writes as they happen."""
        writer = await self.connect()
        sid = (await self.request(writer, 1, "session.create"))["session"]["id"]
        await self.request(writer, 2, "cell.run", session=sid, cell={
            "type": "shell", "source": "for i in $(seq 1 40); do head -c 50000 /dev/zero | tr '\\0' a; echo; done"})
        while not any(m.get("event") == "run.finished" for m in writer.messages):
            await sleep(0.05)
        writes: list[int] = []
        real = ws._write_now
        self.patch(ws, "_write_now", lambda transport, data: (writes.append(len(data)), real(transport, data)))
        late = await self.connect()
        await self.request(late, 1, "session.attach", session=sid, since=0)
        while not any(m.get("event") == "run.finished" for m in late.messages):
            await sleep(0.05)
        text = "".join(m["text"] for m in late.messages if m.get("event") == "stream")
        self.assertEqual(text, ("a" * 50000 + "\n") * 40)
        self.assertGreater(sum(m.get("event") == "stream" for m in late.messages), 5)
        # Each write: what was held (at most CORK_BYTES) and one slice of
        # events; the whole 2 MB tail in one write without the bound.
        self.assertGreater(len(writes), 10)
        self.assertLess(max(writes), 256 * 1024, writes)

    async def test_a_client_that_stops_reading_gets_every_event_in_order(self) -> None:
        """Events are written straight to the socket while it takes them and
        go through Twisted's buffer once it is full: a client that stops
        reading in the middle of 8 MB of output, then reads on, gets every
        event once, in seq order, each frame whole."""
        raw = await self.connect()
        sid = (await self.request(raw, 1, "session.create"))["session"]["id"]
        raw.transport.pauseProducing()  # the runtime's writes soon find the socket full
        raw.transport.write(frame(json.dumps({"id": 2, "op": "cell.run", "session": sid, "cell": {
            "type": "shell", "source": "for i in $(seq 1 80); do head -c 100000 /dev/zero | tr '\\0' a; echo; done; echo end"}}).encode()))
        await sleep(1.5)
        raw.transport.resumeProducing()
        deadline = reactor.seconds() + 60
        while not any(m.get("event") == "run.finished" for m in raw.messages):
            self.assertLess(reactor.seconds(), deadline)
            await sleep(0.05)
        events = [m for m in raw.messages if m.get("session") == sid and "seq" in m]
        self.assertEqual([m["seq"] for m in events], list(range(events[0]["seq"], events[-1]["seq"] + 1)))
        text = "".join(m["text"] for m in events if m["event"] == "stream")
        self.assertEqual(text, ("a" * 100000 + "\n") * 80 + "end\n")
        self.assertEqual(events[-1]["status"], "ok")
