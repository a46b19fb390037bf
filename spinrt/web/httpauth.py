"""The token gate for HTTP routes: the same check and failure throttle as /ws.

A correct token is served at once; a wrong or missing one gets 401 (or 429
with ``Retry-After`` when its address floods), only after the throttle's
delay (spinrt.web.throttle), without blocking the reactor.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.web import http
from twisted.web.server import NOT_DONE_YET, Request

from .. import roles
from .auth import find_token, token_from_authorization
from .throttle import Gate, Verdict


def client_address(request: Request) -> str:
    """The client behind a trusted proxy (ProxiedRequest), else the TCP peer."""
    return str(getattr(request.getClientAddress(), "host", None) or "unknown")


def json_error(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode("utf-8")


def route_of(request: Request) -> str:
    """The request's path, for the audit trail (never its query: it may hold a token)."""
    return request.path.decode("utf-8", "replace")[:200]


def check(gate: Gate, request: Request, token: str | None) -> Verdict:
    verdict = gate.check(client_address(request), token, route_of(request))
    if verdict.accepted:
        request.spin_identity = verdict.identity  # type: ignore[attr-defined]  # the access log names it
    return verdict


def forbidden(gate: Gate, request: Request, verdict: Verdict, route: str) -> bytes | None:
    """None when the verdict's role may use ``route`` (a key of
    spinrt.roles.ROUTE_ROLES); else the 403 body, the refusal on the audit trail."""
    identity = verdict.identity
    needed = roles.ROUTE_ROLES.get(route, roles.OWNER)
    if identity is not None and roles.allows(identity.role, needed):
        return None
    if gate.audit is not None:
        gate.audit.record(f"{request.method.decode('ascii', 'replace')} {route_of(request)}", identity=identity,
                          client=client_address(request), outcome="forbidden")
    request.setResponseCode(http.FORBIDDEN)
    request.setHeader(b"content-type", b"application/json")
    role = identity.role if identity is not None else "none"
    return json_error("forbidden", f"your role '{role}' may not use /{route}; it needs the role '{needed}' or above")


def refuse(request: Request, verdict: Verdict) -> Any:
    """Answer a refused token (``render_*``'s return value): 401 with
    ``WWW-Authenticate``, or 429 with ``Retry-After``, once the throttle
    lets the answer go."""
    request.setHeader(b"content-type", b"application/json")

    def refusal() -> bytes:
        if verdict.retry_after:
            request.setResponseCode(429)  # Too Many Requests, RFC 6585
            request.setHeader(b"retry-after", str(verdict.retry_after).encode())
            return json_error("throttled", "too many failed attempts; retry later")
        request.setResponseCode(http.UNAUTHORIZED)
        request.setHeader(b"www-authenticate", b'Bearer realm="spin-runtime"')
        return json_error("unauthorized", "missing or wrong token")

    if verdict.answer is None:
        return refusal()
    gone: list[object] = []
    request.notifyFinish().addErrback(gone.append)  # the client left while it waited

    def answer(_: None) -> None:
        if not gone:
            request.write(refusal())
            request.finish()

    verdict.answer.addCallback(answer)
    return NOT_DONE_YET


def request_token(request: Request, *, query: bool) -> str | None:
    """The token a request carries: its ``Authorization`` header (``Bearer``
    or ``token``), then, where the route accepts it (``query``), ``?token=``."""
    header = request.getHeader(b"authorization")
    value = header.decode("latin-1") if header is not None else None
    if not query:
        return token_from_authorization(value)
    args = {k.decode("utf-8", "replace"): [v.decode("utf-8", "replace") for v in vs] for k, vs in request.args.items()}
    return find_token({"authorization": value} if value is not None else {}, (), args)


def admit(gate: Gate, request: Request, route: str, *, query: bool = False) -> tuple[Verdict | None, Any]:
    """The token check and the role check of a route (``route``: its key in
    spinrt.roles.ROUTE_ROLES), as every token-protected route makes them.

    ``(verdict, None)``: serve the request. ``(None, answer)``: return
    ``answer`` from ``render_*`` (the delayed 401/429, or the 403 body).
    """
    verdict = check(gate, request, request_token(request, query=query))
    if not verdict.accepted:
        return None, refuse(request, verdict)
    refused = forbidden(gate, request, verdict, route)
    if refused is not None:
        return None, refused
    return verdict, None
