"""``/jupyter/api/kernels/<id>/channels``: the kernel WebSocket.

Framing (:mod:`.framing`): the legacy JSON protocol, or
``v1.kernel.websocket.jupyter.org`` when the client offers it. A client
that negotiated nothing never gets a binary frame (buffers are dropped and
logged): jupyter_server's gateway proxy stops relaying after one.

Routing, as jupyter_server does it: iopub goes to every connection of the
kernel; a reply on shell or control goes only to the connection that sent
the request (by its ``session_id``, the client's id). A new connection
with the ``session_id`` of one still open replaces it.

What runs come from the session's log (:mod:`.translate`): each connection
follows it from its own cursor with a Subscription, so a slow client reads
its backlog from the store instead of growing memory. A client that
reconnects with the same ``session_id`` gets what the kernel produced
while it was away, read from the log; past ``replay_limit`` bytes of
output it gets a stderr notice instead of the rest (the log keeps it all),
and the rest of the replay (statuses, replies, errors) as usual. Other
requests (kernel_info, complete, inspect, comm ...) are forwarded to the
Python kernel as they are, their replies and output masked like events.

Roles (spinrt.roles.JUPYTER_MESSAGE_ROLES): any role may connect and watch
iopub and ask for kernel_info; a runner may interrupt; everything else
(execute, complete, inspect, comm, shutdown) needs an editor. A refused
request gets an error reply naming the role it needs.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.web.server import Request
from zope.interface import implementer

from ... import protocol as proto
from ... import roles
from ...tokens import Identity
from ..auth import find_token
from ..ws_upgrade import Handshake
from . import framing, translate
from .kernels import PYTHON, JupyterKernel, JupyterKernels

_log = Logger()

ROUTE = "/jupyter/api/kernels/channels"  # for the audit trail and the throttle
MAX_FRAME = 8 * 1024 * 1024  # under tornado's 10 MiB: jupyter_server's proxy closes on a bigger frame
REPLAY_LIMIT = 16 * 1024 * 1024  # bytes of output replayed to a reconnecting client

SHELL_INFO = {
    "status": "ok",
    "protocol_version": framing.PROTOCOL_VERSION,
    "implementation": "spin-shell",
    "implementation_version": "1",
    "language_info": {"name": "bash", "mimetype": "text/x-sh", "file_extension": ".sh",
                      "codemirror_mode": "shell", "pygments_lexer": "bash"},
    "banner": "spin-shell: each cell is a bash script run by the spin runtime, in its environment",
    "help_links": [],
    "debugger": False,
}


class ChannelsResource:
    """Renders one upgrade: origin headers read into a Handshake (Autobahn
    would answer 400 to ``null``), then Autobahn's resource."""

    isLeaf = True

    def __init__(self, factory: "ChannelsFactory") -> None:
        self.factory = factory

    def render(self, request: Request, kernel_id: str) -> Any:
        handshake = Handshake.taken_from(request, self.factory.proxies)
        return WebSocketResource(_OneUpgrade(self.factory, handshake, kernel_id)).render(request)


class _OneUpgrade:
    def __init__(self, factory: "ChannelsFactory", handshake: Handshake, kernel_id: str) -> None:
        self.factory, self.handshake, self.kernel_id = factory, handshake, kernel_id

    def buildProtocol(self, addr: Any) -> Any:
        protocol = self.factory.buildProtocol(addr)
        if protocol is not None:
            protocol.handshake = self.handshake
            protocol.kernel_id = self.kernel_id
        return protocol


class ChannelConnection(WebSocketServerProtocol):
    factory: "ChannelsFactory"
    handshake: Handshake
    kernel_id = ""
    kernel: JupyterKernel | None = None
    identity: Identity | None = None
    client = ""
    v1 = False
    jupyter = True  # a sink of the Jupyter face: not a spin client (culling, connection counts)
    writable = True
    open = False
    _sub: Any = None
    _refusal_headers: Any = ()

    # -- handshake -----------------------------------------------------------------

    def onConnect(self, request: Any) -> Any:
        factory = self.factory
        handshake = self.handshake
        if not factory.origins.allows(handshake.origins, handshake.own):
            raise ConnectionDeny(403, "origin not allowed")
        token = find_token(request.headers, (), request.params)
        verdict = factory.gate.check(handshake.client, token, ROUTE)
        if not verdict.accepted:
            if verdict.retry_after:
                self._refusal_headers = [("Retry-After", str(verdict.retry_after))]
                deny = ConnectionDeny(429, f"too many failed attempts; retry in {verdict.retry_after} s")
            else:
                deny = ConnectionDeny(401, "missing or wrong token")
            if verdict.answer is None:
                raise deny

            def refuse(_: None) -> None:
                raise deny

            return verdict.answer.addCallback(refuse)
        self.identity = verdict.identity
        kernel = factory.kernels.kernels.get(self.kernel_id)
        if kernel is None:
            raise ConnectionDeny(404, f"Kernel does not exist: {self.kernel_id[:64]}")
        self.kernel = kernel
        given = (request.params.get("session_id") or [""])[0]
        self.client = given[:128] if given else "anonymous-" + uuid.uuid4().hex
        self.v1 = framing.V1 in request.protocols
        return framing.V1 if self.v1 else None

    def failHandshake(self, reason: str, code: int = 400, responseHeaders: Any = None) -> None:
        headers = [("Server", "spinrt"), *(responseHeaders or ()), *self._refusal_headers]
        super().failHandshake(reason, code, headers)

    def onOpen(self) -> None:
        kernel = self.kernel
        assert kernel is not None
        if kernel.gone:
            self.sendClose(1000, "kernel gone")
            return
        stale = kernel.connections.get(self.client)
        if stale is not None:
            stale.replaced()
        kernel.connections[self.client] = self
        self.factory.connections.add(self)
        self.open = True
        session = kernel.session
        cursor = kernel.cursor_for(self.client)
        self.replay_until = session.last_seq if cursor is not None else 0
        self.replayed = self.dropped = 0
        self.replay_limit = self.factory.replay_limit
        try:
            self.transport.unregisterProducer()  # the HTTP channel's, from before the upgrade
        except Exception:
            pass
        self.transport.registerProducer(_Backpressure(self), True)
        if self.factory.audit is not None:
            self.factory.audit.record("connect", identity=self.identity, client=self.handshake.client,
                                      target={"route": ROUTE, "kernel": kernel.id})
        if self.identity is not None and self.identity.expires is not None:
            delay = max(0.0, self.identity.expires - time.time())
            self.factory.clock.callLater(delay, self.end, 4401, "token expired")
        self._sub = session.subscribe(self, session.last_seq if cursor is None else cursor)

    def replaced(self) -> None:
        self._leave(remember=False)
        self.sendClose(4000, "replaced by a new connection with the same session_id")

    def end(self, code: int, reason: str) -> None:
        self._leave()
        self.sendClose(code, reason)

    def kernel_gone(self, why: str) -> None:
        """iopub ``status: dead``, then close (1000: clients do not reconnect)."""
        if self.open and self.kernel is not None:
            self.send_msg(translate.status(self.kernel, "dead").msg)
        self._leave(remember=False)
        self.sendClose(1000, "kernel gone"[:100])

    def _leave(self, remember: bool = True) -> None:
        if not self.open:
            return
        self.open = False
        self.factory.connections.discard(self)
        kernel = self.kernel
        if self._sub is not None:
            self._sub.close()
            if kernel is not None and remember:
                kernel.left(self.client, self._sub.next_seq - 1)
        if kernel is not None and kernel.connections.get(self.client) is self:
            del kernel.connections[self.client]
            kernel.last_connected = self.factory.clock.seconds()

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        was_open = self.open
        self._leave()
        if was_open and self.factory.audit is not None:
            self.factory.audit.record("disconnect", identity=self.identity, client=self.handshake.client,
                                      target={"route": ROUTE, **({"code": code} if code is not None else {})})

    # -- the log, as messages (the subscription's sink) ----------------------------

    def send(self, frame: bytes) -> None:
        kernel = self.kernel
        if not self.open or kernel is None:
            return
        event = orjson.loads(frame)
        seq = event.get("seq", 0)
        replaying = seq <= self.replay_until
        if replaying and event.get("event") in translate.OUTPUT_EVENTS:
            if self.replayed + len(frame) > self.replay_limit:
                if not self.dropped:
                    self.send_msg(translate.stderr_notice(
                        kernel, f"\n[spin] output produced while this client was away is over the replay limit "
                                f"({self.replay_limit} bytes): the rest of it is not shown here. The session's "
                                f"log keeps all of it (spin session {kernel.session.id}).\n",
                        kernel.parent_of(event.get("run", ""))).msg)
                self.dropped += len(frame)
                return
            self.replayed += len(frame)
        for routed in translate.translate(kernel, event):
            if routed.to is None or routed.to == self.client:
                self.send_msg(routed.msg)
        if replaying and seq == self.replay_until and self.dropped:
            self.send_msg(translate.stderr_notice(
                kernel, f"[spin] {self.dropped} bytes of output were not replayed to this client.\n").msg)

    def send_msg(self, msg: dict[str, Any]) -> None:
        """One message, framed as this connection negotiated, under MAX_FRAME."""
        if self.v1:
            frame, binary, dropped = framing.encode_v1(msg), True, 0
        else:
            frame, dropped = framing.encode_legacy(msg)
            binary = False
            if dropped and not getattr(self, "_told_buffers", False):
                self._told_buffers = True
                _log.info("jupyter kernel {id}: binary buffers dropped for a client without the v1 protocol "
                          "(a gateway proxy cannot relay them)", id=self.kernel_id)
        if len(frame) > MAX_FRAME:
            kernel = self.kernel
            if kernel is None or msg.get("channel") != "iopub":
                _log.warn("jupyter kernel {id}: a {type} of {n} bytes was not sent (over {max})",
                          id=self.kernel_id, type=msg.get("msg_type"), n=len(frame), max=MAX_FRAME)
                return
            notice = translate.stderr_notice(
                kernel, f"[spin] a {msg.get('msg_type')} output of {len(frame)} bytes is over the {MAX_FRAME} "
                        f"bytes a Jupyter connection carries; the spin session {kernel.session.id} has it\n",
                msg.get("parent_header")).msg
            self.send_msg(notice)
            return
        self.sendMessage(frame, isBinary=binary)

    # -- requests --------------------------------------------------------------------

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if not self.open or self.kernel is None:
            return
        try:
            if self.v1:
                msg = framing.decode_v1(payload) if isBinary else framing.decode_legacy_text(payload)
            else:
                msg = framing.decode_legacy_binary(payload) if isBinary else framing.decode_legacy_text(payload)
        except framing.FrameError as e:
            _log.info("jupyter kernel {id}: a frame from {client} was ignored: {why}", id=self.kernel_id,
                      client=self.handshake.client, why=e)
            return
        try:
            self.handle(msg)
        except Exception:
            _log.failure("jupyter kernel {id}: handling {type} failed", id=self.kernel_id,
                         type=msg["header"].get("msg_type"))
            self.reply(msg, {"status": "error", "ename": "InternalError",
                             "evalue": "the runtime failed to handle this request", "traceback": []})

    def handle(self, msg: dict[str, Any]) -> None:
        kernel = self.kernel
        assert kernel is not None and self.identity is not None
        channel, msg_type = msg["channel"], msg["header"]["msg_type"]
        if channel in ("iopub", "stdin"):
            return  # no stdin: input() is refused by the kernel itself
        needed = roles.jupyter_message_role(msg_type)
        if not roles.allows(self.identity.role, needed):
            if self.factory.audit is not None:
                self.factory.audit.record(f"jupyter.{msg_type}", identity=self.identity, client=self.handshake.client,
                                          target={"kernel": kernel.id}, outcome=proto.FORBIDDEN)
            self.reply(msg, {"status": "error", "ename": "Forbidden", "traceback": [],
                             "evalue": f"your role '{self.identity.role}' may not send {msg_type}; "
                                       f"it needs the role '{needed}' or above"}, statuses=True)
            return
        kernel.touch()
        content = msg["content"]
        if channel == "control":
            self._control(msg, msg_type, content)
        elif msg_type == "execute_request" and not content.get("silent"):
            code = content.get("code")
            if not isinstance(code, str):
                self.reply(msg, {"status": "error", "ename": "BadRequest", "evalue": "'code' must be a string",
                                 "traceback": []}, statuses=True)
                return
            try:
                kernel.execute(code, msg["header"], self.client, self.identity.name,
                               content.get("stop_on_error", True) is not False)
            except proto.ProtocolError as e:
                self.reply(msg, {"status": "error", "ename": "SessionError", "evalue": e.message,
                                 "traceback": [e.message]}, statuses=True)
        elif kernel.spec == PYTHON:
            Deferred.fromCoroutine(self._forward(msg)).addErrback(
                lambda f: _log.failure("jupyter kernel {id}: forwarding failed", f, id=kernel.id))
        else:
            self.reply(msg, shell_reply(msg_type, content), statuses=True)

    def _control(self, msg: dict[str, Any], msg_type: str, content: dict[str, Any]) -> None:
        kernel = self.kernel
        assert kernel is not None
        if msg_type == "interrupt_request":
            kernel.interrupt()
            self.reply(msg, {"status": "ok"})
        elif msg_type == "shutdown_request":
            restart = bool(content.get("restart"))
            self.reply(msg, {"status": "ok", "restart": restart})
            registry = self.factory.kernels
            pending = registry.restart(kernel.id) if restart else registry.delete(kernel.id)
            Deferred.fromCoroutine(pending).addErrback(
                lambda f: _log.failure("jupyter kernel {id}: shutdown_request failed", f, id=kernel.id))
        else:
            self.reply(msg, {"status": "error", "ename": "NotSupported", "traceback": [],
                             "evalue": f"{msg_type} is not supported by the spin runtime"})

    async def _forward(self, msg: dict[str, Any]) -> None:
        kernel = self.kernel
        assert kernel is not None
        python = self.factory.kernels.manager.processors.get("python")
        client, key = self.client, kernel
        masker = lambda: kernel.session.masker  # noqa: E731  (the masker of the moment)

        def relay(reply: dict[str, Any]) -> None:
            out = _outgoing(reply, masker())
            if out["channel"] == "shell":
                if out["msg_type"] == "kernel_info_reply":
                    out["content"]["debugger"] = False  # no control channel for a debugger here
                conn = key.connections.get(client)
                if conn is not None:
                    conn.send_msg(out)
            else:
                for conn in list(key.connections.values()):
                    conn.send_msg(out)

        try:
            if kernel.session.state != "open":
                raise RuntimeError("its spin session is closed")
            live = await python.session_kernel(kernel.session.id)
            live.forward(msg, relay)
        except Exception as e:
            self.reply(msg, {"status": "error", "ename": "KernelUnavailable", "traceback": [],
                             "evalue": f"the kernel cannot take requests: {e or type(e).__name__}"}, statuses=True)

    def reply(self, msg: dict[str, Any], content: dict[str, Any], statuses: bool = False) -> None:
        """A reply made here, to this connection alone (with busy/idle around
        it for shell requests, as clients wait for idle)."""
        kernel = self.kernel
        assert kernel is not None
        msg_type = msg["header"]["msg_type"]
        reply_type = msg_type[:-len("_request")] + "_reply" if msg_type.endswith("_request") else msg_type + "_reply"
        parent = msg["header"]
        if statuses:
            self.send_msg(translate.status(kernel, "busy", parent).msg)
        self.send_msg(framing.message(msg["channel"], reply_type, content, parent, session=kernel.key,
                                      metadata={"status": content.get("status")} if "status" in content else None))
        if statuses:
            self.send_msg(translate.status(kernel, "idle", parent).msg)


def shell_reply(msg_type: str, content: dict[str, Any]) -> dict[str, Any]:
    """What the spin-shell kernel answers to shell requests other than execute."""
    if msg_type == "kernel_info_request":
        return dict(SHELL_INFO)
    if msg_type == "execute_request":  # silent: nothing to run for nobody
        return {"status": "ok", "execution_count": 0, "user_expressions": {}, "payload": []}
    if msg_type == "complete_request":
        cursor = content.get("cursor_pos") if isinstance(content.get("cursor_pos"), int) else 0
        return {"status": "ok", "matches": [], "cursor_start": cursor, "cursor_end": cursor, "metadata": {}}
    if msg_type == "inspect_request":
        return {"status": "ok", "found": False, "data": {}, "metadata": {}}
    if msg_type == "is_complete_request":
        return {"status": "complete"}
    if msg_type == "history_request":
        return {"status": "ok", "history": []}
    if msg_type == "comm_info_request":
        return {"status": "ok", "comms": {}}
    return {"status": "error", "ename": "NotSupported", "evalue": f"spin-shell does not answer {msg_type}",
            "traceback": []}


def _outgoing(msg: dict[str, Any], masker: Any) -> dict[str, Any]:
    """A kernel's message (as jupyter_client gives it) for a client: masked,
    on its channel (a reply on shell, the rest on iopub)."""
    msg_type = msg.get("msg_type") or msg["header"].get("msg_type", "")
    content = msg.get("content") or {}
    if masker:
        content = masker.mask_tree(content)
    return {
        "channel": "shell" if msg_type.endswith("_reply") else "iopub",
        "header": msg["header"], "parent_header": msg.get("parent_header") or {},
        "metadata": msg.get("metadata") or {}, "content": content,
        "buffers": [bytes(b) for b in msg.get("buffers") or ()],
        "msg_id": msg["header"].get("msg_id"), "msg_type": msg_type,
    }


@implementer(IPushProducer)
class _Backpressure:
    """A full socket stops the connection's subscription (it reads the log
    later) and stops reading its requests."""

    def __init__(self, conn: ChannelConnection) -> None:
        self.conn = conn

    def pauseProducing(self) -> None:
        self.conn.writable = False
        if self.conn.transport is not None:
            self.conn.transport.pauseProducing()

    def resumeProducing(self) -> None:
        if self.conn.transport is not None:
            self.conn.transport.resumeProducing()
        self.conn.writable = True
        if self.conn._sub is not None and self.conn.open:
            self.conn._sub.pump()

    def stopProducing(self) -> None:
        self.conn._leave()


class ChannelsFactory(WebSocketServerFactory):
    protocol = ChannelConnection

    def __init__(self, *, kernels: JupyterKernels, spin: Any, max_message_size: int,
                 replay_limit: int = REPLAY_LIMIT) -> None:
        # spin: the SpinWebSocketFactory, whose gate, origins, proxies and audit trail apply here too.
        super().__init__(protocols=[framing.V1], server="spinrt")
        self.kernels = kernels
        self.gate = spin.gate
        self.origins = spin.origins
        self.proxies = spin.proxies
        self.audit = spin.audit
        self.clock = spin.clock
        self.replay_limit = replay_limit
        self.connections: set[ChannelConnection] = set()
        if spin.tokens is not None:
            spin.tokens.on_revoke.append(self._revoked)
        self.setProtocolOptions(
            webStatus=False, failByDrop=False,
            maxMessagePayloadSize=max_message_size, maxFramePayloadSize=max_message_size,
            autoPingInterval=30.0, autoPingTimeout=30.0,
            openHandshakeTimeout=self.gate.throttle.longest_wait + 5.0,
            tcpNoDelay=True, perMessageCompressionAccept=lambda offers: None,
        )

    def _revoked(self, token_id: str) -> None:
        for conn in list(self.connections):
            if conn.identity is not None and conn.identity.token == token_id:
                conn.end(4401, "token revoked")

    def close_all(self) -> None:
        for conn in list(self.connections):
            conn._leave(remember=False)
            conn.sendClose(1000, "runtime stopping")

