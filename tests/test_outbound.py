"""The outbound TLS policy from REQUESTS_CA_BUNDLE, against real HTTPS servers on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any

from twisted.internet import reactor
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial import unittest
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import Data

from spinrt.cells.httpio import describe_failure, read_body
from spinrt.config import ConfigError
from spinrt.outbound import Outbound, load_trust, policy_from_environ, split_pem

from . import tls
from .support import TOKEN, Client, start_runtime, ws_url


def ok_resource() -> Resource:
    root = Resource()
    root.putChild(b"ok", Data(b'{"ok": true}', "application/json"))
    return root


class TrustLoadingTests(unittest.TestCase):
    """Which REQUESTS_CA_BUNDLE values start the runtime, and the messages for the rest."""

    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="trust-", dir=os.path.abspath("."))
        self.pki = tls.make_pki(self.dir)

    def test_unset_or_empty_is_unverified(self) -> None:
        for environ in ({}, {"REQUESTS_CA_BUNDLE": ""}, {"REQUESTS_CA_BUNDLE": "  "}):
            policy, _ = policy_from_environ(environ)
            self.assertFalse(policy.verified)
            self.assertEqual(policy.status(), {"outbound_tls": "unverified", "outbound_ca_bundle": None})

    def test_bundle_file_every_certificate(self) -> None:
        other = tls.make_ca("Other CA")
        path = tls.write(self.dir, "bundle.pem", other, self.pki.root, self.pki.intermediate)
        with open(path, "rb") as f:
            self.assertEqual(len(split_pem(f.read())), 3)
        policy, _ = policy_from_environ({"REQUESTS_CA_BUNDLE": path})
        self.assertEqual((policy.verified, policy.kind, policy.certificates, policy.path),
                         (True, "file", 3, path))
        self.assertEqual(policy.status(), {"outbound_tls": "verified", "outbound_ca_bundle": path})

    def test_rehashed_directory(self) -> None:
        other = tls.make_ca("Other CA")
        directory = tls.rehashed_dir(self.dir, self.pki.root, other)
        with open(os.path.join(directory, "README"), "w") as f:
            f.write("not a certificate, and not a <hash>.N name: ignored\n")
        kind, certs = load_trust(directory)
        self.assertEqual((kind, len(certs)), ("directory", 2))

    def test_missing_path(self) -> None:
        missing = os.path.join(self.dir, "nope.pem")
        e = self.assertRaises(ConfigError, load_trust, missing)
        self.assertIn(f"REQUESTS_CA_BUNDLE={missing} does not exist", str(e))
        self.assertNotIn("\n", str(e))

    def test_file_without_certificates(self) -> None:
        for name, content in (("empty.pem", b""), ("key.pem", self.pki.server.key_pem()),
                              ("text.pem", b"hello\n")):
            path = os.path.join(self.dir, name)
            with open(path, "wb") as f:
                f.write(content)
            e = self.assertRaises(ConfigError, load_trust, path)
            self.assertIn("holds no PEM certificates", str(e))

    def test_broken_certificate(self) -> None:
        path = os.path.join(self.dir, "broken.pem")
        with open(path, "wb") as f:
            f.write(self.pki.root.pem() + b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
        e = self.assertRaises(ConfigError, load_trust, path)
        self.assertIn("certificate #2", str(e))

    def test_directory_not_rehashed(self) -> None:
        directory = tempfile.mkdtemp(dir=self.dir)
        tls.write(directory, "ca.pem", self.pki.root)
        e = self.assertRaises(ConfigError, load_trust, directory)
        self.assertIn(f"openssl rehash {directory}", str(e))

    def test_directory_with_dangling_link(self) -> None:
        directory = tls.rehashed_dir(self.dir, self.pki.root)
        os.symlink("/nonexistent/ca.pem", os.path.join(directory, "0badc0de.0"))
        e = self.assertRaises(ConfigError, load_trust, directory)
        self.assertIn("0badc0de.0", str(e))
        self.assertIn("cannot read", str(e))


class VerificationTests(unittest.TestCase):
    """Each policy against real HTTPS servers with test-generated CAs."""

    timeout = 60

    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="verify-", dir=os.path.abspath("."))
        self.pki = tls.make_pki(self.dir)
        self.other = tls.make_pki(self.dir, "Other CA")
        self.sni: list[Any] = []
        opts = tls.server_options(self.pki.server, self.pki.intermediate)
        ctx = opts.getContext()
        ctx.set_tlsext_servername_callback(lambda conn: self.sni.append(conn.get_servername()))
        site = Site(ok_resource())
        port = reactor.listenSSL(0, site, opts, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.port = port.getHost().port

    async def get(self, environ: dict[str, str], url: str) -> Any:
        outbound = Outbound.from_environ(environ, reactor)
        self.addCleanup(outbound.close)
        response = await outbound.request("GET", url)
        body = await read_body(response, reactor, 1000).done
        return response.code, json.loads(body)

    async def fails(self, environ: dict[str, str], url: str) -> tuple[str, str, str]:
        try:
            await self.get(environ, url)
        except Exception:
            return describe_failure(Failure(), url, bool(environ))
        raise AssertionError("the request succeeded")

    async def test_unset_accepts_any_certificate_and_sends_sni(self) -> None:
        self.assertEqual(await self.get({}, f"https://localhost:{self.port}/ok"), (200, {"ok": True}))
        self.assertEqual(self.sni, [b"localhost"])
        # A certificate for another name, from an unknown CA: still accepted.
        _, port = tls.listen_https(self, ok_resource(), tls.issue_server(self.other.root, "elsewhere",
                                                                           dns=("elsewhere.example",), ips=()))
        self.assertEqual((await self.get({}, f"https://localhost:{port}/ok"))[0], 200)

    async def test_bundle_file(self) -> None:
        env = {"REQUESTS_CA_BUNDLE": self.pki.bundle}
        self.assertEqual(await self.get(env, f"https://localhost:{self.port}/ok"), (200, {"ok": True}))
        self.assertEqual(await self.get(env, f"https://127.0.0.1:{self.port}/ok"), (200, {"ok": True}))
        self.assertEqual(self.sni, [b"localhost", None])  # no SNI for an address

    async def test_bundle_where_the_ca_is_not_the_first_certificate(self) -> None:
        bundle = tls.write(self.dir, "many.pem", self.other.root, tls.make_ca("Third CA"), self.pki.root)
        self.assertEqual((await self.get({"REQUESTS_CA_BUNDLE": bundle}, f"https://localhost:{self.port}/ok"))[0], 200)

    async def test_rehashed_directory(self) -> None:
        directory = tls.rehashed_dir(self.dir, self.other.root, self.pki.root)
        self.assertEqual((await self.get({"REQUESTS_CA_BUNDLE": directory}, f"https://localhost:{self.port}/ok"))[0], 200)
        only_other = tls.rehashed_dir(self.dir, self.other.root)
        code, _, message = await self.fails({"REQUESTS_CA_BUNDLE": only_other}, f"https://localhost:{self.port}/ok")
        self.assertEqual(code, "tls_error")
        self.assertIn(only_other, message)

    async def test_wrong_ca_names_the_certificate(self) -> None:
        env = {"REQUESTS_CA_BUNDLE": self.other.bundle}
        code, ename, message = await self.fails(env, f"https://localhost:{self.port}/ok")
        self.assertEqual((code, ename), ("tls_error", "CertificateError"))
        # The server sent its intermediate: that is the certificate no trusted CA signed.
        self.assertIn(f"certificate '{self.pki.intermediate.subject}'", message)
        self.assertIn(f"issued by '{self.pki.root.subject}'", message)
        self.assertIn(f"REQUESTS_CA_BUNDLE={self.other.bundle}", message)
        self.assertIn(f"localhost:{self.port}", message)

    async def test_missing_chain_names_the_leaf(self) -> None:
        _, port = tls.listen_https(self, ok_resource(), self.pki.server)  # no intermediate sent
        code, _, message = await self.fails({"REQUESTS_CA_BUNDLE": self.pki.bundle}, f"https://localhost:{port}/ok")
        self.assertEqual(code, "tls_error")
        self.assertIn(f"certificate '{self.pki.server.subject}'", message)

    async def test_wrong_host_name(self) -> None:
        server = tls.issue_server(self.pki.intermediate, "api.example", dns=("api.example",), ips=())
        _, port = tls.listen_https(self, ok_resource(), server, self.pki.intermediate)
        code, _, message = await self.fails({"REQUESTS_CA_BUNDLE": self.pki.bundle}, f"https://localhost:{port}/ok")
        self.assertEqual(code, "tls_error")
        self.assertIn("'CN=api.example,O=spinrt tests' is not valid for the name localhost", message)

    async def test_expired_certificate(self) -> None:
        server = tls.issue_server(self.pki.intermediate, expired=True)
        _, port = tls.listen_https(self, ok_resource(), server, self.pki.intermediate)
        code, _, message = await self.fails({"REQUESTS_CA_BUNDLE": self.pki.bundle}, f"https://localhost:{port}/ok")
        self.assertEqual(code, "tls_error")
        self.assertIn("it has expired", message)
        # Unverified still connects (as documented: nothing is checked).
        self.assertEqual((await self.get({}, f"https://localhost:{port}/ok"))[0], 200)

    async def test_plain_http_server_on_an_https_url(self) -> None:
        port = tls.listen_plain_http_answering_400(self)
        code, ename, message = await self.fails({"REQUESTS_CA_BUNDLE": self.pki.bundle}, f"https://localhost:{port}/ok")
        self.assertEqual((code, ename), ("tls_error", "TLSError"))
        self.assertIn(f"TLS handshake with localhost:{port} failed: wrong version number", message)


class RuntimePolicyTests(unittest.TestCase):
    """The policy as the runtime applies it: start-up refusal, warning, status, children."""

    timeout = 60

    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="rt-", dir=os.path.abspath("."))
        self.warnings: list[str] = []

        def observe(event: dict[str, Any]) -> None:
            if event.get("log_level") is not None and event["log_level"].name == "warn":
                self.warnings.append(event.get("log_format", ""))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    async def status(self, service: Any) -> dict[str, Any]:
        port = service.addresses[0]["port"]
        _, body = await tls.http_get(f"http://127.0.0.1:{port}/api/status", headers={"Authorization": f"Bearer {TOKEN}"})
        return json.loads(body)

    async def test_bad_bundle_refuses_to_start(self) -> None:
        missing = os.path.join(self.dir, "missing.pem")
        with self.assertRaises(SystemExit) as caught:
            await start_runtime(self, environ={"REQUESTS_CA_BUNDLE": missing})
        message = str(caught.exception)
        self.assertTrue(message.startswith(f"spin-runtime: REQUESTS_CA_BUNDLE={missing} does not exist"), message)
        self.assertNotIn("\n", message)
        empty = tempfile.mkdtemp(dir=self.dir)
        with self.assertRaises(SystemExit) as caught:
            await start_runtime(self, environ={"REQUESTS_CA_BUNDLE": empty})
        self.assertIn("rehash", str(caught.exception))

    async def test_unset_warns_once_and_reports_unverified(self) -> None:
        service = await start_runtime(self, environ={"REQUESTS_CA_BUNDLE": ""})
        status = await self.status(service)
        self.assertEqual((status["outbound_tls"], status["outbound_ca_bundle"]), ("unverified", None))
        relevant = [w for w in self.warnings if "REQUESTS_CA_BUNDLE" in w]
        self.assertEqual(len(relevant), 1, self.warnings)
        self.assertIn("NOT verified", relevant[0])

    async def test_bundle_reported_and_passed_to_shell_cells_unchanged(self) -> None:
        pki = tls.make_pki(self.dir)
        service = await start_runtime(self, environ={"REQUESTS_CA_BUNDLE": pki.bundle})
        status = await self.status(service)
        self.assertEqual((status["outbound_tls"], status["outbound_ca_bundle"]), ("verified", pki.bundle))
        self.assertNotIn("BEGIN CERTIFICATE", json.dumps(status))
        self.assertEqual([w for w in self.warnings if "REQUESTS_CA_BUNDLE" in w], [])
        client = await Client.connect(ws_url(service))
        self.addCleanup(client.close)
        session = (await client.request("session.create"))["session"]["id"]
        finished = await client.run(session, {"id": "c1", "type": "shell", "source": 'printf "%s" "$REQUESTS_CA_BUNDLE"',
                                              "options": {}})
        self.assertEqual(finished["status"], "ok")
        self.assertEqual(client.output(finished["run"]), pki.bundle)

    async def test_rehashed_directory(self) -> None:
        pki = tls.make_pki(self.dir)
        directory = tls.rehashed_dir(self.dir, pki.root)
        service = await start_runtime(self, environ={"REQUESTS_CA_BUNDLE": directory})
        self.assertEqual((await self.status(service))["outbound_ca_bundle"], directory)
        client = await Client.connect(ws_url(service))
        self.addCleanup(client.close)
        session = (await client.request("session.create"))["session"]["id"]
        finished = await client.run(session, {"id": "c1", "type": "shell", "source": 'printf "%s" "$REQUESTS_CA_BUNDLE"',
                                              "options": {}})
        self.assertEqual(client.output(finished["run"]), directory)
        shutil.rmtree(directory)  # read at start only: the runtime keeps working
        self.assertEqual((await self.status(service))["outbound_tls"], "verified")
