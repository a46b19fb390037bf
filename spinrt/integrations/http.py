"""One connection's HTTP API: URL, credentials, TLS, bounded reads, named errors.

TLS follows the runtime's outbound policy (``REQUESTS_CA_BUNDLE``,
:mod:`spinrt.outbound`) unless the connection carries its own CA (field
``ca``, PEM text or a path) or a client certificate (Kubernetes): then an
agent for exactly that trust and identity is used, for this connection only,
with its own connection pool (a pooled connection verified under one trust
is never reused under another).

Failures are :class:`~spinrt.integrations.base.IntegrationError`:

- no answer: ``connection_error`` (refused, DNS, timeout, reset) or
  ``tls_error``, with :func:`spinrt.cells.httpio.describe_failure`'s message;
- an answer with an error status: ``remote_unauthorized`` (401),
  ``remote_forbidden`` (403), ``not_found`` (404), else ``http_error``; the
  message is ``"<status> <reason>: <the server's own message>"``.

:func:`for_test` turns those into ``connections.test``'s codes.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
import json
import os
from typing import Any, Callable, Mapping, Sequence

import attrs
from twisted.internet import ssl
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from ..cells.httpio import Aborted, ResponseTooLarge, describe_failure, header_dict, max_bytes_from_environ, \
    read_body, shown_url
from ..outbound import CONNECT_TIMEOUT, ENV, Outbound, _ExplainingCreator, _UnverifiedCreator, load_trust, split_pem
from .base import IntegrationError

_TRANSPORT_CODES = {"tls_error": "tls_error"}  # every other transport failure: connection_error
_STATUS_CODES = {401: "remote_unauthorized", 403: "remote_forbidden", 404: "not_found"}
# connections.test's codes (PROTOCOL.md section 13) for the codes above.
_TEST_CODES = {"connection_error": "unreachable", "tls_error": "tls_error",
               "remote_unauthorized": "remote_unauthorized", "remote_forbidden": "remote_forbidden"}
_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.I | re.S)
MESSAGE_LIMIT = 500  # characters of a server's message quoted in an error


# -- trust -----------------------------------------------------------------------------


def _read(path: str) -> bytes:
    with open(os.path.expanduser(path), "rb") as f:
        return f.read()


async def pem_of(services: Any, value: str, field: str, what: str) -> bytes:
    """A PEM field's bytes: the text itself, or the file it names (read off
    the reactor thread). IntegrationError ``bad_connection``."""
    if "-----BEGIN" in value:
        return value.encode("utf-8")
    if not os.path.isabs(os.path.expanduser(value)):
        raise IntegrationError("bad_connection", f"{what}: '{field}' must be PEM text or an absolute path")
    reactor = services.reactor
    try:
        return await deferToThreadPool(reactor, reactor.getThreadPool(), _read, value)
    except OSError as e:
        raise IntegrationError("bad_connection", f"{what}: cannot read '{field}' {value} ({e.strerror or e})") from None


def certificates(data: bytes, field: str, what: str) -> list[ssl.Certificate]:
    certs = []
    for i, block in enumerate(split_pem(data), 1):
        try:
            certs.append(ssl.Certificate.loadPEM(block))
        except Exception as e:
            raise IntegrationError("bad_connection", f"{what}: certificate #{i} of '{field}' is not valid ({e})") from None
    if not certs:
        raise IntegrationError("bad_connection", f"{what}: '{field}' holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
    return certs


@implementer(IPolicyForHTTPS)
class ConnectionPolicy:
    """TLS for one connection: its own CA (or the runtime's trust, or none
    when the runtime does not verify) and, optionally, a client certificate."""

    def __init__(self, trust: list[ssl.Certificate] | None, source: str,
                 client: ssl.PrivateCertificate | None) -> None:
        self._trust = trust
        self._source = source
        self._client = client
        if trust is None:
            extra = ({"privateKey": client.privateKey.original, "certificate": client.original}
                     if client is not None else {})
            self._context = ssl.CertificateOptions(verify=False, **extra).getContext()

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        host = hostname.decode("ascii")
        if self._trust is None:
            return _UnverifiedCreator(self._context, host)
        creator = ssl.optionsForClientTLS(
            host, trustRoot=ssl.trustRootFromCertificates(self._trust), clientCertificate=self._client)
        return _ExplainingCreator(creator, host, port, self._source, source=self._source)


class Agents:
    """Agents for connections with their own TLS, one per trust and identity."""

    def __init__(self, services: Any) -> None:
        self.services = services
        self.outbound: Outbound = services.outbound or Outbound.from_environ(services.environ, services.reactor)
        self._agents: dict[str, tuple[Agent, HTTPConnectionPool]] = {}

    def default(self) -> Agent:
        return self.outbound.agent

    def runtime_trust(self) -> list[ssl.Certificate] | None:
        if not self.outbound.tls.verified or self.outbound.tls.path is None:
            return None
        return load_trust(self.outbound.tls.path)[1]

    def agent(self, ca: bytes | None, client: tuple[bytes, bytes] | None, what: str,
              insecure: bool = False) -> Agent:
        """An agent trusting ``ca`` (PEM; None: the runtime's policy; with
        ``insecure``, any certificate, as a kubeconfig's
        insecure-skip-tls-verify asks) and presenting ``client``
        ((certificate PEM, key PEM)), cached."""
        if ca is None and client is None and not insecure:
            return self.default()
        key = hashlib.sha256(repr((ca, client, insecure)).encode()).hexdigest()
        found = self._agents.get(key)
        if found is not None:
            return found[0]
        if insecure:
            trust, source = None, "nowhere (insecure-skip-tls-verify)"
        elif ca is not None:
            trust: list[ssl.Certificate] | None = certificates(ca, "ca", what)
            source = f"the CA of {what}"
        else:
            trust, source = self.runtime_trust(), f"{ENV}={self.outbound.tls.path}"
        identity = None
        if client is not None:
            try:
                identity = ssl.PrivateCertificate.loadPEM(client[0] + b"\n" + client[1])
            except Exception as e:
                raise IntegrationError("bad_connection", f"{what}: the client certificate or key is not valid PEM ({e})") from None
        reactor = self.services.reactor
        pool = HTTPConnectionPool(reactor, persistent=True)
        agent = Agent(reactor, contextFactory=ConnectionPolicy(trust, source, identity),
                      connectTimeout=CONNECT_TIMEOUT, pool=pool)
        self._agents[key] = (agent, pool)
        return agent

    def close(self) -> Deferred[Any]:
        from twisted.internet.defer import gatherResults

        pools = [pool for _, pool in self._agents.values()]
        self._agents.clear()
        return gatherResults([p.closeCachedConnections() for p in pools])


def agents_of(services: Any) -> Agents:
    """The runtime's shared Agents (one for every integration)."""
    settings = services.settings
    agents = settings.get("integration_agents")
    if agents is None:
        agents = Agents(services)
        try:
            settings["integration_agents"] = agents
        except TypeError:
            pass
    return agents


def authorization(token: str | None = None, basic: tuple[str, str] | None = None,
                  scheme: str = "Bearer") -> dict[str, str]:
    """The Authorization header of a bearer token, or of a user and password
    (RFC 7617), or none; IntegrationError for a value with a line break."""
    for value in (token, *(basic or ())):
        if value is not None and ("\r" in value or "\n" in value):
            raise IntegrationError("bad_connection", "a credential holds a line break")
    if token:
        return {"Authorization": f"{scheme} {token}"}
    if basic:
        pair = base64.b64encode(f"{basic[0]}:{basic[1]}".encode("utf-8")).decode("ascii")
        return {"Authorization": f"Basic {pair}"}
    return {}


# -- replies and errors --------------------------------------------------------------------


@attrs.frozen
class Reply:
    status: int
    reason: str
    headers: Mapping[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body as JSON, or IntegrationError ``bad_response``."""
        try:
            return json.loads(self.body)
        except ValueError:
            raise IntegrationError(
                "bad_response", f"the server answered {self.status} {self.reason} with a body that is not JSON: "
                f"{self.text[:200]!r}", status=self.status) from None


def server_message(reply: Reply) -> str:
    """The server's own words: ``message`` / ``error`` of a JSON body (as
    Kubernetes, Grafana and Prometheus write them), ``errors`` (a list of
    strings, Datadog's), ``messages[].text`` (splunkd's), the title of an HTML
    page, else the text."""
    try:
        data = json.loads(reply.body)
    except ValueError:
        data = None
    if isinstance(data, dict):
        for key in ("message", "error", "errorMessage", "detail"):
            if isinstance(data.get(key), str) and data[key]:
                return data[key][:MESSAGE_LIMIT]
        errors = data.get("errors")
        if isinstance(errors, list) and errors and all(isinstance(e, str) for e in errors):
            return "; ".join(errors)[:MESSAGE_LIMIT]  # Datadog: {"errors": ["Forbidden"]}
        said = [m.get("text") for m in data.get("messages") or [] if isinstance(m, dict) and m.get("text")]
        if said and all(isinstance(t, str) for t in said):
            return "; ".join(said)[:MESSAGE_LIMIT]  # splunkd: {"messages": [{"type", "text"}]}
    title = _TITLE.search(reply.text) if "html" in reply.headers.get("content-type", "") else None
    if title:  # an error page (Jenkins, a proxy): its title, not its markup
        return " ".join(html.unescape(title.group(1)).split())[:MESSAGE_LIMIT]
    text = " ".join(reply.text.split())
    return text[:MESSAGE_LIMIT] or "(no message)"


def status_error(reply: Reply, message: str | None = None) -> IntegrationError:
    """``"403 Forbidden: <the server's message>"`` with the code of its status."""
    code = _STATUS_CODES.get(reply.status, "http_error")
    said = message if message is not None else server_message(reply)
    return IntegrationError(code, f"{reply.status} {reply.reason}: {said}".strip(), status=reply.status)


def for_test(e: IntegrationError) -> IntegrationError:
    """The same failure with ``connections.test``'s code."""
    if e.code in ("bad_connection", "template_error"):
        return e
    return IntegrationError(_TEST_CODES.get(e.code, "bad_response"), e.message, status=e.status)


# -- the client --------------------------------------------------------------------------------


class HttpApi:
    """Requests to one base URL with fixed headers, aborted when the run is
    interrupted (cancel, timeout) or :meth:`stop` is called."""

    def __init__(self, services: Any, base_url: str, *, headers: Mapping[str, str] | None = None,
                 agent: Any = None, what: str = "the connection") -> None:
        self.services = services
        self.base_url = base_url.rstrip("/")
        self.headers = dict(headers or {})
        self.agent = agent
        self.what = what
        self.max_bytes = max_bytes_from_environ(services.environ)
        self.stopped: str | None = None
        self._current: Any = None  # the pending Deferred or BodyReader

    def stop(self, reason: str) -> None:
        """Abort what is in flight; later calls fail at once."""
        if self.stopped is not None:
            return
        self.stopped = reason
        current, self._current = self._current, None
        if current is None:
            return
        if hasattr(current, "abort"):
            current.abort(Aborted(reason))
        else:
            current.cancel()

    def url(self, path: str) -> str:
        return self.base_url + path

    async def call(self, method: str, path: str, *, params: Sequence[tuple[str, str]] | None = None,
                   json_body: Any = None, form: Mapping[str, str] | None = None,
                   data: bytes | None = None, headers: Mapping[str, str] | None = None,
                   on_data: Callable[[bytes], None] | None = None) -> Reply:
        """One request; the Reply whatever its status. With ``on_data`` the
        body is handed over as it arrives (streams) and Reply.body is empty."""
        if self.stopped is not None:
            raise Aborted(self.stopped)
        url = self.url(path)
        kw: dict[str, Any] = {"headers": {**self.headers, **(headers or {})}}
        if params:
            kw["params"] = list(params)
        if json_body is not None:
            kw["json"] = json_body
        elif form is not None:
            kw["data"] = dict(form)
        elif data is not None:
            kw["data"] = data  # with its Content-Type in ``headers``
        outbound = agents_of(self.services).outbound
        try:
            pending = outbound.request(method, url, agent=self.agent, allow_redirects=False, **kw)
        except Exception as e:  # treq refuses some URLs before any I/O
            raise IntegrationError("bad_connection", f"{self.what}: cannot request {shown_url(url)}: {e}") from None
        self._current = pending
        try:
            response = await pending
            streaming = on_data if 200 <= response.code < 300 else None  # an error's body is read whole
            reader = read_body(response, self.services.reactor, self.max_bytes, streaming)
            self._current = reader
            if self.stopped is not None:
                reader.abort(Aborted(self.stopped))
            body = await reader.done
        except (Aborted, ResponseTooLarge, IntegrationError):
            raise
        except Exception:
            failure = Failure()
            if self.stopped is not None:
                raise Aborted(self.stopped) from None
            code, _, message = describe_failure(failure, url, outbound.tls.verified)
            raise IntegrationError(_TRANSPORT_CODES.get(code, "connection_error"), message) from None
        finally:
            self._current = None
        reason = (response.phrase or b"").decode("latin-1", "replace")
        return Reply(response.code, reason, header_dict(response.headers), body)

    async def get_json(self, path: str, **kw: Any) -> Any:
        """GET (or ``method=``) and the JSON body of a 2xx answer; else the status error."""
        method = kw.pop("method", "GET")
        reply = await self.call(method, path, **kw)
        if not 200 <= reply.status < 300:
            raise status_error(reply)
        return reply.json()

    async def lines(self, method: str, path: str, on_line: Callable[[str], None], **kw: Any) -> Reply:
        """A streamed body, line by line (log follows, watches), until the
        server ends it or the run is interrupted. An error status is raised
        with the server's message."""
        buffer = bytearray()

        def data(chunk: bytes) -> None:
            buffer.extend(chunk)
            while True:
                end = buffer.find(b"\n")
                if end < 0:
                    return
                line = bytes(buffer[:end]).decode("utf-8", errors="replace")
                del buffer[:end + 1]
                on_line(line)

        reply = await self.call(method, path, on_data=data, **kw)
        if not 200 <= reply.status < 300:
            raise status_error(reply)
        if buffer:
            on_line(bytes(buffer).decode("utf-8", errors="replace"))
        return reply
