"""Following HTTP redirects as RFC 9110 section 15.4 says, for REST cells.

Twisted's ``BrowserLikeRedirectAgent`` (treq's ``browser_like_redirects``)
turns 301, 302, 303 and 308 into a GET that still carries the old body's
``Content-Type``, and refuses a 307 after POST because it cannot send the
body again. ``following`` gives an agent that, per redirect:

- 303 after any method but GET and HEAD, and 301 or 302 after POST (RFC 9110
  sections 15.4.2-15.4.4; the WHATWG Fetch standard does the same): the next
  request is a GET with no body and none of the body's header fields
  (``BODY_HEADERS``, the list of section 15.4 plus ``Transfer-Encoding``).
- every other redirect (307, 308, 301/302 after another method, anything
  after GET or HEAD): the same method, body and header fields.

Twisted's ``RedirectAgent`` still does the rest: resolving ``Location``, the
limit of 20 redirects, and dropping ``Authorization``, ``Cookie`` and
``Proxy-Authorization`` when a redirect leaves the origin. Cookies a
response in the chain sets go with the later requests of that chain, as a
browser's would.
"""

from __future__ import annotations

from http.cookiejar import CookieJar
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.web import http
from twisted.web.client import CookieAgent, RedirectAgent
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer
from zope.interface import implementer

FOLLOWED = (http.MOVED_PERMANENTLY, http.FOUND, http.SEE_OTHER, http.TEMPORARY_REDIRECT, http.PERMANENT_REDIRECT)

# RFC 9110 section 15.4: "remove content-specific header fields, including (but
# not limited to) Content-Encoding, Content-Language, Content-Location,
# Content-Type, Content-Length, Digest, and Last-Modified" when the method
# becomes GET; Transfer-Encoding and Content-Digest (RFC 9530) describe the body too.
BODY_HEADERS = frozenset({
    b"content-encoding", b"content-language", b"content-location", b"content-type",
    b"content-length", b"digest", b"content-digest", b"last-modified", b"transfer-encoding",
})


def next_method(code: int, method: bytes) -> bytes:
    """The method of the request that follows a ``code`` redirect of a ``method`` request.

    ``b"GET"`` for 303 after anything but GET/HEAD and for 301/302 after POST
    (RFC 9110 section 15.4); ``method`` otherwise."""
    if code == http.SEE_OTHER and method not in (b"GET", b"HEAD"):
        return b"GET"
    if code in (http.MOVED_PERMANENTLY, http.FOUND) and method == b"POST":
        return b"GET"
    return method


def without_body_headers(headers: Headers) -> Headers:
    return Headers({name: values for name, values in headers.getAllRawHeaders()
                    if name.lower() not in BODY_HEADERS})


@implementer(IBodyProducer)
class BytesProducer:
    """A body already in memory, written at once (REST bodies are cell text or JSON)."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.length = len(body)

    def startProducing(self, consumer: Any) -> Deferred[None]:
        consumer.write(self.body)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


@implementer(IAgent)
class _Resend:
    """Gives a redirected request the original body again while its method is unchanged.

    (Twisted's RedirectAgent sends every redirected request without a body.)
    Once a redirect turns the method into GET it never turns back, so "same
    method as the first request" is exactly "the body still belongs"."""

    def __init__(self, agent: IAgent, method: bytes, body: bytes | None) -> None:
        self._agent = agent
        self._method = method
        self._body = body

    def request(self, method: bytes, uri: bytes, headers: Headers | None = None,
                bodyProducer: IBodyProducer | None = None) -> Deferred[Any]:
        if bodyProducer is None and self._body is not None and method == self._method:
            bodyProducer = BytesProducer(self._body)
        return self._agent.request(method, uri, headers, bodyProducer)


class _FollowRedirects(RedirectAgent):
    _redirectResponses = list(FOLLOWED)
    _seeOtherResponses: list[int] = []

    def _handleResponse(self, response: Any, method: bytes, uri: bytes, headers: Headers | None,
                        redirectCount: int) -> Any:
        if response.code not in FOLLOWED:
            return response
        after = next_method(response.code, method)
        if after != method and headers is not None:
            headers = without_body_headers(headers)
        return self._handleRedirect(response, after, uri, headers, redirectCount)


def following(agent: IAgent, method: str, body: bytes | None) -> IAgent:
    """An agent for ONE request of ``method`` with ``body`` that follows its redirects.

    Give it the same method and body the request is then made with."""
    return _FollowRedirects(_Resend(CookieAgent(agent, CookieJar()), method.upper().encode("ascii"), body))
