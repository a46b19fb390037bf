"""Authentication: carriers, refusals before the upgrade, origins, throttling, redaction."""

from __future__ import annotations

import json
import urllib.parse

import treq
from twisted.internet import defer, reactor
from twisted.web.client import HTTPConnectionPool
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from spinrt.web.auth import (
    OriginPolicy,
    TokenChecker,
    encode_token_subprotocol,
    find_token,
    redact,
)

from . import rawhttp
from .support import TOKEN, Client, start_runtime, ws_url


class TokenUnitTests(unittest.TestCase):
    def test_checker(self) -> None:
        checker = TokenChecker("s3cret")
        self.assertTrue(checker.check("s3cret"))
        for wrong in ("", "s3cre", "s3cret ", "S3CRET", None, "x" * 10_000, "s3cret\udc80"):
            self.assertFalse(checker.check(wrong), wrong)

    def test_carriers(self) -> None:
        self.assertEqual(find_token({"authorization": "Bearer abc"}, [], {}), "abc")
        self.assertEqual(find_token({"authorization": "token abc"}, [], {}), "abc")
        self.assertIsNone(find_token({"authorization": "Basic abc"}, [], {}))
        sub = encode_token_subprotocol("t\u00f6k+/=")
        self.assertNotIn("=", sub)
        self.assertEqual(find_token({}, ["spin.v1", sub], {}), "t\u00f6k+/=")
        self.assertIsNone(find_token({}, ["spin.token.!!!"], {}))
        self.assertEqual(find_token({}, [], {"token": ["q"]}), "q")
        # Header wins over the others.
        self.assertEqual(find_token({"authorization": "Bearer h"}, [sub], {"token": ["q"]}), "h")

    def test_redact(self) -> None:
        self.assertEqual(redact('"GET /ws?token=abc&x=1 HTTP/1.1"'), '"GET /ws?token=REDACTED&x=1 HTTP/1.1"')
        self.assertEqual(redact("/api/status?a=1&TOKEN=abc"), "/api/status?a=1&TOKEN=REDACTED")
        self.assertEqual(redact("/ws?tokens=1"), "/ws?tokens=1")

    def test_origins(self) -> None:
        self.assertTrue(OriginPolicy([]).allows("https://evil.example"))
        policy = OriginPolicy(["https://app.spin.example"])
        self.assertTrue(policy.allows("https://app.spin.example"))
        self.assertTrue(policy.allows("https://APP.spin.example/"))
        self.assertFalse(policy.allows("https://evil.example"))
        self.assertTrue(policy.allows(None))  # non-browser clients send no Origin
        self.assertTrue(OriginPolicy(["*"]).allows("https://any.example"))


class AuthIntegrationTests(unittest.TestCase):
    timeout = 60

    async def setUp(self) -> None:
        self.logged: list[str] = []

        def observe(event: dict) -> None:
            from twisted.logger import formatEvent

            self.logged.append(formatEvent(event) or "")
            self.logged.append(repr(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        self.service = await start_runtime(self, "--allow-origin", "https://app.example")
        self.url = ws_url(self.service)
        self.base = self.url.replace("ws://", "http://").rsplit("/", 1)[0]
        self.pool = HTTPConnectionPool(reactor, persistent=False)

    def get(self, path: str, **kw):
        return treq.get(self.base + path, pool=self.pool, **kw)

    async def refused(self, **kw) -> str:
        try:
            client = await Client.connect(self.url if "url" not in kw else kw.pop("url"), **kw)
        except ConnectionError as e:
            return str(e)
        await client.close()
        self.fail("the connection was accepted")

    async def test_three_carriers_accepted(self) -> None:
        by_header = await Client.connect(self.url)
        self.assertTrue((await by_header.request("ping"))["ok"])
        await by_header.close()
        by_sub = await Client.connect(self.url, token=None, protocols=["spin.v1", encode_token_subprotocol(TOKEN)])
        self.assertEqual(by_sub.protocol.websocket_protocol_in_use, "spin.v1")
        self.assertTrue((await by_sub.request("ping"))["ok"])
        await by_sub.close()
        by_query = await Client.connect(ws_url(self.service, "?token=" + urllib.parse.quote(TOKEN)), token=None)
        self.assertTrue((await by_query.request("ping"))["ok"])
        await by_query.close()
        response = await self.get("/api/status?token=" + urllib.parse.quote(TOKEN))
        self.assertEqual(response.code, 200)
        await response.content()
        everything = "\n".join(self.logged)
        self.assertNotIn(TOKEN, everything)
        self.assertIn("token=REDACTED", everything)

    async def test_refused_before_upgrade(self) -> None:
        self.assertIn("401", await self.refused(token=None))
        self.assertIn("401", await self.refused(token="candidate-XYZ-1"))
        self.assertIn("401", await self.refused(token=None, url=ws_url(self.service, "?token=candidate-XYZ-2")))
        self.assertIn("403", await self.refused(origin="https://evil.example"))
        ok = await Client.connect(self.url, origin="https://app.example")
        await ok.close()
        self.assertNotIn("candidate-XYZ", "\n".join(self.logged))

    async def test_repeated_failures_are_throttled(self) -> None:
        """Wrong tokens wait for their 401; a flood of them gets 429 with
        Retry-After (WebSocket and HTTP alike); the right token from the same
        address works throughout, after any number of failures. Details:
        test_throttle.py."""
        started = reactor.seconds()
        self.assertIn("401", await self.refused(token="wrong"))
        self.assertGreaterEqual(reactor.seconds() - started, 0.9)
        for _ in range(5):
            self.assertIn("401", await self.refused(token="wrong"))
        ok = await Client.connect(self.url)  # six failures do not lock anyone out
        await ok.close()
        port = self.service.addresses[0]["port"]
        flood = [defer.ensureDeferred(rawhttp.upgrade(port, token=f"wrong-{i}")) for i in range(12)]
        response = await self.get("/api/status", headers={"Authorization": "Bearer wrong-again"})
        self.assertEqual(response.code, 429)
        self.assertTrue(response.headers.getRawHeaders("retry-after"))
        await response.content()
        # The right token, from the very address that floods, is never held up.
        response = await self.get("/api/status", headers={"Authorization": f"Bearer {TOKEN}"})
        self.assertEqual(response.code, 200)
        await response.content()
        statuses = [r.status for r in await defer.gatherResults(flood)]
        self.assertEqual((statuses.count(401), statuses.count(429)), (8, 4))
        response = await self.get("/api/status", headers={"Authorization": f"Bearer {TOKEN}"})
        self.assertEqual(response.code, 200)
        await response.content()

    async def test_healthz_open_status_protected(self) -> None:
        response = await self.get("/healthz")
        self.assertEqual((response.code, await response.content()), (200, b"ok"))
        response = await self.get("/api/status")
        self.assertEqual(response.code, 401)
        await response.content()
        response = await self.get("/api/status", headers={"Authorization": f"Bearer {TOKEN}"})
        self.assertEqual(response.code, 200)
        body = await response.content()
        status = json.loads(body)
        self.assertEqual(status["version"], self.service.runtime_info["version"])
        for key in ("uptime_s", "sessions", "connections", "runs"):
            self.assertIn(key, status)
        self.assertNotIn(TOKEN.encode(), body)
        client = await Client.connect(self.url)
        await client.request("session.create")
        response = await self.get("/api/status?token=" + urllib.parse.quote(TOKEN))
        status = json.loads(await response.content())
        self.assertEqual(status["connections"], 1)
        self.assertEqual(status["sessions"], {"total": 1, "open": 1})
        await client.close()

    async def test_subprotocol_token_never_echoed(self) -> None:
        client = await Client.connect(self.url, token=None, protocols=[encode_token_subprotocol(TOKEN)])
        self.assertIsNone(client.protocol.websocket_protocol_in_use)
        await client.close()




class ServerHeaderTests(unittest.TestCase):
    """No response names the stack or its version: ``Server: spinrt`` on
    every route, every status, and the WebSocket handshake's own answers."""

    timeout = 60

    async def test_every_response_says_spinrt_only(self) -> None:
        from . import rawhttp

        service = await start_runtime(self)
        port = service.addresses[0]["port"]
        responses = [
            await rawhttp.get(port, "/healthz", token=None),
            await rawhttp.get(port, "/readyz", token=None),
            await rawhttp.get(port, "/api/status"),
            await rawhttp.get(port, "/api/status", token=None),  # 401
            await rawhttp.get(port, "/no/such/route"),  # 404
            await rawhttp.get(port, "/ws"),  # not an upgrade
            await rawhttp.upgrade(port),  # 101
            await rawhttp.upgrade(port, token="wrong"),  # 401
            await rawhttp.upgrade(port, ("Origin", "https://evil.example"), token=None),
        ]
        self.assertEqual([r.status for r in responses][:5], [200, 200, 200, 401, 404])
        self.assertEqual(responses[6].status, 101)
        self.assertEqual(responses[7].status, 401)
        for i, response in enumerate(responses):
            if i == 5:  # Autobahn's bare 426 for a GET of /ws carries no headers at all
                self.assertIn(response.headers.get("server"), (None, ["spinrt"]), response)
            else:
                self.assertEqual(response.headers.get("server"), ["spinrt"], response)
            text = repr(response.headers).lower()
            self.assertNotIn("twisted", text)
            self.assertNotIn("autobahn", text)
