"""The browser UI's routes: ``GET /`` (the page) and ``GET /static/...`` (its assets).

PROTOCOL.md section 8: both are public. They hold no data, no token and
nothing session-specific; the page gets its token from the URL fragment and
presents it on ``/ws`` and ``/api/`` itself.

Assets are the files under ``spinrt/web/static/`` (package data), read and
gzipped once, in a thread, when the site is built: a request never touches
the file system, so no path can reach outside the tree. They are served
under a versioned prefix, ``/static/<version>/<path>``, where ``<version>``
is a digest of every file: the page's relative imports stay as written, a
changed file changes every URL, and so the assets can be cached for a year
(``immutable``). Another version, or a path that is not an asset, is 404.
The page itself (``static/index.html`` with ``@STATIC@`` replaced by
``static/<version>``) is ``no-cache``, revalidated by its ETag.

Every response of these routes carries :data:`CSP` and :data:`SECURITY_HEADERS`
(the policy of docs/browser-ui.rst; see also the research in
browser-ui.md section 5). Errors: 404 (plain text) for an unknown path, 405
for a method other than GET and HEAD, 503 when the assets could not be read
(the rest of the runtime keeps serving).
"""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import attrs
from twisted.internet import threads
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

_log = Logger()

STATIC_DIR = Path(__file__).with_name("static")
PAGE = "index.html"
PLACEHOLDER = b"@STATIC@"

# Only these suffixes are served, each with its type: a stray file of any
# other kind in the tree stays private. RFC 9239: text/javascript for modules.
CONTENT_TYPES: Mapping[str, bytes] = {
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".json": b"application/json",
    ".txt": b"text/plain; charset=utf-8",
    ".svg": b"image/svg+xml",
    ".png": b"image/png",
    ".woff2": b"font/woff2",
}

# Content-Security-Policy (CSP Level 3): our scripts only, no inline script,
# no eval; styles may be inline because CodeMirror injects a <style> element;
# connect-src 'self' covers ws:/wss: of our own origin; untrusted HTML outputs
# will go in sandboxed frames.
CSP = "; ".join([
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data: blob:",
    "font-src 'self'",
    "connect-src 'self'",
    "frame-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
]).encode("ascii")

SECURITY_HEADERS: Mapping[bytes, bytes] = {
    b"content-security-policy": CSP,
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"no-referrer",
    b"x-frame-options": b"DENY",  # frame-ancestors for browsers without CSP 2
    b"cross-origin-opener-policy": b"same-origin",
    b"cross-origin-resource-policy": b"same-origin",
    b"permissions-policy": b"camera=(), microphone=(), geolocation=(), payment=(), usb=()",
}

# Loaded by the sandboxed frames of text/html outputs, whose origin is opaque
# ("null"): to them every asset is cross-origin, and CORP same-origin would
# refuse it. Public code that reads nothing (app/output/frame.js).
FRAME_ASSETS = frozenset({"app/output/resizer.js"})

IMMUTABLE = b"public, max-age=31536000, immutable"  # RFC 8246
REVALIDATE = b"no-cache"
MIN_GZIP_SAVING = 0.9  # keep a gzipped copy only when it is under 90% of the original


@attrs.frozen
class Asset:
    """One response body: ``body`` as is, ``gzipped`` (None when gzip does
    not pay), the Content-Type and a strong ETag (quoted, RFC 9110 8.8.3)."""

    body: bytes
    gzipped: bytes | None
    content_type: bytes
    etag: bytes

    @classmethod
    def of(cls, body: bytes, content_type: bytes) -> "Asset":
        packed = gzip.compress(body, compresslevel=9, mtime=0)
        digest = hashlib.sha256(body).hexdigest()[:20]
        return cls(body, packed if len(packed) < len(body) * MIN_GZIP_SAVING else None,
                   content_type, b'"' + digest.encode() + b'"')


@attrs.frozen
class Assets:
    """The page and the assets by their path under ``static/`` ("app/main.js")."""

    version: str
    page: Asset
    files: Mapping[str, Asset]


def _servable(root: Path) -> Iterable[tuple[str, Path]]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__")))
        for name in sorted(filenames):
            path = Path(dirpath, name)
            rel = path.relative_to(root).as_posix()
            if not name.startswith(".") and rel != PAGE and path.suffix in CONTENT_TYPES:
                yield rel, path


def load_assets(root: Path = STATIC_DIR) -> Assets:
    """Read and gzip every asset under ``root`` (blocking: run it in a thread).

    Raises OSError when ``root`` or its ``index.html`` cannot be read."""
    page_template = (root / PAGE).read_bytes()
    raw = {rel: path.read_bytes() for rel, path in _servable(root)}
    digest = hashlib.sha256(page_template)
    for rel in sorted(raw):
        digest.update(b"\0" + rel.encode() + b"\0" + hashlib.sha256(raw[rel]).digest())
    version = digest.hexdigest()[:16]
    page = page_template.replace(PLACEHOLDER, b"static/" + version.encode())
    return Assets(
        version=version,
        page=Asset.of(page, b"text/html; charset=utf-8"),
        files={rel: Asset.of(body, CONTENT_TYPES[Path(rel).suffix]) for rel, body in raw.items()},
    )


def accepts_gzip(values: Iterable[bytes]) -> bool:
    """Whether ``Accept-Encoding`` header values allow gzip (RFC 9110 12.5.3):
    ``gzip`` (or ``x-gzip``) with a weight above 0, else ``*`` above 0. No
    header, or one we cannot read, means identity only."""
    weights: dict[str, float] = {}
    for value in values:
        for item in value.decode("latin-1").split(","):
            coding, *params = (part.strip() for part in item.split(";"))
            weight = 1.0
            for param in params:
                name, _, q = param.partition("=")
                if name.strip().lower() == "q":
                    try:
                        weight = float(q.strip())
                    except ValueError:
                        weight = 0.0
                    if not 0.0 <= weight <= 1.0:  # also NaN
                        weight = 0.0
            if coding:
                weights[coding.lower()] = weight
    for name in ("gzip", "x-gzip"):
        if name in weights:
            return weights[name] > 0
    return weights.get("*", 0.0) > 0


def _etag_matches(request: Request, etag: bytes) -> bool:
    """If-None-Match with the weak comparison of RFC 9110 13.1.2."""
    for value in request.requestHeaders.getRawHeaders(b"if-none-match", []):
        for tag in value.split(b","):
            tag = tag.strip()
            if tag == b"*" or tag.removeprefix(b"W/") == etag:
                return True
    return False


def _security_headers(request: Request) -> None:
    for name, value in SECURITY_HEADERS.items():
        request.setHeader(name, value)


def _send(request: Request, asset: Asset, cache_control: bytes) -> bytes:
    _security_headers(request)
    request.setHeader(b"content-type", asset.content_type)
    request.setHeader(b"cache-control", cache_control)
    body, etag = asset.body, asset.etag
    if asset.gzipped is not None:
        request.setHeader(b"vary", b"Accept-Encoding")
        if accepts_gzip(request.requestHeaders.getRawHeaders(b"accept-encoding", [])):
            body, etag = asset.gzipped, etag[:-1] + b'-gz"'  # each representation its own tag
            request.setHeader(b"content-encoding", b"gzip")
    request.setHeader(b"etag", etag)
    if _etag_matches(request, etag):
        request.setResponseCode(http.NOT_MODIFIED)
        return b""
    return body


def _error(request: Request, code: int, text: str) -> bytes:
    _security_headers(request)
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    request.setHeader(b"cache-control", b"no-store")
    return text.encode() + b"\n"


def _valid_segment(segment: bytes) -> bool:
    """A path segment that can name a file of ours: not empty, not a dot
    segment or hidden, and (after percent-decoding) no separator or NUL."""
    return bool(segment) and not segment.startswith(b".") and not any(c in segment for c in b"/\\\0")


class UiAssets:
    """The assets, loaded once off the reactor thread (``run`` is
    ``deferToThread`` unless a test gives another); requests wait until they are."""

    def __init__(self, root: Path = STATIC_DIR,
                 run: Callable[..., Deferred[Assets]] = threads.deferToThread) -> None:
        self.assets: Assets | None = None
        self.failure: str | None = None
        self._waiting: list[Deferred[None]] = []
        run(load_assets, root).addCallbacks(self._loaded, self._failed)

    def _loaded(self, assets: Assets) -> None:
        self.assets = assets
        self._release()

    def _failed(self, failure: Failure) -> None:
        self.failure = "the UI's files could not be read"
        _log.failure("could not load the browser UI's files", failure)
        self._release()

    def _release(self) -> None:
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(None)

    def when_ready(self) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        if self.assets is not None or self.failure is not None:
            d.callback(None)
        else:
            self._waiting.append(d)
        return d


class _AssetRoute(Resource):
    isLeaf = True

    def __init__(self, ui: UiAssets) -> None:
        super().__init__()
        self._ui = ui

    def render(self, request: Request) -> Any:
        # twisted.web would answer 501 to methods it does not know; 405 is the answer
        # for a method this resource does not allow (RFC 9110 15.5.6).
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"allow", b"GET, HEAD")
            return _error(request, http.NOT_ALLOWED, "method not allowed")
        return super().render(request)

    def render_GET(self, request: Request) -> Any:
        gone: list[Failure] = []
        request.notifyFinish().addErrback(gone.append)

        def answer(_: None) -> None:
            if gone:
                return
            body = self._answer(request)
            # Set here, not by twisted.web: a 304 must not claim a length of 0
            # (RFC 9110 8.6), and a HEAD gets the length a GET would.
            if request.code != http.NOT_MODIFIED:
                request.setHeader(b"content-length", b"%d" % len(body))
            if body and request.method != b"HEAD":
                request.write(body)
            request.finish()

        # Fires at once (so within this call) once the assets are loaded.
        self._ui.when_ready().addCallback(answer)
        return NOT_DONE_YET

    render_HEAD = render_GET

    def _answer(self, request: Request) -> bytes:
        if self._ui.assets is None:
            return _error(request, http.SERVICE_UNAVAILABLE, self._ui.failure or "starting")
        return self.respond(request, self._ui.assets)

    def respond(self, request: Request, assets: Assets) -> bytes:
        raise NotImplementedError


class PageResource(_AssetRoute):
    """``GET /``: the page. Nothing may follow the slash."""

    def respond(self, request: Request, assets: Assets) -> bytes:
        if request.postpath:
            return _error(request, http.NOT_FOUND, "not found")
        return _send(request, assets.page, REVALIDATE)


class StaticResource(_AssetRoute):
    """``GET /static/<version>/<path>``: one asset of this version, else 404."""

    def respond(self, request: Request, assets: Assets) -> bytes:
        version, *segments = request.postpath or [b""]
        if version != assets.version.encode() or not segments or not all(map(_valid_segment, segments)):
            return _error(request, http.NOT_FOUND, "not found")
        try:
            rel = b"/".join(segments).decode("utf-8")
        except UnicodeDecodeError:
            return _error(request, http.NOT_FOUND, "not found")
        asset = assets.files.get(rel)
        if asset is None:
            return _error(request, http.NOT_FOUND, "not found")
        body = _send(request, asset, IMMUTABLE)
        if rel in FRAME_ASSETS:
            request.setHeader(b"cross-origin-resource-policy", b"cross-origin")
        return body


def add_ui_routes(root: Resource, ui: UiAssets | None = None) -> UiAssets:
    """Mount ``/`` and ``/static`` on the site's root resource."""
    ui = ui or UiAssets()
    root.putChild(b"", PageResource(ui))
    root.putChild(b"static", StaticResource(ui))
    return ui
