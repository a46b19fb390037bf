"""The runtime served over HTTPS (an ``ssl:`` endpoint with a chain file), as browsers need it.

Clients trust only the test root CA, so every success here also proves that
the runtime sends its intermediate (``extraCertChain``).
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory
from OpenSSL import SSL
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import IHandshakeListener, IOpenSSLClientConnectionCreator, IOpenSSLContextFactory
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import optionsForClientTLS, trustRootFromCertificates
from twisted.python.failure import Failure
from twisted.trial import unittest
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import Data
from zope.interface import implementer

from . import tls
from spinrt.tap import makeService

from .support import TOKEN, Client, ClientProtocol, run_options, start_runtime


def ssl_endpoint(pki: tls.Pki, chain: bool = True) -> str:
    description = f"ssl:0:interface=127.0.0.1:privateKey={pki.server.key_path}:certKey={pki.server.cert_path}"
    if chain:
        description += f":extraCertChain={pki.intermediate.cert_path}"
    return description


def tls_port(service: Any) -> int:
    [address] = [a for a in service.addresses if a["tls"]]
    assert address["url"].startswith("wss://127.0.0.1:"), address
    return int(address["port"])


async def connect_wss(port: int, root: tls.Issued, **kw: Any) -> Client:
    """tests.support.Client, over TLS, verifying the runtime as 'localhost' against ``root``."""
    client = Client()
    factory = WebSocketClientFactory(f"wss://localhost:{port}/ws", headers={"Authorization": f"Bearer {TOKEN}"}, **kw)
    factory.protocol = ClientProtocol
    factory.client = client
    creator = optionsForClientTLS("localhost", trustRoot=trustRootFromCertificates([root.twisted_cert()]))
    await wrapClientTLS(creator, TCP4ClientEndpoint(reactor, "127.0.0.1", port)).connect(factory)
    await client._opened_d
    return client


@implementer(IOpenSSLClientConnectionCreator)
class RawClient:
    """A TLS client limited to the given versions, verifying nothing (to probe servers)."""

    def __init__(self, low: int, high: int, legacy: bool = False, ciphers: bytes | None = None) -> None:
        self.context = SSL.Context(SSL.TLS_METHOD)
        self.context.set_min_proto_version(low)
        self.context.set_max_proto_version(high)
        if legacy:  # TLS 1.1 needs SHA-1 era ciphers and signatures
            self.context.set_cipher_list(b"DEFAULT:@SECLEVEL=0")
        if ciphers is not None:
            self.context.set_cipher_list(ciphers + b":@SECLEVEL=0")
        self.context.set_verify(SSL.VERIFY_NONE, lambda *args: True)

    def clientConnectionForTLS(self, tls_protocol: Any) -> SSL.Connection:
        connection = SSL.Connection(self.context, None)
        connection.set_app_data(tls_protocol)
        connection.set_tlsext_host_name(b"localhost")
        return connection


@implementer(IHandshakeListener)
class Probe(Protocol):
    """GET /healthz; fires ``done`` with (negotiated version or None, response bytes, failure or None)."""

    def __init__(self) -> None:
        self.done: defer.Deferred[tuple[str | None, bytes, Failure | None]] = defer.Deferred()
        self.version: str | None = None
        self.data = b""

    def connectionMade(self) -> None:
        self.transport.write(b"GET /healthz HTTP/1.0\r\nHost: localhost\r\n\r\n")

    def handshakeCompleted(self) -> None:
        self.version = self.transport.getHandle().get_protocol_version_name()
        self.cipher = self.transport.getHandle().get_cipher_name()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure) -> None:
        failed = None if self.version else reason
        self.done.callback((self.version, self.data, failed))


async def probe(port: int, creator: Any) -> tuple[str | None, bytes, Failure | None]:
    protocol = Probe()
    await wrapClientTLS(creator, TCP4ClientEndpoint(reactor, "127.0.0.1", port)).connect(
        Factory.forProtocol(lambda: protocol))
    return await protocol.done


class HttpsServingTests(unittest.TestCase):
    timeout = 60

    async def setUp(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="https-", dir=os.path.abspath("."))
        self.pki = tls.make_pki(self.dir)
        self.service = await start_runtime(self, "--endpoint", ssl_endpoint(self.pki),
                                           environ={"REQUESTS_CA_BUNDLE": ""})
        self.port = tls_port(self.service)

    async def test_healthz_and_status_over_https(self) -> None:
        base = f"https://localhost:{self.port}"
        response, body = await tls.http_get(f"{base}/healthz", trust=[self.pki.root])
        self.assertEqual((response.code, body), (200, b"ok"))
        response, body = await tls.http_get(f"{base}/api/status", headers={"Authorization": f"Bearer {TOKEN}"},
                                            trust=[self.pki.root])
        self.assertEqual(response.code, 200)
        status = json.loads(body)
        self.assertEqual(status["outbound_tls"], "unverified")
        self.assertNotIn(TOKEN, body.decode())
        response, _ = await tls.http_get(f"{base}/api/status", trust=[self.pki.root])
        self.assertEqual(response.code, 401)

    async def test_wss_session_and_cell(self) -> None:
        client = await connect_wss(self.port, self.pki.root, protocols=["spin.v1"])
        self.addCleanup(client.close)
        welcome = await client.wait_for(lambda m: m.get("event") == "welcome")
        self.assertEqual(welcome["runtime"]["protocol"], 1)
        assert client.protocol is not None
        self.assertEqual(client.protocol.transport.getHandle().get_protocol_version_name(), "TLSv1.3")
        self.assertEqual(client.protocol.websocket_protocol_in_use, "spin.v1")
        hello = await client.request("hello")
        self.assertIn("rest", hello["runtime"]["cell_types"])
        self.assertIn("llm", hello["runtime"]["cell_types"])
        session = (await client.request("session.create"))["session"]["id"]
        finished = await client.run(session, {"id": "c1", "type": "shell", "source": "echo over-tls", "options": {}})
        self.assertEqual(finished["status"], "ok")
        self.assertEqual(client.output(finished["run"]), "over-tls\n")

    async def test_tls_1_2_and_1_3_accepted_1_1_refused(self) -> None:
        version, data, _ = await probe(self.port, RawClient(SSL.TLS1_2_VERSION, SSL.TLS1_2_VERSION))
        self.assertEqual(version, "TLSv1.2")
        self.assertTrue(data.startswith(b"HTTP/1.0 200 OK"), data[:40])
        version, _, _ = await probe(self.port, RawClient(SSL.TLS1_2_VERSION, SSL.TLS1_3_VERSION))
        self.assertEqual(version, "TLSv1.3")
        version, data, failure = await probe(self.port, RawClient(SSL.TLS1_1_VERSION, SSL.TLS1_1_VERSION, legacy=True))
        self.assertIsNone(version)
        self.assertEqual(data, b"")
        assert failure is not None
        self.assertTrue(failure.check(SSL.Error), failure)
        self.assertIn("protocol version", str(failure.value))

    async def test_tls_1_2_offers_only_forward_secret_aead_suites(self) -> None:
        # Mozilla "intermediate": on TLS 1.2 only ECDHE/DHE with AES-GCM or ChaCha20-Poly1305.
        tls12 = (SSL.TLS1_2_VERSION, SSL.TLS1_2_VERSION)
        for suite in (b"AES128-SHA", b"AES256-SHA", b"AES128-GCM-SHA256", b"AES256-GCM-SHA384",  # static RSA
                      b"AES128-SHA256",
                      b"ECDHE-ECDSA-AES128-SHA", b"ECDHE-ECDSA-AES256-SHA384",  # forward secret but CBC
                      b"ECDHE-RSA-AES128-SHA", b"DHE-RSA-AES128-SHA"):
            version, data, failure = await probe(self.port, RawClient(*tls12, ciphers=suite))
            self.assertIsNone(version, suite)
            self.assertEqual(data, b"", suite)
        for suite in (b"ECDHE-ECDSA-AES128-GCM-SHA256", b"ECDHE-ECDSA-AES256-GCM-SHA384",
                      b"ECDHE-ECDSA-CHACHA20-POLY1305"):
            protocol = Probe()
            await wrapClientTLS(RawClient(*tls12, ciphers=suite), TCP4ClientEndpoint(reactor, "127.0.0.1", self.port)
                                ).connect(Factory.forProtocol(lambda: protocol))
            version, data, _ = await protocol.done
            self.assertEqual((version, protocol.cipher), ("TLSv1.2", suite.decode()))
            self.assertTrue(data.startswith(b"HTTP/1.0 200 OK"), data[:40])
        # A client that offers everything gets a forward-secret AEAD suite.
        protocol = Probe()
        await wrapClientTLS(RawClient(*tls12, ciphers=b"ALL"), TCP4ClientEndpoint(reactor, "127.0.0.1", self.port)
                            ).connect(Factory.forProtocol(lambda: protocol))
        await protocol.done
        self.assertRegex(protocol.cipher, r"^ECDHE-ECDSA-(AES\d+-GCM-SHA\d+|CHACHA20-POLY1305)$")

    async def test_the_tls_1_1_probe_works_where_allowed(self) -> None:
        # The refusal above is the runtime's: this server accepts the same client.
        context = SSL.Context(SSL.TLS_METHOD)
        context.set_min_proto_version(SSL.TLS1_1_VERSION)
        context.set_cipher_list(b"DEFAULT:@SECLEVEL=0")
        context.use_certificate_file(self.pki.server.cert_path)
        context.use_privatekey_file(self.pki.server.key_path)

        @implementer(IOpenSSLContextFactory)
        class Legacy:
            def getContext(self) -> SSL.Context:
                return context

        root = Resource()
        root.putChild(b"healthz", Data(b"ok", "text/plain"))
        port = reactor.listenSSL(0, Site(root), Legacy(), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        version, data, _ = await probe(port.getHost().port,
                                       RawClient(SSL.TLS1_1_VERSION, SSL.TLS1_1_VERSION, legacy=True))
        self.assertEqual(version, "TLSv1.1")
        self.assertTrue(data.startswith(b"HTTP/1.0 200 OK"), data[:40])


class HttpsSetupTests(unittest.TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="https-", dir=os.path.abspath("."))
        self.pki = tls.make_pki(self.dir)

    async def test_without_the_chain_clients_cannot_verify(self) -> None:
        service = await start_runtime(self, "--endpoint", ssl_endpoint(self.pki, chain=False),
                                      environ={"REQUESTS_CA_BUNDLE": ""})
        port = tls_port(service)
        with self.assertRaises(Exception) as caught:
            await tls.http_get(f"https://localhost:{port}/healthz", trust=[self.pki.root])
        self.assertIn("certificate verify failed", str(caught.exception))

    async def test_rsa_certificate_static_rsa_and_cbc_suites_refused(self) -> None:
        # With an RSA key, static RSA key exchange would be possible: the policy must refuse it.
        import datetime

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
        key_path, cert_path = os.path.join(self.dir, "rsa.key"), os.path.join(self.dir, "rsa.pem")
        with open(key_path, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
        with open(cert_path, "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        service = await start_runtime(self, "--endpoint",
                                      f"ssl:0:interface=127.0.0.1:privateKey={key_path}:certKey={cert_path}",
                                      environ={"REQUESTS_CA_BUNDLE": ""})
        port = tls_port(service)
        tls12 = (SSL.TLS1_2_VERSION, SSL.TLS1_2_VERSION)
        for suite in (b"AES128-SHA", b"AES256-SHA", b"AES128-GCM-SHA256", b"AES256-GCM-SHA384",
                      b"AES128-SHA256", b"ECDHE-RSA-AES128-SHA", b"ECDHE-RSA-AES256-SHA384"):
            version, _, _ = await probe(port, RawClient(*tls12, ciphers=suite))
            self.assertIsNone(version, suite)
        for suite in (b"ECDHE-RSA-AES128-GCM-SHA256", b"ECDHE-RSA-AES256-GCM-SHA384", b"ECDHE-RSA-CHACHA20-POLY1305"):
            version, data, _ = await probe(port, RawClient(*tls12, ciphers=suite))
            self.assertEqual(version, "TLSv1.2", suite)
        version, _, _ = await probe(port, RawClient(SSL.TLS1_3_VERSION, SSL.TLS1_3_VERSION))
        self.assertEqual(version, "TLSv1.3")

    async def test_missing_key_file_is_one_clear_line(self) -> None:
        missing = os.path.join(self.dir, "missing-key.pem")
        description = f"ssl:0:interface=127.0.0.1:privateKey={missing}:certKey={self.pki.server.cert_path}"
        service = makeService(run_options(self.dir, "--endpoint", description), reactor,
                              {**os.environ, "SPIN_TOKEN": TOKEN, "REQUESTS_CA_BUNDLE": ""})
        with self.assertRaises(SystemExit) as caught:
            service.privilegedStartService()
        for port in service.ports:  # the tcp: endpoint before it (the process would exit here)
            await port.stopListening()
        message = str(caught.exception)
        self.assertTrue(message.startswith("spin-runtime: bad --endpoint"), message)
        self.assertIn("missing-key.pem", message)
        self.assertNotIn("\n", message)
