"""Typed connections (PROTOCOL.md section 13) over a real runtime: the schema of
every type, literal and referenced credentials (stored 0600, never listed, never
in any output), edits, defaults, one name space with ssh, restarts,
connections.test's codes, the runtime's outbound TLS policy against a
connection's own CA, and masking of a credential a server echoes back.

The server here is a stand-in for Prometheus' HTTP API answering as
https://prometheus.io/docs/prometheus/latest/querying/api/ documents ("Format
overview": the JSON envelope; "Build information"); the real server is
tests/test_prometheus.py's."""

from __future__ import annotations

import json
import os
import stat
import tempfile
from typing import Any

from twisted.trial import unittest
from twisted.web.server import Request

from . import tls
from .fake_api import FakeApi
from .sshd import free_port
from .support import Client, start_runtime, ws_url

GOOD_TOKEN = "tok-0123456789abcdef-good"
PEER_TOKEN = "tok-peer-secret-5555-xyz"


class FakePrometheus(FakeApi):
    """Answers the API's envelope; 401 without the right bearer token, and a
    misbehaving 403 that echoes the Authorization header."""

    def __init__(self) -> None:
        super().__init__()
        self.mode = "ok"

    def route(self, request: Request, seen: dict[str, Any], body: bytes) -> bytes:
        auth = seen["authorization"]
        if self.mode == "echo":  # a proxy that quotes what it refused
            return self.json(request, 403, {"status": "error", "errorType": "forbidden",
                                            "error": f"header {auth} is not allowed here"})
        if self.mode == "html":
            request.setHeader(b"content-type", b"text/html")
            return b"<html>a login page</html>"
        if auth != f"Bearer {GOOD_TOKEN}":
            request.setResponseCode(401)
            request.setHeader(b"content-type", b"text/plain")
            return b"Unauthorized: missing or bad bearer token"
        if request.path == b"/api/v1/status/buildinfo":
            return self.json(request, 200, {"status": "success", "data": {"version": "2.99.0"}})
        return self.json(request, 200, {"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {"__name__": "up", "job": "x"}, "value": [1764496800.0, "1"]}]}})


class ConnectionOpsTests(unittest.TestCase):
    timeout = 60

    async def setUp(self) -> None:
        self.home = tempfile.mkdtemp(prefix="spin-home-", dir=os.path.abspath("."))
        self.service = await start_runtime(self, home=self.home, environ={"REQUESTS_CA_BUNDLE": ""})
        self.client = await Client.connect(ws_url(self.service))
        self.addCleanup(self.client.close)

    async def req(self, op: str, **params: Any) -> dict[str, Any]:
        return await self.client.request(op, **params)

    async def test_types_schema(self) -> None:
        reply = await self.req("connections.types")
        types = reply["types"]
        self.assertIn("ssh", types)
        self.assertIn("prometheus", types)
        fields = {f["name"]: f for f in types["prometheus"]["fields"]}
        self.assertEqual(list(fields), ["url", "token", "username", "password", "ca"])
        self.assertEqual((fields["url"]["required"], fields["url"]["secret"]), (True, False))
        self.assertEqual((fields["token"]["required"], fields["token"]["secret"]), (False, True))
        self.assertTrue(fields["password"]["secret"])
        self.assertEqual(fields["ca"]["kind"], "text")
        ssh = {f["name"]: f for f in types["ssh"]["fields"]}
        self.assertTrue(ssh["private_key"]["secret"] and ssh["host"]["required"])
        for kind in types.values():
            for field in kind["fields"]:
                self.assertEqual(set(field), {"name", "required", "secret", "kind", "description"})
                self.assertTrue(field["description"])
        hello = await self.req("hello")
        self.assertIn("typed_connections", hello["runtime"]["features"])

    async def test_literal_and_referenced_secrets(self) -> None:
        reply = await self.req("connections.set", name="p1", type="prometheus", url="http://prom.example:9090",
                               token=GOOD_TOKEN)
        self.assertEqual(reply["connection"], {"name": "p1", "type": "prometheus", "default": True,
                                               "url": "http://prom.example:9090", "token": {"set": True}})
        reply = await self.req("connections.set", name="p2", type="prometheus", url="http://b:9090",
                               username="{{runtime_env:PROM_USER}}", password="{{secret:PROM_PASSWORD}}")
        self.assertEqual(reply["connection"]["password"], {"set": True, "reference": "{{secret:PROM_PASSWORD}}"})
        self.assertEqual(reply["connection"]["username"], "{{runtime_env:PROM_USER}}")
        self.assertFalse(reply["connection"]["default"])  # p1 was first
        listed = (await self.req("connections.list"))["connections"]
        self.assertEqual([c["name"] for c in listed], ["p1", "p2"])
        self.assertNotIn(GOOD_TOKEN, json.dumps(listed))
        path = os.path.join(self.home, "var", "connections.json")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        with open(path) as f:
            self.assertEqual(json.load(f)["connections"]["p1"]["fields"]["token"], GOOD_TOKEN)
        # Edits: absent keeps, an empty secret keeps, "" clears a plain field, null clears.
        reply = await self.req("connections.set", name="p1", type="prometheus", token="", ca="")
        self.assertEqual(reply["connection"]["token"], {"set": True})
        self.assertEqual(reply["connection"]["url"], "http://prom.example:9090")
        reply = await self.req("connections.set", name="p2", type="prometheus", default=True,
                               username=None, password=None)
        self.assertEqual(reply["connection"], {"name": "p2", "type": "prometheus", "default": True,
                                               "url": "http://b:9090"})
        listed = {c["name"]: c for c in (await self.req("connections.list"))["connections"]}
        self.assertEqual((listed["p1"]["default"], listed["p2"]["default"]), (False, True))
        # A restart reads them back.
        registry = self.service.cell_services.settings["connections"]
        again = type(registry)(self.service.cell_services, registry.types.values())
        self.assertEqual(again.list(), registry.list())
        # The audit trail names the connection, never the token.
        rows = await self.service.audit.page(limit=1000)
        self.assertNotIn(GOOD_TOKEN, json.dumps(rows))
        self.assertIn("p1", json.dumps([r["target"] for r in rows if r["action"] == "connections.set"]))

    async def test_a_failed_write_changes_nothing(self) -> None:
        registry = self.service.cell_services.settings["connections"]
        self.assertTrue((await self.req("connections.set", name="p1", type="prometheus", url="http://a:9090"))["ok"])
        blocker = os.path.join(self.home, "blocker")
        open(blocker, "w").close()
        registry.path = os.path.join(blocker, "connections.json")  # a file where a directory should be
        for op, params in (("connections.set", {"name": "p2", "type": "prometheus", "url": "http://b:9090"}),
                           ("connections.set", {"name": "p1", "type": "prometheus", "url": "http://c:9090"}),
                           ("connections.delete", {"name": "p1"})):
            reply = await self.req(op, **params)
            self.assertEqual(reply["error"]["code"], "internal_error", (op, reply))
        listed = (await self.req("connections.list"))["connections"]
        self.assertEqual([(c["name"], c["url"]) for c in listed], [("p1", "http://a:9090")])
        self.flushLoggedErrors(NotADirectoryError, FileExistsError)

    async def test_bad_settings_are_refused(self) -> None:
        for params, words in [
            ({"type": "nope", "url": "http://x"}, "unknown connection type 'nope'"),
            ({"type": "prometheus"}, "needs 'url'"),
            ({"type": "prometheus", "url": "ftp://x"}, "http:// or https://"),
            ({"type": "prometheus", "url": "http://u:p@x"}, "must not carry credentials"),
            ({"type": "prometheus", "url": "http://x", "colour": "red"}, "no field 'colour'"),
            ({"type": "prometheus", "url": "http://x", "token": 5}, "'token' must be a string"),
            ({"type": "prometheus", "url": "http://x", "token": "{{my_var}}"}, "may reference only"),
            ({"type": "prometheus", "url": "http://x", "token": "a", "username": "u", "password": "p"}, "not both"),
            ({"type": "prometheus", "url": "http://x", "username": "u"}, "go together"),
            ({"type": "prometheus", "url": "http://x", "ca": "-----BEGIN CERTIFICATE-----\nxx"}, "no PEM certificate"),
            ({"type": "prometheus", "url": "http://x\nHost: y"}, "one line"),
            ({"type": "ssh", "host": "h", "username": "u", "url": "http://x"}, "no field 'url'"),
            ({"type": "ssh", "username": "u"}, "needs 'host'"),
            ({"type": "prometheus", "url": "http://x", "default": "yes"}, "'default' must be true or false"),
        ]:
            reply = await self.req("connections.set", name="bad", **params)
            self.assertFalse(reply["ok"], params)
            self.assertEqual(reply["error"]["code"], "bad_request", (params, reply))
            self.assertIn(words, reply["error"]["message"], params)
        reply = await self.req("connections.set", name="host", type="prometheus", url="http://x")
        self.assertIn("reserved", reply["error"]["message"])
        self.assertEqual((await self.req("connections.list"))["connections"], [])
        # One name space: a name is one connection, whatever its type.
        from .sshd import make_key

        key, _ = make_key("ed25519")
        reply = await self.req("connections.set", name="box", host="h.example", username="u", private_key=key)
        self.assertTrue(reply["ok"], reply)
        self.assertEqual(reply["connection"]["type"], "ssh")
        reply = await self.req("connections.set", name="box", type="prometheus", url="http://x")
        self.assertEqual(reply["error"]["code"], "conflict")
        await self.req("connections.set", name="metrics", type="prometheus", url="http://x")
        reply = await self.req("connections.set", name="metrics", host="h.example", username="u", private_key=key)
        self.assertEqual(reply["error"]["code"], "conflict")
        listed = (await self.req("connections.list"))["connections"]
        self.assertEqual([(c["name"], c["type"]) for c in listed], [("box", "ssh"), ("metrics", "prometheus")])
        self.assertNotIn("PRIVATE KEY", json.dumps(listed))
        for op in ("connections.delete", "connections.test"):
            reply = await self.req(op, name="none")
            self.assertEqual(reply["error"]["code"], "unknown_connection", op)
        self.assertTrue((await self.req("connections.delete", name="metrics"))["ok"])
        self.assertTrue((await self.req("connections.delete", name="box"))["ok"])
        self.assertEqual((await self.req("connections.list"))["connections"], [])


class ConnectionTlsAndTestTests(unittest.TestCase):
    """The runtime's REQUESTS_CA_BUNDLE against a connection's own CA, and
    connections.test's codes."""

    timeout = 60

    async def setUp(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="tls-", dir=os.path.abspath("."))
        self.runtime_pki = tls.make_pki(self.dir, "Runtime CA")  # what REQUESTS_CA_BUNDLE trusts
        self.own = tls.make_pki(self.dir, "Cluster CA")  # the connection's own CA
        self.api = FakePrometheus()
        _, port = tls.listen_https(self, self.api, self.own.server, self.own.intermediate)
        self.url = f"https://localhost:{port}"
        _, plain = tls.listen_http(self, self.api)
        self.plain_url = f"http://127.0.0.1:{plain}"
        self.service = await start_runtime(self, environ={"REQUESTS_CA_BUNDLE": self.runtime_pki.bundle,
                                                          "PROM_TOKEN_ENV": GOOD_TOKEN})
        self.client = await Client.connect(ws_url(self.service))
        self.addCleanup(self.client.close)

    async def set(self, name: str, **fields: Any) -> None:
        reply = await self.client.request("connections.set", name=name, type="prometheus", **fields)
        self.assertTrue(reply["ok"], reply)

    async def test(self, name: str) -> dict[str, Any]:
        return await self.client.request("connections.test", name=name)

    async def test_own_ca_and_test_codes(self) -> None:
        await self.set("runtime-trust", url=self.url, token=GOOD_TOKEN)
        reply = await self.test("runtime-trust")
        self.assertEqual(reply["error"]["code"], "tls_error", reply)
        self.assertIn(f"REQUESTS_CA_BUNDLE={self.runtime_pki.bundle}", reply["error"]["message"])
        with open(self.own.root.cert_path) as f:
            pem = f.read()
        await self.set("own-pem", url=self.url, token=GOOD_TOKEN, ca=pem)
        reply = await self.test("own-pem")
        self.assertEqual((reply["ok"], reply.get("status"), reply.get("detail")),
                         (True, "ok", f"Prometheus 2.99.0 at {self.url}"), reply)
        await self.set("own-path", url=self.url, token="{{runtime_env:PROM_TOKEN_ENV}}", ca=self.own.root.cert_path)
        self.assertTrue((await self.test("own-path"))["ok"])
        # The connection's CA is its own: the runtime's trust does not open it for another server.
        await self.set("wrong-ca", url=self.url, token=GOOD_TOKEN, ca=self.runtime_pki.root.cert_path)
        reply = await self.test("wrong-ca")
        self.assertEqual(reply["error"]["code"], "tls_error")
        self.assertIn("the CA of connection 'wrong-ca'", reply["error"]["message"])
        await self.set("missing-ca", url=self.url, ca="/no/such/ca.pem")
        reply = await self.test("missing-ca")
        self.assertEqual(reply["error"]["code"], "bad_connection")
        self.assertIn("/no/such/ca.pem", reply["error"]["message"])
        # 401, 403, a body that is not the API's, nothing listening.
        await self.set("no-token", url=self.plain_url)
        reply = await self.test("no-token")
        self.assertEqual(reply["error"]["code"], "remote_unauthorized")
        self.assertEqual(reply["error"]["message"], "401 Unauthorized: Unauthorized: missing or bad bearer token")
        self.api.mode = "echo"
        await self.set("forbidden", url=self.plain_url, token=GOOD_TOKEN)
        reply = await self.test("forbidden")
        self.assertEqual(reply["error"]["code"], "remote_forbidden")
        # The server quoted the token it refused: the reply does not.
        self.assertEqual(reply["error"]["message"], "403 Forbidden: header Bearer *** is not allowed here")
        self.api.mode = "html"
        reply = await self.test("forbidden")
        self.assertEqual(reply["error"]["code"], "bad_response")
        await self.set("closed", url=f"http://127.0.0.1:{free_port()}")
        self.assertEqual((await self.test("closed"))["error"]["code"], "unreachable")
        await self.set("unset-secret", url=self.plain_url, token="{{secret:NOT_SET_ANYWHERE}}")
        reply = await self.test("unset-secret")
        self.assertEqual(reply["error"]["code"], "template_error")
        self.assertIn("NOT_SET_ANYWHERE", reply["error"]["message"])

    async def test_credentials_are_masked_everywhere(self) -> None:
        """A server that quotes the Authorization header back: the token never
        reaches an event, the store or a variable, whether it is the session's
        secret, an environment reference or a literal."""
        sid = (await self.client.request("session.create", name="mask"))["session"]["id"]
        reply = await self.client.request("secrets.set", session=sid, secrets={"PEER": PEER_TOKEN})
        self.assertTrue(reply["ok"])
        await self.set("by-session-secret", url=self.plain_url, token="{{secret:PEER}}")
        await self.set("by-env", url=self.plain_url, token="{{runtime_env:PROM_TOKEN_ENV}}")
        await self.set("literal", url=self.plain_url, token=GOOD_TOKEN)
        self.api.mode = "echo"
        for name in ("by-session-secret", "by-env", "literal"):
            finished = await self.client.run(sid, {"id": name, "type": "prometheus", "source": "up",
                                                   "options": {"connection": name}, "output_variable": "r"})
            self.assertEqual(finished["error"]["code"], "remote_forbidden", finished)
            self.assertIn("header Bearer ***", finished["error"]["evalue"])
        sent = {s["authorization"] for s in self.api.requests}
        self.assertEqual(sent, {f"Bearer {PEER_TOKEN}", f"Bearer {GOOD_TOKEN}"})  # the server did get them
        everything = json.dumps(self.client.messages)
        for token in (PEER_TOKEN, GOOD_TOKEN):
            self.assertNotIn(token, everything)
        # Nor in the store (only connections.json holds the literal one).
        await self.service.store.drain()
        home = self.service.config.home
        for root, _, files in os.walk(home):
            for name in files:
                path = os.path.join(root, name)
                if name == "connections.json":
                    continue
                with open(path, "rb") as f:
                    data = f.read()
                for token in (PEER_TOKEN, GOOD_TOKEN):
                    self.assertNotIn(token.encode(), data, path)
        # And a working query with it: the table shows, the token does not.
        self.api.mode = "ok"
        finished = await self.client.run(sid, {"id": "ok", "type": "prometheus", "source": "up",
                                               "options": {"connection": "by-env"}, "output_variable": "r"})
        self.assertEqual(finished["status"], "ok", finished)
        variable = self.service.manager.get(sid).variables["r"]
        self.assertEqual(variable["result"][0]["metric"]["job"], "x")
        self.assertEqual(variable["text"].splitlines()[0].split(), ["__name__", "job", "value"])


class SSHConnectionTestTests(unittest.TestCase):
    """connections.test of an ssh connection logs in with its key (a real sshd)."""

    timeout = 60

    async def test_ssh(self) -> None:
        from . import sshd as sshd_module

        sshd_module.require(self)
        server = await sshd_module.TestSSHD().start(self)
        private, public = sshd_module.make_key("ed25519")
        server.authorize(public)
        other, _ = sshd_module.make_key("ecdsa")  # never authorized
        service = await start_runtime(self)
        client = await Client.connect(ws_url(service))
        self.addCleanup(client.close)
        for name, key, port in (("good", private, server.port), ("refused", other, server.port),
                                ("closed", private, free_port())):
            reply = await client.request("connections.set", name=name, host="127.0.0.1", port=port,
                                         username=server.user, private_key=key)
            self.assertTrue(reply["ok"], reply)
        reply = await client.request("connections.test", name="good")
        self.assertEqual((reply.get("status"), reply.get("detail")),
                         ("ok", f"logged in as {server.user}@127.0.0.1:{server.port}"), reply)
        reply = await client.request("connections.test", name="refused")
        self.assertEqual(reply["error"]["code"], "remote_unauthorized", reply)
        reply = await client.request("connections.test", name="closed")
        self.assertEqual(reply["error"]["code"], "unreachable", reply)
        self.assertIn("refused the connection", reply["error"]["message"])
