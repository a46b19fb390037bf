"""One client connection's view of the runtime: requests in, replies and events out.

Independent of Autobahn: the WebSocket protocol hands frames to
``ClientConnection.handle`` and gives it a ``send`` callable; tests drive it
with a plain list.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from .. import protocol as proto
from ..sessions.manager import SessionManager
from ..sessions.session import Subscription, preview, type_name
from . import ops_ssh

_log = Logger()

Handler = Callable[["ClientConnection", proto.Request], "dict[str, Any] | Awaitable[dict[str, Any]]"]


class ClientConnection:
    def __init__(
        self,
        manager: SessionManager,
        send: Callable[[bytes], None],
        runtime_info: dict[str, Any],
    ) -> None:
        self.manager = manager
        self._send = send
        self.runtime_info = runtime_info
        self.subscriptions: dict[str, Subscription] = {}
        self.writable = True
        self.open = True
        self._after_reply: list[Callable[[], None]] = []

    # -- the sink the subscriptions write to ---------------------------------------

    def send(self, frame: bytes) -> None:
        if self.open:
            self._send(frame)

    def reply(self, message: dict[str, Any]) -> None:
        self.send(proto.encode(message))

    def pause(self) -> None:
        self.writable = False

    def resume(self) -> None:
        self.writable = True
        for sub in list(self.subscriptions.values()):
            sub.pump()

    def closed(self) -> None:
        self.open = False
        self.writable = False
        for sub in self.subscriptions.values():
            sub.close()
        self.subscriptions.clear()

    # -- requests ------------------------------------------------------------------

    def handle(self, payload: bytes, is_binary: bool = False) -> None:
        if is_binary:
            self.reply(proto.failure(None, proto.BAD_FRAME, "binary frames are not accepted; send JSON text frames"))
            return
        try:
            request = proto.parse_request(payload)
        except proto.ProtocolError as e:
            self.reply(proto.failure(e.re, e.code, e.message))
            return
        handler = HANDLERS[request.op]
        self._after_reply = []
        try:
            result = handler(self, request)
        except proto.ProtocolError as e:
            self.reply(proto.failure(request.id, e.code, e.message))
            return
        except Exception:
            _log.failure("op {op} failed", op=request.op)
            self.reply(proto.failure(request.id, proto.INTERNAL, f"the runtime failed to handle '{request.op}'"))
            return
        if isinstance(result, dict):
            self.reply(proto.ok(request.id, **result))
            # Replays start after the reply, so a client learns last_seq first.
            for action in self._after_reply:
                action()
        else:
            Deferred.fromCoroutine(self._finish(request, result))

    async def _finish(self, request: proto.Request, pending: Awaitable[dict[str, Any]]) -> None:
        try:
            result = await pending
        except proto.ProtocolError as e:
            self.reply(proto.failure(request.id, e.code, e.message))
        except Exception:
            _log.failure("op {op} failed", op=request.op)
            self.reply(proto.failure(request.id, proto.INTERNAL, f"the runtime failed to handle '{request.op}'"))
        else:
            self.reply(proto.ok(request.id, **result))

    def attach(self, sid: str, since: int) -> None:
        """Subscribe (again) to a session, once the current reply is out."""
        session = self.manager.get(sid)

        def subscribe() -> None:
            if not self.open:
                return
            old = self.subscriptions.pop(sid, None)
            if old is not None:
                old.close()
            self.subscriptions[sid] = session.subscribe(self, since)

        self._after_reply.append(subscribe)


# -- op handlers ---------------------------------------------------------------------


def _hello(conn: ClientConnection, req: proto.Request) -> dict[str, Any]:
    return {"runtime": conn.runtime_info}


def _ping(conn: ClientConnection, req: proto.Request) -> dict[str, Any]:
    return {}


def _session_create(conn: ClientConnection, req: proto.Request) -> dict[str, Any]:
    variables = req.params.get("variables") or {}  # names checked by the protocol layer
    session = conn.manager.create(req.params.get("name"), variables)
    described = session.describe()
    described.pop("state")
    conn.attach(session.id, 0)
    return {"session": described}


def _session_list(conn: ClientConnection, req: proto.Request) -> dict[str, Any]:
    return {"sessions": conn.manager.list()}


def _session_attach(conn: ClientConnection, req: proto.Request) -> dict[str, Any]:
    session = conn.manager.get(req.params["session"])
    since = req.params.get("since", 0)
    described = session.describe()
    conn.attach(session.id, since)
    return {"session": described}


def _session_detach(conn: ClientConnection, req: proto.Request) -> dict[str, Any]:
    sid = req.params["session"]
    conn.manager.get(sid)
    sub = conn.subscriptions.pop(sid, None)
    if sub is not None:
        sub.close()
    return {}


async def _session_close(conn: ClientConnection, req: proto.Request) -> dict[str, Any]:
    await conn.manager.close(req.params["session"])
    return {}


def _cell_run(conn: ClientConnection, req: proto.Request) -> dict[str, Any]:
    session = conn.manager.get(req.params["session"])
    (run,) = session.enqueue([req.params["cell"]])
    return {"run": run.id}


def _cells_run(conn: ClientConnection, req: proto.Request) -> dict[str, Any]:
    session = conn.manager.get(req.params["session"])
    runs = session.enqueue(
        req.params["cells"], stop_on_error=req.params.get("stop_on_error", True), linked=True
    )
    return {"runs": [run.id for run in runs]}


def _run_cancel(conn: ClientConnection, req: proto.Request) -> dict[str, Any]:
    session = conn.manager.get(req.params["session"])
    session.cancel(req.params["run"])
    return {}


async def _kernel_restart(conn: ClientConnection, req: proto.Request) -> dict[str, Any]:
    await conn.manager.restart_kernel(req.params["session"])
    return {}


def _variables_list(conn: ClientConnection, req: proto.Request) -> dict[str, Any]:
    session = conn.manager.get(req.params["session"])
    return {
        "variables": {
            name: {"type": type_name(value), "preview": preview(value)}
            for name, value in session.variables.items()
        }
    }


async def _variables_clear(conn: ClientConnection, req: proto.Request) -> dict[str, Any]:
    await conn.manager.clear_variables(req.params["session"], req.params.get("names"))
    return {}


async def _secrets_set(conn: ClientConnection, req: proto.Request) -> dict[str, Any]:
    await conn.manager.set_secrets(req.params["session"], req.params["secrets"])
    return {}


HANDLERS: dict[str, Handler] = {
    "hello": _hello,
    "ping": _ping,
    "session.create": _session_create,
    "session.list": _session_list,
    "session.attach": _session_attach,
    "session.detach": _session_detach,
    "session.close": _session_close,
    "cell.run": _cell_run,
    "cells.run": _cells_run,
    "run.cancel": _run_cancel,
    "kernel.restart": _kernel_restart,
    "variables.list": _variables_list,
    "variables.clear": _variables_clear,
    "secrets.set": _secrets_set,
    "runtime.configure": ops_ssh.runtime_configure,
    "connections.set": ops_ssh.connections_set,
    "connections.list": ops_ssh.connections_list,
    "connections.delete": ops_ssh.connections_delete,
}
