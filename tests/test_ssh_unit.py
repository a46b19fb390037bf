"""SSH error paths against an in-memory Conch server (the pattern of Twisted's
conch/test/test_endpoints.py): no sockets, a Clock for time."""

from __future__ import annotations

import os
import struct
import tempfile
from functools import partial
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.conch.avatar import ConchUser
from twisted.conch.checkers import InMemorySSHKeyDB, SSHPublicKeyChecker
from twisted.conch.interfaces import IConchUser
from twisted.conch.ssh import common
from twisted.conch.ssh.channel import SSHChannel
from twisted.conch.ssh.connection import SSHConnection
from twisted.conch.ssh.factory import SSHFactory
from twisted.conch.ssh.keys import Key
from twisted.conch.ssh.transport import SSHServerTransport
from twisted.conch.ssh.userauth import SSHUserAuthServer
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import Portal
from twisted.internet import error as neterr
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.test.iosim import FakeTransport, connect
from twisted.trial import unittest

from spinrt.cells.base import CellContext, RuntimeServices
from spinrt.cells.ssh import RemoteShell
from spinrt.knownhosts import KnownHosts
from spinrt.sshkeys import fingerprint
from spinrt.protocol import Cell
from spinrt.sshclient import open_connection
from spinrt.sshconfig import SSHError, SSHSettings

from .sshd import make_key

USER = "alice"
HOST_KEY = Key(ed25519.Ed25519PrivateKey.generate())


def private(kind: str) -> Key:
    return Key.fromString(make_key(kind)[0].encode())


# -- the in-memory server ------------------------------------------------------------------


class ServerSession(SSHChannel):
    """A session channel that records what the client asks and lets the test answer."""

    name = b"session"

    def __init__(self, server: "MemoryServer", *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.server = server
        self.command = b""
        self.signals: list[bytes] = []
        self.stdin = b""

    def request_exec(self, data: bytes) -> Any:
        self.command = common.getNS(data)[0]
        self.server.sessions.append(self)
        return self.server.exec_reply

    def request_signal(self, data: bytes) -> int:
        self.signals.append(common.getNS(data)[0])
        return 0

    def dataReceived(self, data: bytes) -> None:
        self.stdin += data

    def closeReceived(self) -> None:
        if not self.server.ignore_close:
            super().closeReceived()

    def exit(self, status: int | None = None, signal: bytes | None = None) -> None:
        if status is not None:
            self.conn.sendRequest(self, b"exit-status", struct.pack(">L", status))
        if signal is not None:
            self.conn.sendRequest(self, b"exit-signal", common.NS(signal) + b"\0" + common.NS(b"") + common.NS(b""))
        self.loseConnection()


class RecordingChecker(SSHPublicKeyChecker):
    """Like OpenSSH 8.8+: SHA-1 ``ssh-rsa`` signatures are refused unless allowed."""

    def __init__(self, server: "MemoryServer", keys: list[Key]) -> None:
        super().__init__(InMemorySSHKeyDB({USER.encode(): keys}))
        self.server = server

    def requestAvatarId(self, credentials: Any) -> Deferred[Any]:
        if credentials.signature is not None:
            self.server.algorithms.append(credentials.algName)
        if credentials.algName not in self.server.accept_algorithms:
            return fail(UnauthorizedLogin("algorithm refused"))
        return super().requestAvatarId(credentials)


class MemoryServer:
    def __init__(self, clock: MemoryReactorClock, authorized: list[Key], *,
                 sig_algs: bytes | None = b"ssh-ed25519,rsa-sha2-512,rsa-sha2-256",
                 accept: tuple[bytes, ...] = (b"ssh-ed25519", b"ecdsa-sha2-nistp256", b"rsa-sha2-512", b"rsa-sha2-256"),
                 host_key: Key | None = None) -> None:
        self.clock = clock
        self.host_key = host_key or HOST_KEY
        self.sessions: list[ServerSession] = []
        self.algorithms: list[bytes] = []
        self.accept_algorithms = accept
        self.exec_reply: Any = 1
        self.ignore_close = False
        server = self

        class Realm:
            def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> Any:
                avatar = ConchUser()
                avatar.channelLookup = {b"session": partial(ServerSession, server)}
                return IConchUser, avatar, lambda: None

        class UserAuth(SSHUserAuthServer):
            clock = self.clock  # the login timeout must not touch the real reactor

        class Transport(SSHServerTransport):
            def sendExtInfo(self, extensions: Any) -> None:
                if sig_algs is not None:
                    super().sendExtInfo([(b"server-sig-algs", sig_algs)])

        class Factory(SSHFactory):
            protocol = Transport
            publicKeys = {b"ssh-ed25519": self.host_key.public()}
            privateKeys = {b"ssh-ed25519": self.host_key}
            services = {b"ssh-userauth": UserAuth, b"ssh-connection": SSHConnection}

        portal = Portal(Realm())
        portal.registerChecker(RecordingChecker(self, [k.public() for k in authorized]))
        self.factory = Factory()
        self.factory.portal = portal
        self.factory.primes = {}
        self.factory.startFactory()


class MemoryEndpoint:
    """Each connect() builds a server protocol and wires both ends with iosim."""

    def __init__(self, server: MemoryServer | None, error: Exception | None = None) -> None:
        self.server = server
        self.error = error
        self.pumps: list[Any] = []
        self.pending: list[Deferred[Any]] = []
        self.cancelled = 0

    def connect(self, factory: Any) -> Deferred[Any]:
        if self.error is not None:
            return fail(self.error)
        if self.server is None:  # never answers: a black hole
            d: Deferred[Any] = Deferred(lambda _: setattr(self, "cancelled", self.cancelled + 1))
            self.pending.append(d)
            return d
        client = factory.buildProtocol(None)
        server = self.server.factory.buildProtocol(None)
        self.pumps.append(connect(server, FakeTransport(server, True), client, FakeTransport(client, False),
                                  clock=self.server.clock))
        return succeed(client)

    def flush(self) -> None:
        for _ in range(20):
            if not any([p.flush() for p in self.pumps]):
                return


class Harness(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.dir = tempfile.mkdtemp(prefix="ssh-unit-", dir=os.path.abspath("."))
        self.known = KnownHosts(os.path.join(self.dir, "known_hosts"))

    def connect(self, endpoint: MemoryEndpoint, key: Key, timeout: float = 10.0) -> Deferred[Any]:
        d = open_connection(self.clock, host="box.example", port=2222, username=USER, key=key,
                            known_hosts=self.known, timeout=timeout, endpoint=endpoint)
        endpoint.flush()
        return d

    def error_of(self, d: Deferred[Any]) -> SSHError:
        return self.failureResultOf(d, SSHError).value


# -- connecting ---------------------------------------------------------------------------


class Connecting(Harness):
    def test_ed25519_and_ecdsa_log_in_and_record_the_host_key(self) -> None:
        for kind in ("ed25519", "ecdsa"):
            key = private(kind)
            server = MemoryServer(self.clock, [key])
            link = self.successResultOf(self.connect(MemoryEndpoint(server), key))
            self.assertFalse(link.lost)
            self.assertEqual(server.algorithms, [key.sshType()])
        # One entry for [box.example]:2222 (Conch's own matching would miss it).
        with open(self.known.path) as f:
            self.assertEqual(f.read().split()[:2], ["[box.example]:2222", "ssh-ed25519"])
        self.assertEqual(oct(os.stat(self.known.path).st_mode & 0o777), "0o600")

    def test_first_use_notice_then_silence(self) -> None:
        key = private("ed25519")
        server = MemoryServer(self.clock, [key])
        first = self.successResultOf(self.connect(MemoryEndpoint(server), key))
        self.assertEqual(len(first.notices), 1)
        self.assertIn(fingerprint(server.host_key), first.notices[0])
        second = self.successResultOf(self.connect(MemoryEndpoint(server), key))
        self.assertEqual(second.notices, [])

    def test_rsa_signs_with_the_best_sha2_the_server_lists(self) -> None:
        key = private("rsa")
        server = MemoryServer(self.clock, [key], sig_algs=b"ssh-ed25519,rsa-sha2-256")
        self.successResultOf(self.connect(MemoryEndpoint(server), key))
        self.assertEqual(server.algorithms, [b"rsa-sha2-256"])
        server = MemoryServer(self.clock, [key])
        self.successResultOf(self.connect(MemoryEndpoint(server), key))
        self.assertEqual(server.algorithms, [b"rsa-sha2-512"])

    def test_rsa_without_server_sig_algs_tries_sha2_then_sha1(self) -> None:
        key = private("rsa")
        old = MemoryServer(self.clock, [key], sig_algs=None, accept=(b"ssh-rsa",))
        self.successResultOf(self.connect(MemoryEndpoint(old), key))
        self.assertEqual(old.algorithms, [b"ssh-rsa"])  # 512/256 were refused at the query
        modern = MemoryServer(self.clock, [key], sig_algs=None)
        self.successResultOf(self.connect(MemoryEndpoint(modern), key))
        self.assertEqual(modern.algorithms, [b"rsa-sha2-512"])

    def test_rsa_refused_says_which_algorithms_were_offered(self) -> None:
        key = private("rsa")
        server = MemoryServer(self.clock, [key], sig_algs=b"ssh-rsa", accept=(b"rsa-sha2-512",))
        error = self.error_of(self.connect(MemoryEndpoint(server), key))
        self.assertEqual(error.code, "ssh_auth_failed")
        self.assertIn("ssh-rsa", error.message)
        self.assertIn("ed25519", error.message)

    def test_unknown_key_is_an_auth_failure(self) -> None:
        key, other = private("ed25519"), private("ecdsa")
        server = MemoryServer(self.clock, [other])
        error = self.error_of(self.connect(MemoryEndpoint(server), key))
        self.assertEqual(error.code, "ssh_auth_failed")
        self.assertIn(fingerprint(key), error.message)
        self.assertIn(f"{USER}@box.example:2222", error.message)
        self.assertIn("authorized_keys", error.message)

    def test_changed_host_key_is_refused(self) -> None:
        key = private("ed25519")
        self.successResultOf(self.connect(MemoryEndpoint(MemoryServer(self.clock, [key])), key))
        impostor = MemoryServer(self.clock, [key], host_key=Key(ed25519.Ed25519PrivateKey.generate()))
        error = self.error_of(self.connect(MemoryEndpoint(impostor), key))
        self.assertEqual(error.code, "ssh_host_key_mismatch")
        self.assertIn(fingerprint(impostor.host_key), error.message)
        self.assertIn("ssh-keygen -R '[box.example]:2222'", error.message)
        self.assertEqual(impostor.algorithms, [])  # the key was never offered to it

    def test_strict_mode_refuses_unknown_hosts(self) -> None:
        self.known.strict = True
        key = private("ed25519")
        server = MemoryServer(self.clock, [key])
        error = self.error_of(self.connect(MemoryEndpoint(server), key))
        self.assertEqual(error.code, "ssh_unknown_host")
        self.assertIn(fingerprint(server.host_key), error.message)
        self.assertFalse(os.path.exists(self.known.path))

    def test_network_errors(self) -> None:
        key = private("ed25519")
        cases = [
            (neterr.ConnectionRefusedError(), "ssh_refused"),
            (neterr.DNSLookupError("box.example"), "ssh_unreachable"),
            (neterr.NoRouteError(), "ssh_unreachable"),
            (neterr.TCPTimedOutError(), "ssh_unreachable"),
        ]
        for exc, code in cases:
            self.assertEqual(self.error_of(self.connect(MemoryEndpoint(None, exc), key)).code, code)

    def test_not_an_ssh_server(self) -> None:
        class Closer(Protocol):
            def connectionMade(self) -> None:
                self.transport.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
                self.transport.loseConnection()

        class Endpoint(MemoryEndpoint):
            def connect(self, factory: Any) -> Deferred[Any]:
                client, server = factory.buildProtocol(None), Closer()
                self.pumps.append(connect(server, FakeTransport(server, True), client, FakeTransport(client, False)))
                return succeed(client)

        error = self.error_of(self.connect(Endpoint(None), private("ed25519")))
        self.assertEqual(error.code, "ssh_handshake_failed")

    def test_connect_timeout_and_cancel(self) -> None:
        key = private("ed25519")
        endpoint = MemoryEndpoint(None)
        d = self.connect(endpoint, key, timeout=3)
        self.clock.advance(2.9)
        self.assertNoResult(d)
        self.clock.advance(0.2)
        error = self.error_of(d)
        self.assertEqual(error.code, "ssh_unreachable")
        self.assertIn("3 s", error.message)
        self.assertEqual(endpoint.cancelled, 1)  # the attempt was abandoned
        d = self.connect(endpoint, key)
        d.cancel()
        self.failureResultOf(d)
        self.assertEqual(endpoint.cancelled, 2)
        self.assertFalse(self.clock.getDelayedCalls())


# -- running cells --------------------------------------------------------------------------


class Producers:
    def __init__(self) -> None:
        self.producers: set[Any] = set()

    def add_producer(self, producer: Any) -> None:
        self.producers.add(producer)

    def remove_producer(self, producer: Any) -> None:
        self.producers.discard(producer)


class Remote(Harness):
    def setUp(self) -> None:
        super().setUp()
        self.key_text = make_key("ed25519")[0]
        self.server = MemoryServer(self.clock, [Key.fromString(self.key_text.encode())])
        self.endpoint = MemoryEndpoint(self.server)
        var = os.path.join(self.dir, "var")
        os.makedirs(var)
        self.settings = SSHSettings(var, {}, self.clock)
        self.settings.set_connection({"name": "box", "host": "box.example", "port": 2222,
                                      "username": USER, "private_key": self.key_text})
        self.services = RuntimeServices(reactor=self.clock, home=self.dir, environ={}, settings={"ssh": self.settings})
        self.remote = RemoteShell(self.services, connector=partial(open_connection, endpoint=self.endpoint))
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.producers = Producers()

    def start(self, source: str = "work", session: str = "s1", **options: Any) -> tuple[Deferred[Any], CellContext]:
        options.setdefault("target", "box")
        ctx = CellContext(run_id=f"run{len(self.events)}", session_id=session, services=self.services,
                          emit=lambda kind, **f: self.events.append((kind, f)) or 0, producers=self.producers)
        cell = Cell(id=None, type="shell", source=source, options=options, output_variable="out")
        d = self.remote.run(cell, ctx, options["target"])
        self.settle()
        return d, ctx

    def settle(self, seconds: float = 0.0) -> None:
        for _ in range(5):
            self.endpoint.flush()
            self.clock.advance(0.01)
        if seconds:
            self.clock.advance(seconds)
            self.settle()

    def streams(self, name: str) -> str:
        return "".join(f["text"] for kind, f in self.events if kind == "stream" and f["name"] == name)

    def test_streams_and_exit_status(self) -> None:
        d, ctx = self.start("echo 'x'", cwd="/srv", env={"A": "1"}, shell="zsh")
        session = self.server.sessions[0]
        self.assertTrue(session.command.startswith(b"cd /srv && exec env A=1 sh -c "))
        self.assertTrue(session.command.endswith(b" spin-cell zsh 'echo '\"'\"'x'\"'\"''"), session.command)
        session.write(b"out\xc3")
        session.writeExtended(1, b"err1")
        self.settle()
        session.write(b"\xa9\n")
        self.settle()
        self.assertNoResult(d)
        self.assertTrue(self.producers.producers)  # backpressure reaches the SSH connection
        session.exit(status=3)
        self.settle()
        outcome = self.successResultOf(d)
        self.assertEqual((outcome.status, outcome.exit_code, outcome.error["code"]), ("error", 3, "exit_status"))
        self.assertEqual(outcome.value["stdout"], "out\u00e9\n")
        self.assertEqual(outcome.value["stderr"], "err1")  # the host key notice is not part of it
        self.assertIn("recorded its host key", self.streams("stderr"))
        self.assertEqual(self.streams("stdout"), "out\u00e9\n")
        self.assertFalse(self.producers.producers)

    def test_exit_signal(self) -> None:
        d, _ = self.start()
        self.server.sessions[0].exit(signal=b"TERM")
        self.settle()
        outcome = self.successResultOf(d)
        self.assertEqual((outcome.exit_code, outcome.error["code"]), (143, "killed"))

    def test_one_connection_per_session_and_target_replaced_when_settings_change(self) -> None:
        for _ in range(2):
            d, _ = self.start()
            self.server.sessions[-1].exit(status=0)
            self.settle()
            self.assertEqual(self.successResultOf(d).status, "ok")
        self.assertEqual(len(self.endpoint.pumps), 1)
        d, _ = self.start(session="s2")
        self.server.sessions[-1].exit(status=0)
        self.settle()
        self.assertEqual(len(self.endpoint.pumps), 2)
        self.settings.set_connection({"name": "box", "host": "box.example", "port": 2222, "username": USER})
        self.settle()
        self.assertTrue(self.endpoint.pumps[0].clientIO.disconnected)
        d, _ = self.start()
        self.server.sessions[-1].exit(status=0)
        self.settle()
        self.assertEqual(self.successResultOf(d).status, "ok")
        self.assertEqual(len(self.endpoint.pumps), 3)

    def test_interrupt_escalates_then_closes(self) -> None:
        d, ctx = self.start()
        session = self.server.sessions[0]
        ctx.interrupt("cancelled")
        self.settle()
        self.assertEqual((session.signals, session.stdin), ([b"INT"], b"INT\n"))
        self.settle(0.5)
        self.assertEqual(session.signals, [b"INT", b"TERM"])
        self.settle(0.5)
        self.assertEqual(session.stdin, b"INT\nTERM\nKILL\n")
        self.assertNoResult(d)
        self.settle(1.0)  # then the channel is closed, and the server confirms
        self.successResultOf(d)
        self.assertFalse(self.clock.getDelayedCalls())
        # The connection is still good.
        d, _ = self.start()
        self.server.sessions[-1].exit(status=0)
        self.settle()
        self.assertEqual(self.successResultOf(d).status, "ok")
        self.assertEqual(len(self.endpoint.pumps), 1)

    def test_a_server_that_ignores_the_close_loses_the_connection(self) -> None:
        self.server.ignore_close = True
        d, ctx = self.start()
        ctx.interrupt("cancelled")
        self.settle(0.5)
        self.settle(0.5)
        self.settle(1.0)
        self.assertNoResult(d)
        self.settle(2.0)
        self.successResultOf(d)
        self.assertTrue(self.endpoint.pumps[0].clientIO.disconnected)

    def test_interrupt_stops_when_the_command_ends(self) -> None:
        d, ctx = self.start()
        ctx.interrupt("timeout")
        self.settle()
        self.server.sessions[0].exit(signal=b"INT")
        self.settle(3)
        self.assertEqual(self.server.sessions[0].signals, [b"INT"])
        self.assertEqual(self.successResultOf(d).exit_code, 130)

    def test_exec_refused(self) -> None:
        self.server.exec_reply = 0
        d, _ = self.start()
        self.assertEqual(self.successResultOf(d).error["code"], "ssh_exec_failed")

    def test_connection_lost_while_running(self) -> None:
        d, _ = self.start()
        self.server.sessions[0].write(b"partial")
        self.settle()
        self.endpoint.pumps[0].serverIO.abortConnection()
        self.settle()
        outcome = self.successResultOf(d)
        self.assertEqual(outcome.error["code"], "ssh_connection_lost")
        self.assertEqual(outcome.value["stdout"], "partial")
        # The next cell connects again.
        d, _ = self.start()
        self.server.sessions[-1].exit(status=0)
        self.settle()
        self.assertEqual(self.successResultOf(d).status, "ok")
        self.assertEqual(len(self.endpoint.pumps), 2)

    def test_silently_dead_connection_is_replaced(self) -> None:
        d, _ = self.start()
        self.server.sessions[0].exit(status=0)
        self.settle()
        self.successResultOf(d)
        dead = self.endpoint.pumps.pop()  # no more bytes move on it, and nobody says so
        d, _ = self.start()
        self.assertNoResult(d)
        self.settle(10)  # the start timeout (connect timeout) gives up on it
        self.assertTrue(dead.clientIO.disconnecting)
        self.assertEqual(len(self.server.sessions), 2)
        self.server.sessions[-1].exit(status=0)
        self.settle()
        self.assertEqual(self.successResultOf(d).status, "ok")

    def test_interrupt_while_connecting(self) -> None:
        self.endpoint.server = None
        d, ctx = self.start()
        ctx.interrupt("cancelled")
        self.settle()
        self.assertEqual(self.successResultOf(d).error["code"], "cancelled")
        self.assertEqual(self.endpoint.cancelled, 1)

    def test_connect_timeout_option(self) -> None:
        self.endpoint.server = None
        d, _ = self.start(connect_timeout_s=2)
        self.settle(1.5)
        self.assertNoResult(d)
        self.settle(1)
        self.assertEqual(self.successResultOf(d).error["code"], "ssh_unreachable")

    def test_bad_targets_and_options(self) -> None:
        cases = [
            ({"target": "host"}, "host_ssh_disabled"),
            ({"target": "nope"}, "unknown_connection"),
            ({"env": {"A-B": "1"}}, "bad_option"),
            ({"connect_timeout_s": 0}, "bad_option"),
            ({"cwd": 5}, "bad_option"),
        ]
        for options, code in cases:
            d, _ = self.start(**options)
            self.assertEqual(self.successResultOf(d).error["code"], code, options)
        self.assertEqual(self.endpoint.pumps, [])
