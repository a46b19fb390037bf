"""The browser UI's routes (spinrt/web/ui.py): / and /static/<version>/...

A real runtime on 127.0.0.1 answers raw HTTP requests (the path goes on the
wire exactly as written: no client normalises ``..`` or ``%2e%2e`` away);
load_assets and accepts_gzip are also tested on their own.
"""

from __future__ import annotations

import gzip
import re
import threading
from pathlib import Path
from typing import Any

import attrs
from hypothesis import given, strategies as st
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from twisted.trial import unittest
from twisted.web.resource import Resource
from twisted.web.server import Site

from spinrt.web import ui
from spinrt.web.ui import CSP, UiAssets, accepts_gzip, load_assets

from .support import TOKEN, sleep, start_runtime

STATIC = ui.STATIC_DIR


@attrs.frozen
class Reply:
    status: int
    headers: dict[str, list[str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None


class _Collect(Protocol):
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.received = bytearray()
        self.done: defer.Deferred[bytes] = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.data)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure) -> None:
        self.done.callback(bytes(self.received))


async def fetch(port: int, path: str, method: str = "GET", headers: dict[str, str] | None = None) -> Reply:
    """One HTTP/1.1 request with ``path`` sent byte for byte; reads to EOF."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    protocol = _Collect(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    factory = Factory.forProtocol(lambda: protocol)
    await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(factory)
    raw = await protocol.done
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed: dict[str, list[str]] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed.setdefault(name.strip().lower(), []).append(value.strip())
    return Reply(int(status_line.split()[1]), parsed, body)


class Served(unittest.TestCase):
    """Against a real runtime."""

    async def asyncSetUp(self) -> None:  # called by each test (trial has no async setUp)
        self.service = await start_runtime(self)
        self.port = self.service.addresses[0]["port"]
        page = await fetch(self.port, "/")
        self.assertEqual(page.status, 200, page)
        self.page = page
        found = re.search(r'src="static/([0-9a-f]{16})/app/main\.js"', page.body.decode())
        assert found, page.body
        self.version = found.group(1)

    def static(self, rel: str) -> str:
        return f"/static/{self.version}/{rel}"

    def assert_security_headers(self, reply: Reply) -> None:
        self.assertEqual(reply.header("content-security-policy"), CSP.decode())
        self.assertEqual(reply.header("x-content-type-options"), "nosniff")
        self.assertEqual(reply.header("referrer-policy"), "no-referrer")
        self.assertEqual(reply.header("x-frame-options"), "DENY")
        self.assertEqual(reply.header("cross-origin-opener-policy"), "same-origin")

    async def test_page_is_public_and_strict(self) -> None:
        await self.asyncSetUp()
        page = self.page
        self.assertEqual(page.header("content-type"), "text/html; charset=utf-8")
        self.assertEqual(page.header("cache-control"), "no-cache")
        self.assertIsNotNone(page.header("etag"))
        self.assert_security_headers(page)
        self.assertNotIn(TOKEN.encode(), page.body)
        self.assertNotIn(b"@STATIC@", page.body)
        self.assertIsNone(page.header("set-cookie"))
        # The API next to it still wants the token.
        self.assertEqual((await fetch(self.port, "/api/status")).status, 401)

    async def test_csp_directives(self) -> None:
        await self.asyncSetUp()
        policy = {d.split()[0]: d.split()[1:] for d in self.page.header("content-security-policy").split("; ")}
        self.assertEqual(policy["default-src"], ["'none'"])
        self.assertEqual(policy["script-src"], ["'self'"])  # no 'unsafe-inline', no 'unsafe-eval'
        self.assertEqual(policy["connect-src"], ["'self'"])
        self.assertEqual(policy["frame-ancestors"], ["'none'"])
        self.assertEqual(policy["object-src"], ["'none'"])
        self.assertEqual(policy["base-uri"], ["'none'"])
        self.assertEqual(policy["form-action"], ["'none'"])
        self.assertEqual(policy["style-src"], ["'self'", "'unsafe-inline'"])
        for directive, sources in policy.items():
            self.assertNotIn("'unsafe-eval'", sources, directive)
            self.assertNotIn("*", sources, directive)

    async def test_every_url_of_the_page_is_served(self) -> None:
        await self.asyncSetUp()
        urls = re.findall(r'(?:src|href)="([^"]+)"', self.page.body.decode())
        self.assertGreater(len(urls), 5)
        types = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
        for url in urls:
            self.assertTrue(url.startswith(f"static/{self.version}/"), url)
            reply = await fetch(self.port, "/" + url)
            self.assertEqual(reply.status, 200, url)
            self.assertEqual(reply.header("content-type"), types[Path(url).suffix], url)
            self.assertEqual(reply.header("cache-control"), "public, max-age=31536000, immutable")
            self.assert_security_headers(reply)
            self.assertEqual(reply.body, (STATIC / url.split("/", 2)[2]).read_bytes())

    async def test_content_types(self) -> None:
        await self.asyncSetUp()
        for rel, expected in [("vendor/codemirror.js", "text/javascript; charset=utf-8"),
                              ("vendor/MANIFEST.json", "application/json"),
                              ("vendor/licenses/marked.txt", "text/plain; charset=utf-8"),
                              ("app/style.css", "text/css; charset=utf-8"),
                              ("app/icon.svg", "image/svg+xml")]:
            reply = await fetch(self.port, self.static(rel))
            self.assertEqual((reply.status, reply.header("content-type")), (200, expected), rel)

    async def test_gzip_follows_accept_encoding(self) -> None:
        await self.asyncSetUp()
        raw = (STATIC / "vendor/codemirror.js").read_bytes()
        cases = {
            "gzip": True, "GZIP": True, "x-gzip": True, "gzip;q=0.5": True, "br, gzip, deflate": True,
            "*": True, "deflate, *;q=0.1": True, "identity;q=1, gzip;q=0.001": True,
            "gzip;q=0": False, "gzip; q=0.000": False, "*;q=0": False, "*, gzip;q=0": False,
            "identity": False, "br, deflate": False, "": False, "gzip;q=abc": False, "gzip;q=2": False,
        }
        for value, gzipped in cases.items():
            for path in (self.static("vendor/codemirror.js"), "/"):
                headers = {"Accept-Encoding": value} if value else {}
                reply = await fetch(self.port, path, headers=headers)
                self.assertEqual(reply.status, 200)
                self.assertEqual(reply.header("vary"), "Accept-Encoding", (value, path))
                self.assertEqual(reply.header("content-encoding"), "gzip" if gzipped else None, (value, path))
                body = gzip.decompress(reply.body) if gzipped else reply.body
                self.assertEqual(int(reply.header("content-length")), len(reply.body))
                if path != "/":
                    self.assertEqual(body, raw)
                    if gzipped:
                        self.assertLess(len(reply.body), len(raw) / 2)
        # No header at all: identity.
        reply = await fetch(self.port, self.static("vendor/codemirror.js"))
        self.assertIsNone(reply.header("content-encoding"))

    async def test_conditional_requests(self) -> None:
        await self.asyncSetUp()
        for path in ("/", self.static("app/main.js")):
            plain = await fetch(self.port, path)
            packed = await fetch(self.port, path, headers={"Accept-Encoding": "gzip"})
            self.assertNotEqual(plain.header("etag"), packed.header("etag"))  # one tag per representation
            for reply, encoding in ((plain, "identity"), (packed, "gzip")):
                tag = reply.header("etag")
                for condition in (tag, "W/" + tag, f'"other", {tag}', "*"):
                    again = await fetch(self.port, path, headers={"If-None-Match": condition, "Accept-Encoding": encoding})
                    self.assertEqual(again.status, 304, (path, condition))
                    self.assertEqual(again.body, b"")
                    self.assertIsNone(again.header("content-length"))
                    self.assertEqual(again.header("etag"), tag)
                    self.assert_security_headers(again)
            # The other representation's tag does not match.
            other = await fetch(self.port, path, headers={"If-None-Match": packed.header("etag")})
            self.assertEqual(other.status, 200)
            stale = await fetch(self.port, path, headers={"If-None-Match": '"stale"'})
            self.assertEqual(stale.status, 200)

    async def test_head(self) -> None:
        await self.asyncSetUp()
        for path in ("/", self.static("vendor/preact.js")):
            for encoding in ("gzip", "identity"):
                get = await fetch(self.port, path, headers={"Accept-Encoding": encoding})
                head = await fetch(self.port, path, "HEAD", headers={"Accept-Encoding": encoding})
                self.assertEqual(head.status, 200)
                self.assertEqual(head.body, b"")
                self.assertEqual(head.header("content-length"), str(len(get.body)))
                self.assertEqual(head.header("content-encoding"), get.header("content-encoding"))
                self.assertEqual(head.header("etag"), get.header("etag"))
        missing = await fetch(self.port, self.static("nope.js"), "HEAD")
        self.assertEqual((missing.status, missing.body), (404, b""))

    async def test_other_methods(self) -> None:
        await self.asyncSetUp()
        for path in ("/", self.static("app/main.js")):
            for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "FOO"):
                reply = await fetch(self.port, path, method, headers={"Content-Length": "0"})
                self.assertEqual(reply.status, 405, (method, path))
                self.assertEqual(reply.header("allow"), "GET, HEAD")
                self.assert_security_headers(reply)

    async def test_nothing_else_is_served(self) -> None:
        await self.asyncSetUp()
        v = self.version
        bad = [
            # other versions, none, partial
            "/static", "/static/", f"/static/{v}", f"/static/{v}/", "/static/0000000000000000/app/main.js",
            f"/static/{v[:-1]}/app/main.js", f"/static/{v.upper()}/app/main.js", "/static/app/main.js",
            # directories: no listing
            f"/static/{v}/app", f"/static/{v}/app/", f"/static/{v}/vendor/", f"/static/{v}/vendor/licenses/",
            # traversal, plain and encoded, slashes and backslashes
            f"/static/{v}/../../setup.cfg", f"/static/{v}/app/../../ui.py", f"/static/{v}/%2e%2e/ui.py",
            f"/static/{v}/%2E%2E/%2E%2E/setup.cfg", f"/static/{v}/.%2e/ui.py", f"/static/{v}/app/%2e%2e%2fui.py",
            f"/static/{v}/..%2fui.py", f"/static/{v}/..%2Fui.py", f"/static/{v}/app%2fmain.js",
            f"/static/{v}/..\\ui.py", f"/static/{v}/..%5cui.py", f"/static/{v}/app%5Cmain.js",
            f"/static/{v}/%2e/app/main.js", f"/static/{v}/./app/main.js", f"/static/{v}/app/./main.js",
            f"/static/{v}//app/main.js", f"/static/{v}/app//main.js", f"/static/{v}//etc/passwd",
            f"/static/{v}/%2fetc%2fpasswd",
            # NUL and bytes that are not UTF-8
            f"/static/{v}/app/main.js%00", f"/static/{v}/app/main.js%00.css", f"/static/{v}/%00",
            f"/static/{v}/app/%ff.js", f"/static/{v}/app/main.js%20",
            # trailing slash, case, the page, sources, hidden and unknown kinds
            f"/static/{v}/app/main.js/", f"/static/{v}/APP/main.js", f"/static/{v}/index.html",
            f"/static/{v}/../ui.py", f"/static/{v}/.gitignore", f"/static/{v}/vendor/.hidden.js",
            f"/static/{v}/app/main", f"/static/{v}/app/nope.js",
            # the page only at /
            "/index.html", "//", "/?/../setup.cfg".replace("?", "%3f"), "/app/main.js",
        ]
        for path in bad:
            reply = await fetch(self.port, path)
            self.assertEqual(reply.status, 404, path)
            self.assertNotIn(b"import", reply.body, path)  # no file leaked
            if path.startswith("/static/"):
                self.assertEqual(reply.header("cache-control"), "no-store", path)
                self.assert_security_headers(reply)
        # The page with a query string (ignored) is still the page.
        self.assertEqual((await fetch(self.port, "/?token=x")).body, self.page.body)

    async def test_every_servable_file_is_served(self) -> None:
        await self.asyncSetUp()
        files = [p for p in STATIC.rglob("*") if p.is_file() and p.name != "index.html"]
        self.assertGreater(len(files), 20)
        for path in files:
            rel = path.relative_to(STATIC).as_posix()
            reply = await fetch(self.port, self.static(rel), "HEAD")
            self.assertEqual(reply.status, 200, rel)


class Loading(unittest.TestCase):
    """UiAssets and load_assets on their own."""

    def tree(self, files: dict[str, bytes]) -> Path:
        root = Path(self.mktemp())
        for rel, body in files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(body)
        return root

    def test_what_is_served(self) -> None:
        root = self.tree({
            "index.html": b"<script src='@STATIC@/a.js'></script>",
            "a.js": b"export const a = 1;\n" * 100, "b/c.css": b"p{}", "i.png": b"\x89PNG",
            ".hidden.js": b"x", "d/.git/config": b"x", "__pycache__/x.js": b"x", "notes.md": b"x", "x.py": b"x",
            "e/index.html": b"x",
        })
        assets = load_assets(root)
        self.assertEqual(sorted(assets.files), ["a.js", "b/c.css", "i.png"])
        self.assertEqual(assets.page.body, f"<script src='static/{assets.version}/a.js'></script>".encode())
        self.assertIsNotNone(assets.files["a.js"].gzipped)
        self.assertIsNone(assets.files["i.png"].gzipped)  # too small to gain

    def test_version_follows_every_file(self) -> None:
        files = {"index.html": b"@STATIC@", "a.js": b"1", "b/c.js": b"2"}
        first = load_assets(self.tree(files)).version
        self.assertEqual(load_assets(self.tree(files)).version, first)
        for change in ({"a.js": b"3"}, {"b/c.js": b"3"}, {"index.html": b"@STATIC@ "}, {"d.js": b""},
                       {"b/c.js": b"2", "c.js": b""}):
            self.assertNotEqual(load_assets(self.tree({**files, **change})).version, first, change)
        # Renaming a file changes it too.
        self.assertNotEqual(load_assets(self.tree({"index.html": b"@STATIC@", "a.js": b"1", "b/d.js": b"2"})).version, first)

    def test_missing_page(self) -> None:
        with self.assertRaises(OSError):
            load_assets(self.tree({"a.js": b"1"}))

    async def serve(self, assets_ui: UiAssets) -> int:
        root = Resource()
        ui.add_ui_routes(root, assets_ui)
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Site(root))
        self.addCleanup(port.stopListening)
        return port.getHost().port

    async def test_loaded_off_the_reactor_thread(self) -> None:
        threads: list[threading.Thread] = []
        real = ui.load_assets

        def spy(root: Path) -> Any:
            threads.append(threading.current_thread())
            return real(root)

        self.patch(ui, "load_assets", spy)
        port = await self.serve(UiAssets(STATIC))
        self.assertEqual((await fetch(port, "/")).status, 200)
        self.assertEqual(len(threads), 1)
        self.assertIsNot(threads[0], threading.main_thread())

    async def test_requests_wait_for_loading(self) -> None:
        pending: defer.Deferred[Any] = defer.Deferred()
        calls: list[Any] = []

        def run(f: Any, root: Path) -> defer.Deferred[Any]:
            calls.append(root)
            return pending

        port = await self.serve(UiAssets(STATIC, run=run))
        first = defer.ensureDeferred(fetch(port, "/"))
        head = defer.ensureDeferred(fetch(port, "/", "HEAD"))
        await sleep(0.2)
        self.assertFalse(first.called)
        pending.callback(load_assets(STATIC))
        page, head_reply = await first, await head
        self.assertEqual(page.status, 200)
        self.assertIn(b"<!doctype html>", page.body)
        self.assertEqual(head_reply.header("content-length"), str(len(page.body)))
        self.assertEqual(len(calls), 1)

    async def test_unreadable_assets(self) -> None:
        port = await self.serve(UiAssets(Path(self.mktemp())))  # no such directory
        for path in ("/", "/static/0123456789abcdef/app/main.js"):
            reply = await fetch(port, path)
            self.assertEqual(reply.status, 503, path)
            self.assertIn(b"could not be read", reply.body)
            self.assertEqual(reply.header("content-security-policy"), CSP.decode())
        self.assertEqual(len(self.flushLoggedErrors(FileNotFoundError)), 1)


class AcceptEncoding(unittest.TestCase):
    def test_cases(self) -> None:
        yes = [b"gzip", b"x-gzip", b"GZip", b" gzip ", b"gzip;q=1", b"gzip; q=0.001", b"*", b"*;q=0.5",
               b"deflate, gzip;q=0.2", b"identity, *", b"gzip;level=9"]
        no = [b"", b"identity", b"gzip;q=0", b"gzip;Q=0", b"gzip;q=0.0", b"*;q=0", b"*, gzip;q=0", b"gzip;q=0, *",
              b"gzip;q=-1", b"gzip;q=1.5", b"gzip;q=nan", b"gzip;q=", b"br", b"gzipx", b"x-gzip;q=0", b",,;;", b"q=1"]
        for value in yes:
            self.assertTrue(accepts_gzip([value]), value)
        for value in no:
            self.assertFalse(accepts_gzip([value]), value)
        self.assertFalse(accepts_gzip([]))
        self.assertTrue(accepts_gzip([b"br", b"gzip"]))  # repeated header lines add up

    @given(st.binary(max_size=200))
    def test_never_raises(self, value: bytes) -> None:
        self.assertIn(accepts_gzip([value]), (True, False))

    @given(st.lists(st.sampled_from(["gzip", "x-gzip", "*", "br", "identity", "deflate"]), max_size=6),
           st.sampled_from(["gzip", "x-gzip"]))
    def test_refused_gzip_is_never_chosen(self, others: list[str], refused: str) -> None:
        header = ", ".join([*(o for o in others if o not in ("gzip", "x-gzip")), f"{refused};q=0"])
        if refused == "x-gzip":
            header += ", gzip;q=0"
        self.assertFalse(accepts_gzip([header.encode()]))
