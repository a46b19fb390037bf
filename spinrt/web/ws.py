"""The Autobahn WebSocket face: the token and origin check, frames in, frames out.

Backpressure: the protocol registers itself as the transport's push
producer. When the socket's buffer fills, the connection stops taking live
events (its subscriptions fall back to reading the log later) and stops
reading requests, so neither a slow reader nor a request flood grows memory.
"""

from __future__ import annotations

import struct
import time
from typing import Any, Sequence

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet import tcp
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from .. import protocol as proto
from ..sessions.manager import SessionManager
from ..tokens import Identity, TokenRegistry
from .auth import OriginPolicy, find_token
from .ops import ClientConnection
from .proxies import IPNetwork, TrustedProxies
from .throttle import Gate
from .ws_upgrade import Handshake, peer_host
from .wsframes import take_messages

_log = Logger()


def _write_now(transport: Any, data: bytes) -> None:
    """``transport.write(data)``, sent at once when the connection has
    nothing else waiting to go: Twisted would send it on the reactor's next
    turn, and a client waiting for one event (a cell's run.finished) would
    wait that turn too. A TCP connection only (TLS has its own buffers);
    what the socket does not take, or an error, is left to Twisted, in
    order, as any other write."""
    if (type(transport) is tcp.Server and transport.connected and not transport._writeDisconnected
            and not transport._tempDataBuffer and transport.offset == len(transport.dataBuffer)):
        try:
            sent = transport.socket.send(data)
        except OSError:  # would block, or a broken connection Twisted reports on its own write
            sent = 0
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)


class SpinServerProtocol(WebSocketServerProtocol):
    factory: "SpinWebSocketFactory"
    connection: ClientConnection | None = None
    handshake: Handshake | None = None
    identity: Identity | None = None  # who the accepted token is
    client_address = ""
    _expiry: Any = None
    _refusal_headers: Sequence[tuple[str, str]] = ()
    # Frames held while the requests of one read are handled (dataReceived):
    # the reply and the events a request causes (a run's queued and started)
    # leave in one write, so the client wakes once for them, not once each.
    # At most CORK_BYTES are held: past that they are written at once, so a
    # catch-up from memory meets the transport's backpressure as before.
    _corked: list[bytes] | None = None
    _corked_bytes = 0

    def onConnect(self, request: Any) -> str | None | Deferred[str | None]:
        factory = self.factory
        handshake = self.handshake
        if handshake is None:  # not through SpinWebSocketResource: no proxies, no own origin
            origins = tuple(v for k, v in request.headers.items() if k in ("origin", "sec-websocket-origin"))
            handshake = Handshake(peer_host(request.peer), peer_host(request.peer), origins, frozenset())
        if not factory.origins.allows(handshake.origins, handshake.own):
            self._refused(handshake, "origin not allowed")
            raise ConnectionDeny(403, "origin not allowed")
        token = find_token(request.headers, request.protocols, request.params)
        self.client_address = handshake.client
        verdict = factory.gate.check(handshake.client, token, "/ws")
        self.identity = verdict.identity
        if not verdict.accepted:
            if verdict.retry_after:
                self._refused(handshake, "throttled")
                self._refusal_headers = [("Retry-After", str(verdict.retry_after))]
                deny = ConnectionDeny(429, f"too many failed attempts; retry in {verdict.retry_after} s")
            else:
                self._refused(handshake, "no token" if token is None else "wrong token")
                deny = ConnectionDeny(401, "missing or wrong token")
            if verdict.answer is None:
                raise deny

            def refuse(_: None) -> None:
                raise deny

            return verdict.answer.addCallback(refuse)
        # Echo spin.v1 when offered; never a spin.token.* entry.
        return proto.SUBPROTOCOL if proto.SUBPROTOCOL in request.protocols else None

    def _refused(self, handshake: Handshake, why: str) -> None:
        via = f" via {handshake.peer}" if handshake.peer != handshake.client else ""
        _log.info("refused a WebSocket from {peer}{via}: {why}", peer=handshake.client, via=via, why=why)

    def failHandshake(self, reason: str, code: int = 400, responseHeaders: Any = None) -> None:
        headers = [("Server", "spinrt"), *(responseHeaders or ()), *self._refusal_headers]
        super().failHandshake(reason, code, headers)

    def onOpen(self) -> None:
        factory = self.factory
        self.connection = ClientConnection(
            factory.manager, self._send_frame, factory.runtime_info, self.identity,
            address=self.client_address, audit=factory.audit, tokens=factory.tokens,
            send_many=self._send_frames,
        )
        who = self.connection.who
        if factory.audit is not None:
            factory.audit.record("connect", identity=who, client=self.client_address, target={"route": "/ws"})
        if who.expires is not None:
            # An expired token is refused like a wrong one: the connection it opened ends then too.
            delay = max(0.0, who.expires - time.time())
            self._expiry = factory.clock.callLater(delay, self.end, 4401, "token expired")
        # Autobahn drops an outgoing message over this size: replies that
        # could grow (session.snapshot) are built to fit it.
        self.connection.max_message_size = self.factory.max_message_size  # type: ignore[attr-defined]
        self.factory.connections.add(self)
        producer = _Backpressure(self)
        try:
            self.transport.unregisterProducer()  # the HTTP channel's, from before the upgrade
        except Exception:
            pass
        self.transport.registerProducer(producer, True)
        self.connection.reply(proto.welcome(self.factory.runtime_info["version"], self.connection.you()))

    def _send_frame(self, frame: bytes) -> None:
        # The same framing as for several (_send_frames): Autobahn's
        # sendMessage costs about as much as the rest of a live event's way.
        self._send_frames([frame])

    def _send_frames(self, frames: list[bytes]) -> None:
        corked = self._corked
        if corked is None:
            self._write_frames(frames)
            return
        size = self._corked_bytes
        for frame in frames:
            size += len(frame)
        if size > CORK_BYTES:  # too much to hold: written now, after what was held
            self._flush_corked()
            self._write_frames(frames)
            return
        corked.extend(frames)
        self._corked_bytes = size

    def _flush_corked(self, *, hold: bool = True) -> None:
        """Write the held frames now; with ``hold``, frames that follow are
        held again (the read is still being handled)."""
        frames = self._corked
        if frames is None:
            return
        self._corked = [] if hold else None
        self._corked_bytes = 0
        if frames:
            self._write_frames(frames)

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        # Anything Autobahn writes itself (a close, a ping or pong) goes after
        # the frames held before it.
        self._flush_corked()
        super().sendData(data, sync, chopsize)

    def _write_frames(self, frames: list[bytes]) -> None:
        """Several text messages in one write: what ``sendMessage`` puts on the
        wire for each (an unmasked, unfragmented, uncompressed frame, RFC 6455
        section 5.2), framed here because Autobahn's per-message path cost
        more than the rest of a replay together. Anything else Autobahn would
        do differently (compression, fragmenting, a frame log, queued data, a
        connection not open) goes through ``sendMessage``.

        ``--max-message-size`` limits what comes in, not this: an event the
        runtime made from a request under the limit can be over it by its
        envelope (``run.queued`` repeats the cell's source), and refusing it
        here would fail whatever emitted it, for every subscriber."""
        if (self.state != self.STATE_OPEN or self._perMessageCompress is not None or self.autoFragmentSize
                or self.logFrames or self.send_queue):
            for frame in frames:
                self.sendMessage(frame, isBinary=False)
            return
        parts: list[bytes] = []
        for frame in frames:
            n = len(frame)
            if n <= 125:
                parts.append(_HEAD_SHORT[n])
            elif n <= 0xFFFF:
                parts.append(_HEAD_16(0x81, 126, n))
            else:
                parts.append(_HEAD_64(0x81, 127, n))
            parts.append(frame)
        stats = self.trafficStats
        if parts:
            # sendData's own path for an open connection with nothing queued,
            # without the debug line whose arguments it formats at every write.
            data = b"".join(parts)
            _write_now(self.transport, data)
            stats.outgoingOctetsWireLevel += len(data)
        stats.outgoingWebSocketMessages += len(frames)

    def dataReceived(self, data: bytes) -> None:
        """Whole single-frame text messages go straight to onMessage
        (wsframes.py): Autobahn's frame-by-frame path, with its hooks and
        the arguments of its debug lines built at every frame, cost more than
        parsing the request. Anything else, and whatever follows it, is
        Autobahn's to parse, as are all frames while a message is half read,
        before the handshake and after a close."""
        if (self.state != self.STATE_OPEN or self.data or self.current_frame is not None or self.inside_message
                or self._perMessageCompress is not None or self.logOctets or self.logFrames):
            super().dataReceived(data)
            return
        limit = self.maxMessagePayloadSize
        if self.maxFramePayloadSize and (not limit or self.maxFramePayloadSize < limit):
            limit = self.maxFramePayloadSize
        taken = take_messages(data, limit)
        if not taken:
            super().dataReceived(data)
            return
        stats = self.trafficStats
        done = 0
        outer = self._corked is None  # a nested call adds to the outer call's frames
        if outer:
            self._corked = []
        try:
            done = self._take(taken, stats)
        finally:
            if outer:
                self._flush_corked(hold=False)
        if done < len(data):
            super().dataReceived(data[done:])

    def _take(self, taken: list[tuple[bytes, int]], stats: Any) -> int:
        done = 0
        for payload, end in taken:
            stats.incomingOctetsWireLevel += end - done
            stats.incomingOctetsWebSocketLevel += len(payload)
            stats.incomingOctetsAppLevel += len(payload)
            stats.incomingWebSocketFrames += 1
            stats.incomingWebSocketMessages += 1
            done = end
            if self.autoPingTimeoutCall and self.autoPingRestartOnAnyTraffic:
                self._cancelAutoPingTimeoutCall()  # as Autobahn does for any data frame
            self.onMessage(payload, False)
            if self.state != self.STATE_OPEN:
                break
        return done

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.connection is not None:
            self.connection.handle(payload, isBinary)

    def end(self, code: int, reason: str) -> None:
        """Stop serving this connection now and close it (token revoked or expired)."""
        if self.connection is not None:
            self.connection.withdraw()
        # After the current reply (a tokens.revoke of one's own token gets its answer).
        self.factory.clock.callLater(0, self.sendClose, code, reason)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.factory.connections.discard(self)
        if self._expiry is not None and self._expiry.active():
            self._expiry.cancel()
        if self.connection is not None:
            self.connection.closed()
            if self.factory.audit is not None:
                self.factory.audit.record("disconnect", identity=self.connection.who, client=self.client_address,
                                          target={"route": "/ws", **({"code": code} if code is not None else {})},
                                          outcome="ok")


CORK_BYTES = 64 * 1024

# Headers of an unmasked final text frame (opcode 1) by payload length.
_HEAD_SHORT = [bytes((0x81, n)) for n in range(126)]
_HEAD_16 = struct.Struct("!BBH").pack
_HEAD_64 = struct.Struct("!BBQ").pack


@implementer(IPushProducer)
class _Backpressure:
    def __init__(self, protocol: SpinServerProtocol) -> None:
        self.protocol = protocol

    def pauseProducing(self) -> None:
        if self.protocol.connection is not None:
            self.protocol.connection.pause()
        transport = self.protocol.transport
        if transport is not None:
            transport.pauseProducing()  # stop reading requests too

    def resumeProducing(self) -> None:
        transport = self.protocol.transport
        if transport is not None:
            transport.resumeProducing()
        if self.protocol.connection is not None:
            self.protocol.connection.resume()

    def stopProducing(self) -> None:
        if self.protocol.connection is not None:
            self.protocol.connection.closed()


class SpinWebSocketFactory(WebSocketServerFactory):
    protocol = SpinServerProtocol

    def __init__(
        self,
        *,
        manager: SessionManager,
        token: str | TokenRegistry,
        origins: list[str],
        clock: Any,
        runtime_info: dict[str, Any],
        max_message_size: int,
        trusted_proxies: Sequence[IPNetwork] = (),
        ping_interval: float = 30.0,
        ping_timeout: float = 30.0,
        url: str | None = None,
        audit: Any = None,
    ) -> None:
        # Autobahn answers the handshake itself: same Server header as the rest.
        super().__init__(url=url, protocols=[proto.SUBPROTOCOL], server="spinrt")
        self.manager = manager
        self.max_message_size = max_message_size
        self.tokens = token if isinstance(token, TokenRegistry) else None
        self.gate = Gate(token, clock)
        self.throttle = self.gate.throttle
        self.clock = clock
        self.audit = audit  # spinrt.audit.AuditTrail, or None
        if self.tokens is not None:
            self.tokens.on_revoke.append(self._revoked)
        self.origins = OriginPolicy(origins)
        self.proxies = TrustedProxies(trusted_proxies)
        self.runtime_info = runtime_info
        self.connections: set[SpinServerProtocol] = set()
        self.setProtocolOptions(
            webStatus=False,
            failByDrop=False,  # send close 1009 etc. instead of dropping TCP
            maxMessagePayloadSize=max_message_size,
            maxFramePayloadSize=max_message_size,
            autoPingInterval=ping_interval,
            autoPingTimeout=ping_timeout,
            # A wrong token's 401 waits for the throttle; the handshake must
            # outlive that wait so the client gets its answer, not a drop.
            openHandshakeTimeout=self.throttle.longest_wait + 5.0,
            tcpNoDelay=True,
            perMessageCompressionAccept=lambda offers: None,
        )

    def _revoked(self, token_id: str) -> None:
        """A token was revoked: its connections end at once (close code 4401)."""
        for protocol in list(self.connections):
            if protocol.connection is not None and protocol.connection.who.token == token_id:
                protocol.end(4401, "token revoked")
