"""``--history-retention-days``: closed sessions older than that are deleted.

Off by default (0). At start and then every ``EVERY`` seconds, the closed
sessions whose last event is older than the retention are deleted like
``session.delete`` does (events, runs, variables, document, working
directory): the search reads one row per closed session on the store's
thread, the deletion works in chunks there too, so the reactor never waits.
Open sessions are never touched, however old.
"""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import datetime
from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from .sessions.rows import unpack

_log = Logger()

EVERY = 3600.0  # seconds


def _epoch(ts: Any) -> float | None:
    if not isinstance(ts, str):
        return None
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def closed_before(conn: sqlite3.Connection, cutoff: float) -> list[str]:
    """Closed sessions whose last event (or creation, without events) is before ``cutoff``."""
    found = []
    rows = conn.execute(
        "SELECT s.id, s.created, (SELECT body FROM events e WHERE e.session = s.id ORDER BY seq DESC LIMIT 1)"
        " FROM sessions s WHERE s.state = 'closed'")
    for sid, created, body in rows:
        when = None
        if body is not None:
            try:
                when = _epoch(json.loads(unpack(body)).get("ts"))
            except (ValueError, AttributeError):
                when = None
        if when is None:
            when = _epoch(created)
        if when is not None and when < cutoff:
            found.append(sid)
    return found


class HistoryRetention:
    def __init__(self, manager: Any, clock: Any, days: float, wallclock: Callable[[], float] = time.time) -> None:
        self.manager = manager
        self.clock = clock
        self.days = days
        self.wallclock = wallclock
        self.deleted = 0  # sessions deleted since start
        self._loop: LoopingCall | None = None
        self._running: Deferred[Any] | None = None

    def start(self) -> None:
        if self.days and self._loop is None:
            self._loop = LoopingCall(self._soon)
            self._loop.clock = self.clock
            self._loop.start(EVERY, now=True)

    def stop(self) -> Deferred[Any] | None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        return self._running

    def _soon(self) -> None:
        if self._running is not None:
            return
        d = Deferred.fromCoroutine(self.prune())
        d.addErrback(lambda f: _log.failure("pruning old sessions failed; retrying in an hour", f))

        def done(_: Any) -> None:
            self._running = None

        d.addBoth(done)
        if not d.called:
            self._running = d

    async def prune(self) -> list[str]:
        """Delete the closed sessions past the retention; their ids."""
        if not self.days:
            return []
        cutoff = self.wallclock() - self.days * 86400.0
        await self.manager.store.drain()  # closes still queued count
        old = await self.manager.store.in_store_thread(lambda conn: closed_before(conn, cutoff))
        deleted = []
        for sid in old:
            session = self.manager.sessions.get(sid)
            if session is None or session.state != "closed":
                continue
            await self.manager.delete(sid)
            deleted.append(sid)
        if deleted:
            self.deleted += len(deleted)
            _log.info("deleted {n} sessions closed more than {days} days ago", n=len(deleted), days=self.days)
        return deleted
