"""The WebSocket upgrade as the HTTP side sees it: who the client is
(behind trusted proxies), which origins it claims, and handing that to the
protocol built for it (spinrt.web.ws), so the origin policy, not Autobahn's
own parsing, decides on ``Origin``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
from autobahn.twisted.resource import WebSocketResource
from twisted.web.server import Request

from .auth import OriginKey
from .proxies import TrustedProxies

if TYPE_CHECKING:
    from .ws import SpinWebSocketFactory

# Both carry the page's origin: Origin since RFC 6455, Sec-WebSocket-Origin in
# the hybi drafts before it (Autobahn still speaks draft 10, version 8).
_ORIGIN_HEADERS = (b"origin", b"sec-websocket-origin")


def peer_host(peer: str) -> str:
    """Autobahn's peer string -> its host: 'tcp4:127.0.0.1:5000' -> '127.0.0.1'."""
    parts = peer.split(":")
    if len(parts) >= 3:
        return ":".join(parts[1:-1])
    return peer


@attrs.frozen
class Handshake:
    """What the HTTP layer knew about an upgrade request: the client address
    (behind trusted proxies), the TCP peer, every origin header value, and the
    runtime's own origin(s) as the request reached it."""

    client: str
    peer: str
    origins: tuple[str, ...]
    own: frozenset[OriginKey]

    @classmethod
    def taken_from(cls, request: Request, proxies: TrustedProxies) -> "Handshake":
        """The upgrade's Handshake, its origin headers removed from
        ``request``: Autobahn, which parses the request again, would answer
        400 to ``null``, an empty value or anything it cannot parse, before
        the origin policy (applied to the Handshake) is asked."""
        address = request.getClientAddress()
        peer = str(getattr(request.client, "host", None) or "unknown")
        headers = request.requestHeaders
        origins = tuple(value.decode("latin-1")
                        for name in _ORIGIN_HEADERS for value in headers.getRawHeaders(name) or ())
        for name in _ORIGIN_HEADERS:
            headers.removeHeader(name)
        return cls(str(getattr(address, "host", None) or peer), peer, origins, proxies.own_origins(request))


class SpinWebSocketResource(WebSocketResource):
    """Autobahn's resource, with the origin policy decided here.

    Autobahn would parse ``Origin`` itself and answer 400 to ``null``, an
    empty value or anything it cannot parse, before ``onConnect`` runs. So
    the origin headers are read into a :class:`Handshake` and removed from
    the request Autobahn re-parses; ``onConnect`` applies OriginPolicy to
    them (403 at worst, never 400)."""

    def __init__(self, factory: "SpinWebSocketFactory") -> None:
        super().__init__(factory)
        self._spin_factory = factory

    def render(self, request: Request) -> Any:
        handshake = Handshake.taken_from(request, self._spin_factory.proxies)
        return WebSocketResource(_OneRequest(self._spin_factory, handshake)).render(request)


class _OneRequest:
    """Builds the protocol for one upgrade and hands it that upgrade's Handshake."""

    def __init__(self, factory: "SpinWebSocketFactory", handshake: Handshake) -> None:
        self._factory = factory
        self._handshake = handshake

    def buildProtocol(self, addr: Any) -> Any:
        protocol = self._factory.buildProtocol(addr)
        if protocol is not None:
            protocol.handshake = self._handshake
        return protocol
