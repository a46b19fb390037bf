"""Ops for connections of every type (PROTOCOL.md section 13).

``ssh`` connections (the default type, so older clients keep working) live
in :mod:`spinrt.sshconfig` and are handled by :mod:`.ops_ssh`; every other
type is a plugin's (:mod:`spinrt.integrations.connections`). Both share one
name space: a name belongs to one connection, whatever its type.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger

from .. import protocol as proto
from ..integrations.base import IntegrationError
from ..integrations.connections import SSH, masked, registry_of
from ..sshkeys import SSHError
from . import ops_ssh

if TYPE_CHECKING:
    from .ops import ClientConnection

_log = Logger()

TEST_TIMEOUT = 30.0  # seconds connections.test waits for an answer
_SSH_FIELDS = ("host", "port", "username", "private_key", "passphrase")
# connections.test's codes for an SSH failure (spinrt.sshclient's codes).
_SSH_TEST_CODES = {"ssh_unreachable": "unreachable", "ssh_refused": "unreachable",
                   "ssh_handshake_failed": "unreachable", "ssh_auth_failed": "remote_unauthorized"}


def _services(conn: "ClientConnection") -> Any:
    return conn.manager.executor.services  # spinrt.sessions.runner.RunExecutor


def _refuse(e: IntegrationError) -> proto.ProtocolError:
    return proto.ProtocolError(e.code, e.message)


async def connections_set(conn: "ClientConnection", req: proto.Request) -> dict[str, Any]:
    services = _services(conn)
    registry = registry_of(services)
    ssh = ops_ssh._settings(conn)
    name, type_name = req.params["name"], req.params.get("type") or SSH
    extra = {k: v for k, v in req.extra.items() if k not in ("type", "default")}
    if type_name == SSH:
        if "default" in req.params:
            extra["default"] = req.params["default"]
        unknown = sorted(k for k in extra if k not in _SSH_FIELDS)
        if unknown:
            raise proto.ProtocolError(proto.BAD_REQUEST, f"an ssh connection has no field "
                                      f"{', '.join(repr(u) for u in unknown)[:200]} (its fields: {', '.join(_SSH_FIELDS)})")
        for field in ("host", "username"):
            if field not in req.params:
                raise proto.ProtocolError(proto.BAD_REQUEST, f"'connections.set' of an ssh connection needs '{field}'")
        if name in registry.connections:
            raise proto.ProtocolError(proto.CONFLICT, f"{name[:64]!r} is a {registry.connections[name].type} "
                                      "connection: delete it first, or choose another name")
        reply = await ops_ssh.connections_set(conn, req)
        reply["connection"] = {"name": reply["connection"]["name"], "type": SSH,
                               **{k: v for k, v in reply["connection"].items() if k != "name"}}
        return reply
    if name in ssh.connections:
        raise proto.ProtocolError(proto.CONFLICT, f"{name[:64]!r} is an ssh connection: delete it first, "
                                  "or choose another name")
    given = {k: req.params[k] for k in _SSH_FIELDS if k in req.params}
    given.update(extra)
    try:
        stored = await registry.set(name, type_name, req.params.get("default"), given)
    except IntegrationError as e:
        raise _refuse(e) from None
    _log.info("{type} connection {name} set (fields: {fields})", type=type_name, name=name,
              fields=", ".join(sorted(stored.fields)))
    return {"connection": registry.describe(stored)}


def connections_list(conn: "ClientConnection", req: proto.Request) -> dict[str, Any]:
    ssh = [{"name": c["name"], "type": SSH, **{k: v for k, v in c.items() if k != "name"}}
           for c in ops_ssh._settings(conn).list_connections()]
    typed = registry_of(_services(conn)).list()
    return {"connections": sorted(ssh + typed, key=lambda c: c["name"])}


async def connections_delete(conn: "ClientConnection", req: proto.Request) -> dict[str, Any]:
    name = req.params["name"]
    if await registry_of(_services(conn)).delete(name):
        _log.info("connection {name} deleted", name=name)
        return {}
    return ops_ssh.connections_delete(conn, req)


def connections_types(conn: "ClientConnection", req: proto.Request) -> dict[str, Any]:
    return {"types": registry_of(_services(conn)).types_reply()}


async def connections_test(conn: "ClientConnection", req: proto.Request) -> dict[str, Any]:
    """``{status: "ok", detail}`` or the failure's code (PROTOCOL.md section 13)."""
    services = _services(conn)
    registry = registry_of(services)
    name = req.params["name"]
    stored = registry.connections.get(name)
    if stored is None:
        return await _test_ssh(conn, name)
    connection = None
    try:
        kind = registry.kind(stored.type)
        connection = registry.resolve(stored)
        testing = Deferred.fromCoroutine(kind.test(connection, services))
        testing.addTimeout(TEST_TIMEOUT, services.reactor)
        detail = await testing
    except IntegrationError as e:
        # A server may quote the credential it refused: the reply never does.
        message = await masked(services, connection.secrets if connection else (), e.message)
        raise proto.ProtocolError(e.code, message) from None
    except (CancelledError, TimeoutError):
        raise proto.ProtocolError("unreachable", f"connection {name!r}: no answer within {TEST_TIMEOUT:g} s") from None
    return {"status": "ok", "detail": detail}


async def _test_ssh(conn: "ClientConnection", name: str) -> dict[str, Any]:
    settings = ops_ssh._settings(conn)
    target = settings.connections.get(name)
    if target is None:
        raise proto.ProtocolError("unknown_connection", f"there is no connection named {name[:64]!r}")
    host = target.host or await settings.default_host()
    # Imported here: Conch's userauth imports the reactor, and this module is
    # imported (through spinrt.tap) before twistd's spin-runtime installs asyncio's.
    from ..sshclient import open_connection

    try:
        link = await open_connection(conn.manager.executor.services.reactor, host=host, port=target.port,
                                     username=target.username, key=target.key,
                                     known_hosts=settings.known_hosts, timeout=settings.connect_timeout)
    except SSHError as e:
        raise proto.ProtocolError(_SSH_TEST_CODES.get(e.code, "bad_response"), e.message) from None
    link.close()
    return {"status": "ok", "detail": f"logged in as {target.username}@{host}:{target.port}"}
