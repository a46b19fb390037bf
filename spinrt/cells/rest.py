"""REST cells: one HTTP request through the shared outbound client (treq).

The cell's ``source`` is the request body; ``options`` carry the rest
(PROTOCOL.md section 5). The response is shown as a status line (``display``)
and a ``result`` (``application/json`` when the body is JSON, else text), and
stored as the CellResult ``{status_code, headers, text, json?, elapsed_ms}``.
A non-2xx answer finishes the run with ``http_error`` but is still shown and
stored. Cancelling or timing out closes the connection. Redirects are
followed as ``redirects.py`` describes (RFC 9110 section 15.4) unless
``follow_redirects`` is false.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any, Mapping

import attrs
from hyperlink import URL
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..outbound import Outbound
from ..protocol import Cell
from .base import CellContext, ICellProcessor, Outcome, RuntimeServices
from .httpio import (
    Aborted,
    BodyReader,
    ResponseTooLarge,
    describe_failure,
    header_dict,
    max_bytes_from_environ,
    max_bytes_option,
    read_body,
    shown_url,
    size_text,
)
from .redirects import following

_log = Logger()

DEFAULT_TIMEOUT = 300.0  # seconds, when the cell sets no timeout_s (the runner enforces that)
DISPLAY_LIMIT = 1024 * 1024  # characters of body shown in the result; the variable keeps all
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # RFC 9110 token (methods, header names)
_BINARY_TYPES = ("image/", "audio/", "video/", "application/octet-stream", "application/pdf",
                 "application/zip", "application/gzip", "font/")


class RestOptionError(ValueError):
    pass


@attrs.frozen
class RestRequest:
    method: str
    url: str
    headers: dict[str, str]
    params: list[tuple[str, str]]
    body: bytes | None
    follow_redirects: bool
    max_bytes: int
    own_deadline: bool  # no timeout_s: we apply DEFAULT_TIMEOUT ourselves


def _param_value(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    raise RestOptionError(f"options.params.{name} must be a string, number, boolean or a list of them")


def build_request(cell: Cell, default_max: int) -> RestRequest:
    """Check a cell's options and build its request, or RestOptionError."""
    o: Mapping[str, Any] = cell.options
    url = o.get("url")
    if not isinstance(url, str) or not url.strip():
        raise RestOptionError("options.url is required (e.g. \"https://api.example.com/v1/items\")")
    url = url.strip()
    try:
        parsed = URL.from_text(url)
    except Exception:
        raise RestOptionError(f"options.url {shown_url(url)!r} is not a valid URL") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise RestOptionError("options.url must be an absolute http:// or https:// URL with a host")
    if ":" in parsed.host:
        raise RestOptionError("options.url: IPv6 address literals are not supported by the HTTP client; use a host name")

    headers: dict[str, str] = {}
    raw_headers = o.get("headers") or {}
    if not isinstance(raw_headers, dict):
        raise RestOptionError("options.headers must be an object of header name to value")
    for name, value in raw_headers.items():
        if not _TOKEN.match(name):
            raise RestOptionError(f"options.headers: {name[:64]!r} is not a valid header name")
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise RestOptionError(f"options.headers.{name} must be a string")
        value = str(value)
        if "\r" in value or "\n" in value:
            raise RestOptionError(f"options.headers.{name} must not contain line breaks")
        headers[name] = value
    lower = {k.lower() for k in headers}

    auth = o.get("auth")
    if auth is not None:
        if "authorization" in lower:
            raise RestOptionError("give either options.auth or an Authorization header, not both")
        headers["Authorization"] = _authorization(auth)

    params: list[tuple[str, str]] = []
    raw_params = o.get("params") or {}
    if not isinstance(raw_params, dict):
        raise RestOptionError("options.params must be an object of query parameter to value")
    for name, value in raw_params.items():
        for item in value if isinstance(value, list) else [value]:
            if item is not None:
                params.append((name, _param_value(name, item)))

    body: bytes | None = None
    if o.get("json") is not None:
        if cell.source.strip():
            raise RestOptionError("give the body either as options.json or as the cell source, not both")
        body = json.dumps(o["json"], separators=(",", ":")).encode("utf-8")
        if "content-type" not in lower:
            headers["Content-Type"] = "application/json"
    elif cell.source.strip():
        body = cell.source.encode("utf-8")
        if "content-type" not in lower:
            headers["Content-Type"] = "application/json" if _is_json(cell.source) else "text/plain; charset=utf-8"

    method = o.get("method") or ("POST" if body is not None else "GET")
    if not isinstance(method, str) or not _TOKEN.match(method):
        raise RestOptionError("options.method must be an HTTP method such as GET, POST, PUT, PATCH, DELETE")
    follow = o.get("follow_redirects", True)
    if not isinstance(follow, bool):
        raise RestOptionError("options.follow_redirects must be true or false")
    try:
        max_bytes = max_bytes_option(o, default_max)
    except ValueError as e:
        raise RestOptionError(str(e)) from None
    return RestRequest(method.upper(), url, headers, params, body, follow, max_bytes,
                       own_deadline=o.get("timeout_s") is None)


def _authorization(auth: Any) -> str:
    if isinstance(auth, dict) and set(auth) == {"bearer"} and isinstance(auth["bearer"], str) and auth["bearer"]:
        if "\r" in auth["bearer"] or "\n" in auth["bearer"]:
            raise RestOptionError("options.auth.bearer must not contain line breaks")
        return f"Bearer {auth['bearer']}"
    if (isinstance(auth, dict) and set(auth) == {"basic"} and isinstance(auth["basic"], list)
            and len(auth["basic"]) == 2 and all(isinstance(x, str) for x in auth["basic"])):
        user, password = auth["basic"]
        if ":" in user:
            raise RestOptionError("options.auth.basic: the user name must not contain ':'")
        return "Basic " + base64.b64encode(f"{user}:{password}".encode("utf-8")).decode("ascii")
    raise RestOptionError('options.auth must be {"bearer": "<token>"} or {"basic": ["<user>", "<password>"]}')


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _media_type(headers: dict[str, str]) -> tuple[str, str | None]:
    """(media type, charset) of a response."""
    value = headers.get("content-type", "")
    parts = [p.strip() for p in value.split(";")]
    charset = None
    for p in parts[1:]:
        key, _, val = p.partition("=")
        if key.strip().lower() == "charset":
            charset = val.strip().strip("\"'") or None
    return parts[0].lower(), charset


def _decode(body: bytes, charset: str | None) -> str:
    try:
        return body.decode(charset or "utf-8", errors="replace")
    except LookupError:  # an unknown charset name
        return body.decode("utf-8", errors="replace")


def response_value(code: int, headers: dict[str, str], body: bytes, elapsed_ms: int) -> dict[str, Any]:
    """The CellResult stored in the output variable."""
    media, charset = _media_type(headers)
    value: dict[str, Any] = {"status_code": code, "headers": headers, "elapsed_ms": elapsed_ms}
    if media.startswith(_BINARY_TYPES):
        value["text"] = ""
        value["binary"] = True
        return value
    text = _decode(body, charset)
    value["text"] = text
    if media == "application/json" or media.endswith("+json") or (not media and text.strip()):
        try:
            value["json"] = json.loads(text)
        except ValueError:
            pass
    return value


def status_line(code: int, phrase: str, media: str, size: int, elapsed_ms: int) -> str:
    return " · ".join(x for x in (f"HTTP {code} {phrase}".strip(), media, size_text(size), f"{elapsed_ms} ms") if x)


def result_bundle(value: dict[str, Any], media: str, size: int, variable: str | None) -> dict[str, Any]:
    if value.get("binary"):
        return {"text/plain": f"<{size_text(size)} of {media or 'binary data'}>"}
    text = value["text"]
    if len(text) > DISPLAY_LIMIT:
        where = f"; the whole body is in the variable {variable}" if variable else ""
        return {"text/plain": text[:DISPLAY_LIMIT] + f"\n… (showing {size_text(DISPLAY_LIMIT)} of {size_text(size)}{where})"}
    if "json" in value:
        return {"application/json": value["json"], "text/plain": json.dumps(value["json"], indent=2, ensure_ascii=False)}
    return {"text/plain": text}


@implementer(ICellProcessor)
class RestProcessor:
    def __init__(self, services: RuntimeServices) -> None:
        self.services = services
        self.outbound: Outbound = services.outbound or Outbound.from_environ(services.environ, services.reactor)
        self.max_bytes = max_bytes_from_environ(services.environ)

    def run(self, cell: Cell, ctx: CellContext) -> Deferred[Outcome]:
        try:
            request = build_request(cell, self.max_bytes)
        except RestOptionError as e:
            return succeed(Outcome.failed("bad_option", "OptionError", str(e)))
        return Deferred.fromCoroutine(self._run(request, cell, ctx))

    async def _run(self, req: RestRequest, cell: Cell, ctx: CellContext) -> Outcome:
        clock = ctx.reactor
        started = clock.seconds()
        state: dict[str, Any] = {"reader": None, "deadline": False}
        try:
            # Redirects are followed by our agent (RFC 9110 rules), never by treq's.
            agent = following(self.outbound.agent, req.method, req.body) if req.follow_redirects else None
            pending = self.outbound.request(
                req.method, req.url, headers=req.headers, params=req.params or None,
                data=req.body, allow_redirects=False, agent=agent,
            )
        except Exception as e:  # treq refuses some URLs before any I/O
            return Outcome.failed("bad_option", type(e).__name__, f"cannot request {shown_url(req.url)}: {e}")

        def stop(reason: str) -> None:
            reader: BodyReader | None = state["reader"]
            if reader is not None:
                reader.abort(Aborted(reason))
            else:
                pending.cancel()  # also reaches the Deferred it waits on: the Agent aborts the connection

        def deadline() -> None:
            state["deadline"] = True
            stop("deadline")

        ctx.on_interrupt(stop)
        timer = clock.callLater(DEFAULT_TIMEOUT, deadline) if req.own_deadline else None
        try:
            return await self._exchange(req, cell, ctx, pending, state, started)
        except Exception:
            failure = Failure()
            if ctx.interrupted is not None:
                return Outcome(status="error")  # the runner names it cancelled / timeout
            if state["deadline"]:
                return Outcome.failed("timeout", "Timeout",
                                      f"no complete response from {shown_url(req.url)} within {DEFAULT_TIMEOUT:g} s "
                                      f"(set options.timeout_s to wait longer or shorter)")
            if failure.check(ResponseTooLarge):
                return Outcome.failed("response_too_large", "ResponseTooLarge",
                                      f"{failure.value} (the cap is options.max_bytes, default from SPIN_REST_MAX_BYTES); "
                                      f"the connection was closed")
            code, ename, message = describe_failure(failure, req.url, self.outbound.tls.verified)
            return Outcome.failed(code, ename, message)
        finally:
            if timer is not None and timer.active():
                timer.cancel()

    async def _exchange(self, req: RestRequest, cell: Cell, ctx: CellContext, pending: Deferred[Any],
                        state: dict[str, Any], started: float) -> Outcome:
        response = await pending
        reader = read_body(response, ctx.reactor, req.max_bytes)
        state["reader"] = reader
        if ctx.interrupted is not None:
            reader.abort(Aborted(ctx.interrupted))
        body = await reader.done
        elapsed_ms = int(round((ctx.reactor.seconds() - started) * 1000))
        headers = header_dict(response.headers)
        value = response_value(response.code, headers, body, elapsed_ms)
        media = _media_type(headers)[0]
        phrase = (response.phrase or b"").decode("latin-1", "replace")
        ctx.display({"text/plain": status_line(response.code, phrase, media, len(body), elapsed_ms)})
        ctx.result(result_bundle(value, media, len(body), cell.output_variable), variable=cell.output_variable)
        ok = 200 <= response.code < 300 or (300 <= response.code < 400 and not req.follow_redirects)
        if ok:
            return Outcome(status="ok", value=value)
        return Outcome.failed(
            "http_error", "HTTPError",
            f"{req.method} {shown_url(req.url)} answered HTTP {response.code} {phrase}".rstrip(),
            value=value,
        )

    def close_session(self, session_id: str) -> None:
        return None  # the session interrupts its running run; nothing is held per session

    def stop(self) -> Deferred[Any]:
        return self.outbound.close()
