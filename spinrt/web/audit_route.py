"""``GET /api/audit``: the audit trail as JSON lines (PROTOCOL.md section 9), owner only.

Query parameters, all optional: ``since`` and ``until`` (ISO 8601 times,
``since <= ts < until``; a time without an offset is UTC), ``limit`` (rows
per page, 1 to 10000, default 1000) and ``cursor`` (the ``id`` of the
previous page's last line: the page continues after it). Rows come oldest
first, one JSON object per line (``application/x-ndjson``): ``{id, ts,
identity, role, token, client, action, target, outcome}``. A page with
fewer than ``limit`` lines is the last. The token goes in the
``Authorization`` header only (a ``?token=`` is not looked at).

Errors (JSON ``{"error": {code, message}}``): 401/429 for the token, 403
``forbidden`` for a role other than owner, 400 ``bad_request`` naming the
parameter.
"""

from __future__ import annotations

from typing import Any

import orjson
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from ..audit import PAGE_DEFAULT, PAGE_MAX, AuditTrail, parse_time
from . import httpauth
from .throttle import Gate

_log = Logger()


class BadQuery(ValueError):
    pass


def _one(request: Request, name: str) -> str | None:
    values = request.args.get(name.encode("ascii")) or []
    if len(values) > 1:
        raise BadQuery(f"'{name}' is given more than once")
    return values[0].decode("utf-8", "replace") if values else None


def _int(request: Request, name: str, low: int, high: int) -> int | None:
    text = _one(request, name)
    if text is None:
        return None
    if not text.strip().isdigit() or not low <= int(text) <= high:
        raise BadQuery(f"'{name}' must be a whole number from {low} to {high}")
    return int(text)


def query_of(request: Request) -> dict[str, Any]:
    """The page the request asks for, as AuditTrail.page's keywords; BadQuery."""
    found: dict[str, Any] = {}
    for name in ("since", "until"):
        text = _one(request, name)
        if text is not None:
            try:
                found[name] = parse_time(name, text)
            except ValueError as e:
                raise BadQuery(str(e)) from None
    limit = _int(request, "limit", 1, PAGE_MAX)
    found["limit"] = PAGE_DEFAULT if limit is None else limit
    cursor = _int(request, "cursor", 0, 2**63 - 1)
    if cursor is not None:
        found["cursor"] = cursor
    return found


class AuditResource(Resource):
    isLeaf = True

    def __init__(self, audit: AuditTrail, gate: Gate) -> None:
        super().__init__()
        self._audit = audit
        self._gate = gate

    def render_GET(self, request: Request) -> Any:
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"content-type", b"application/json")
        verdict, answer = httpauth.admit(self._gate, request, "api/audit")  # header only: no ?token=
        if verdict is None:
            return answer
        if request.postpath not in ([], [b""]):
            request.setResponseCode(http.NOT_FOUND)
            return httpauth.json_error("not_found", "no such route; try /api/audit")
        try:
            query = query_of(request)
        except BadQuery as e:
            request.setResponseCode(http.BAD_REQUEST)
            return httpauth.json_error("bad_request", str(e))
        gone: list[object] = []
        request.notifyFinish().addErrback(gone.append)

        def send(rows: list[dict[str, Any]]) -> None:
            if gone:
                return
            request.setHeader(b"content-type", b"application/x-ndjson; charset=utf-8")
            request.write(b"".join(orjson.dumps(row) + b"\n" for row in rows))
            request.finish()

        def failed(failure: Any) -> None:
            _log.failure("reading the audit trail failed", failure)
            if gone:
                return
            request.setResponseCode(http.INTERNAL_SERVER_ERROR)
            request.write(httpauth.json_error("internal", "the audit trail could not be read"))
            request.finish()

        Deferred.fromCoroutine(self._audit.page(**query)).addCallbacks(send, failed)
        return NOT_DONE_YET
