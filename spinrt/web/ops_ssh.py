"""Ops for SSH settings: runtime.configure and connections.set/list/delete.

Replies describe targets by fingerprint; private keys and passphrases are
accepted here and never sent back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from .. import protocol as proto
from ..sshconfig import SSHError, SSHSettings, settings_of

if TYPE_CHECKING:
    from .ops import ClientConnection

_log = Logger()


def _settings(conn: "ClientConnection") -> SSHSettings:
    executor: Any = conn.manager.executor  # spinrt.sessions.runner.RunExecutor
    return settings_of(executor.services)


def _refuse(e: SSHError) -> proto.ProtocolError:
    return proto.ProtocolError(e.code, e.message)


async def runtime_configure(conn: "ClientConnection", req: proto.Request) -> dict[str, Any]:
    settings = _settings(conn)
    fields = req.params["host_ssh"]
    unknown = sorted(set(fields) - {"enabled", "username", "private_key", "passphrase", "host", "port"})
    if unknown:
        raise proto.ProtocolError(proto.BAD_REQUEST, f"'host_ssh' has unknown fields: {', '.join(unknown)[:200]}")
    try:
        await settings.preload_key(fields)
        settings.configure_host(fields)
    except SSHError as e:
        raise _refuse(e) from None
    described = await settings.describe_host()
    _log.info("host SSH configured: enabled={enabled} {user}@{host}:{port} key {fp}",
              enabled=described["enabled"], user=described["username"], host=described["host"],
              port=described["port"], fp=described["key_fingerprint"])
    return {"host_ssh": described}


async def connections_set(conn: "ClientConnection", req: proto.Request) -> dict[str, Any]:
    settings = _settings(conn)
    try:
        await settings.preload_key(req.params)
        target = settings.set_connection(req.params)
    except SSHError as e:
        raise _refuse(e) from None
    _log.info("SSH connection {name} set: {user}@{host}:{port} key {fp}", name=target.name,
              user=target.username, host=target.host, port=target.port, fp=target.credentials.key_fingerprint)
    return {"connection": {"name": target.name, **target.describe()}}


def connections_list(conn: "ClientConnection", req: proto.Request) -> dict[str, Any]:
    return {"connections": _settings(conn).list_connections()}


def connections_delete(conn: "ClientConnection", req: proto.Request) -> dict[str, Any]:
    try:
        _settings(conn).delete_connection(req.params["name"])
    except SSHError as e:
        raise _refuse(e) from None
    _log.info("SSH connection {name} deleted", name=req.params["name"])
    return {}
