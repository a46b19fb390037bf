"""REST cells following redirects (RFC 9110 section 15.4): the rule in memory, then
the runtime against twisted.web servers on 127.0.0.1 that redirect on demand."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import Request

from spinrt.cells.redirects import BODY_HEADERS, FOLLOWED, next_method, without_body_headers

from . import tls
from .support import Client, start_runtime, ws_url

TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
# What a request's body brings along; all of it goes when the method becomes GET.
BODY_FIELDS = ("content-type", "content-length", "content-encoding", "content-language", "transfer-encoding")


class RuleTests(unittest.TestCase):
    def test_next_method(self) -> None:
        for code in FOLLOWED:
            for method in (*METHODS, "OPTIONS", "PROPFIND"):
                m = method.encode()
                becomes_get = (code == 303 and method not in ("GET", "HEAD")) or (code in (301, 302) and method == "POST")
                self.assertEqual(next_method(code, m), b"GET" if becomes_get else m, (code, method))

    @given(st.sampled_from(FOLLOWED), st.sampled_from(FOLLOWED), st.text(TOKEN_CHARS, min_size=1, max_size=12))
    def test_a_method_only_ever_becomes_get(self, first: int, second: int, method: str) -> None:
        m = method.encode()
        once = next_method(first, m)
        self.assertIn(once, (m, b"GET"))
        if first in (307, 308) or m in (b"GET", b"HEAD"):
            self.assertEqual(once, m)
        if once == b"GET":
            self.assertEqual(next_method(second, once), b"GET")  # never back to the method that had the body

    def test_body_headers_go_in_any_case_and_the_rest_stay(self) -> None:
        headers = Headers({b"Content-Type": [b"application/json"], b"CONTENT-LENGTH": [b"9"],
                           b"content-encoding": [b"gzip"], b"Transfer-Encoding": [b"chunked"],
                           b"Accept": [b"a/b", b"c/d"], b"X-Trace": [b"t"], b"Authorization": [b"Bearer x"]})
        left = without_body_headers(headers)
        self.assertEqual({k.lower() for k, _ in left.getAllRawHeaders()}, {b"accept", b"x-trace", b"authorization"})
        self.assertEqual(left.getRawHeaders(b"accept"), [b"a/b", b"c/d"])
        self.assertTrue({f.encode() for f in BODY_FIELDS} <= BODY_HEADERS)


class Hops(Resource):
    """Records every request. /to/CODE/REST answers CODE with ``Location: /REST`` and
    sets a cookie; /away/CODE/REST the same towards ``far``; /loop redirects to
    itself; /nolocation is a 303 without Location; anything else is 200 JSON."""

    isLeaf = True

    def __init__(self, far: str = "") -> None:
        super().__init__()
        self.far = far
        self.requests: list[dict[str, Any]] = []

    def render(self, request: Request) -> bytes:
        self.requests.append({
            "method": request.method.decode(), "path": request.path.decode(),
            "headers": {k.decode().lower(): ", ".join(v.decode() for v in vs)
                        for k, vs in request.requestHeaders.getAllRawHeaders()},
            "body": request.content.read().decode("utf-8", "replace"),
        })
        parts = request.path.decode().strip("/").split("/")
        if parts[0] in ("to", "away"):
            request.setResponseCode(int(parts[1]))
            base = self.far if parts[0] == "away" else ""
            request.setHeader(b"location", f"{base}/{'/'.join(parts[2:])}".encode())
            request.addCookie(b"hop", str(len(self.requests)).encode(), path=b"/")
            return b"moved"
        if parts[0] == "loop":
            request.setResponseCode(302)
            request.setHeader(b"location", b"/loop")
            return b""
        if parts[0] == "nolocation":
            request.setResponseCode(303)
            return b""
        request.setHeader(b"content-type", b"application/json")
        return json.dumps({"arrived": request.method.decode()}).encode()


class FollowTests(unittest.TestCase):
    timeout = 60
    HEADERS = {"Accept": "application/json", "X-Trace": "t-1", "Content-Language": "en", "Content-Encoding": "identity"}

    async def setUp(self) -> None:
        self.far = Hops()
        _, far_port = tls.listen_http(self, self.far)
        self.hops = Hops(far=f"http://localhost:{far_port}")
        _, self.port = tls.listen_http(self, self.hops)
        home = tempfile.mkdtemp(prefix="redirects-", dir=os.path.abspath("."))
        self.service = await start_runtime(self, home=home, environ={"REQUESTS_CA_BUNDLE": ""})
        self.c = await Client.connect(ws_url(self.service))
        self.addCleanup(self.c.close)
        self.sid = (await self.c.request("session.create"))["session"]["id"]

    async def rest(self, path: str, method: str, body: bool = True, **options: Any) -> dict[str, Any]:
        options = {"url": f"http://127.0.0.1:{self.port}{path}", "method": method,
                   "headers": self.HEADERS, "auth": {"bearer": "tok-SECRET"}, **options}
        if body and method not in ("GET", "HEAD"):
            options["json"] = {"name": "disk", "size": 3}
        return await self.c.run(self.sid, {"id": "r", "type": "rest", "source": "", "options": options,
                                           "output_variable": "resp"})

    def stored(self) -> dict[str, Any]:
        return self.service.manager.sessions[self.sid].variables["resp"]

    def assert_follows(self, sent: dict[str, Any], after: dict[str, Any], method: str, why: Any) -> None:
        """Same method: the same request again. Turned into GET: no body, none of its fields."""
        self.assertEqual(after["method"], method, why)
        for name in ("accept", "x-trace", "authorization"):  # same origin: everything but the body's fields
            self.assertEqual(after["headers"].get(name), sent["headers"][name], (why, name))
        self.assertRegex(after["headers"].get("cookie", ""), r"^hop=\d+$", why)  # set by the redirect
        if method == sent["method"]:
            self.assertEqual(after["body"], sent["body"], why)
            for name in BODY_FIELDS:
                self.assertEqual(after["headers"].get(name), sent["headers"].get(name), (why, name))
        else:
            self.assertEqual(after["body"], "", why)
            self.assertEqual([f for f in BODY_FIELDS if f in after["headers"]], [], why)

    async def test_method_body_and_headers_after_each_status(self) -> None:
        cases = [(method, code, next_method(code, method.encode()).decode()) for code in FOLLOWED for method in METHODS]
        # The issue's own case and its siblings, spelled out (next_method is tested above).
        for case in [("POST", 303, "GET"), ("POST", 301, "GET"), ("POST", 302, "GET"),
                     ("PUT", 303, "GET"), ("PATCH", 303, "GET"), ("DELETE", 303, "GET"),
                     ("POST", 307, "POST"), ("POST", 308, "POST"), ("PUT", 308, "PUT"), ("DELETE", 301, "DELETE"),
                     ("GET", 301, "GET"), ("GET", 303, "GET"), ("HEAD", 302, "HEAD"), ("HEAD", 303, "HEAD")]:
            self.assertIn(case, cases)
        for method, code, after in cases:
            finished = await self.rest(f"/to/{code}/end", method)
            self.assertEqual(finished["status"], "ok", (method, code, finished))
            self.assertEqual(self.stored()["status_code"], 200)
            sent, followed = self.hops.requests[-2:]
            self.assertEqual((sent["method"], sent["path"], followed["path"]), (method, f"/to/{code}/end", "/end"))
            if method not in ("GET", "HEAD"):
                self.assertEqual(json.loads(sent["body"]), {"name": "disk", "size": 3})
                self.assertEqual(sent["headers"]["content-type"], "application/json")
            self.assert_follows(sent, followed, after, (method, code))
            if method != "HEAD":
                self.assertEqual(self.stored()["json"], {"arrived": after})

    async def test_chains(self) -> None:
        # (method, path, the methods that arrive hop after hop)
        chains = [
            ("POST", "/to/307/to/303/end", ["POST", "POST", "GET"]),
            ("POST", "/to/308/to/307/end", ["POST", "POST", "POST"]),
            ("POST", "/to/303/to/307/end", ["POST", "GET", "GET"]),  # once a GET, the body never comes back
            ("PUT", "/to/302/to/308/to/303/end", ["PUT", "PUT", "PUT", "GET"]),
            ("HEAD", "/to/303/to/301/end", ["HEAD", "HEAD", "HEAD"]),
        ]
        for method, path, methods in chains:
            before = len(self.hops.requests)
            finished = await self.rest(path, method)
            self.assertEqual(finished["status"], "ok", (path, finished))
            hops = self.hops.requests[before:]
            self.assertEqual([h["method"] for h in hops], methods, path)
            first = hops[0]
            for hop, arrived in zip(hops[1:], methods[1:]):
                keeps = arrived == method and method != "HEAD"
                self.assertEqual(hop["body"], first["body"] if keeps else "", (path, hop))
                self.assertEqual(hop["headers"].get("content-type"), first["headers"].get("content-type") if keeps else None)
                self.assertEqual(hop["headers"]["x-trace"], "t-1")

    async def test_leaving_the_origin_drops_credentials_not_the_rest(self) -> None:
        finished = await self.rest("/away/307/end", "POST")
        self.assertEqual(finished["status"], "ok", finished)
        sent, [arrived] = self.hops.requests[-1], self.far.requests
        self.assertEqual((arrived["method"], arrived["body"]), ("POST", sent["body"]))
        self.assertEqual(arrived["headers"]["content-type"], "application/json")
        self.assertEqual(arrived["headers"]["x-trace"], "t-1")
        self.assertNotIn("authorization", arrived["headers"])
        self.assertNotIn("cookie", arrived["headers"])  # the hop cookie belongs to 127.0.0.1

        finished = await self.rest("/away/303/end", "POST")
        self.assertEqual(finished["status"], "ok", finished)
        arrived = self.far.requests[-1]
        self.assertEqual((arrived["method"], arrived["body"]), ("GET", ""))
        self.assertEqual([f for f in (*BODY_FIELDS, "authorization") if f in arrived["headers"]], [])
        self.assertEqual(arrived["headers"]["accept"], "application/json")
        # Credentials given as plain headers, in any case, go too.
        finished = await self.rest("/away/308/end", "PUT", auth=None,
                                   headers={"authorization": "Token tok-SECRET", "COOKIE": "sid=tok-SECRET", "X-Trace": "t-2"})
        self.assertEqual(finished["status"], "ok", finished)
        arrived = self.far.requests[-1]
        self.assertEqual((arrived["method"], arrived["headers"]["x-trace"]), ("PUT", "t-2"))
        self.assertEqual([h for h in ("authorization", "cookie") if h in arrived["headers"]], [])
        self.assertEqual(self.hops.requests[-1]["headers"]["cookie"], "sid=tok-SECRET")  # sent to the origin itself
        self.assertNotIn("tok-SECRET", json.dumps(self.c.messages))

    async def test_not_followed_and_broken_redirects(self) -> None:
        for method, code in [("POST", 303), ("POST", 307), ("GET", 302), ("HEAD", 301)]:
            before = len(self.hops.requests)
            finished = await self.rest(f"/to/{code}/end", method, follow_redirects=False)
            self.assertEqual(finished["status"], "ok", finished)
            self.assertEqual((self.stored()["status_code"], self.stored()["headers"]["location"]), (code, "/end"))
            self.assertEqual(len(self.hops.requests), before + 1)  # the 3xx as it is, nothing followed

        before = len(self.hops.requests)
        finished = await self.rest("/loop", "POST")
        self.assertEqual((finished["status"], finished["error"]["code"], finished["error"]["ename"]),
                         ("error", "redirect_error", "TooManyRedirects"))
        self.assertEqual(len(self.hops.requests) - before, 21)  # the request and Twisted's 20 redirects
        finished = await self.rest("/nolocation", "POST")
        self.assertEqual((finished["error"]["code"], finished["error"]["ename"]), ("redirect_error", "RedirectError"))
        self.assertIn("without a Location", finished["error"]["evalue"])
