"""Secrets ops in both scopes (PROTOCOL.md section 9): ``secrets.set``,
``secrets.list`` and ``secrets.delete``.

A request gives ``session`` (the session's secrets: memory only, never
stored) or ``scope: "runtime"`` (the runtime secret store, spinrt.secret_store:
encrypted at rest, the owner's to change; ``secret_store_disabled`` when no
key is configured). Lists are names only: a value is never sent back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from .. import protocol as proto
from ..secret_store import RuntimeSecretStore, SecretStoreError

if TYPE_CHECKING:
    from .ops import ClientConnection

_log = Logger()


def _runtime_scope(req: proto.Request) -> bool:
    """True for ``scope: "runtime"``; False for a session's (``session`` given)."""
    scope = req.params.get("scope", "session")
    if scope == "runtime":
        if "session" in req.params:
            raise proto.ProtocolError(proto.BAD_REQUEST, f"'{req.op}' takes 'session' or scope 'runtime', not both")
        return True
    if "session" not in req.params:
        raise proto.ProtocolError(proto.BAD_REQUEST, f"'{req.op}' needs 'session' (or scope 'runtime')")
    return False


def _store(conn: "ClientConnection") -> RuntimeSecretStore:
    store = getattr(conn.manager.executor, "services", None)
    found = getattr(store, "settings", {}).get("runtime_secrets") if store is not None else None
    if found is None:
        raise proto.ProtocolError("secret_store_disabled", "this runtime has no runtime secret store")
    return found


def _refused(e: SecretStoreError) -> proto.ProtocolError:
    return proto.ProtocolError(e.code, e.message)


async def secrets_set(conn: "ClientConnection", req: proto.Request) -> dict[str, Any]:
    if _runtime_scope(req):
        try:
            _store(conn).set(req.params["secrets"])
        except SecretStoreError as e:
            raise _refused(e) from None
        await conn.manager.store.drain()  # the reply says it is kept
        _log.info("runtime secrets set by {by}: {names}", by=conn.who.name, names=", ".join(sorted(req.params["secrets"])))
        return {}
    await conn.manager.set_secrets(req.params["session"], req.params["secrets"])
    return {}


def secrets_list(conn: "ClientConnection", req: proto.Request) -> dict[str, Any]:
    if _runtime_scope(req):
        try:
            return {"secrets": _store(conn).names()}
        except SecretStoreError as e:
            raise _refused(e) from None
    return {"secrets": conn.manager.get(req.params["session"]).secret_names()}


async def secrets_delete(conn: "ClientConnection", req: proto.Request) -> dict[str, Any]:
    names = req.params["names"]
    if _runtime_scope(req):
        try:
            removed = _store(conn).delete(names)
        except SecretStoreError as e:
            raise _refused(e) from None
        await conn.manager.store.drain()
        if removed:
            _log.info("runtime secrets deleted by {by}: {names}", by=conn.who.name, names=", ".join(removed))
        return {"deleted": removed}
    return {"deleted": await conn.manager.delete_secrets(req.params["session"], names)}
