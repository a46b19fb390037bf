"""Test tools for the Jupyter face: HTTP calls with treq and a kernel
WebSocket client that speaks the legacy JSON or the v1 binary protocol
(decoded with jupyter_server's own deserializer)."""

from __future__ import annotations

import json
import uuid
from typing import Any, Callable

import treq
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from jupyter_server.services.kernels.connection.base import deserialize_msg_from_ws_v1, serialize_msg_to_ws_v1
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint

from .support import TOKEN

V1 = "v1.kernel.websocket.jupyter.org"


def base(service: Any) -> str:
    return f"http://127.0.0.1:{service.addresses[0]['port']}/jupyter"


async def call(service: Any, method: str, path: str, body: Any = None, *, token: str | None = TOKEN,
               headers: dict[str, str] | None = None, url: str | None = None) -> tuple[int, Any, Any]:
    """(status, JSON body or raw bytes, response headers); ``url``: another server's base."""
    all_headers = {"Authorization": f"token {token}"} if token is not None else {}
    all_headers.update(headers or {})
    # No kept-alive connections: trial wants a clean reactor after each test.
    kwargs: dict[str, Any] = {"headers": all_headers, "persistent": False}
    if body is not None:
        kwargs["data"] = body if isinstance(body, bytes) else json.dumps(body).encode()
        all_headers.setdefault("Content-Type", "application/json")
    response = await treq.request(method, (url or base(service)) + path, **kwargs)
    raw = await response.content()
    kind = response.headers.getRawHeaders(b"content-type") or [b""]
    value: Any = json.loads(raw) if raw and kind[0].startswith(b"application/json") else raw
    return response.code, value, response.headers


class _Protocol(WebSocketClientProtocol):
    def onOpen(self) -> None:
        self.factory.client._opened(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.client._received(payload, isBinary)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.factory.client._closed(code, reason)


class KernelSocket:
    """One kernel channels WebSocket; ``messages`` holds everything received."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.messages: list[dict[str, Any]] = []
        self.binary_frames = 0
        self.protocol: _Protocol | None = None
        self.selected: str | None = None
        self.close_code: int | None = None
        self.closed: defer.Deferred[Any] = defer.Deferred()
        self._opened_d: defer.Deferred[Any] = defer.Deferred()
        self._waiters: list[tuple[Callable[[dict[str, Any]], bool], defer.Deferred[Any]]] = []

    @classmethod
    async def connect(cls, service: Any, kernel_id: str, *, session_id: str | None = None, v1: bool = False,
                      token: str | None = TOKEN, query_token: bool = False, port: int | None = None,
                      prefix: str = "/jupyter") -> "KernelSocket":
        """A socket to the runtime's kernel (or, with ``port`` and ``prefix``,
        to a jupyter_server's)."""
        client = cls(session_id or uuid.uuid4().hex)
        port = port or service.addresses[0]["port"]
        url = f"ws://127.0.0.1:{port}{prefix}/api/kernels/{kernel_id}/channels?session_id={client.session_id}"
        headers = {}
        if token is not None and query_token:
            url += f"&token={token}"
        elif token is not None:
            headers["Authorization"] = f"token {token}"
        factory = WebSocketClientFactory(url, headers=headers, protocols=[V1] if v1 else None)
        factory.protocol = _Protocol
        factory.client = client
        factory.setProtocolOptions(maxFramePayloadSize=0, maxMessagePayloadSize=0)
        await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(factory)
        await client._opened_d
        return client

    def _opened(self, protocol: _Protocol) -> None:
        self.protocol = protocol
        self.selected = protocol.websocket_protocol_in_use
        self._opened_d.callback(self)

    def _closed(self, code: int | None, reason: str | None) -> None:
        self.close_code = code
        if not self._opened_d.called:
            self._opened_d.errback(ConnectionError(f"handshake failed: {code} {reason}"))
        if not self.closed.called:
            self.closed.callback(code)

    def _received(self, payload: bytes, binary: bool) -> None:
        if binary:
            self.binary_frames += 1
            channel, parts = deserialize_msg_from_ws_v1(payload)
            msg = {"channel": channel, "header": json.loads(parts[0]), "parent_header": json.loads(parts[1]),
                   "metadata": json.loads(parts[2]), "content": json.loads(parts[3]),
                   "buffers": [bytes(b) for b in parts[4:]]}
            msg["msg_type"] = msg["header"]["msg_type"]
        else:
            msg = json.loads(payload)
        self.messages.append(msg)
        for waiter in list(self._waiters):
            predicate, d = waiter
            if predicate(msg):
                self._waiters.remove(waiter)
                d.callback(msg)

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30.0) -> defer.Deferred[Any]:
        for msg in self.messages:
            if predicate(msg):
                return defer.succeed(msg)
        d: defer.Deferred[Any] = defer.Deferred()
        self._waiters.append((predicate, d))
        d.addTimeout(timeout, reactor)
        return d

    def send(self, msg_type: str, content: dict[str, Any], channel: str = "shell") -> str:
        assert self.protocol is not None
        msg_id = uuid.uuid4().hex
        head = {"msg_id": msg_id, "msg_type": msg_type, "session": self.session_id, "username": "tester",
                "date": "", "version": "5.4"}
        if self.selected == V1:
            parts = [json.dumps(x).encode() for x in (head, {}, {}, content)]
            self.protocol.sendMessage(serialize_msg_to_ws_v1(parts, channel), isBinary=True)
        else:
            self.protocol.sendMessage(json.dumps({"header": head, "parent_header": {}, "metadata": {},
                                                  "content": content, "buffers": [], "channel": channel}).encode())
        return msg_id

    def of(self, msg_id: str, msg_type: str | None = None) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["parent_header"].get("msg_id") == msg_id
                and (msg_type is None or m["msg_type"] == msg_type)]

    async def request(self, msg_type: str, content: dict[str, Any], channel: str = "shell",
                      timeout: float = 30.0) -> dict[str, Any]:
        """Send; the reply, once the reply and the idle status have both come."""
        msg_id = self.send(msg_type, content, channel)
        reply_type = msg_type.replace("_request", "_reply")
        reply = await self.wait_for(lambda m: m["parent_header"].get("msg_id") == msg_id
                                    and m["msg_type"] == reply_type, timeout)
        if channel == "shell":
            await self.wait_for(lambda m: m["parent_header"].get("msg_id") == msg_id and m["msg_type"] == "status"
                                and m["content"]["execution_state"] == "idle", timeout)
        return reply

    async def execute(self, code: str, timeout: float = 60.0, **extra: Any) -> tuple[dict[str, Any], str]:
        """(execute_reply, msg_id)."""
        msg_id = self.send("execute_request", {"code": code, "silent": False, "store_history": True,
                                               "user_expressions": {}, "allow_stdin": False, **extra})
        reply = await self.wait_for(lambda m: m["parent_header"].get("msg_id") == msg_id
                                    and m["msg_type"] == "execute_reply", timeout)
        await self.wait_for(lambda m: m["parent_header"].get("msg_id") == msg_id and m["msg_type"] == "status"
                            and m["content"]["execution_state"] == "idle", timeout)
        return reply, msg_id

    def stdout(self, msg_id: str) -> str:
        return "".join(m["content"]["text"] for m in self.of(msg_id, "stream") if m["content"]["name"] == "stdout")

    def close(self) -> defer.Deferred[Any]:
        if self.protocol is not None and not self.closed.called:
            self.protocol.sendClose()
        return self.closed
