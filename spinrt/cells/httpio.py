"""What the HTTP cell types (rest, llm) share: bounded body reading and error naming.

Every outbound failure becomes one (code, ename, message) a user can act on;
messages show URLs without their query string or user info, where tokens
tend to live.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from hyperlink import URL
from OpenSSL import SSL
from twisted.internet import error
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import error as web_error
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import UNKNOWN_LENGTH

from ..config import ConfigError
from ..outbound import CONNECT_TIMEOUT, ENV, CertificateRejected

_log = Logger()

MAX_BYTES_ENV = "SPIN_REST_MAX_BYTES"
DEFAULT_MAX_BYTES = 50 * 1024 * 1024
ABORT_GRACE = 2.0  # seconds to wait for a closed connection to report itself


class ResponseTooLarge(Exception):
    pass


class Aborted(Exception):
    """We stopped reading on purpose (cancel, timeout)."""


def max_bytes_from_environ(environ: Mapping[str, str]) -> int:
    value = environ.get(MAX_BYTES_ENV, "").strip()
    if not value:
        return DEFAULT_MAX_BYTES
    try:
        size = int(value)
    except ValueError:
        raise ConfigError(f"{MAX_BYTES_ENV} must be a number of bytes, not {value!r}") from None
    if size < 1:
        raise ConfigError(f"{MAX_BYTES_ENV} must be at least 1 byte")
    return size


def max_bytes_option(options: Mapping[str, Any], default: int) -> int:
    value = options.get("max_bytes")
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError("options.max_bytes must be a positive whole number of bytes")
    return value


def size_text(n: float) -> str:
    if n < 1024:
        return f"{n:.0f} bytes"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n / (1024 * 1024):.1f} MiB"


def shown_url(url: str) -> str:
    """scheme://host[:port]/path, without user info or query (tokens live there)."""
    try:
        u = URL.from_text(url)
        return u.replace(userinfo="", query=(), fragment="").to_text()
    except Exception:
        return "<the URL>"


def host_of(url: str) -> str:
    try:
        u = URL.from_text(url)
        return f"{u.host}:{u.port}" if u.port else u.host
    except Exception:
        return "the host"


class BodyReader(Protocol):
    """Reads a response body, at most ``limit`` bytes; ``abort`` closes the connection.

    ``done`` fires with the body (or b"" when ``on_data`` consumes it), or
    fails with ResponseTooLarge / Aborted / the connection's error -- always
    after the connection reported itself closed (or ABORT_GRACE passed)."""

    def __init__(self, clock: Any, limit: int, on_data: Callable[[bytes], None] | None = None) -> None:
        self.clock = clock
        self.limit = limit
        self.on_data = on_data
        self.done: Deferred[bytes] = Deferred()
        self.size = 0
        self._chunks: list[bytes] = []
        self._stopped: BaseException | None = None
        self._grace: Any = None

    def dataReceived(self, data: bytes) -> None:
        if self._stopped is not None:
            return
        self.size += len(data)
        if self.size > self.limit:
            self.abort(ResponseTooLarge(f"the response body is larger than {size_text(self.limit)}"))
            return
        if self.on_data is not None:
            try:
                self.on_data(data)
            except Exception as e:  # e.g. the stream reported an error: stop reading
                self.abort(e)
        else:
            self._chunks.append(data)

    def connectionLost(self, reason: Failure = Failure(ResponseDone())) -> None:
        if self._stopped is not None:
            self._finish(Failure(self._stopped))
        elif reason.check(ResponseDone, PotentialDataLoss):
            self._finish(b"".join(self._chunks))
        else:
            self._finish(reason)

    def abort(self, why: BaseException) -> None:
        """Stop reading now and close the connection (the pool does not reuse it)."""
        if self._stopped is not None or self.done.called:
            return
        self._stopped = why
        self._chunks = []
        # Armed first: stopProducing may report the loss (and finish) at once.
        self._grace = self.clock.callLater(ABORT_GRACE, self._finish, Failure(why))
        if self.transport is not None:
            self.transport.stopProducing()

    def _finish(self, result: Any) -> None:
        if self._grace is not None and self._grace.active():
            self._grace.cancel()
        if self.done.called:
            return
        if isinstance(result, Failure):
            self.done.errback(result)
        else:
            self.done.callback(result)


def read_body(response: Any, clock: Any, limit: int,
              on_data: Callable[[bytes], None] | None = None) -> BodyReader:
    reader = BodyReader(clock, limit, on_data)
    response.deliverBody(reader)
    length = getattr(response, "length", UNKNOWN_LENGTH)  # an int, or the UNKNOWN_LENGTH marker
    if isinstance(length, int) and length > limit:
        reader.abort(ResponseTooLarge(
            f"the response body is {size_text(length)}, larger than {size_text(limit)}"))
    return reader


def _reasons(failure: Failure) -> list[Failure]:
    """The failures under Twisted's wrapper exceptions (ResponseNeverReceived & co)."""
    found: list[Failure] = []
    stack = [failure]
    while stack:
        f = stack.pop()
        inner = getattr(f.value, "reasons", None)
        if isinstance(inner, list) and inner:
            stack.extend(x if isinstance(x, Failure) else Failure(x) for x in inner)
        else:
            found.append(f)
    return found


def _ssl_reason(e: SSL.Error) -> str:
    parts = []
    for item in e.args[0] if e.args and isinstance(e.args[0], list) else []:
        if isinstance(item, tuple) and item:
            parts.append(str(item[-1]))
    return ", ".join(p for p in parts if p) or str(e) or "handshake failed"


def describe_failure(failure: Failure, url: str, verified: bool) -> tuple[str, str, str]:
    """(code, ename, message) for a failed outbound request."""
    where = host_of(url)
    reasons = _reasons(failure)
    # The most telling reason first: a certificate, then TLS, then the rest.
    for kind in (CertificateRejected, SSL.Error):
        for f in reasons:
            if f.check(kind):
                if kind is CertificateRejected:
                    return "tls_error", "CertificateError", str(f.value)
                why = _ssl_reason(f.value)
                hint = (f"; trusted CAs come from {ENV}" if verified and "certificate" in why
                        else "")
                return "tls_error", "TLSError", f"TLS handshake with {where} failed: {why}{hint}"
    f = reasons[0]
    e = f.value
    if f.check(error.DNSLookupError):
        return "dns_error", "DNSLookupError", f"cannot resolve the host name in {shown_url(url)} (DNS lookup failed)"
    if f.check(error.ConnectionRefusedError):
        return "connection_refused", "ConnectionRefusedError", f"{where} refused the connection (is the service running on that port?)"
    if f.check(error.TimeoutError):
        return "timeout", "ConnectTimeout", f"could not connect to {where} within {CONNECT_TIMEOUT:g} s"
    if f.check(error.ConnectError):
        return "connection_error", type(e).__name__, f"cannot connect to {where}: {_first_line(e)}"
    if f.check(web_error.InfiniteRedirection):
        return "redirect_error", "TooManyRedirects", f"{shown_url(url)} redirected too many times"
    if f.check(web_error.RedirectWithNoLocation):
        return "redirect_error", "RedirectError", "the server sent a redirect without a Location header"
    if f.check(error.ConnectionLost, error.ConnectionDone):
        return "connection_closed", "ConnectionClosed", f"{where} closed the connection before the response was complete"
    if f.check(CancelledError):
        return "cancelled", "Cancelled", "the request was cancelled"
    _log.debug("unmapped outbound failure {f}", f=f)
    return "request_failed", type(e).__name__, f"the request to {shown_url(url)} failed: {_first_line(e)}"


def _first_line(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return text.splitlines()[0]


def header_dict(headers: Any) -> dict[str, str]:
    """Response headers as {lower-case name: value}; repeated ones joined with ', '."""
    out: dict[str, str] = {}
    for name, values in headers.getAllRawHeaders():
        key = name.decode("latin-1").lower()
        out[key] = ", ".join(v.decode("latin-1") for v in values)
    return out
