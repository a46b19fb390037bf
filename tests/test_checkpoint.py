"""WAL checkpoints on their own thread (spinrt.sessions.checkpoint), against a real SQLite store."""

from __future__ import annotations

import os
import sqlite3

from twisted.internet import reactor, task
from twisted.trial import unittest

from spinrt.sessions.checkpoint import Checkpointer
from spinrt.sessions.store import EventStore

from .support import eventually
from .test_store import store_path

def wal_bytes(path: str) -> int:
    """Size of the WAL file beside the database at ``path`` (0 when none)."""
    try:
        return os.path.getsize(path + "-wal")
    except OSError:
        return 0


ROW = os.urandom(256 * 1024)  # a full-speed stream event's size, and LZ4 cannot shrink it (.rows)


class CheckpointTests(unittest.TestCase):
    timeout = 120

    def open(self, path: str, **kw) -> EventStore:
        store = EventStore(path, reactor, **kw)
        store.open_sync()
        store.start()
        self.addCleanup(lambda: store.close() if store._conn is not None else None)
        store.execute("INSERT INTO sessions(id, name, created) VALUES ('s', 's', 't')")
        return store

    async def test_commits_never_checkpoint_and_the_checkpointer_copies_the_wal(self) -> None:
        path = store_path()
        store = self.open(path)
        self.assertEqual(await store.query("PRAGMA wal_autocheckpoint"), [(0,)])
        for seq in range(1, 161):  # 40 MB: two and a half times SQLite's automatic threshold
            store.append("s", seq, ROW)
        await store.drain()
        self.assertGreater(wal_bytes(path), 40 * 1024 * 1024)  # the writer copied nothing itself
        await eventually(lambda: store.checkpointer.checkpoints >= 1, timeout=30)
        await eventually(lambda: not store.checkpointer._dirty and store.checkpointer._running is None)
        # Everything committed is in the database file now: a checkpoint finds nothing to copy.
        conn = sqlite3.connect(path)
        self.addCleanup(conn.close)
        busy, log, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self.assertEqual((busy, log), (0, copied))
        self.assertEqual(store.flushed_seq("s"), 160)
        self.assertEqual([s for s, _ in await store.read_events("s", 150)], list(range(151, 161)))

    async def test_the_wal_starts_over_once_over_its_limit(self) -> None:
        path = store_path()
        store = self.open(path)
        await store.checkpointer.stop()
        store.checkpointer = Checkpointer(path, reactor, interval=0.05, wal_limit=4 * 1024 * 1024)
        store.checkpointer.start()
        checkpointer = store.checkpointer
        for seq in range(1, 201):  # 50 MB in steps of 8 MB (over the limit), a checkpoint after each
            store.append("s", seq, ROW)
            if seq % 32 == 0:
                await store.drain()
                done = checkpointer.checkpoints
                await eventually(lambda: checkpointer.checkpoints > done, timeout=30)
        await store.drain()
        self.assertGreaterEqual(checkpointer.restarts, 5)
        # The WAL's frames, not its file (that keeps up to journal_size_limit):
        # over 4 MiB at a checkpoint, it starts over at the next commit (else
        # the WAL would hold all 50 MB by the last step).
        self.assertGreater(checkpointer.largest_wal, 8 * 1024 * 1024)
        self.assertLess(checkpointer.largest_wal, 16 * 1024 * 1024, "the WAL kept growing")
        self.assertEqual(store.flushed_seq("s"), 200)
        rows = await store.read_events("s", 0, limit=1000, max_bytes=10**9)
        self.assertEqual([s for s, _ in rows], list(range(1, 201)))
        self.assertTrue(all(body == ROW for _, body in rows))

    async def test_close_leaves_no_wal_and_reopens_with_every_row(self) -> None:
        path = store_path()
        store = self.open(path)
        for seq in range(1, 41):
            store.append("s", seq, ROW)
        await store.close()
        self.assertFalse(os.path.exists(path + "-wal"))
        again = EventStore(path, reactor)
        snapshot = again.open_sync()
        again.start()
        self.addCleanup(again.close)
        self.assertEqual([(s.id, s.last_seq) for s in snapshot.sessions], [("s", 40)])

    async def test_a_failing_checkpoint_is_logged_once_and_retried(self) -> None:
        path = store_path()
        store = self.open(path)
        checkpointer = store.checkpointer
        calls = {"n": 0}
        real = checkpointer._checkpoint_sync

        def flaky() -> bool:
            calls["n"] += 1
            if calls["n"] <= 3:
                raise sqlite3.OperationalError("disk I/O error")
            return real()

        checkpointer._checkpoint_sync = flaky  # type: ignore[method-assign]
        logged: list[dict] = []
        from twisted.logger import globalLogPublisher
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        for seq in range(1, 5):
            store.append("s", seq, ROW)
        await store.drain()
        await eventually(lambda: checkpointer.checkpoints >= 1, timeout=30)
        self.assertGreaterEqual(calls["n"], 4)
        warnings = [e for e in logged if "cannot checkpoint" in e.get("log_format", "")]
        self.assertEqual(len(warnings), 1)
        self.assertIn("disk I/O error", warnings[0]["why"])
        self.assertTrue(any("work again" in e.get("log_format", "") for e in logged))

    def test_a_checkpoint_only_after_a_commit_and_one_at_a_time(self) -> None:
        clock = task.Clock()
        checkpointer = Checkpointer(store_path(), clock, interval=0.25)
        checkpointer._loop.start(0.25, now=False)  # the ticks alone: the thread is not started
        self.addCleanup(checkpointer._loop.stop)
        clock.advance(1.0)
        self.assertIsNone(checkpointer._running)  # nothing committed, nothing to copy
        checkpointer.committed()
        clock.advance(0.25)
        running = checkpointer._running
        self.assertIsNotNone(running)
        checkpointer.committed()
        clock.advance(1.0)
        self.assertIs(checkpointer._running, running)  # the next waits for this one
        self.assertTrue(checkpointer._dirty)
