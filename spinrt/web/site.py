"""The HTTP resource tree: /healthz, /readyz, /api/..., /ws and the browser UI (/ and /static) on one port."""

from __future__ import annotations

import json
from typing import Any, Callable

from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from . import httpauth
from .auth import redact
from .run_output import SessionsResource
from .ui import add_ui_routes
from .ws import SpinWebSocketFactory
from .ws_upgrade import SpinWebSocketResource


class Probe(Resource):
    """A health probe (PROTOCOL.md section 8), open to all: 200 ``ok``, or 503
    with the one line ``reason()`` gives. ``/healthz`` (liveness) has no
    reason ever: 200 while the process serves requests. ``/readyz``
    (readiness) says why the runtime cannot do its job (the store cannot
    write); a full disk is not mended by a restart, so liveness probes keep
    using /healthz."""

    isLeaf = True

    def __init__(self, reason: Callable[[], str | None] = lambda: None) -> None:
        super().__init__()
        self._reason = reason

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        why = self._reason()
        if why is None:
            return b"ok"
        request.setResponseCode(http.SERVICE_UNAVAILABLE)
        return why.encode("utf-8", "replace") + b"\n"

    render_HEAD = render_GET


class TokenProtected(Resource):
    """A JSON route that needs the token (header or ?token=)."""

    isLeaf = True

    def __init__(self, factory: SpinWebSocketFactory, produce: Callable[[], dict[str, Any]],
                 route: str = "api/status") -> None:
        super().__init__()
        self._factory = factory
        self._produce = produce
        self._route = route  # its key in spinrt.roles.ROUTE_ROLES

    def render_GET(self, request: Request) -> bytes | int:
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        verdict, answer = httpauth.admit(self._factory.gate, request, self._route, query=True)
        if verdict is None:
            return answer
        return json.dumps(self._produce(), indent=2).encode("utf-8") + b"\n"


def redacting_log_formatter(timestamp: str, request: Request) -> str:
    """twisted.web's combined log format, with ?token= values hidden and
    the identity whose token was accepted in the user field (``-`` when
    none): names are word characters, never a token."""
    line = redact(http.combinedLogFormatter(timestamp, request))
    identity = getattr(request, "spin_identity", None)
    if identity is not None:
        line = line.replace('" - - [', f'" - {identity.name} [', 1)
    return line


SERVER = b"spinrt"  # no product version: a scanner learns nothing to look up


class SpinSite(Site):
    """twisted.web's Site, answering ``Server: spinrt`` instead of
    ``TwistedWeb/<version>`` (set per request in ``Request.process``, just
    before the resource is looked up here)."""

    def getResourceFor(self, request: Request) -> Any:
        request.setHeader(b"server", SERVER)
        return super().getResourceFor(request)


def build_site(factory: SpinWebSocketFactory, status: Callable[[], dict[str, Any]],
               readiness: Callable[[], str | None] = lambda: None) -> Site:
    root = Resource()
    root.putChild(b"healthz", Probe())
    root.putChild(b"readyz", Probe(readiness))
    api = Resource()
    api.putChild(b"status", TokenProtected(factory, status))
    api.putChild(b"sessions", SessionsResource(factory.gate, factory.manager))
    root.putChild(b"api", api)
    root.putChild(b"ws", SpinWebSocketResource(factory))
    ui = add_ui_routes(root)  # public: / and /static (PROTOCOL.md 8)
    # Requests see their client through --trusted-proxy (access log, throttle).
    site = SpinSite(root, logFormatter=redacting_log_formatter, requestFactory=factory.proxies.request_class)
    site.displayTracebacks = False
    site.ui = ui  # the runtime waits for its loading thread at stop
    return site

