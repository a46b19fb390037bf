"""Ops on named tokens (PROTOCOL.md section 9), the owner's alone:
``tokens.create``, ``tokens.list`` and ``tokens.revoke``.

``tokens.create`` answers ``{token: {id, name, role, created, expires},
secret}`` once the token is committed to the store (a secret is never shown
for a token a crash could lose). The secret appears in that reply and
nowhere else: not in a log line, not in the audit trail (whose row names
the token's id, name and role). ``tokens.revoke {token}`` (the token's id:
the request's own ``id`` is the request id) closes the token's open
WebSocket connections at once (close code 4401).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from .. import protocol as proto
from ..tokens import TokenError, TokenRegistry

if TYPE_CHECKING:
    from .ops import ClientConnection

_log = Logger()


def _registry(conn: "ClientConnection") -> TokenRegistry:
    if conn.tokens is None:
        raise proto.ProtocolError(proto.INTERNAL, "this runtime has no token registry")
    return conn.tokens


def _refused(e: TokenError) -> proto.ProtocolError:
    return proto.ProtocolError(e.code, e.message)


async def tokens_create(conn: "ClientConnection", req: proto.Request) -> dict[str, Any]:
    p = req.params
    try:
        record, secret = _registry(conn).create(p["name"], p["role"], p.get("expires_in_days"))
    except TokenError as e:
        raise _refused(e) from None
    await conn.manager.store.drain()
    _log.info("token {id} created for {name} ({role}) by {by}", id=record.id, name=record.name,
              role=record.role, by=conn.who.name)
    described = record.describe()
    described.pop("last_used")
    return {"token": described, "secret": secret}


def tokens_list(conn: "ClientConnection", req: proto.Request) -> dict[str, Any]:
    return {"tokens": _registry(conn).list()}


def tokens_revoke(conn: "ClientConnection", req: proto.Request) -> dict[str, Any]:
    try:
        record = _registry(conn).revoke(req.params["token"])
    except TokenError as e:
        raise _refused(e) from None
    _log.info("token {id} of {name} revoked by {by}", id=record.id, name=record.name, by=conn.who.name)
    return {}
