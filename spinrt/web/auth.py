"""Who may talk to the runtime: token carriers, the constant-time check, origins.

The failure throttle is in throttle.py, client addresses behind proxies in
proxies.py."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import re
from typing import Collection, Iterable, Mapping, Optional, Sequence

from ..protocol import TOKEN_SUBPROTOCOL_PREFIX


class TokenChecker:
    """Constant-time comparison: both sides are hashed to a fixed length first,
    so neither content nor length leaks through timing."""

    def __init__(self, token: str) -> None:
        self._digest = hashlib.sha256(token.encode("utf-8")).digest()

    def check(self, candidate: str | None) -> bool:
        if candidate is None:
            return False
        digest = hashlib.sha256(candidate.encode("utf-8", "surrogatepass")).digest()
        return hmac.compare_digest(digest, self._digest)


def token_from_authorization(value: str | None) -> str | None:
    if not value:
        return None
    scheme, _, credential = value.strip().partition(" ")
    if scheme.lower() in ("bearer", "token") and credential.strip():
        return credential.strip()
    return None


def token_from_subprotocols(protocols: Iterable[str]) -> str | None:
    for entry in protocols:
        if entry.startswith(TOKEN_SUBPROTOCOL_PREFIX):
            encoded = entry[len(TOKEN_SUBPROTOCOL_PREFIX):]
            try:
                raw = base64.b64decode(
                    encoded + "=" * (-len(encoded) % 4), altchars=b"-_", validate=True
                )
                return raw.decode("utf-8")
            except (binascii.Error, ValueError):
                return None
    return None


def encode_token_subprotocol(token: str) -> str:
    raw = base64.urlsafe_b64encode(token.encode("utf-8")).rstrip(b"=")
    return TOKEN_SUBPROTOCOL_PREFIX + raw.decode("ascii")


def find_token(
    headers: Mapping[str, str], protocols: Sequence[str], query: Mapping[str, Sequence[str]]
) -> str | None:
    """The token from whichever carrier the client used (header first)."""
    token = token_from_authorization(headers.get("authorization"))
    if token is None:
        token = token_from_subprotocols(protocols)
    if token is None:
        values = query.get("token") or ()
        token = values[0] if values else None
    return token


_QUERY_TOKEN = re.compile(r"([?&]token=)[^&#\s\"]*", re.IGNORECASE)


def redact(text: str) -> str:
    """Hide query-string tokens in a request line or URL."""
    return _QUERY_TOKEN.sub(r"\1REDACTED", text)


OPAQUE = "null"
"""The key of an opaque origin: ``Origin: null`` (sandboxed frames, pages
opened from files, some redirects), an empty ``Origin`` and legacy
``file://`` origins (RFC 6454 section 7.3, the Fetch standard)."""

OriginKey = tuple[str, str, Optional[int]]

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
# scheme "://" host [":" port] ["/"], RFC 6454 section 6.1 (a trailing "/" is
# tolerated in configuration). No user info, path, query or fragment.
_ORIGIN = re.compile(
    r"(?P<scheme>[a-z][a-z0-9+.-]*)://"
    r"(?P<host>\[[0-9a-f:.]+\]|[a-z0-9_~!$&'()*+;=%.-]+)"
    r"(?::(?P<port>[0-9]{1,5}))?/?",
    re.IGNORECASE,
)


def parse_origin(text: str) -> OriginKey | str | None:
    """An ``Origin`` value -> ``(scheme, host, port)`` in lower case with the
    scheme's default port filled in, :data:`OPAQUE` for ``null`` (any case),
    an empty value or a ``file:`` URL, or ``None`` for anything malformed
    (``foo``, ``http://``, a path, two origins joined by a comma, ...)."""
    value = text.strip()
    if value == "" or value.lower() == OPAQUE or value.lower().startswith("file:"):
        return OPAQUE
    match = _ORIGIN.fullmatch(value)
    if match is None:
        return None
    scheme = match["scheme"].lower()
    host = match["host"].lower()
    if host.startswith("["):
        try:
            host = "[" + str(ipaddress.IPv6Address(host[1:-1])) + "]"
        except ValueError:
            return None
    port = int(match["port"]) if match["port"] else _DEFAULT_PORTS.get(scheme)
    if port is not None and not 0 < port < 65536:
        return None
    return scheme, host, port


def origin_of(scheme: str, host: str) -> OriginKey | None:
    """The origin a request names with its scheme and ``Host`` value
    (``"https"``, ``"spin.example.com"`` -> ``("https", "spin.example.com", 443)``)."""
    key = parse_origin(f"{scheme.strip()}://{host.strip()}")
    return key if isinstance(key, tuple) else None


class OriginPolicy:
    """``--allow-origin``: which browser origins may open the WebSocket.

    ``allowed`` holds origins (``https://app.example``), ``*`` (any origin)
    and ``null`` (opaque origins); bad entries raise ValueError. With no
    entries or ``*`` every request passes. Otherwise every ``Origin`` (and
    legacy ``Sec-WebSocket-Origin``) value a request carries must be listed,
    be opaque with ``null`` listed, or be the runtime's own origin
    (PROTOCOL.md section 8); malformed values are refused. A request with no
    origin header (not a browser) passes.
    """

    def __init__(self, allowed: Sequence[str]) -> None:
        self._any = "*" in [entry.strip() for entry in allowed]
        self._allowed: set[OriginKey | str] = set()
        for entry in allowed:
            if entry.strip() == "*":
                continue
            key = parse_origin(entry) if entry.strip() else None
            if key is None or "*" in entry:
                raise ValueError(
                    f"{entry!r} is not an origin: use scheme://host[:port] "
                    f"(e.g. https://app.example.com), '*' for any or 'null'"
                )
            self._allowed.add(key)
        self.configured = bool(allowed)

    def allows(self, origins: Sequence[str] | str | None, own: Collection[OriginKey] = ()) -> bool:
        """Whether a request carrying these origin header values may connect;
        ``own`` holds the runtime's own origin(s) as this request reached it."""
        if isinstance(origins, str):
            origins = [origins]
        if not self.configured or self._any or not origins:
            return True
        for value in origins:
            key = parse_origin(value)
            if key is None:
                return False
            if key not in self._allowed and key not in own:
                return False
        return True
