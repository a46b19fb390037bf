"""Origin policy: opaque and malformed origins, allow-lists, the runtime's own
origin (http, https, behind a trusted proxy). Real upgrades against an
in-process runtime: 101, 403 or 401, never 400 or 500."""

from __future__ import annotations

import os
import tempfile

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.ssl import optionsForClientTLS, trustRootFromCertificates
from twisted.trial import unittest

from spinrt.web.auth import OPAQUE, OriginPolicy, parse_origin

from . import rawhttp, tls
from .support import start_runtime

# Every kind of Origin a browser, an old client or an attacker may send.
OPAQUE_ORIGINS = ["null", "", "NULL", "Null", " null ", "file://", "file:///home/me/page.html"]
MALFORMED_ORIGINS = [
    "foo", "http://", "https://", "://app.example", "http//app.example", "http://[::1", "http://[zz::1]",
    "http://a:99999", "http://a:0", "http://a:x", "https://app.example/path", "https://app.example?q",
    "https://u@app.example", "https://app.example,https://evil.example", "https://app example",
    "\u00ff\u00fe", "*", "http://*.example",
]
LISTED = "https://app.example"


class ParseOriginTests(unittest.TestCase):
    def test_serialised_origins(self) -> None:
        self.assertEqual(parse_origin("https://app.example"), ("https", "app.example", 443))
        self.assertEqual(parse_origin("HTTPS://APP.example:443"), ("https", "app.example", 443))
        self.assertEqual(parse_origin("http://app.example"), ("http", "app.example", 80))
        self.assertEqual(parse_origin("http://127.0.0.1:8888"), ("http", "127.0.0.1", 8888))
        self.assertEqual(parse_origin("http://[::1]:8888"), ("http", "[::1]", 8888))
        self.assertEqual(parse_origin("http://[0:0::1]:8888"), ("http", "[::1]", 8888))
        self.assertEqual(parse_origin("https://app.example/"), ("https", "app.example", 443))
        self.assertEqual(parse_origin("chrome-extension://abcdef"), ("chrome-extension", "abcdef", None))

    def test_opaque(self) -> None:
        for value in OPAQUE_ORIGINS:
            self.assertEqual(parse_origin(value), OPAQUE, value)

    def test_malformed(self) -> None:
        for value in MALFORMED_ORIGINS:
            if value in ("*", "http://*.example"):
                continue  # these parse (as hosts nobody has); configuration refuses them
            self.assertIsNone(parse_origin(value), value)

    @given(st.text(max_size=60))
    @settings(max_examples=300, deadline=None)
    def test_never_raises(self, value: str) -> None:
        result = parse_origin(value)
        self.assertTrue(result is None or result == OPAQUE or isinstance(result, tuple))


class OriginPolicyTests(unittest.TestCase):
    def test_unrestricted_and_star_allow_everything(self) -> None:
        for policy in (OriginPolicy([]), OriginPolicy(["*"]), OriginPolicy([LISTED, "*"])):
            for value in [LISTED, "https://evil.example", *OPAQUE_ORIGINS, *MALFORMED_ORIGINS]:
                self.assertTrue(policy.allows([value]), value)
            self.assertTrue(policy.allows(["null", "https://evil.example"]))

    def test_allow_list(self) -> None:
        policy = OriginPolicy([LISTED])
        self.assertTrue(policy.allows([LISTED]))
        self.assertTrue(policy.allows(["https://APP.example/"]))
        self.assertTrue(policy.allows(["https://app.example:443"]))
        self.assertTrue(policy.allows(None))  # no Origin: not a browser
        self.assertTrue(policy.allows([]))
        for value in ["https://evil.example", "http://app.example", "https://app.example:8443",
                      *OPAQUE_ORIGINS, *MALFORMED_ORIGINS]:
            self.assertFalse(policy.allows([value]), value)
        # Every value a request carries must pass.
        self.assertFalse(policy.allows([LISTED, "https://evil.example"]))
        self.assertFalse(policy.allows([LISTED, "null"]))

    def test_null_listed(self) -> None:
        policy = OriginPolicy([LISTED, "null"])
        for value in OPAQUE_ORIGINS:
            self.assertTrue(policy.allows([value]), value)
        self.assertTrue(OriginPolicy(["NULL"]).allows(["null"]))
        for value in MALFORMED_ORIGINS:
            self.assertFalse(policy.allows([value]), value)
        self.assertFalse(policy.allows(["https://evil.example"]))

    def test_own_origin_always_allowed(self) -> None:
        policy = OriginPolicy([LISTED])
        own = frozenset({("https", "spin.example", 443)})
        self.assertTrue(policy.allows(["https://spin.example"], own))
        self.assertTrue(policy.allows(["https://spin.example:443"], own))
        self.assertFalse(policy.allows(["http://spin.example"], own))
        self.assertFalse(policy.allows(["https://spin.example:8443"], own))
        self.assertFalse(policy.allows(["https://evil.example"], own))

    def test_bad_configuration(self) -> None:
        for entry in ["app.example", "https://app.example/path", "http://", "", " ", "https://*.example",
                      "foo", "https://a,https://b"]:
            with self.assertRaises(ValueError, msg=entry) as caught:
                OriginPolicy([entry])
            self.assertIn("not an origin", str(caught.exception))

    @given(st.lists(st.text(max_size=40), max_size=3))
    @settings(max_examples=200, deadline=None)
    def test_allows_never_raises(self, values: list[str]) -> None:
        self.assertTrue(OriginPolicy([]).allows(values))
        result = OriginPolicy([LISTED, "null"]).allows(values)
        self.assertIsInstance(result, bool)


class OriginUpgradeTests(unittest.TestCase):
    """Real upgrades with every kind of origin, under each kind of policy."""

    timeout = 120

    async def statuses(self, port: int, values: list[str], **kw: object) -> dict[str, int]:
        result = {}
        for value in values:
            result[value] = (await rawhttp.upgrade(port, ("Origin", value), **kw)).status  # type: ignore[arg-type]
        return result

    async def runtime(self, *extra: str) -> int:
        service = await start_runtime(self, *extra)
        return int(service.addresses[0]["port"])

    async def test_unrestricted_and_star_accept_every_origin(self) -> None:
        everything = [LISTED, "https://evil.example", *OPAQUE_ORIGINS, *MALFORMED_ORIGINS]
        for extra in ((), ("--allow-origin", "*")):
            port = await self.runtime(*extra)
            self.assertEqual(await self.statuses(port, everything), dict.fromkeys(everything, 101), extra)
            # Repeated headers, legacy Sec-WebSocket-Origin, both at once.
            self.assertEqual((await rawhttp.upgrade(port, ("Origin", "null"), ("Origin", LISTED))).status, 101)
            self.assertEqual((await rawhttp.upgrade(port, ("Sec-WebSocket-Origin", "null"), version=8)).status, 101)
            self.assertEqual((await rawhttp.upgrade(port, ("Origin", ""), ("Sec-WebSocket-Origin", "foo"))).status, 101)
            # The token still applies to an opaque origin.
            self.assertEqual((await rawhttp.upgrade(port, ("Origin", "null"), token="wrong")).status, 401)
            self.assertEqual((await rawhttp.upgrade(port, ("Origin", "null"), token=None)).status, 401)

    async def test_allow_list_refuses_with_403_never_400(self) -> None:
        port = await self.runtime("--allow-origin", LISTED)
        self.assertEqual(await self.statuses(port, [LISTED, "https://APP.example"]), {LISTED: 101, "https://APP.example": 101})
        refused = ["https://evil.example", "http://app.example", *OPAQUE_ORIGINS, *MALFORMED_ORIGINS]
        self.assertEqual(await self.statuses(port, refused), dict.fromkeys(refused, 403))
        self.assertEqual((await rawhttp.upgrade(port, ("Origin", LISTED), ("Origin", "null"))).status, 403)
        self.assertEqual((await rawhttp.upgrade(port, ("Origin", LISTED), ("Sec-WebSocket-Origin", "https://evil.example"))).status, 403)
        self.assertEqual((await rawhttp.upgrade(port, ("Sec-WebSocket-Origin", "https://evil.example"), version=8)).status, 403)
        self.assertEqual((await rawhttp.upgrade(port, ("Sec-WebSocket-Origin", LISTED), version=8)).status, 101)
        self.assertEqual((await rawhttp.upgrade(port)).status, 101)  # no Origin: not a browser

    async def test_null_allowed_explicitly(self) -> None:
        port = await self.runtime("--allow-origin", LISTED, "--allow-origin", "null")
        self.assertEqual(await self.statuses(port, OPAQUE_ORIGINS), dict.fromkeys(OPAQUE_ORIGINS, 101))
        self.assertEqual(await self.statuses(port, MALFORMED_ORIGINS), dict.fromkeys(MALFORMED_ORIGINS, 403))
        self.assertEqual((await rawhttp.upgrade(port, ("Origin", "https://evil.example"))).status, 403)

    async def test_own_origin_over_http(self) -> None:
        port = await self.runtime("--allow-origin", LISTED)
        own = {
            f"http://127.0.0.1:{port}": None,
            f"http://localhost:{port}": f"localhost:{port}",
            f"http://LOCALHOST:{port}": f"localhost:{port}",
            f"http://[::1]:{port}": f"[::1]:{port}",
            "http://spin.example": "spin.example",
            "http://spin.example:80": "spin.example",
        }
        for origin, host in own.items():
            self.assertEqual((await rawhttp.upgrade(port, ("Origin", origin), host=host)).status, 101, origin)
        not_own = {
            f"https://127.0.0.1:{port}": None,          # scheme differs
            f"http://127.0.0.1:{port + 1}": None,       # port differs
            f"http://localhost:{port}": None,           # host differs (Host: 127.0.0.1:port)
            "http://spin.example:8080": "spin.example",
        }
        for origin, host in not_own.items():
            self.assertEqual((await rawhttp.upgrade(port, ("Origin", origin), host=host)).status, 403, origin)

    async def test_own_origin_over_https(self) -> None:
        from .test_https import ssl_endpoint, tls_port

        pki = tls.make_pki(tempfile.mkdtemp(prefix="origins-", dir=os.path.abspath(".")))
        service = await start_runtime(self, "--endpoint", ssl_endpoint(pki), "--allow-origin", LISTED,
                                      environ={"REQUESTS_CA_BUNDLE": ""})
        port = tls_port(service)
        creator = optionsForClientTLS("localhost", trustRoot=trustRootFromCertificates([pki.root.twisted_cert()]))

        async def status(origin: str, host: str) -> int:
            return (await rawhttp.upgrade(port, ("Origin", origin), host=host, tls=creator)).status

        self.assertEqual(await status(f"https://localhost:{port}", f"localhost:{port}"), 101)
        self.assertEqual(await status("https://spin.example", "spin.example"), 101)
        self.assertEqual(await status("https://spin.example:443", "spin.example:443"), 101)
        self.assertEqual(await status(f"http://localhost:{port}", f"localhost:{port}"), 403)
        self.assertEqual(await status("http://spin.example", "spin.example"), 403)
        self.assertEqual(await status(LISTED, f"localhost:{port}"), 101)
        self.assertEqual(await status("null", f"localhost:{port}"), 403)
        self.assertEqual(await status("foo", f"localhost:{port}"), 403)

    async def test_own_origin_behind_a_trusted_proxy(self) -> None:
        """nginx/Tailscale/Cloudflare terminate TLS: the runtime sees http and
        maybe another Host; the forwarded scheme and host count as its own."""
        forwarded = [
            (("X-Forwarded-Proto", "https"),),
            (("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", "spin.example")),
            (("Forwarded", 'for=192.0.2.1;proto=https;host="spin.example"'),),
        ]
        trusted = await self.runtime("--allow-origin", LISTED, "--trusted-proxy", "127.0.0.1/32")
        untrusted = await self.runtime("--allow-origin", LISTED, "--trusted-proxy", "10.0.0.0/8")
        for headers in forwarded:
            # Host is whatever the proxy sent: the public name, or its upstream.
            host = "spin.example" if len(headers) == 1 and headers[0][0] == "X-Forwarded-Proto" else "127.0.0.1:8888"
            ok = await rawhttp.upgrade(trusted, ("Origin", "https://spin.example"), *headers, host=host)
            self.assertEqual(ok.status, 101, headers)
            # From a peer that is not a trusted proxy the same headers mean nothing.
            refused = await rawhttp.upgrade(untrusted, ("Origin", "https://spin.example"), *headers, host=host)
            self.assertEqual(refused.status, 403, headers)
        # A forwarded scheme that is not http(s) is ignored, not an error.
        odd = await rawhttp.upgrade(trusted, ("Origin", "https://spin.example"), ("X-Forwarded-Proto", "gopher"),
                                    host="spin.example")
        self.assertEqual(odd.status, 403)
