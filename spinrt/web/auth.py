"""Who may talk to the runtime: token carriers, the check, origins, throttling."""

from __future__ import annotations

import base64
import binascii
import collections
import hashlib
import hmac
import re
from typing import Any, Iterable, Mapping, Sequence

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


class OriginPolicy:
    def __init__(self, allowed: Sequence[str]) -> None:
        self._any = "*" in allowed
        self._allowed = {o.rstrip("/").lower() for o in allowed if o != "*"}
        self.configured = bool(allowed)

    def allows(self, origin: str | None) -> bool:
        if not self.configured or origin is None or self._any:
            return True
        return origin.rstrip("/").lower() in self._allowed


class FailureThrottle:
    """Slows down addresses that keep presenting bad tokens.

    After ``free`` failures an address is refused (429) for a delay that
    doubles with each further failure, up to ``max_delay``. Entries expire and
    the table is bounded, so a flood of addresses cannot grow memory.
    """

    def __init__(
        self,
        clock: Any,
        *,
        free: int = 5,
        base_delay: float = 1.0,
        max_delay: float = 300.0,
        forget_after: float = 900.0,
        max_entries: int = 10_000,
    ) -> None:
        self._clock = clock
        self.free = free
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.forget_after = forget_after
        self.max_entries = max_entries
        # address -> (failures, blocked_until, last_seen)
        self._table: collections.OrderedDict[str, tuple[int, float, float]] = collections.OrderedDict()

    def retry_after(self, address: str) -> float:
        """Seconds this address must still wait; 0 when it may try."""
        entry = self._table.get(address)
        if entry is None:
            return 0.0
        now = self._clock.seconds()
        failures, blocked_until, last_seen = entry
        if now - last_seen > self.forget_after:
            del self._table[address]
            return 0.0
        return max(0.0, blocked_until - now)

    def failed(self, address: str) -> None:
        now = self._clock.seconds()
        failures, _, last_seen = self._table.pop(address, (0, 0.0, now))
        if now - last_seen > self.forget_after:
            failures = 0
        failures += 1
        blocked_until = 0.0
        if failures > self.free:
            delay = min(self.max_delay, self.base_delay * 2 ** (failures - self.free - 1))
            blocked_until = now + delay
        self._table[address] = (failures, blocked_until, now)
        while len(self._table) > self.max_entries:
            self._table.popitem(last=False)

    def succeeded(self, address: str) -> None:
        self._table.pop(address, None)
