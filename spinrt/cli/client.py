"""A ``spin.v1`` WebSocket client: requests with replies, events, clear refusals.

Failures to reach, authenticate to, or keep talking to a runtime all become
``RuntimeUnavailable`` with one line a user can act on (``spin`` exits 4).
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from autobahn.websocket.util import parse_url
from OpenSSL import SSL
from twisted.internet import ssl
from twisted.internet.defer import Deferred, TimeoutError as DeferredTimeout
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from .. import protocol as proto

_log = Logger()

CONNECT_TIMEOUT = 15.0
REQUEST_TIMEOUT = 60.0


class RuntimeUnavailable(Exception):
    """Cannot reach, authenticate to, or keep talking to the runtime (exit 4)."""


class RequestFailed(Exception):
    def __init__(self, op: str, code: str, message: str) -> None:
        super().__init__(f"{op}: {message} ({code})")
        self.code = code
        self.message = message


def shown_url(url: str) -> str:
    """The URL without its query, which might carry a token."""
    secure, host, port, _, path, _ = parse_url(url)
    shown = f"[{host}]" if ":" in host else host
    return f"{'wss' if secure else 'ws'}://{shown}:{port}{path}"


class _Factory(WebSocketClientFactory):
    connection: "Connection"


class _Protocol(WebSocketClientProtocol):
    factory: _Factory

    def onOpen(self) -> None:
        self.factory.connection._opened(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if not isBinary:
            self.factory.connection._received(payload)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.factory.connection._closed(code, reason)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        # Autobahn's close reason does not say why TLS failed; keep the cause.
        self.factory.connection._cause = reason.value
        super().connectionLost(reason)


def _refusal(reason: str | None) -> str:
    """A failed upgrade, explained: autobahn says 'upgrade failed [401]: ...'."""
    match = re.search(r"\[(\d{3})\]", reason or "")
    status = int(match.group(1)) if match else None
    if status == 401:
        return "the runtime refused the token (HTTP 401): check SPIN_TOKEN or --token-file"
    if status == 403:
        return "the runtime refused this client's origin (HTTP 403)"
    if status == 429:
        return "the runtime is throttling this address after failed logins (HTTP 429): retry later"
    if status is not None:
        return f"the runtime refused the WebSocket upgrade (HTTP {status})"
    return f"the WebSocket handshake failed ({(reason or 'connection closed').splitlines()[0]})"


class Connection:
    """Requests with replies, events to ``on_event``, ``lost`` fires with a reason."""

    def __init__(self, reactor: Any, url: str) -> None:
        self.reactor = reactor
        self.url = shown_url(url)
        self.on_event: Callable[[dict[str, Any]], None] = lambda event: None
        self.runtime: dict[str, Any] = {}
        self.lost: Deferred[str] = Deferred()
        self._protocol: _Protocol | None = None
        self._welcome: Deferred[None] = Deferred()
        self._pending: dict[str, Deferred[dict[str, Any]]] = {}
        self._next = 0
        self._cause: BaseException | None = None

    @classmethod
    async def open(cls, reactor: Any, url: str, token: str, trust_root: Any = None,
                   timeout: float = CONNECT_TIMEOUT) -> "Connection":
        conn = cls(reactor, url)
        secure, host, port, _, _, _ = parse_url(url)
        factory = _Factory(url, headers={"Authorization": f"Bearer {token}"},
                                         protocols=[proto.SUBPROTOCOL])
        factory.protocol = _Protocol
        factory.connection = conn
        factory.setProtocolOptions(maxFramePayloadSize=0, maxMessagePayloadSize=0,
                                   openHandshakeTimeout=timeout, closeHandshakeTimeout=2.0,
                                   tcpNoDelay=True)
        endpoint: Any = HostnameEndpoint(reactor, host, port, timeout=timeout)
        if secure:
            # A token goes over this connection: the server is always verified.
            endpoint = wrapClientTLS(ssl.optionsForClientTLS(host, trustRoot=trust_root), endpoint)
        try:
            await endpoint.connect(factory)
        except Exception as e:
            raise RuntimeUnavailable(f"cannot reach the runtime at {conn.url}: {_why(e)}") from None
        # The first frame is the runtime's welcome; a refused upgrade closes instead.
        conn._welcome.addTimeout(timeout, reactor)
        try:
            await conn._welcome
        except DeferredTimeout:
            if conn._protocol is not None:
                conn._protocol.dropConnection(abort=True)
            raise RuntimeUnavailable(f"no welcome from {conn.url} within {timeout:g} s: is it a spin runtime?") from None
        return conn

    def _opened(self, protocol: _Protocol) -> None:
        self._protocol = protocol

    def _received(self, payload: bytes) -> None:
        try:
            message = json.loads(payload)
        except ValueError:
            _log.warn("the runtime sent a frame that is not JSON")
            return
        if not isinstance(message, dict):
            return
        if "re" in message:
            waiting = self._pending.pop(str(message["re"]), None)
            if waiting is not None:
                waiting.callback(message)
        elif message.get("event") == "welcome":
            self.runtime = message.get("runtime") or {}
            if not self._welcome.called:
                self._welcome.callback(None)
        elif "event" in message:
            self.on_event(message)

    def _closed(self, code: int | None, reason: str | None) -> None:
        if not self._welcome.called:
            if self._protocol is not None:
                why = f"the runtime closed the connection ({code})"
            elif isinstance(self._cause, SSL.Error):
                why = f"TLS with the runtime at {self.url} failed ({_tls_why(self._cause)})"
            else:
                why = _refusal(reason)
            self._welcome.errback(RuntimeUnavailable(why))
            return
        why = f"lost the connection to the runtime at {self.url} (close code {code}{': ' + reason if reason else ''})"
        pending, self._pending = self._pending, {}
        for waiting in pending.values():
            waiting.errback(RuntimeUnavailable(why))
        if not self.lost.called:
            self.lost.callback(why)

    async def request(self, op: str, timeout: float = REQUEST_TIMEOUT, **params: Any) -> dict[str, Any]:
        if self._protocol is None or self.lost.called:
            raise RuntimeUnavailable(f"not connected to the runtime at {self.url}")
        self._next += 1
        rid = f"c{self._next}"
        waiting: Deferred[dict[str, Any]] = Deferred()
        self._pending[rid] = waiting
        waiting.addTimeout(timeout, self.reactor)
        self._protocol.sendMessage(json.dumps({"id": rid, "op": op, **params}).encode("utf-8"))
        try:
            reply = await waiting
        except DeferredTimeout:
            self._pending.pop(rid, None)
            raise RuntimeUnavailable(f"the runtime did not answer '{op}' within {timeout:g} s") from None
        if not reply.get("ok"):
            error = reply.get("error") or {}
            raise RequestFailed(op, str(error.get("code")), str(error.get("message")))
        return reply

    async def close(self) -> None:
        if self._protocol is not None and not self.lost.called:
            self._protocol.sendClose(1000)
            self.lost.addTimeout(3.0, self.reactor)
            try:
                await self.lost
            except DeferredTimeout:
                self._protocol.dropConnection(abort=True)


def _tls_why(e: BaseException) -> str:
    """pyOpenSSL's [(lib, func, reason), ...] -> 'certificate verify failed'."""
    reasons = [str(item[-1]) for item in (e.args[0] if e.args and isinstance(e.args[0], list) else [])
               if isinstance(item, tuple) and item]
    return "; ".join(reasons) or _why(e)


def _why(e: BaseException) -> str:
    text = str(e).strip()  # e.g. "Connection was refused by other side: 111: Connection refused."
    return text.splitlines()[0].rstrip(".") if text else type(e).__name__
