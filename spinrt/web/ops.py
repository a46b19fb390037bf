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
from .. import roles
from ..audit import target_of
from ..sessions.manager import SessionManager
from ..sessions.session import Subscription, new_id, preview, type_name
from ..tokens import OWNER_IDENTITY, Identity
from . import ops_connections, ops_documents, ops_notebooks, ops_secrets, ops_snapshot, ops_ssh, ops_tokens, presence

_log = Logger()

Handler = Callable[["ClientConnection", proto.Request], "dict[str, Any] | Awaitable[dict[str, Any]]"]


class ClientConnection:
    def __init__(
        self,
        manager: SessionManager,
        send: Callable[[bytes], None],
        runtime_info: dict[str, Any],
        identity: Identity | dict[str, str] | None = None,
        *,
        address: str = "",
        audit: Any = None,
        tokens: Any = None,
        send_many: Callable[[list[bytes]], None] | None = None,
    ) -> None:
        self.manager = manager
        self._send = send
        self._send_many = send_many  # several frames in one write (catch-up), or None: one by one
        self.runtime_info = runtime_info
        # Who this connection is (PROTOCOL.md section 9): SPIN_TOKEN is the
        # identity "owner" with the role "owner"; named tokens have their own.
        if isinstance(identity, dict):
            identity = Identity(identity["name"], identity["role"])
        self.who: Identity = identity or OWNER_IDENTITY
        self.identity: dict[str, str] = self.who.public()  # {name, role}: presence, welcome
        self.address = address  # the client's address (behind --trusted-proxy, the forwarded one)
        self.audit = audit  # spinrt.audit.AuditTrail, or None (unit tests)
        self.tokens = tokens  # spinrt.tokens.TokenRegistry, or None
        self.client = new_id("cl")  # this connection, in presence lists
        self.subscriptions: dict[str, Subscription] = {}
        self.attachments: dict[str, presence.Attachment] = {}
        self._presence_waiting: set[str] = set()
        self.writable = True
        self.open = True
        self.serving = True  # False once its token is revoked: no more requests or events
        self._after_reply: list[Callable[[], None]] = []

    # -- the sink the subscriptions write to ---------------------------------------

    def send(self, frame: bytes) -> None:
        if self.open:
            self._send(frame)

    def send_many(self, frames: list[bytes]) -> None:
        if not self.open:
            return
        if self._send_many is not None:
            self._send_many(frames)
        else:
            for frame in frames:
                self._send(frame)

    def reply(self, message: dict[str, Any]) -> None:
        self.send(proto.encode(message))

    def pause(self) -> None:
        self.writable = False

    def resume(self) -> None:
        self.writable = True
        waiting, self._presence_waiting = self._presence_waiting, set()
        for sid in waiting:  # presence as it stands now, before the backlog
            session = self._session_or_none(sid)
            if session is not None and self.writable:
                self.send(presence.frame(session))
            elif session is not None:
                self._presence_waiting.add(sid)
        for sub in list(self.subscriptions.values()):
            sub.pump()

    def closed(self) -> None:
        self.open = False
        self.writable = False
        left = [sid for sid, a in self.attachments.items() if a.present]
        for sid in list(self.subscriptions):
            self.leave(sid)
        for sid in left:  # the others see this client go
            session = self._session_or_none(sid)
            if session is not None:
                presence.announce(session)

    def _session_or_none(self, sid: str) -> Any:
        try:
            return self.manager.get(sid)
        except proto.ProtocolError:
            return None

    def you(self) -> dict[str, str]:
        """``welcome``'s ``you``: this connection's identity and client id."""
        return {"client": self.client, **self.identity}

    def leave(self, sid: str) -> None:
        """Stop receiving a session's events (no presence sent: the caller does)."""
        self.attachments.pop(sid, None)
        sub = self.subscriptions.pop(sid, None)
        if sub is not None:
            sub.close()

    def presence_waits(self, sid: str) -> None:
        """A presence for ``sid`` could not be sent (socket full): send it on resume."""
        self._presence_waiting.add(sid)

    # -- requests ------------------------------------------------------------------

    def withdraw(self) -> None:
        """This connection's token was revoked: serve nothing more (the
        socket is closed right after; a reply already due still goes out)."""
        self.serving = False
        left = [sid for sid, a in self.attachments.items() if a.present]
        for sid in list(self.subscriptions):
            self.leave(sid)
        for sid in left:
            session = self._session_or_none(sid)
            if session is not None:
                presence.announce(session)

    def handle(self, payload: bytes, is_binary: bool = False) -> None:
        if not self.serving:
            return
        if is_binary:
            self.reply(proto.failure(None, proto.BAD_FRAME, "binary frames are not accepted; send JSON text frames"))
            return
        try:
            request = proto.parse_request(payload, authorize=self._authorize)
        except proto.ProtocolError as e:
            self.reply(proto.failure(e.re, e.code, e.message))
            return
        handler = HANDLERS[request.op]
        self._after_reply = []
        try:
            result = handler(self, request)
        except proto.ProtocolError as e:
            self._audit(request, e.code)
            self.reply(proto.failure(request.id, e.code, e.message, **e.details))
            return
        except Exception:
            _log.failure("op {op} failed", op=request.op)
            self._audit(request, proto.INTERNAL)
            self.reply(proto.failure(request.id, proto.INTERNAL, f"the runtime failed to handle '{request.op}'"))
            return
        if isinstance(result, dict):
            self._audit(request, "ok")
            actions, self._after_reply = self._after_reply, []
            self.reply(proto.ok(request.id, **result))
            # Replays start after the reply, so a client learns last_seq first.
            for action in actions:
                action()
        else:
            Deferred.fromCoroutine(self._finish(request, result))

    async def _finish(self, request: proto.Request, pending: Awaitable[dict[str, Any]]) -> None:
        try:
            result = await pending
        except proto.ProtocolError as e:
            self._after_reply = []
            self._audit(request, e.code)
            self.reply(proto.failure(request.id, e.code, e.message, **e.details))
        except Exception:
            self._after_reply = []
            _log.failure("op {op} failed", op=request.op)
            self._audit(request, proto.INTERNAL)
            self.reply(proto.failure(request.id, proto.INTERNAL, f"the runtime failed to handle '{request.op}'"))
        else:
            self._audit(request, "ok")
            # What the handler's last step (after its last await) asked for.
            actions, self._after_reply = self._after_reply, []
            self.reply(proto.ok(request.id, **result))
            for action in actions:
                action()

    def _authorize(self, op: str, message: Any, rid: Any) -> None:
        """The role check, before the parameters (spinrt.roles): ``forbidden``
        changes nothing, and is on the audit trail."""
        needed = roles.required(op, message)
        if not roles.allows(self.who.role, needed):
            if self.audit is not None:
                self.audit.record(op, identity=self.who, client=self.address, target=target_of(message),
                                  outcome=proto.FORBIDDEN)
            raise proto.ProtocolError(proto.FORBIDDEN, roles.refusal(op, self.who.role, needed), rid)

    def _audit(self, request: proto.Request, outcome: str) -> None:
        """A request that changes state (or tried to), with its outcome."""
        if self.audit is not None and request.op not in roles.READS:
            self.audit.record(request.op, identity=self.who, client=self.address,
                              target=target_of(request.params), outcome=outcome)

    def attach(self, sid: str, since: int) -> list[dict[str, Any]]:
        """Subscribe (again) to a session, once the current reply is out;
        everyone attached then gets the new presence. Returns the reply's
        ``clients`` (this connection included). An ``async`` handler calls
        it after its last ``await`` (the reply follows at once)."""
        session = self.manager.get(sid)
        attachment = self.attachments.get(sid)
        joining = attachment is None or not attachment.present
        if attachment is None or joining:
            attachment = presence.Attachment(self, sid)

        def subscribe() -> None:
            if not self.open:
                return
            old = self.subscriptions.pop(sid, None)
            if old is not None:
                old.close()
            attachment.sub = None
            self.attachments[sid] = attachment
            attachment.sub = self.subscriptions[sid] = session.subscribe(attachment, since)
            if joining:
                presence.announce(session)

        self._after_reply.append(subscribe)
        return presence.clients(session, attachment)


# -- op handlers ---------------------------------------------------------------------


def _hello(conn: ClientConnection, req: proto.Request) -> dict[str, Any]:
    return {"runtime": conn.runtime_info}


def _ping(conn: ClientConnection, req: proto.Request) -> dict[str, Any]:
    return {}


def _session_create(conn: ClientConnection, req: proto.Request) -> Any:
    if "notebook" in req.params:
        return ops_documents.session_create(conn, req)
    variables = req.params.get("variables") or {}  # names checked by the protocol layer
    session = conn.manager.create(req.params.get("name"), variables)
    described = session.describe()
    described.pop("state")
    clients = conn.attach(session.id, 0)
    return {"session": described, "clients": clients}


def _session_list(conn: ClientConnection, req: proto.Request) -> dict[str, Any]:
    sessions = conn.manager.list()
    for described in sessions:
        session = conn.manager.get(described["id"])
        described.setdefault("notebook", getattr(session, "notebook", None))
        described["clients"] = presence.clients(session)
    return {"sessions": sessions}


def _session_attach(conn: ClientConnection, req: proto.Request) -> dict[str, Any]:
    session = conn.manager.get(req.params["session"])
    since = req.params.get("since", 0)
    described = session.describe()
    clients = conn.attach(session.id, since)
    return {"session": described, "clients": clients}


def _session_detach(conn: ClientConnection, req: proto.Request) -> dict[str, Any]:
    sid = req.params["session"]
    session = conn.manager.get(sid)
    attachment = conn.attachments.get(sid)
    was_present = attachment is not None and attachment.present
    conn.leave(sid)
    if was_present:
        presence.announce(session)
    return {}


async def _session_close(conn: ClientConnection, req: proto.Request) -> dict[str, Any]:
    sid = req.params["session"]
    was_open = conn.manager.get(sid).state == "open"
    await conn.manager.close(sid)
    session = conn.manager.get(sid)
    if was_open:
        # Closing a session ends every attachment to it, each once its
        # client has the events up to session.closed; all see who is left (nobody).
        leaving = presence.attached(session)
        for attachment in leaving:
            attachment.leave_once_delivered(session.last_seq)
        presence.announce(session, also=leaving)
    return {}


async def _session_delete(conn: ClientConnection, req: proto.Request) -> dict[str, Any]:
    """A closed session and its history, gone for good (owner only)."""
    sid = req.params["session"]
    session = conn.manager.get(sid)
    if session.state == "closed":
        for sub in list(session.subscribers):  # clients reading its history stop
            reader = getattr(sub.sink, "conn", None)
            if reader is not None:
                reader.leave(sid)
    await conn.manager.delete(sid)
    return {}


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


HANDLERS: dict[str, Handler] = {
    "hello": _hello,
    "ping": _ping,
    "session.create": _session_create,
    "session.list": _session_list,
    "session.attach": _session_attach,
    "session.detach": _session_detach,
    "session.close": _session_close,
    "session.delete": _session_delete,
    "session.snapshot": ops_snapshot.session_snapshot,
    "cell.run": ops_documents.cell_run,
    "cells.run": ops_documents.cells_run,
    "session.document": ops_documents.session_document,
    "cell.set": ops_documents.cell_set,
    "cell.delete": ops_documents.cell_delete,
    "cell.move": ops_documents.cell_move,
    "run.cancel": _run_cancel,
    "kernel.restart": _kernel_restart,
    "variables.list": _variables_list,
    "variables.clear": _variables_clear,
    "secrets.set": ops_secrets.secrets_set,
    "secrets.list": ops_secrets.secrets_list,
    "secrets.delete": ops_secrets.secrets_delete,
    "runtime.configure": ops_ssh.runtime_configure,
    "connections.set": ops_connections.connections_set,
    "connections.list": ops_connections.connections_list,
    "connections.delete": ops_connections.connections_delete,
    "connections.types": ops_connections.connections_types,
    "connections.test": ops_connections.connections_test,
    "notebook.list": ops_notebooks.notebook_list,
    "notebook.get": ops_notebooks.notebook_get,
    "notebook.save": ops_notebooks.notebook_save,
    "notebook.rename": ops_notebooks.notebook_rename,
    "notebook.delete": ops_notebooks.notebook_delete,
    "notebook.parameters": ops_notebooks.notebook_parameters,
    "tokens.create": ops_tokens.tokens_create,
    "tokens.list": ops_tokens.tokens_list,
    "tokens.revoke": ops_tokens.tokens_revoke,
}
