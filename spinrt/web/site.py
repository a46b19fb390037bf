"""The HTTP resource tree: /healthz, /api/status and /ws on one port."""

from __future__ import annotations

import json
from typing import Any, Callable

from autobahn.twisted.resource import WebSocketResource
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from .auth import find_token, redact
from .ws import SpinWebSocketFactory


class Healthz(Resource):
    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        return b"ok"

    render_HEAD = render_GET


class TokenProtected(Resource):
    """A JSON route that needs the token (header or ?token=)."""

    isLeaf = True

    def __init__(self, factory: SpinWebSocketFactory, produce: Callable[[], dict[str, Any]]) -> None:
        super().__init__()
        self._factory = factory
        self._produce = produce

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        factory = self._factory
        host = str(getattr(request.getClientAddress(), "host", "unknown"))
        wait = factory.throttle.retry_after(host)
        if wait > 0:
            request.setResponseCode(429)
            request.setHeader(b"retry-after", str(int(wait) + 1).encode())
            return _error("throttled", "too many failed attempts; retry later")
        headers = {
            k.decode("latin-1").lower(): v[0].decode("latin-1")
            for k, v in request.requestHeaders.getAllRawHeaders()
        }
        query = {
            k.decode("utf-8", "replace"): [v.decode("utf-8", "replace") for v in vs]
            for k, vs in request.args.items()
        }
        if not factory.checker.check(find_token(headers, (), query)):
            factory.throttle.failed(host)
            request.setResponseCode(http.UNAUTHORIZED)
            request.setHeader(b"www-authenticate", b'Bearer realm="spin-runtime"')
            return _error("unauthorized", "missing or wrong token")
        factory.throttle.succeeded(host)
        return json.dumps(self._produce(), indent=2).encode("utf-8") + b"\n"


def _error(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode("utf-8")


def redacting_log_formatter(timestamp: str, request: Request) -> str:
    """twisted.web's combined log format, with ?token= values hidden."""
    return redact(http.combinedLogFormatter(timestamp, request))


def build_site(factory: SpinWebSocketFactory, status: Callable[[], dict[str, Any]]) -> Site:
    root = Resource()
    root.putChild(b"healthz", Healthz())
    api = Resource()
    api.putChild(b"status", TokenProtected(factory, status))
    root.putChild(b"api", api)
    root.putChild(b"ws", WebSocketResource(factory))
    site = Site(root, logFormatter=redacting_log_formatter)
    site.displayTracebacks = False
    return site

