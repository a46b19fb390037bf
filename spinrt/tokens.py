"""Named tokens with roles (PROTOCOL.md section 9) and who a token is.

``SPIN_TOKEN`` is the identity ``owner`` with the role ``owner``; it is not
in the table and cannot be revoked (change the environment and restart).
The owner issues more tokens: ``create(name, role, expires_in_days)`` gives
the secret once; only its SHA-256 digest is kept (a 256-bit random secret
needs no slow hash: nothing can be guessed from its digest). A secret reads
``spin.<id>.<43 base64url characters>``: the id, which is no secret, finds
the row, and the digest is compared in constant time; an unknown id is
compared against a dummy digest, so the time taken does not tell whether
an id exists.

The table lives in memory (a handful of rows) and in the store's ``tokens``
table (schema 6); every write goes through the store's thread. A revoked
token's row stays (revoked, never shown by ``list``) so the audit trail's
token ids keep their names. ``last_used`` is written at most once a minute
per token.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from typing import Any, Callable, Iterable

import attrs

from .roles import OWNER, ROLES, is_role

SECRET_BYTES = 32  # 256 bits
MAX_EXPIRY_DAYS = 3650
NAME = re.compile(r"[\w.@-]{1,64}")  # Unicode word characters: no spaces, no control characters
RESERVED_NAMES = frozenset({"owner"})  # SPIN_TOKEN's identity
TOKEN_ID = re.compile(r"tk[0-9a-f]{16}")
_SECRET = re.compile(r"spin\.(tk[0-9a-f]{16})\.[A-Za-z0-9_-]{43}")
_DUMMY = hashlib.sha256(b"no such token").digest()
LAST_USED_EVERY = 60.0  # seconds between writes of a token's last_used


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


@attrs.frozen
class Identity:
    """Who a connection or request is: ``name`` (shown to others, in ``by``
    and the audit trail), ``role``, the ``token`` id (None for SPIN_TOKEN)
    and when the token expires (epoch seconds, or None)."""

    name: str
    role: str
    token: str | None = None
    expires: float | None = None

    def public(self) -> dict[str, str]:
        """``{name, role}``: what others may see."""
        return {"name": self.name, "role": self.role}


OWNER_IDENTITY = Identity("owner", OWNER)


@attrs.frozen
class Refusal:
    """Why a presented token is refused: ``no_token``, ``wrong_token``,
    ``expired_token`` or ``revoked_token``; ``name``/``token``: whose it was,
    when the token is known (never the secret)."""

    reason: str
    name: str | None = None
    token: str | None = None


@attrs.define
class TokenRecord:
    id: str
    name: str
    role: str
    digest: bytes = attrs.field(repr=False)
    created: float
    expires: float | None = None
    revoked: float | None = None
    last_used: float | None = None
    last_written: float = 0.0  # when last_used was last queued for the store

    def describe(self) -> dict[str, Any]:
        from .protocol import timestamp

        return {
            "id": self.id, "name": self.name, "role": self.role,
            "created": timestamp(self.created),
            "expires": None if self.expires is None else timestamp(self.expires),
            "last_used": None if self.last_used is None else timestamp(self.last_used),
        }


class TokenError(ValueError):
    """A bad ``tokens.*`` request: ``code`` (``bad_request``, ``no_such_token``) and a message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def check_name(value: Any) -> str:
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise TokenError("bad_request", "'name' must be 1 to 64 letters, digits or . _ @ - (no spaces)")
    if value.lower() in RESERVED_NAMES:
        raise TokenError("bad_request", f"'name' may not be {value!r}: it is SPIN_TOKEN's identity")
    return value


def check_role(value: Any) -> str:
    if not is_role(value):
        raise TokenError("bad_request", f"'role' must be one of {', '.join(ROLES)}")
    return value


def check_days(value: Any) -> int | float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= MAX_EXPIRY_DAYS:
        raise TokenError("bad_request", f"'expires_in_days' must be a number of days above 0, at most {MAX_EXPIRY_DAYS}")
    return value


class TokenRegistry:
    """SPIN_TOKEN plus the named tokens.

    ``store``: what queues SQL for the store's thread (``execute(sql,
    params)``); ``wallclock``: epoch seconds. ``on_revoke`` listeners are
    called with a token id when it is revoked (the WebSocket factory closes
    its connections)."""

    def __init__(self, owner_token: str, store: Any = None, wallclock: Callable[[], float] = time.time) -> None:
        self._owner = digest(owner_token)
        self._store = store
        self._wallclock = wallclock
        self.tokens: dict[str, TokenRecord] = {}
        self.on_revoke: list[Callable[[str], None]] = []

    def load(self, rows: Iterable[tuple[Any, ...]]) -> None:
        """Rows of ``SELECT id, name, role, digest, created, expires, revoked, last_used FROM tokens``."""
        for row in rows:
            record = TokenRecord(id=row[0], name=row[1], role=row[2], digest=bytes.fromhex(row[3]),
                                 created=row[4], expires=row[5], revoked=row[6], last_used=row[7])
            record.last_written = record.last_used or 0.0
            self.tokens[record.id] = record

    # -- who is it --------------------------------------------------------------------

    def authenticate(self, candidate: str | None) -> Identity | Refusal:
        """The identity a presented token stands for, or why it is refused."""
        if candidate is None:
            return Refusal("no_token")
        presented = digest(candidate)
        if hmac.compare_digest(presented, self._owner):
            return OWNER_IDENTITY
        match = _SECRET.fullmatch(candidate)
        record = self.tokens.get(match.group(1)) if match else None
        expected = record.digest if record is not None else _DUMMY
        if not hmac.compare_digest(presented, expected) or record is None:
            return Refusal("wrong_token")
        now = self._wallclock()
        if record.revoked is not None:
            return Refusal("revoked_token", record.name, record.id)
        if record.expires is not None and now >= record.expires:
            return Refusal("expired_token", record.name, record.id)
        record.last_used = now
        if self._store is not None and now - record.last_written >= LAST_USED_EVERY:
            record.last_written = now
            self._store.execute("UPDATE tokens SET last_used = ? WHERE id = ?", (now, record.id))
        return Identity(record.name, record.role, record.id, record.expires)

    # -- the owner's ops ----------------------------------------------------------------

    def create(self, name: Any, role: Any, expires_in_days: Any = None) -> tuple[TokenRecord, str]:
        """A new token and its secret (to show once). TokenError."""
        name, role, days = check_name(name), check_role(role), check_days(expires_in_days)
        now = self._wallclock()
        token_id = "tk" + secrets.token_hex(8)
        while token_id in self.tokens:
            token_id = "tk" + secrets.token_hex(8)
        secret = f"spin.{token_id}.{secrets.token_urlsafe(SECRET_BYTES)}"
        record = TokenRecord(id=token_id, name=name, role=role, digest=digest(secret), created=now,
                             expires=None if days is None else now + days * 86400.0)
        self.tokens[token_id] = record
        if self._store is not None:
            self._store.execute(
                "INSERT INTO tokens(id, name, role, digest, created, expires) VALUES (?, ?, ?, ?, ?, ?)",
                (record.id, record.name, record.role, record.digest.hex(), record.created, record.expires))
        return record, secret

    def list(self) -> list[dict[str, Any]]:
        """Tokens not revoked (expired ones too: they can still be revoked), oldest first."""
        live = [r for r in self.tokens.values() if r.revoked is None]
        return [r.describe() for r in sorted(live, key=lambda r: (r.created, r.id))]

    def revoke(self, token_id: Any) -> TokenRecord:
        """Revoke a token; its connections are closed by the listeners. TokenError."""
        record = self.tokens.get(token_id) if isinstance(token_id, str) else None
        if record is None or record.revoked is not None:
            shown = token_id[:64] if isinstance(token_id, str) else token_id
            raise TokenError("no_such_token", f"no token {shown!r} (see tokens.list)")
        record.revoked = self._wallclock()
        if self._store is not None:
            self._store.execute("UPDATE tokens SET revoked = ? WHERE id = ?", (record.revoked, record.id))
        for listener in list(self.on_revoke):
            listener(record.id)
        return record

    def name_of(self, token_id: str | None) -> str | None:
        record = self.tokens.get(token_id) if token_id else None
        return record.name if record is not None else None
