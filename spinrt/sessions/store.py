"""The event store: SQLite under SPIN_HOME/var, the single source of truth.

All SQLite work happens on one dedicated thread; the reactor only queues
writes and receives Deferreds. Writes are group-committed in small batches
(``batch_interval``), so a ``kill -9`` loses at most the last batch and never
corrupts the database (WAL).

Backpressure: while more than ``high_water`` bytes wait to be committed,
every registered output producer is paused; they resume below ``low_water``.
Output that cannot be paused (a kernel's iopub) is not held in memory
beyond that: while more than ``high_water`` bytes wait in memory, further
operations go to a spill file on disk and come back in order (:mod:`.spool`).

Faults (see :mod:`.writer`): a row that cannot be written is skipped and
recorded, the rest of its batch is committed. A store that cannot write at
all keeps every pending row (in memory up to ``high_water``, the rest in
the spill file), retries with a growing pause (up to
``MAX_RETRY_DELAY``), reports itself through :attr:`EventStore.fault` (the
runtime's ``/readyz`` and ``/api/status``), logs once per incident, and
resumes by itself when the cause clears.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any, Callable, Iterable, Iterator

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IPushProducer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from .checkpoint import Checkpointer
from .rows import unpack
from .schema import migrate
from .spool import Spool, op_size
from .writer import BatchResult, StoreUnavailable, describe, write_batch

_log = Logger()

FIRST_RETRY_DELAY = 0.25  # seconds; doubles per failed attempt
MAX_RETRY_DELAY = 5.0
CLOSE_TIMEOUT_WHEN_FAILING = 3.0  # a store already failing gets one more chance at stop
WAL_KEEP = 64 * 1024 * 1024  # bytes of WAL file kept after it starts over


@attrs.define
class StoredSession:
    id: str
    name: str
    created: str
    state: str
    last_seq: int
    notebook: str | None = None


@attrs.define
class StoredRun:
    id: str
    session: str
    state: str
    pgid: int | None = None


@attrs.define
class Snapshot:
    sessions: list[StoredSession]
    unfinished_runs: list[StoredRun]
    variables: list[tuple[str, str, Any]]  # (session, name, value)


class StoreError(Exception):
    """The store cannot be opened or used."""


@attrs.define
class StoreFault:
    """Why the store cannot write now, since when (epoch seconds), and how
    many attempts failed."""

    reason: str
    since: float
    attempts: int = 1

    def describe(self, waiting: int) -> str:
        return (f"the event store cannot write: {self.reason} "
                f"({self.attempts} attempts since {_iso(self.since)}; {waiting} changes waiting)")


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    # Output rows are large: 16 KiB pages write them markedly faster than 4 KiB
    # (only takes effect when the file is created).
    conn.execute("PRAGMA page_size=16384")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=5000")
    # Checkpoints run on their own thread (.checkpoint): an automatic one
    # would make a commit wait for the disk. The WAL shrinks back after one.
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute(f"PRAGMA journal_size_limit={WAL_KEEP}")
    return conn


class EventStore:
    def __init__(
        self,
        path: str,
        reactor: Any,
        *,
        batch_interval: float = 0.02,
        batch_max_rows: int = 2000,
        batch_max_bytes: int = 4 * 1024 * 1024,
        high_water: int = 16 * 1024 * 1024,
        low_water: int = 8 * 1024 * 1024,
    ) -> None:
        self.path = path
        self._reactor = reactor
        self._batch_interval = batch_interval
        self._batch_max_rows = batch_max_rows
        self._batch_max_bytes = batch_max_bytes
        self.high_water = high_water
        self.low_water = low_water
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name="spin-store")
        self.checkpointer = Checkpointer(path, reactor)
        self._conn: sqlite3.Connection | None = None
        # Pending operations in order: ("event", sid, seq, body) or ("sql", sql, params).
        self._pending: list[tuple[Any, ...]] = []
        # Bytes queued for the next batch, and bytes of the batch being written:
        # the next batch fills while the thread writes the current one.
        self._queued_bytes = 0
        self._inflight_bytes = 0
        self._flushed: dict[str, int] = {}
        # Operations queued while the memory backlog is over high_water, in
        # order after _pending; per session, the last event seq sent there.
        self._spool = Spool(path + ".spool", reactor, self._spool_ready)
        self._spooled: dict[str, int] = {}
        self._taking = False
        self._commit_waiters: list[tuple[str, int, Deferred[None]]] = []
        self._timer: Any = None
        self._flushing: Deferred[None] | None = None
        self._producers: set[IPushProducer] = set()
        self._paused = False
        self._flush_listeners: list[Callable[[dict[str, int]], None]] = []
        self._closed = False
        self._drained: list[Deferred[None]] = []
        self.rows_written = 0
        self.rows_failed = 0  # rows skipped as poison (see .writer), since start
        self.fault: StoreFault | None = None
        self.lost = 0  # changes still unwritten when close() gave up
        # Called with each committed batch's seconds and rows (spinrt.metrics).
        self.on_commit: Callable[[float, int], None] | None = None
        self._flush_started = 0.0

    # -- lifecycle -------------------------------------------------------------

    def _in_thread(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        return deferToThreadPool(self._reactor, self._pool, f, *args)

    def open_sync(self) -> Snapshot:
        """Open (and migrate) the database; called once, before the reactor runs."""
        snapshot = self._open_sync()
        self._spool.remove_stale()
        for s in snapshot.sessions:
            self._flushed[s.id] = s.last_seq
        return snapshot

    def start(self) -> None:
        """Start the store's thread; queued writes flush from now on."""
        if not self._pool.started:
            self._pool.start()
        self.checkpointer.start()

    def _open_sync(self) -> Snapshot:
        try:
            conn = _connect(self.path)
            migrate(conn)
        except sqlite3.Error as e:
            raise StoreError(f"cannot open the event store {self.path}: {e}") from e
        self._conn = conn
        sessions = [
            StoredSession(id=r[0], name=r[1], created=r[2], state=r[3], last_seq=r[4], notebook=r[5])
            for r in conn.execute(
                "SELECT s.id, s.name, s.created, s.state,"
                " COALESCE((SELECT MAX(seq) FROM events e WHERE e.session = s.id), 0), s.notebook"
                " FROM sessions s ORDER BY s.created, s.id"
            )
        ]
        runs = [
            StoredRun(id=r[0], session=r[1], state=r[2], pgid=r[3])
            for r in conn.execute(
                "SELECT id, session, state, pgid FROM runs WHERE state != 'finished'"
                " ORDER BY rowid"
            )
        ]
        variables = [
            (r[0], r[1], json.loads(r[2]))
            for r in conn.execute("SELECT session, name, value FROM variables ORDER BY rowid")
        ]
        return Snapshot(sessions=sessions, unfinished_runs=runs, variables=variables)

    def query_sync(self, sql: str, params: Iterable[Any] = ()) -> Iterator[tuple[Any, ...]]:
        """At restore, before the store's thread starts: the rows of a
        read-only query, as they come (consume them before the next query)."""
        assert self._conn is not None and not self._pool.started
        cursor = self._conn.execute(sql, tuple(params))
        try:
            yield from cursor
        finally:
            cursor.close()

    def close(self, timeout: float = 10.0) -> Deferred[None]:
        """Commit everything pending, then close the database and the thread.

        A store that keeps failing (disk full) cannot hold up shutdown for
        ever: after ``timeout`` the loss is logged with its size and we close."""
        self._closed = True
        if self.fault is not None:
            timeout = min(timeout, CLOSE_TIMEOUT_WHEN_FAILING)

        async def closing() -> None:
            self.start()
            drained = self.drain()
            drained.addTimeout(timeout, self._reactor)
            try:
                await drained
            except Exception:
                self.lost = len(self._pending) + self._spool.ops
                _log.error(
                    "could not store the last {n} changes ({size} bytes) before stopping: {why}",
                    n=self.lost, size=self.pending_bytes,
                    why=self.fault.reason if self.fault is not None else "timed out",
                )
            if self._timer is not None and self._timer.active():
                self._timer.cancel()
            if self._flushing is not None:
                try:
                    await self._flushing
                except Exception:
                    pass
            # Readers waiting for an event that will now never be committed
            # (the drain failed) learn so, instead of waiting forever.
            waiting, self._commit_waiters = self._commit_waiters, []
            for session, seq, committed in waiting:
                committed.errback(StoreError(f"the store closed before event {seq} of session {session} was stored"))
            # The writer's connection closes last: that copies the rest of
            # the WAL into the database and removes it.
            await self.checkpointer.stop()
            if self._conn is not None:
                await self._in_thread(self._conn.close)
                self._conn = None
            self._pool.stop()
            await self._spool.close()

        return Deferred.fromCoroutine(closing())

    # -- writes ----------------------------------------------------------------

    def append(self, session: str, seq: int, body: bytes) -> None:
        self._queue(("event", session, seq, body), len(body))

    def execute(self, sql: str, params: Iterable[Any] = ()) -> None:
        """Queue a statement to commit in order with the events around it."""
        self._queue(("sql", sql, tuple(params)), 64)

    @property
    def pending_bytes(self) -> int:
        """Bytes queued and not yet committed, in memory or in the spill file."""
        return self._queued_bytes + self._inflight_bytes + self._spool.bytes

    @property
    def memory_bytes(self) -> int:
        """Bytes of pending operations held in memory (at most about
        ``high_water`` plus two batches, however much is spooled)."""
        return self._queued_bytes + self._inflight_bytes + self._spool.memory_bytes

    @property
    def pending_changes(self) -> int:
        return len(self._pending) + self._spool.ops

    def _queue(self, op: tuple[Any, ...], size: int) -> None:
        spool = self._spool
        if spool.ops or self._queued_bytes + self._inflight_bytes > self.high_water:
            # Once one operation is spooled, every later one is, until the
            # spool is read back: the order of all operations is kept.
            spool.add(op, size)
            if op[0] == "event":
                self._spooled[op[1]] = op[2]
        else:
            self._pending.append(op)
            self._queued_bytes += size
        if self.pending_bytes > self.high_water and not self._paused:
            self._paused = True
            for p in list(self._producers):
                p.pauseProducing()
        if self._timer is None and self._flushing is None:
            self._timer = self._reactor.callLater(self._batch_interval, self._flush)

    def drain(self) -> Deferred[None]:
        """Fires once everything queued so far is committed."""
        if not self._pending and self._flushing is None and not self._spool.ops:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._drained.append(d)
        if self._flushing is None:
            if self._timer is not None and self._timer.active():
                self._timer.cancel()
            self._flush()
        return d

    def _flush(self) -> None:
        self._timer = None
        self._take_spooled()
        if not self._pending or self._flushing is not None:
            return
        count = size = 0
        for op in self._pending:
            count += 1
            size += op_size(op)
            if count >= self._batch_max_rows or size >= self._batch_max_bytes:
                break
        batch = self._pending[:count]
        del self._pending[:count]
        self._queued_bytes -= size
        self._inflight_bytes = size
        self._flush_started = time.monotonic()
        d = self._in_thread(self._write_sync, batch)
        self._flushing = d
        d.addCallbacks(self._flushed_ok, self._flush_failed, callbackArgs=(size,), errbackArgs=(batch, size))

    def _take_spooled(self) -> None:
        """Read spooled operations back (on the spool's thread) once the
        memory queue holds less than a batch; they follow what it holds."""
        spool = self._spool
        if not spool.ops or self._taking or self._queued_bytes >= self._batch_max_bytes:
            return
        if spool.retry_due():
            spool.flush_buffer()
        taking = spool.take(self._batch_max_bytes)
        if taking is None:
            return  # a write is on its way to the file: _spool_ready comes next
        self._taking = True
        taking.addCallback(self._took_spooled)

    def _took_spooled(self, ops: list[tuple[tuple[Any, ...], int]]) -> None:
        self._taking = False
        for op, size in ops:
            self._pending.append(op)
            self._queued_bytes += size
        if self._flushing is not None:
            return  # _after_flush goes on
        if ops:
            self._spool_ready()
        elif self._timer is None:
            self._timer = self._reactor.callLater(FIRST_RETRY_DELAY, self._flush)  # the read failed

    def _spool_ready(self) -> None:
        if self._flushing is None and not self._taking:
            if self._timer is not None and self._timer.active():
                self._timer.cancel()
            self._flush()

    def _write_sync(self, batch: list[tuple[Any, ...]]) -> BatchResult:
        assert self._conn is not None
        return write_batch(self._conn, batch)

    def _flushed_ok(self, result: BatchResult, size: int) -> None:
        self._flushing = None
        self._inflight_bytes = 0
        self.rows_written += result.written
        self.checkpointer.committed()
        if self.on_commit is not None:
            self.on_commit(time.monotonic() - self._flush_started, result.written)
        if result.failures:
            self.rows_failed += len(result.failures)
            first = result.failures[0]
            _log.error(
                "the event store skipped {n} change(s) it cannot write and kept the rest;"
                " first: {what}: {error}",
                n=len(result.failures), error=first.error,
                what=f"session {first.session} event {first.seq}" if first.seq is not None else first.statement,
            )
        if self.fault is not None:
            _log.info("the event store writes again after {s:.1f} s ({n} failed attempts)",
                      s=time.time() - self.fault.since, n=self.fault.attempts)
            self.fault = None
        self._flushed.update(result.last)
        if self._commit_waiters:
            waiting, self._commit_waiters = self._commit_waiters, []
            for waiter in waiting:
                if self._flushed.get(waiter[0], 0) >= waiter[1]:
                    waiter[2].callback(None)
                else:
                    self._commit_waiters.append(waiter)
        for listener in list(self._flush_listeners):
            listener(result.last)
        self._after_flush()

    def _flush_failed(self, failure: Failure, batch: list[tuple[Any, ...]], size: int) -> None:
        # Keep the batch: nothing is dropped. Retry after a growing pause;
        # producers stay paused once the backlog is large.
        self._flushing = None
        self._pending[:0] = batch
        self._inflight_bytes = 0
        self._queued_bytes += size
        err = failure.value
        reason = err.reason if isinstance(err, StoreUnavailable) else describe(err)
        fault = self.fault
        if fault is None or fault.reason != reason:
            # Once per incident (and when its cause changes), not per retry.
            if isinstance(err, StoreUnavailable):
                _log.error("the event store cannot write: {reason}; {n} changes wait;"
                           " retrying until it can", reason=reason, n=self.pending_changes)
            else:
                _log.failure("the event store failed unexpectedly; retrying", failure)
            self.fault = StoreFault(reason=reason, since=fault.since if fault else time.time(),
                                    attempts=fault.attempts + 1 if fault else 1)
        else:
            fault.attempts += 1
        delay = min(MAX_RETRY_DELAY, FIRST_RETRY_DELAY * 2 ** (self.fault.attempts - 1))
        if self._drained:
            delay = min(delay, FIRST_RETRY_DELAY)
        self._timer = self._reactor.callLater(delay, self._flush)

    def readiness(self) -> str | None:
        """None while the store writes; else one line saying why it cannot."""
        if self.fault is None:
            return None
        return self.fault.describe(self.pending_changes)

    def status(self) -> dict[str, Any]:
        """The store's part of ``/api/status``."""
        return {
            "writable": self.fault is None,
            "error": None if self.fault is None else self.fault.reason,
            "failing_since": None if self.fault is None else _iso(self.fault.since),
            "pending_bytes": self.pending_bytes,
            "pending_changes": self.pending_changes,
            "spooled_bytes": self._spool.bytes,
            "paused": self.paused,
            "rows_written": self.rows_written,
            "rows_skipped": self.rows_failed,
        }

    def _after_flush(self) -> None:
        if self._paused and self.pending_bytes < self.low_water:
            self._paused = False
            for p in list(self._producers):
                p.resumeProducing()
        if self._pending or self._spool.ops:
            # A backlog goes out at once; a trickle waits for the group commit.
            if self._drained or self._queued_bytes >= 64 * 1024 or self._paused or self._spool.ops:
                self._flush()
            elif self._timer is None:
                self._timer = self._reactor.callLater(self._batch_interval, self._flush)
        else:
            drained, self._drained = self._drained, []
            for d in drained:
                d.callback(None)

    def flushed_seq(self, session: str) -> int:
        """The session's highest committed seq (rows skipped as poison count)."""
        return self._flushed.get(session, 0)

    def released_seq(self, session: str) -> int:
        """The session's highest seq memory need not keep for readers: committed,
        or in the spill file (or queued before something that is). Reading
        such an event (:meth:`read_events`) waits until it is committed."""
        return max(self._flushed.get(session, 0), self._spooled.get(session, 0))

    def on_flush(self, listener: Callable[[dict[str, int]], None]) -> None:
        self._flush_listeners.append(listener)

    # -- backpressure ------------------------------------------------------------

    def add_producer(self, producer: IPushProducer) -> None:
        self._producers.add(producer)
        if self._paused:
            producer.pauseProducing()

    def remove_producer(self, producer: IPushProducer) -> None:
        self._producers.discard(producer)

    @property
    def paused(self) -> bool:
        return self._paused

    # -- reads -------------------------------------------------------------------

    def read_events(
        self, session: str, after: int, limit: int = 5000, max_bytes: int = 4 * 1024 * 1024
    ) -> Deferred[list[tuple[int, bytes]]]:
        """Committed events with seq > after, oldest first (bounded batch).
        When event ``after + 1`` is released (:meth:`released_seq`) but not
        yet committed, the read waits for its commit."""
        if self._flushed.get(session, 0) <= after < self._spooled.get(session, 0):
            committed: Deferred[None] = Deferred()
            self._commit_waiters.append((session, after + 1, committed))
            return committed.addCallback(
                lambda _: self._in_thread(self._read_sync, session, after, limit, max_bytes))
        return self._in_thread(self._read_sync, session, after, limit, max_bytes)

    def _read_sync(
        self, session: str, after: int, limit: int, max_bytes: int
    ) -> list[tuple[int, bytes]]:
        assert self._conn is not None
        out: list[tuple[int, bytes]] = []
        total = 0
        cursor = self._conn.execute(
            "SELECT seq, body FROM events WHERE session = ? AND seq > ? ORDER BY seq LIMIT ?",
            (session, after, limit),
        )
        for seq, body in cursor:
            frame = unpack(body)  # max_bytes counts what is sent, not what is stored
            out.append((seq, frame))
            total += len(frame)
            if total >= max_bytes:
                break
        cursor.close()
        return out

    def in_store_thread(self, work: Callable[[sqlite3.Connection], Any]) -> Deferred[Any]:
        """Run ``work(connection)`` on the store's thread, in turn with the
        batched writes (so it never sees half a batch): for maintenance such as
        pruning, each statement committing on its own (autocommit). Keep each
        call short: writes wait for it."""

        def run() -> Any:
            assert self._conn is not None
            return work(self._conn)

        return self._in_thread(run)

    async def delete_session(self, session: str, chunk: int = 5000) -> int:
        """Remove a session and everything stored of it, for good: its events
        (in chunks, each its own transaction, so writes wait at most one
        chunk), then its runs, variables, document and row. The caller makes
        sure nothing more is written for it. Returns the events deleted."""
        await self.drain()
        deleted = 0
        while True:
            count = await self.in_store_thread(lambda conn: conn.execute(
                "DELETE FROM events WHERE rowid IN (SELECT rowid FROM events WHERE session = ? LIMIT ?)",
                (session, chunk)).rowcount)
            deleted += count
            if count < chunk:
                break

        def rest(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN")
            try:
                for table in ("runs", "variables", "document_events", "documents"):
                    conn.execute(f"DELETE FROM {table} WHERE session = ?", (session,))
                conn.execute("DELETE FROM sessions WHERE id = ?", (session,))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        await self.in_store_thread(rest)
        self._flushed.pop(session, None)
        self._spooled.pop(session, None)
        return deleted

    def query(self, sql: str, params: Iterable[Any] = ()) -> Deferred[list[tuple[Any, ...]]]:
        """Run a read-only query on the store thread; it sees committed rows only."""

        def run() -> list[tuple[Any, ...]]:
            assert self._conn is not None
            return list(self._conn.execute(sql, tuple(params)))

        return self._in_thread(run)
