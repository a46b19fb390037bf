"""WAL checkpoints of the event store, on a thread of their own.

SQLite's automatic checkpoint runs inside the COMMIT that takes the WAL past
``wal_autocheckpoint`` pages, on the committing connection; with
``synchronous=NORMAL`` a checkpoint is also where SQLite waits for the disk
(it syncs the WAL before copying it and the database after). So the store's
writer thread stopped for a disk sync after every 16 MB of output, and that
wait, not SQLite's CPU time, capped a cell's output at about 140 MB/s on the
2-CPU test machine (the same rows written without those syncs: ~500 MB/s).

The writer's connection therefore has ``wal_autocheckpoint=0`` (see
:func:`spinrt.sessions.store.connect`), and a :class:`Checkpointer` runs
``PRAGMA wal_checkpoint(PASSIVE)`` every ``interval`` seconds after commits,
on its own connection and thread. A passive checkpoint never blocks the
writer (https://sqlite.org/c3ref/wal_checkpoint_v2.html), so commits only
append to the WAL. Durability is what ``synchronous=NORMAL`` in WAL mode
gives (https://sqlite.org/pragma.html#pragma_synchronous): a crash of the
daemon loses nothing committed, a power cut may lose the commits since the
last checkpoint (now at most ``interval`` plus one checkpoint, before up to
16 MB of them), and neither corrupts the database.

While output keeps coming faster than the checkpoint copies it, the WAL
cannot start over and grows. Once it holds more than ``wal_limit`` bytes, the
next checkpoint is a RESTART, which waits for the writer to be between
batches, copies what is left (little: the passive ones ran before) and makes
the next commit reuse the WAL from its start; the writer's ``busy_timeout``
covers that wait. ``journal_size_limit`` then shrinks the file.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

_log = Logger()

INTERVAL = 0.25  # seconds between checkpoints while commits come in
WAL_LIMIT = 256 * 1024 * 1024  # bytes of WAL before a checkpoint waits for the writer


class Checkpointer:
    """Checkpoints the WAL of the SQLite database at ``path`` after commits.

    :meth:`committed` marks that the WAL grew; every ``interval`` seconds a
    marked WAL is checkpointed on this object's thread. Errors are logged
    once per run of failures and retried at the next tick: a checkpoint that
    cannot run only lets the WAL grow, it loses nothing."""

    def __init__(self, path: str, reactor: Any, *, interval: float = INTERVAL,
                 wal_limit: int = WAL_LIMIT) -> None:
        self.path = path
        self._reactor = reactor
        self.interval = interval
        self.wal_limit = wal_limit
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name="spin-checkpoint")
        self._conn: sqlite3.Connection | None = None
        self._page_size = 0  # the database's, read when the connection opens
        self._loop = LoopingCall(self._tick)
        self._loop.clock = reactor
        self._dirty = False
        self._running: Deferred[Any] | None = None
        self._failing = False
        self.checkpoints = 0  # completed, since start
        self.restarts = 0  # of them, RESTART checkpoints (the WAL was over wal_limit)
        self.largest_wal = 0  # bytes: the most the WAL held at a checkpoint, since start

    def start(self) -> None:
        if not self._pool.started:
            self._pool.start()
        if not self._loop.running:
            self._loop.start(self.interval, now=False)

    def committed(self) -> None:
        """The store committed a batch: the WAL has frames to copy."""
        self._dirty = True

    def _tick(self) -> None:
        if not self._dirty or self._running is not None:
            return
        self._dirty = False
        d = deferToThreadPool(self._reactor, self._pool, self._checkpoint_sync)
        self._running = d
        d.addCallbacks(self._done, self._failed)

    def _checkpoint_sync(self) -> bool:
        """One checkpoint (store's thread untouched); True when it was a RESTART."""
        if self._conn is None:
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA busy_timeout=5000")
            self._page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])  # fixed at creation
            self._conn = conn
        conn = self._conn
        busy, log_frames, _copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        held = log_frames * self._page_size
        self.largest_wal = max(self.largest_wal, held)  # an int: one store, no lock needed
        if held <= self.wal_limit:
            return False
        conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
        return True

    def _done(self, restarted: bool) -> None:
        self._running = None
        self.checkpoints += 1
        self.restarts += int(restarted)
        if self._failing:
            self._failing = False
            _log.info("WAL checkpoints of the event store work again")

    def _failed(self, failure: Failure) -> None:
        self._running = None
        self._dirty = True  # what was not copied still is not
        if not self._failing:
            self._failing = True
            _log.warn("cannot checkpoint the event store's WAL ({why}); it grows until this clears",
                      why=f"{failure.type.__name__}: {failure.getErrorMessage()}"[:200])

    def stop(self) -> Deferred[None]:
        """Stop ticking, wait for a running checkpoint, close the connection.
        Call before the store's own connection closes: the last connection to
        close checkpoints everything and removes the WAL."""
        if self._loop.running:
            self._loop.stop()
        running = self._running if self._running is not None else succeed(None)

        async def stopping() -> None:
            try:
                await running
            except Exception:
                pass
            if self._conn is not None:
                conn, self._conn = self._conn, None
                await deferToThreadPool(self._reactor, self._pool, conn.close)
            if self._pool.started:
                self._pool.stop()

        return Deferred.fromCoroutine(stopping())
