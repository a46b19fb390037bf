"""REST cells: request building and error naming in memory (StubTreq), then the
real thing: the runtime calling twisted.web servers on 127.0.0.1 over HTTP and HTTPS."""

from __future__ import annotations

import base64
import json
import os
import tempfile
import time
from typing import Any

from OpenSSL import SSL
from treq.client import HTTPClient
from treq.testing import RequestTraversalAgent
from twisted.internet import error, reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial import unittest
from twisted.web import error as web_error
from twisted.web._newclient import ResponseFailed, ResponseNeverReceived
from twisted.web.resource import Resource
from twisted.web.server import Site

from spinrt.cells import rest
from spinrt.cells.base import CellContext, Outcome, RuntimeServices
from spinrt.cells.httpio import describe_failure
from spinrt.cells.redirects import BytesProducer
from spinrt.config import ConfigError
from spinrt.outbound import TlsPolicy
from spinrt.protocol import Cell

from . import tls
from .support import Client, eventually, sleep, start_runtime, ws_url


# -- in memory: StubTreq ---------------------------------------------------------------


class StubOutbound:
    """Outbound in memory: treq over treq.testing's RequestTraversalAgent, bodies written at once."""

    def __init__(self, resource: Resource) -> None:
        self.agent = RequestTraversalAgent(resource)
        self.tls = TlsPolicy(verified=False)

    def request(self, method: str, url: str, agent: Any = None, **kw: Any) -> Deferred[Any]:
        kw.pop("unbuffered", None)
        client = HTTPClient(agent or self.agent, data_to_body_producer=BytesProducer)
        return client.request(method, url, unbuffered=True, **kw)

    def flush(self) -> None:
        self.agent.flush()

    def close(self) -> Deferred[None]:
        return succeed(None)


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, kind: str, **fields: Any) -> int:
        self.events.append((kind, fields))
        return len(self.events)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [f for k, f in self.events if k == kind]


class RequestBuildingTests(unittest.TestCase):
    def setUp(self) -> None:
        self.api = tls.Api()
        self.outbound = StubOutbound(self.api)
        self.clock = Clock()
        self.services = RuntimeServices(reactor=self.clock, home=tempfile.mkdtemp(dir=os.path.abspath(".")),
                                        environ={}, outbound=self.outbound)
        self.processor = rest.RestProcessor(self.services)

    def run_cell(self, source: str = "", output_variable: str | None = "resp", **options: Any) -> tuple[Outcome, Recorder]:
        recorder = Recorder()
        ctx = CellContext(run_id="run_1", session_id="ss_1", emit=recorder, services=self.services, producers=None)
        d = self.processor.run(Cell(id="c", type="rest", source=source, options=options,
                                    output_variable=output_variable), ctx)
        self.outbound.flush()
        return self.successResultOf(d), recorder

    def test_get_with_params_headers_and_bearer(self) -> None:
        outcome, rec = self.run_cell(url="https://api.example/echo?fixed=1", headers={"X-Trace": "abc", "Accept": "application/json"},
                                     params={"q": "a b", "n": 3, "flag": True, "tag": ["x", "y"]}, auth={"bearer": "tok-123"})
        self.assertEqual(outcome.status, "ok")
        sent = self.api.requests[-1]
        self.assertEqual(sent["method"], "GET")
        self.assertEqual(sent["args"], {"fixed": ["1"], "q": ["a b"], "n": ["3"], "flag": ["true"], "tag": ["x", "y"]})
        self.assertEqual(sent["headers"]["authorization"], "Bearer tok-123")
        self.assertEqual(sent["headers"]["x-trace"], "abc")
        self.assertEqual(sent["body"], "")
        value = outcome.value
        assert value is not None
        self.assertEqual(value["status_code"], 200)
        self.assertEqual(value["json"]["method"], "GET")
        self.assertEqual(value["headers"]["content-type"], "application/json")
        self.assertIsInstance(value["elapsed_ms"], int)
        [status] = rec.of("display")
        self.assertTrue(status["data"]["text/plain"].startswith("HTTP 200 OK · application/json · "), status)
        [result] = rec.of("result")
        self.assertEqual(result["data"]["application/json"], value["json"])
        self.assertEqual(result["variable"], "resp")
        self.assertNotIn("tok-123", json.dumps(rec.of("display")))  # (the echo body has it, of course)

    def test_json_option_posts_json(self) -> None:
        outcome, _ = self.run_cell(url="http://api.example/echo", json={"a": [1, None, "é"]})
        sent = self.api.requests[-1]
        self.assertEqual((sent["method"], sent["headers"]["content-type"]), ("POST", "application/json"))
        self.assertEqual(json.loads(sent["body"]), {"a": [1, None, "é"]})
        self.assertEqual(outcome.status, "ok")

    def test_source_is_the_body(self) -> None:
        self.run_cell(source="plain words", url="http://api.example/echo", method="put", auth={"basic": ["ann", "pa:ss"]})
        sent = self.api.requests[-1]
        self.assertEqual((sent["method"], sent["body"]), ("PUT", "plain words"))
        self.assertEqual(sent["headers"]["content-type"], "text/plain; charset=utf-8")
        self.assertEqual(sent["headers"]["authorization"], "Basic " + base64.b64encode(b"ann:pa:ss").decode())
        self.run_cell(source='{"k": 1}', url="http://api.example/echo", method="PATCH",
                      headers={"Content-Type": "application/merge-patch+json"})
        sent = self.api.requests[-1]
        self.assertEqual((sent["method"], sent["headers"]["content-type"]), ("PATCH", "application/merge-patch+json"))
        self.run_cell(source='{"k": 1}', url="http://api.example/echo")
        self.assertEqual(self.api.requests[-1]["headers"]["content-type"], "application/json")

    def test_response_shapes(self) -> None:
        outcome, rec = self.run_cell(url="http://api.example/json")
        assert outcome.value is not None
        self.assertEqual(outcome.value["json"], {"items": [1, 2, 3], "name": "café"})
        self.assertEqual(outcome.value["headers"]["x-multi"], "a, b")
        outcome, rec = self.run_cell(url="http://api.example/text")
        assert outcome.value is not None
        self.assertEqual(outcome.value["text"], "café olé")
        self.assertNotIn("json", outcome.value)
        self.assertEqual(rec.of("result")[0]["data"], {"text/plain": "café olé"})
        self.assertIn("text/plain", rec.of("display")[0]["data"]["text/plain"])
        outcome, rec = self.run_cell(url="http://api.example/bytes")
        assert outcome.value is not None
        self.assertEqual((outcome.value["binary"], outcome.value["text"]), (True, ""))
        self.assertEqual(rec.of("result")[0]["data"], {"text/plain": "<264 bytes of image/png>"})
        for method in ("DELETE", "HEAD"):
            outcome, rec = self.run_cell(url="http://api.example/empty", method=method)
            assert outcome.value is not None
            self.assertEqual((outcome.status, outcome.value["status_code"], outcome.value["text"]), ("ok", 204, ""))
            self.assertEqual(rec.of("display")[0]["data"]["text/plain"][:28], "HTTP 204 No Content · 0 byte")

    def test_non_2xx_is_an_error_but_shown_and_stored(self) -> None:
        outcome, rec = self.run_cell(url="http://api.example/status/404?api_key=SECRET")
        self.assertEqual((outcome.status, outcome.exit_code), ("error", None))
        assert outcome.error is not None and outcome.value is not None
        self.assertEqual(outcome.error["code"], "http_error")
        self.assertEqual(outcome.error["evalue"], "GET http://api.example/status/404 answered HTTP 404 Not Found")
        self.assertEqual(outcome.value["status_code"], 404)
        self.assertEqual(outcome.value["json"], {"error": {"message": "no such item"}})
        self.assertEqual(rec.of("result")[0]["data"]["application/json"], outcome.value["json"])
        self.assertNotIn("SECRET", json.dumps([rec.events, outcome.error]))

    def test_redirects(self) -> None:
        outcome, _ = self.run_cell(url="http://api.example/redirect")
        assert outcome.value is not None
        self.assertEqual((outcome.status, outcome.value["status_code"]), ("ok", 200))
        self.assertEqual(self.api.requests[-1]["path"], "/json")
        outcome, _ = self.run_cell(url="http://api.example/redirect", follow_redirects=False)
        assert outcome.value is not None
        self.assertEqual((outcome.status, outcome.value["status_code"]), ("ok", 302))
        self.assertEqual(outcome.value["headers"]["location"], "/json")

    def test_body_cap(self) -> None:
        outcome, rec = self.run_cell(url="http://api.example/big/5000", max_bytes=4096)
        assert outcome.error is not None
        self.assertEqual(outcome.error["code"], "response_too_large")
        self.assertIn("4.0 KiB", outcome.error["evalue"])
        self.assertEqual(rec.of("result"), [])
        outcome, _ = self.run_cell(url="http://api.example/big/4096", max_bytes=4096)
        self.assertEqual(outcome.status, "ok")

    def test_max_bytes_from_environment(self) -> None:
        self.services.environ = {"SPIN_REST_MAX_BYTES": "100"}
        self.processor = rest.RestProcessor(self.services)
        outcome, _ = self.run_cell(url="http://api.example/big/101")
        assert outcome.error is not None
        self.assertEqual(outcome.error["code"], "response_too_large")
        for bad in ("lots", "0", "-5"):
            self.services.environ = {"SPIN_REST_MAX_BYTES": bad}
            e = self.assertRaises(ConfigError, rest.RestProcessor, self.services)
            self.assertIn("SPIN_REST_MAX_BYTES", str(e))

    def test_bad_options(self) -> None:
        cases: list[tuple[dict[str, Any], str, str]] = [
            ({}, "", "options.url is required"),
            ({"url": 5}, "", "options.url is required"),
            ({"url": "ftp://x/y"}, "", "http:// or https://"),
            ({"url": "/relative"}, "", "http:// or https://"),
            ({"url": "https://[::1]/x"}, "", "IPv6"),
            ({"url": "http://a/", "method": "GE T"}, "", "options.method"),
            ({"url": "http://a/", "headers": ["x"]}, "", "options.headers must be an object"),
            ({"url": "http://a/", "headers": {"X": "a\r\nInjected: 1"}}, "", "line breaks"),
            ({"url": "http://a/", "headers": {"Bad Name": "1"}}, "", "not a valid header name"),
            ({"url": "http://a/", "headers": {"X": {"nested": 1}}}, "", "must be a string"),
            ({"url": "http://a/", "auth": {"bearer": ""}}, "", "options.auth must be"),
            ({"url": "http://a/", "auth": {"basic": ["only-user"]}}, "", "options.auth must be"),
            ({"url": "http://a/", "auth": {"token": "x"}}, "", "options.auth must be"),
            ({"url": "http://a/", "auth": {"bearer": "x"}, "headers": {"authorization": "y"}}, "", "not both"),
            ({"url": "http://a/", "json": {"a": 1}}, "body", "not both"),
            ({"url": "http://a/", "params": "q=1"}, "", "options.params must be an object"),
            ({"url": "http://a/", "params": {"q": {"x": 1}}}, "", "options.params.q"),
            ({"url": "http://a/", "follow_redirects": "yes"}, "", "follow_redirects"),
            ({"url": "http://a/", "max_bytes": 0}, "", "max_bytes"),
        ]
        for options, source, words in cases:
            outcome, rec = self.run_cell(source=source, **options)
            assert outcome.error is not None
            self.assertEqual(outcome.error["code"], "bad_option", options)
            self.assertIn(words, outcome.error["evalue"], options)
            self.assertEqual(rec.events, [])
        self.assertEqual(self.api.requests, [])


class ErrorNamingTests(unittest.TestCase):
    URL = "https://api.example:8443/v1/items?token=SECRET"

    def name(self, e: BaseException, verified: bool = False) -> tuple[str, str, str]:
        code, ename, message = describe_failure(Failure(e), self.URL, verified)
        self.assertNotIn("SECRET", message)
        return code, ename, message

    def test_connection_failures(self) -> None:
        self.assertEqual(self.name(error.DNSLookupError("nope"))[:2], ("dns_error", "DNSLookupError"))
        self.assertIn("https://api.example:8443/v1/items", self.name(error.DNSLookupError("nope"))[2])
        code, _, message = self.name(error.ConnectionRefusedError())
        self.assertEqual((code, message), ("connection_refused", "api.example:8443 refused the connection (is the service running on that port?)"))
        code, _, message = self.name(error.TimeoutError())
        self.assertEqual((code, message), ("timeout", "could not connect to api.example:8443 within 30 s"))
        self.assertEqual(self.name(error.NoRouteError())[0], "connection_error")

    def test_wrapped_failures(self) -> None:
        tls_failure = SSL.Error([("SSL routines", "", "certificate verify failed")])
        code, ename, message = self.name(ResponseNeverReceived([Failure(error.ConnectionLost()), Failure(tls_failure)]), verified=True)
        self.assertEqual((code, ename), ("tls_error", "TLSError"))
        self.assertEqual(message, "TLS handshake with api.example:8443 failed: certificate verify failed; trusted CAs come from REQUESTS_CA_BUNDLE")
        self.assertEqual(self.name(ResponseFailed([Failure(error.ConnectionLost())]))[0], "connection_closed")
        self.assertEqual(self.name(web_error.InfiniteRedirection(b"302", location=b"/x"))[0], "redirect_error")
        code, ename, message = self.name(ValueError("odd"))
        self.assertEqual((code, ename), ("request_failed", "ValueError"))
        self.assertIn("odd", message)


# -- for real: the runtime calling servers on 127.0.0.1 ---------------------------------


class RestCellTests(unittest.TestCase):
    timeout = 60

    async def setUp(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="rest-", dir=os.path.abspath("."))
        self.pki = tls.make_pki(self.dir)
        self.api = tls.Api()
        _, self.https = tls.listen_https(self, self.api, self.pki.server, self.pki.intermediate)
        _, self.http = tls.listen_http(self, self.api)

    async def runtime(self, **environ: str) -> tuple[Any, Client, str]:
        environ.setdefault("REQUESTS_CA_BUNDLE", "")  # whatever this machine sets: unverified
        service = await start_runtime(self, environ=environ)
        client = await Client.connect(ws_url(service))
        self.addCleanup(client.close)
        session = (await client.request("session.create"))["session"]["id"]
        return service, client, session

    def cell(self, url: str, variable: str | None = "resp", **options: Any) -> dict[str, Any]:
        cell: dict[str, Any] = {"id": "c", "type": "rest", "source": "", "options": {"url": url, **options}}
        if variable:
            cell["output_variable"] = variable
        return cell

    async def test_https_verified_json_result_and_variable(self) -> None:
        service, client, session = await self.runtime(REQUESTS_CA_BUNDLE=self.pki.bundle)
        finished = await client.run(session, self.cell(f"https://localhost:{self.https}/json"))
        self.assertEqual(finished["status"], "ok", finished)
        run = finished["run"]
        [display] = client.events(run=run, kind="display")
        self.assertRegex(display["data"]["text/plain"], r"^HTTP 200 OK · application/json · \d+ bytes · \d+ ms$")
        [result] = client.events(run=run, kind="result")
        self.assertEqual(result["data"]["application/json"], {"items": [1, 2, 3], "name": "café"})
        self.assertEqual(result["variable"], "resp")
        stored = service.manager.sessions[session].variables["resp"]
        self.assertEqual((stored["status_code"], stored["json"]["items"], stored["status"]), (200, [1, 2, 3], "ok"))
        listed = await client.request("variables.list", session=session)
        self.assertEqual(listed["variables"]["resp"]["type"], "CellResult")

    async def test_https_wrong_ca_is_a_clear_tls_error(self) -> None:
        other = tls.make_pki(self.dir, "Other CA")
        _, client, session = await self.runtime(REQUESTS_CA_BUNDLE=other.bundle)
        finished = await client.run(session, self.cell(f"https://localhost:{self.https}/json"))
        self.assertEqual((finished["status"], finished["error"]["code"]), ("error", "tls_error"))
        message = finished["error"]["evalue"]
        self.assertIn(f"certificate '{self.pki.intermediate.subject}'", message)
        self.assertIn(f"REQUESTS_CA_BUNDLE={other.bundle}", message)
        self.assertEqual(self.api.requests, [])  # nothing was sent to an unverified peer

    async def test_https_unverified_accepts_the_test_ca(self) -> None:
        _, client, session = await self.runtime(REQUESTS_CA_BUNDLE="")
        finished = await client.run(session, self.cell(f"https://localhost:{self.https}/text"))
        self.assertEqual(finished["status"], "ok", finished)
        [result] = client.events(run=finished["run"], kind="result")
        self.assertEqual(result["data"], {"text/plain": "café olé"})

    async def test_http_error_status_is_error_but_stored(self) -> None:
        service, client, session = await self.runtime()
        finished = await client.run(session, self.cell(f"http://127.0.0.1:{self.http}/status/503"))
        self.assertEqual((finished["status"], finished["error"]["code"]), ("error", "http_error"))
        self.assertNotIn("exit_code", finished)
        self.assertEqual(len(client.events(run=finished["run"], kind="result")), 1)
        stored = service.manager.sessions[session].variables["resp"]
        self.assertEqual((stored["status_code"], stored["status"]), (503, "error"))
        finished = await client.run(session, self.cell(f"http://127.0.0.1:{self.http}/empty", method="DELETE"))
        self.assertEqual(finished["status"], "ok")
        self.assertEqual(service.manager.sessions[session].variables["resp"]["status_code"], 204)

    async def test_dns_and_refused(self) -> None:
        _, client, session = await self.runtime()
        finished = await client.run(session, self.cell("https://no-such-host.invalid/x", variable=None))
        self.assertEqual((finished["status"], finished["error"]["code"]), ("error", "dns_error"))
        port = reactor.listenTCP(0, Site(Resource()), interface="127.0.0.1")
        closed = port.getHost().port
        await port.stopListening()
        finished = await client.run(session, self.cell(f"http://127.0.0.1:{closed}/x", variable=None))
        self.assertEqual((finished["status"], finished["error"]["code"]), ("error", "connection_refused"))
        self.assertIn(f"127.0.0.1:{closed} refused the connection", finished["error"]["evalue"])

    async def test_timeout_closes_the_connection(self) -> None:
        _, client, session = await self.runtime()
        started = time.monotonic()
        finished = await client.run(session, self.cell(f"http://127.0.0.1:{self.http}/hang", timeout_s=0.5))
        self.assertEqual((finished["status"], finished["error"]["code"]), ("timeout", "timeout"))
        self.assertLess(time.monotonic() - started, 3)
        await eventually(lambda: bool(self.api.lost), timeout=5)

    async def test_default_deadline_without_timeout_s(self) -> None:
        self.patch(rest, "DEFAULT_TIMEOUT", 0.4)
        _, client, session = await self.runtime()
        finished = await client.run(session, self.cell(f"http://127.0.0.1:{self.http}/hang"))
        self.assertEqual((finished["status"], finished["error"]["code"]), ("error", "timeout"))
        self.assertIn("within 0.4 s", finished["error"]["evalue"])
        await eventually(lambda: bool(self.api.lost), timeout=5)

    async def cancel_after(self, client: Client, session: str, cell: dict[str, Any], wait: float) -> tuple[dict[str, Any], float]:
        reply = await client.request("cell.run", session=session, cell=cell)
        run = reply["run"]
        await client.wait_for(lambda m: m.get("event") == "run.started" and m.get("run") == run)
        await sleep(wait)
        cancelled_at = time.monotonic()
        reply = await client.request("run.cancel", session=session, run=run)
        self.assertTrue(reply["ok"], (reply, client.events(run=run)))
        finished = await client.wait_for(lambda m: m.get("event") == "run.finished" and m.get("run") == run)
        return finished, cancelled_at

    async def test_cancel_while_waiting_for_headers(self) -> None:
        _, client, session = await self.runtime()
        finished, at = await self.cancel_after(client, session, self.cell(f"http://127.0.0.1:{self.http}/hang"), 0.3)
        self.assertEqual(finished["status"], "cancelled")
        self.assertLess(time.monotonic() - at, 1.0)
        await eventually(lambda: bool(self.api.lost), timeout=5)
        self.assertLess(self.api.lost[0][1] - at, 1.0)

    async def test_cancel_while_reading_the_body(self) -> None:
        _, client, session = await self.runtime()
        cell = self.cell(f"https://localhost:{self.https}/drip", max_bytes=10**9)
        finished, at = await self.cancel_after(client, session, cell, 0.3)
        self.assertEqual(finished["status"], "cancelled")
        self.assertLess(time.monotonic() - at, 1.0)
        await eventually(lambda: bool(self.api.lost), timeout=5)
        self.assertLess(self.api.lost[0][1] - at, 1.0)

    async def test_body_cap_closes_the_connection(self) -> None:
        _, client, session = await self.runtime(SPIN_REST_MAX_BYTES=str(1024 * 1024))
        finished = await client.run(session, self.cell(f"http://127.0.0.1:{self.http}/drip"))
        self.assertEqual((finished["status"], finished["error"]["code"]), ("error", "response_too_large"))
        self.assertIn("larger than 1.0 MiB", finished["error"]["evalue"])
        await eventually(lambda: bool(self.api.lost), timeout=5)
        finished = await client.run(session, self.cell(f"http://127.0.0.1:{self.http}/big/{2 * 1024 * 1024}"))
        self.assertEqual(finished["error"]["code"], "response_too_large")
        self.assertIn("is 2.0 MiB, larger than 1.0 MiB", finished["error"]["evalue"])
        # The option overrides the environment.
        finished = await client.run(session, self.cell(f"http://127.0.0.1:{self.http}/big/{2 * 1024 * 1024}",
                                                       max_bytes=3 * 1024 * 1024))
        self.assertEqual(finished["status"], "ok")
        [result] = client.events(run=finished["run"], kind="result")
        self.assertIn("showing 1.0 MiB of 2.0 MiB; the whole body is in the variable resp", result["data"]["text/plain"])

    async def test_cross_origin_redirect_drops_the_token(self) -> None:
        other = tls.Api()
        _, other_port = tls.listen_http(self, other)
        self.api.redirect_to = f"http://localhost:{other_port}/echo"
        _, client, session = await self.runtime()
        finished = await client.run(session, self.cell(f"http://127.0.0.1:{self.http}/redirect",
                                                       auth={"bearer": "tok-SECRET"}))
        self.assertEqual(finished["status"], "ok", finished)
        self.assertEqual(self.api.requests[-1]["headers"]["authorization"], "Bearer tok-SECRET")
        self.assertNotIn("authorization", other.requests[-1]["headers"])
        self.assertNotIn("tok-SECRET", json.dumps(client.messages))
