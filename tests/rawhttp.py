"""A raw HTTP/1.1 client for handshake tests: any header, any number of times,
empty values included (Autobahn's and treq's clients normalise those away)."""

from __future__ import annotations

from typing import Any, Sequence

import attrs
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from .support import TOKEN

WS_KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 section 1.3


@attrs.frozen
class Response:
    status: int
    headers: dict[str, list[str]]
    elapsed: float

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None


class _Head(Protocol):
    """Sends ``data``, fires ``done`` with the status line and headers, hangs up."""

    def __init__(self, data: bytes, hang_up_after: float | None) -> None:
        self.data = data
        self.received = b""
        self.done: defer.Deferred[bytes] = defer.Deferred()
        self.hang_up_after = hang_up_after

    def connectionMade(self) -> None:
        self.transport.write(self.data)
        if self.hang_up_after is not None:
            reactor.callLater(self.hang_up_after, self.transport.abortConnection)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if b"\r\n\r\n" in self.received and not self.done.called:
            self.done.callback(self.received.split(b"\r\n\r\n", 1)[0])
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure) -> None:
        if not self.done.called:
            self.done.callback(self.received)


async def request(port: int, lines: Sequence[str], *, tls: Any = None,
                  hang_up_after: float | None = None) -> Response:
    """Send the request ``lines`` (no trailing blank line) to 127.0.0.1:port
    and return the response head; status 0 when the server hung up without one."""
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    protocol = _Head(data, hang_up_after)
    endpoint: Any = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    if tls is not None:
        endpoint = wrapClientTLS(tls, endpoint)
    started = reactor.seconds()
    await endpoint.connect(Factory.forProtocol(lambda: protocol))
    head = await protocol.done.addTimeout(30, reactor)
    elapsed = reactor.seconds() - started
    if not head:
        return Response(0, {}, elapsed)
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, list[str]] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return Response(int(status_line.split()[1]), headers, elapsed)


async def upgrade(port: int, *headers: tuple[str, str], token: str | None = TOKEN,
                  host: str | None = None, path: str = "/ws", version: int = 13,
                  tls: Any = None, hang_up_after: float | None = None) -> Response:
    """A WebSocket upgrade to /ws with ``headers`` added as given (repeats and
    empty values included); the token as a Bearer header unless None."""
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host if host is not None else f'127.0.0.1:{port}'}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {WS_KEY}",
        f"Sec-WebSocket-Version: {version}",
    ]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    lines += [f"{name}: {value}".rstrip() if value == "" else f"{name}: {value}" for name, value in headers]
    return await request(port, lines, tls=tls, hang_up_after=hang_up_after)


async def get(port: int, path: str, *headers: tuple[str, str], token: str | None = TOKEN,
              tls: Any = None) -> Response:
    """A plain GET with ``headers`` added as given."""
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    lines += [f"{name}: {value}" for name, value in headers]
    return await request(port, lines, tls=tls)
