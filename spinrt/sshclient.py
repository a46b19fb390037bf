"""Opening one authenticated SSH connection with Twisted Conch.

Conch's ``SSHCommandClientEndpoint.newConnection`` closes its connection when
its one command ends, signs RSA user keys only with SHA-1 ``ssh-rsa`` (which
OpenSSH 8.8+ refuses) and checks host keys with Conch's known_hosts matching
(blind to ``[host]:port`` entries). So the connection is built here from
Conch's transport, user-auth and connection services; commands then run on
channels of it (``spinrt.cells.ssh``). Every way this can fail becomes an
SSHError with its own code and a message a user can act on.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.conch.ssh import common, keys, userauth
from twisted.conch.ssh.connection import SSHConnection
from twisted.conch.ssh.transport import SSHClientTransport
from twisted.internet import error as neterr
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from .knownhosts import HostKeyError, KnownHosts
from .sshkeys import SSHError, describe_key

_log = Logger()

RSA_ALGORITHMS = (b"rsa-sha2-512", b"rsa-sha2-256")


class _UserAuth(userauth.SSHUserAuthClient):
    """Public-key authentication with one key, RSA signed with SHA-2 (RFC 8332).

    The algorithm is the best one the server lists in ``server-sig-algs``
    (RFC 8308); a server that sends no list is offered SHA-2 first and
    SHA-1 last."""

    preferredOrder = [b"publickey"]

    def __init__(self, user: bytes, instance: SSHConnection, key: keys.Key) -> None:
        super().__init__(user, instance)
        self._key = key
        self._algorithms: list[bytes] | None = None
        self.algorithm: bytes = key.sshType() or b""
        self.tried: list[bytes] = []

    def _plan(self) -> list[bytes]:
        if self._key.type() != "RSA":
            return [self._key.sshType()]
        advertised = getattr(self.transport, "peerExtensions", {}).get(b"server-sig-algs")
        if advertised is None:
            return [*RSA_ALGORITHMS, b"ssh-rsa"]
        offered = advertised.split(b",")
        best = [a for a in RSA_ALGORITHMS if a in offered]
        return best[:1] or [b"ssh-rsa"]

    def getPublicKey(self) -> keys.Key | None:
        if self._algorithms is None:
            self._algorithms = self._plan()
        if not self._algorithms:
            return None
        self.algorithm = self._algorithms.pop(0)
        self.tried.append(self.algorithm)
        return self._key.public()

    def _cbGetPublicKey(self, publicKey: Any) -> bool:
        if not isinstance(publicKey, keys.Key):
            return False
        self.lastPublicKey = publicKey
        self.askForAuth(b"publickey", b"\x00" + common.NS(self.algorithm) + common.NS(publicKey.blob()))
        return True

    def ssh_USERAUTH_PK_OK_publickey(self, packet: bytes) -> None:
        assert self.transport is not None and self.transport.sessionID is not None
        assert self.lastPublicKey is not None
        data = (
            common.NS(self.transport.sessionID)
            + bytes((userauth.MSG_USERAUTH_REQUEST,))
            + common.NS(self.user)
            + common.NS(self.instance.name)
            + common.NS(b"publickey")
            + b"\x01"
            + common.NS(self.algorithm)
            + common.NS(self.lastPublicKey.blob())
        )
        signature = self._key.sign(data, signatureType=self.algorithm)
        self.askForAuth(
            b"publickey",
            b"\x01" + common.NS(self.algorithm) + common.NS(self.lastPublicKey.blob()) + common.NS(signature),
        )

    def getPassword(self, prompt: bytes | None = None) -> None:
        return None  # keys only: nothing may ever prompt

    def auth_keyboard_interactive(self) -> bool:
        return False


class SSHLink(SSHConnection):
    """The SSH connection service: fires ``ready`` once authenticated, and
    tells ``on_lost`` callbacks when the connection goes away."""

    def __init__(self, ready: Deferred[SSHLink]) -> None:
        super().__init__()
        self._ready: Deferred[SSHLink] | None = ready
        self.lost = False
        self.on_lost: list[Callable[[], None]] = []
        self.notices: list[str] = []  # host key notices for the run that opened it

    def serviceStarted(self) -> None:
        super().serviceStarted()
        ready, self._ready = self._ready, None
        if ready is not None:
            ready.callback(self)

    def serviceStopped(self) -> None:
        self.lost = True
        super().serviceStopped()
        callbacks, self.on_lost = self.on_lost, []
        for callback in callbacks:
            callback()

    def tcp(self) -> Any:
        return self.transport.transport if self.transport is not None else None

    def close(self, abort: bool = False) -> None:
        tcp = self.tcp()
        if tcp is None or self.lost:
            return
        if abort and hasattr(tcp, "abortConnection"):
            tcp.abortConnection()
        elif self.transport is not None:
            self.transport.loseConnection()  # SSH_MSG_DISCONNECT first


class _Transport(SSHClientTransport):
    def __init__(self, where: str, host: str, port: int, username: str, key: keys.Key,
                 known_hosts: KnownHosts) -> None:
        self.where = where
        self.host = host
        self.port = port
        self.username = username
        self.key = key
        self.known_hosts = known_hosts
        self.ready: Deferred[SSHLink] = Deferred()
        self.phase = "handshake"
        self.link = SSHLink(self.ready)
        self.userauth: _UserAuth | None = None
        self.host_key_error: HostKeyError | None = None
        self.remote_reason = ""

    def connectionMade(self) -> None:
        tcp: Any = self.transport
        if hasattr(tcp, "setTcpKeepAlive"):
            tcp.setTcpKeepAlive(1)  # notice a vanished host while idle
        if hasattr(tcp, "setTcpNoDelay"):
            tcp.setTcpNoDelay(1)  # small packets each way per command: no Nagle delays
        super().connectionMade()

    def verifyHostKey(self, hostKey: bytes, fingerprint: bytes) -> Deferred[bool]:
        try:
            notice = self.known_hosts.check(self.host, self.port, keys.Key.fromString(hostKey))
        except HostKeyError as e:
            self.host_key_error = e
            return fail(e)
        if notice:
            self.link.notices.append(notice)
        return succeed(True)

    def connectionSecure(self) -> None:
        self.phase = "auth"
        self.userauth = _UserAuth(self.username.encode("utf-8"), self.link, self.key)
        self.requestService(self.userauth)

    def setService(self, service: Any) -> None:
        if service is self.link:
            self.phase = "ready"
        super().setService(service)

    def receiveError(self, reasonCode: int, description: bytes) -> None:
        self.remote_reason = description.decode("utf-8", "replace")[:200]

    def connectionLost(self, reason: Failure | None = None) -> None:
        super().connectionLost(reason)
        if not self.ready.called:
            self.ready.errback(self._why())

    def _why(self) -> SSHError:
        said = f" (the server said: {self.remote_reason})" if self.remote_reason else ""
        if self.host_key_error is not None:
            return SSHError(self.host_key_error.code, self.host_key_error.message)
        if self.phase == "auth":
            algorithms = ", ".join(a.decode() for a in (self.userauth.tried if self.userauth else []))
            rsa_note = (
                f" The RSA key was offered with {algorithms}; a server that accepts only other "
                "signature algorithms needs a different key type (ed25519)."
                if self.key.type() == "RSA" else ""
            )
            return SSHError(
                "ssh_auth_failed",
                f"{self.where} did not accept the key {describe_key(self.key)} for user "
                f"{self.username!r}{said}. Check that the user name is right and that the public "
                f"key is in that user's ~/.ssh/authorized_keys on the target.{rsa_note}",
            )
        return SSHError(
            "ssh_handshake_failed",
            f"{self.where} closed the connection during the SSH handshake{said}; is an SSH "
            "server listening there, and does it allow modern key exchange algorithms?",
        )


def _connect_error(failure: Failure, where: str, host: str) -> SSHError:
    e = failure.value
    if isinstance(e, SSHError):
        return e
    if isinstance(e, neterr.DNSLookupError):
        return SSHError("ssh_unreachable", f"cannot resolve the host name {host!r} ({where}); check the host setting")
    if isinstance(e, neterr.ConnectionRefusedError):
        return SSHError(
            "ssh_refused",
            f"{where} refused the connection: nothing listens on that port. Is sshd running there, "
            "is the port right, and does sshd listen on an address the runtime can reach?")
    why = getattr(e, "osError", None) or str(e).strip() or type(e).__name__
    return SSHError("ssh_unreachable", f"cannot reach {where}: {why}. Check the host, the port and the network (firewall, VPN)")


def open_connection(
    reactor: Any,
    *,
    host: str,
    port: int,
    username: str,
    key: keys.Key,
    known_hosts: KnownHosts,
    timeout: float,
    endpoint: IStreamClientEndpoint | None = None,
) -> Deferred[SSHLink]:
    """Connect, check the host key, authenticate: fires with the SSHLink or an SSHError.

    ``timeout`` bounds the whole handshake; cancelling aborts the TCP connection."""
    where = f"{username}@{host}:{port}"
    transport = _Transport(where, host, port, username, key, known_hosts)
    if endpoint is None:
        endpoint = IStreamClientEndpoint(HostnameEndpoint(reactor, host, port, timeout=timeout))

    def abort() -> None:
        if not connecting.called:
            connecting.cancel()
        elif transport.transport is not None:
            transport.transport.abortConnection()

    result: Deferred[SSHLink] = Deferred(lambda d: abort())

    def deliver(outcome: Any) -> None:
        if timer.active():
            timer.cancel()
        if result.called:  # cancelled or timed out meanwhile
            if isinstance(outcome, SSHLink):
                outcome.close(abort=True)
            return
        if isinstance(outcome, Failure):
            if outcome.check(CancelledError):
                return
            result.errback(_connect_error(outcome, where, host))
        else:
            result.callback(outcome)

    def timed_out() -> None:
        if not result.called:
            result.errback(SSHError(
                "ssh_unreachable",
                f"no SSH session with {where} within {timeout:g} s (connect timeout; raise it with "
                "the cell option connect_timeout_s or SPIN_SSH_CONNECT_TIMEOUT). Check the host, "
                "the port and the network"))
            abort()

    timer = reactor.callLater(timeout, timed_out)
    connecting = connectProtocol(endpoint, transport)
    connecting.addCallbacks(lambda _: transport.ready.addBoth(deliver), deliver)
    return result
