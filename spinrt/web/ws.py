"""The Autobahn WebSocket face: handshake policy, frames in, frames out.

Backpressure: the protocol registers itself as the transport's push
producer. When the socket's buffer fills, the connection stops taking live
events (its subscriptions fall back to reading the log later) and stops
reading requests, so neither a slow reader nor a request flood grows memory.
"""

from __future__ import annotations

from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from .. import protocol as proto
from ..sessions.manager import SessionManager
from .auth import FailureThrottle, OriginPolicy, TokenChecker, find_token
from .ops import ClientConnection

_log = Logger()


def peer_host(peer: str) -> str:
    """'tcp4:127.0.0.1:5000' -> '127.0.0.1' (the throttle's key)."""
    parts = peer.split(":")
    if len(parts) >= 3:
        return ":".join(parts[1:-1])
    return peer


class SpinServerProtocol(WebSocketServerProtocol):
    factory: "SpinWebSocketFactory"
    connection: ClientConnection | None = None

    def onConnect(self, request: Any) -> str | None:
        factory = self.factory
        host = peer_host(request.peer)
        wait = factory.throttle.retry_after(host)
        if wait > 0:
            raise ConnectionDeny(429, f"too many failed attempts; retry in {int(wait) + 1} s")
        origin = request.headers.get("origin")
        if not factory.origins.allows(origin):
            raise ConnectionDeny(403, "origin not allowed")
        token = find_token(request.headers, request.protocols, request.params)
        if not factory.checker.check(token):
            factory.throttle.failed(host)
            _log.info("refused a WebSocket from {peer}: {why}", peer=host,
                      why="no token" if token is None else "wrong token")
            raise ConnectionDeny(401, "missing or wrong token")
        factory.throttle.succeeded(host)
        # Echo spin.v1 when offered; never a spin.token.* entry.
        return proto.SUBPROTOCOL if proto.SUBPROTOCOL in request.protocols else None

    def onOpen(self) -> None:
        self.connection = ClientConnection(
            self.factory.manager, self._send_frame, self.factory.runtime_info
        )
        self.factory.connections.add(self)
        producer = _Backpressure(self)
        try:
            self.transport.unregisterProducer()  # the HTTP channel's, from before the upgrade
        except Exception:
            pass
        self.transport.registerProducer(producer, True)
        self.connection.reply(proto.welcome(self.factory.runtime_info["version"]))

    def _send_frame(self, frame: bytes) -> None:
        self.sendMessage(frame, isBinary=False)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.connection is not None:
            self.connection.handle(payload, isBinary)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.factory.connections.discard(self)
        if self.connection is not None:
            self.connection.closed()


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
        token: str,
        origins: list[str],
        clock: Any,
        runtime_info: dict[str, Any],
        max_message_size: int,
        ping_interval: float = 30.0,
        ping_timeout: float = 30.0,
        url: str | None = None,
    ) -> None:
        super().__init__(url=url, protocols=[proto.SUBPROTOCOL])
        self.manager = manager
        self.checker = TokenChecker(token)
        self.origins = OriginPolicy(origins)
        self.throttle = FailureThrottle(clock)
        self.runtime_info = runtime_info
        self.connections: set[SpinServerProtocol] = set()
        self.setProtocolOptions(
            webStatus=False,
            failByDrop=False,  # send close 1009 etc. instead of dropping TCP
            maxMessagePayloadSize=max_message_size,
            maxFramePayloadSize=max_message_size,
            autoPingInterval=ping_interval,
            autoPingTimeout=ping_timeout,
            tcpNoDelay=True,
            perMessageCompressionAccept=lambda offers: None,
        )
