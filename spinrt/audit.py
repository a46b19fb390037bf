"""The audit trail: who did what, when, from where (PROTOCOL.md section 9).

Recorded: every request that changes state (every op not in
``spinrt.roles.READS``, with its outcome: ``ok`` or the error code), every
refused request (``forbidden``, on the WebSocket and on HTTP routes), every
authentication failure, and every WebSocket connection opening and closing.
Each row holds the time, the identity (name, role, token id), the client
address (behind ``--trusted-proxy``, the forwarded one), the action (the op,
``connect``, ``disconnect``, ``auth`` or ``GET /route``), its target (a small
JSON object of ids and names picked from the request by an allow-list, so
never a secret value, a cell's source or a token) and the outcome.

Rows go to the store's ``audit`` table through its thread, committed with
the events around them: recording never blocks the reactor. Authentication
failures from one address are written at most ``FAILURES_PER_WINDOW`` per
``FAILURE_WINDOW`` seconds; the rest are counted in one ``suppressed`` row,
so a flood of wrong tokens cannot flood the store.

``page()`` answers ``GET /api/audit``; ``prune()`` deletes rows older than
``--audit-retention-days`` on the store's thread in chunks (at start, then
every ``PRUNE_EVERY`` seconds).
"""

from __future__ import annotations

import collections
import json
import time
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from .protocol import timestamp
from .tokens import TOKEN_ID

_log = Logger()

DEFAULT_RETENTION_DAYS = 90
PRUNE_EVERY = 3600.0  # seconds
PRUNE_CHUNK = 5000  # rows per DELETE: writes wait at most one chunk
FAILURE_WINDOW = 60.0
FAILURES_PER_WINDOW = 20
MAX_FAILURE_ADDRESSES = 10_000
PAGE_DEFAULT, PAGE_MAX = 1000, 10_000
MAX_TEXT = 200

_INSERT = ("INSERT INTO audit(ts, identity, role, token, client, action, target, outcome)"
           " VALUES (?, ?, ?, ?, ?, ?, ?, ?)")

# The request fields a row may name: ids and names only. Anything else
# (sources, options, keys, passphrases, secret values, tokens) never reaches it.
_TARGET_FIELDS = ("session", "run", "cell_id", "cell_ids", "notebook", "name", "new_name",
                  "role", "scope", "names", "expires_in_days", "host", "port", "username", "type")


def _short(value: Any) -> Any:
    if isinstance(value, str):
        return value[:MAX_TEXT]
    if isinstance(value, bool) or value is None or isinstance(value, (int, float)):
        return value
    if isinstance(value, (list, tuple)):
        return [_short(v) for v in list(value)[:20] if isinstance(v, (str, int))]
    return None


def target_of(params: Mapping[str, Any]) -> dict[str, Any]:
    """The ids and names of a request (raw object or parsed params) worth a row."""
    found: dict[str, Any] = {}
    token = params.get("token")
    if token is not None:  # a token's id; a secret sent there by mistake is not written
        found["token"] = token if isinstance(token, str) and TOKEN_ID.fullmatch(token) else "(not a token id)"
    for field in _TARGET_FIELDS:
        value = params.get(field)
        if value is not None and _short(value) is not None:
            found[field] = _short(value)
    cell = params.get("cell")
    if isinstance(cell, Mapping) or hasattr(cell, "type"):
        cells = [cell]
    else:
        cells = params.get("cells") if isinstance(params.get("cells"), list) else []
    if cells:
        found["cells"] = [{"id": _short(_get(c, "id")), "type": _short(_get(c, "type"))} for c in cells[:20]]
    secrets = params.get("secrets")
    if isinstance(secrets, Mapping):
        found["secrets"] = sorted(str(k)[:MAX_TEXT] for k in secrets)[:50]  # names, never values
    host_ssh = params.get("host_ssh")
    if isinstance(host_ssh, Mapping):
        found["host_ssh"] = {k: _short(host_ssh[k]) for k in ("enabled", "username", "host", "port") if k in host_ssh}
    return found


def _get(cell: Any, name: str) -> Any:
    return cell.get(name) if isinstance(cell, Mapping) else getattr(cell, name, None)


def parse_time(field: str, text: str) -> float:
    """ISO 8601 (``2026-11-30T10:00:00Z``, with an offset, or a date) -> epoch
    seconds; naive times are UTC. ValueError naming ``field``."""
    value = text.strip()
    try:
        when = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value)
    except ValueError:
        raise ValueError(f"'{field}' must be an ISO 8601 time, e.g. 2026-11-30T10:00:00Z") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


class AuditTrail:
    """Writes rows through ``store`` (an EventStore) and reads them back."""

    def __init__(self, store: Any, clock: Any, *, retention_days: float = DEFAULT_RETENTION_DAYS,
                 wallclock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self.retention_days = retention_days
        self.wallclock = wallclock
        self.recorded = 0
        self.pruned = 0
        self.closed = False  # the store is closing: nothing more is recorded
        self._failures: collections.OrderedDict[str, list[float]] = collections.OrderedDict()
        self._pruning: LoopingCall | None = None
        self._prune_running: Deferred[Any] | None = None

    # -- writing -----------------------------------------------------------------------

    def record(self, action: str, *, identity: Any = None, client: str | None = None,
               target: Mapping[str, Any] | None = None, outcome: str = "ok",
               name: str | None = None, token: str | None = None) -> None:
        """Queue one row. ``identity``: a spinrt.tokens.Identity, or None
        (then ``name``/``token`` may say whose refused token it was)."""
        if self.closed:
            return
        role = None
        if identity is not None:
            name, role, token = identity.name, identity.role, identity.token
        body = json.dumps(dict(target), ensure_ascii=False, separators=(",", ":"), default=str) if target else None
        self.store.execute(_INSERT, (self.wallclock(), name, role, token, (client or "")[:MAX_TEXT],
                                     action[:MAX_TEXT], body, outcome[:MAX_TEXT]))
        self.recorded += 1

    def auth_failed(self, client: str, reason: str, target: str, *, name: str | None = None,
                    token: str | None = None) -> None:
        """An authentication failure (``reason``: no_token, wrong_token,
        expired_token, revoked_token, throttled), rate-limited per address."""
        now = self.clock.seconds()
        entry = self._failures.get(client)
        if entry is None or now - entry[0] >= FAILURE_WINDOW:
            if entry is not None and entry[2]:
                self._write_failure(client, "suppressed", target, None, None, count=int(entry[2]))
            while len(self._failures) >= MAX_FAILURE_ADDRESSES:
                self._failures.popitem(last=False)
            entry = self._failures[client] = [now, 0.0, 0.0]  # window start, written, suppressed
        else:
            self._failures.move_to_end(client)
        if entry[1] >= FAILURES_PER_WINDOW:
            entry[2] += 1
            return
        entry[1] += 1
        self._write_failure(client, reason, target, name, token)

    def _write_failure(self, client: str, reason: str, target: str, name: str | None, token: str | None,
                       count: int | None = None) -> None:
        detail: dict[str, Any] = {"route": target}
        if count is not None:
            detail["count"] = count  # failures from this address not written one by one
        self.record("auth", client=client, target=detail, outcome=reason, name=name, token=token)

    # -- reading -----------------------------------------------------------------------

    async def page(self, *, since: float | None = None, until: float | None = None,
                   cursor: int | None = None, limit: int = PAGE_DEFAULT) -> list[dict[str, Any]]:
        """Rows oldest first: ``since <= ts < until``, ``id > cursor``, at most ``limit``.
        Waits for rows queued so far to be committed first."""
        await self.store.drain()
        where, params = ["1 = 1"], []
        if since is not None:
            where.append("ts >= ?")
            params.append(since)
        if until is not None:
            where.append("ts < ?")
            params.append(until)
        if cursor is not None:
            where.append("id > ?")
            params.append(cursor)
        rows = await self.store.query(
            "SELECT id, ts, identity, role, token, client, action, target, outcome FROM audit"
            f" WHERE {' AND '.join(where)} ORDER BY id LIMIT ?", (*params, limit))
        return [row_dict(row) for row in rows]

    # -- retention -----------------------------------------------------------------------

    def start(self) -> None:
        """Prune now and then every PRUNE_EVERY seconds (off the reactor thread)."""
        if self.retention_days and self._pruning is None:
            self._pruning = LoopingCall(self._prune_soon)
            self._pruning.clock = self.clock
            self._pruning.start(PRUNE_EVERY, now=True)

    def stop(self) -> Deferred[Any] | None:
        if self._pruning is not None and self._pruning.running:
            self._pruning.stop()
        self._pruning = None
        return self._prune_running

    def _prune_soon(self) -> None:
        if self._prune_running is not None:
            return
        d = Deferred.fromCoroutine(self.prune())

        def done(result: Any) -> None:
            self._prune_running = None

        d.addErrback(lambda f: _log.failure("pruning the audit trail failed; retrying in an hour", f))
        d.addBoth(done)
        if not d.called:
            self._prune_running = d

    async def prune(self) -> int:
        """Delete rows older than the retention, a chunk per store-thread call; the count."""
        if not self.retention_days:
            return 0
        cutoff = self.wallclock() - self.retention_days * 86400.0
        total = 0
        while True:
            deleted = await self.store.in_store_thread(lambda conn: conn.execute(
                "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE ts < ? ORDER BY id LIMIT ?)",
                (cutoff, PRUNE_CHUNK)).rowcount)
            total += deleted
            if deleted < PRUNE_CHUNK:
                break
        if total:
            self.pruned += total
            _log.info("pruned {n} audit rows older than {days} days", n=total, days=self.retention_days)
        return total


def row_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    """One ``GET /api/audit`` line: ``{id, ts, identity, role, token, client, action, target, outcome}``."""
    target = row[7]
    try:
        target = json.loads(target) if target else {}
    except ValueError:
        target = {}
    return {"id": row[0], "ts": timestamp(row[1]), "identity": row[2], "role": row[3], "token": row[4],
            "client": row[5], "action": row[6], "target": target, "outcome": row[8]}
