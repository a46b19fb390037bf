"""The SQLite event store: batching off the reactor thread, backpressure, reopen, migrations."""

from __future__ import annotations

import os
import sqlite3
import tempfile

from twisted.internet import reactor
from twisted.internet.interfaces import IPushProducer
from twisted.trial import unittest
from zope.interface import implementer

from spinrt.sessions import schema
from spinrt.sessions.store import EventStore, StoreError

from .support import eventually


@implementer(IPushProducer)
class Producer:
    def __init__(self) -> None:
        self.paused = 0
        self.resumed = 0

    def pauseProducing(self) -> None:
        self.paused += 1

    def resumeProducing(self) -> None:
        self.resumed += 1

    def stopProducing(self) -> None:
        pass


def store_path() -> str:
    return os.path.join(tempfile.mkdtemp(dir=os.path.abspath(".")), "spin.sqlite3")


class StoreTests(unittest.TestCase):
    timeout = 60

    def open(self, path: str, **kw) -> tuple[EventStore, object]:
        store = EventStore(path, reactor, **kw)
        snapshot = store.open_sync()
        store.start()
        self.addCleanup(lambda: store.close() if store._conn is not None else None)
        return store, snapshot

    async def test_batched_writes_and_reads_in_order(self) -> None:
        path = store_path()
        store, snapshot = self.open(path)
        self.assertEqual(snapshot.sessions, [])
        store.execute("INSERT INTO sessions(id, name, created) VALUES (?, ?, ?)", ("s1", "one", "t"))
        for seq in range(1, 5001):
            store.append("s1", seq, b'{"seq":%d}' % seq)
        self.assertEqual(store.flushed_seq("s1"), 0)  # nothing written on the reactor thread
        await store.drain()
        self.assertEqual(store.flushed_seq("s1"), 5000)
        self.assertEqual(store.pending_bytes, 0)
        rows = await store.read_events("s1", 4990)
        self.assertEqual([s for s, _ in rows], list(range(4991, 5001)))
        self.assertEqual(rows[0][1], b'{"seq":4991}')
        limited = await store.read_events("s1", 0, limit=10_000, max_bytes=100)
        self.assertLess(len(limited), 20)
        await store.close()
        # Reopen: sessions and last seq come back.
        again, snapshot = self.open(path)
        self.assertEqual([(s.id, s.name, s.last_seq) for s in snapshot.sessions], [("s1", "one", 5000)])
        self.assertEqual(again.flushed_seq("s1"), 5000)
        conn = sqlite3.connect(path)
        self.assertEqual(conn.execute("PRAGMA journal_mode").fetchone()[0], "wal")
        self.assertEqual(conn.execute("PRAGMA user_version").fetchone()[0], schema.SCHEMA_VERSION)
        conn.close()

    async def test_producers_pause_above_high_water_and_resume_below_low(self) -> None:
        store, _ = self.open(store_path(), high_water=10_000, low_water=2_000, batch_interval=0.05)
        producer = Producer()
        store.add_producer(producer)
        store.execute("INSERT INTO sessions(id, name, created) VALUES ('s', 's', 't')")
        for seq in range(1, 30):
            store.append("s", seq, b"x" * 1000)
        self.assertEqual(producer.paused, 1)
        self.assertTrue(store.paused)
        late = Producer()
        store.add_producer(late)
        self.assertEqual(late.paused, 1)  # joins paused
        await eventually(lambda: producer.resumed == 1)
        self.assertFalse(store.paused)
        self.assertEqual(late.resumed, 1)
        store.remove_producer(producer)
        await store.drain()
        self.assertEqual(store.flushed_seq("s"), 29)

    async def test_a_row_that_cannot_be_written_never_blocks_the_others(self) -> None:
        store, _ = self.open(store_path())
        store.execute("INSERT INTO sessions(id, name, created) VALUES ('s', 's', 't')")
        store.append("s", 1, b"one")
        await store.drain()
        store.append("s", 1, b"duplicate seq")  # violates the unique index
        store.append("s", 2, b"two")
        store.execute("INSERT INTO sessions(id, name, created) VALUES ('u', ?, 't')", ("bad \ud800 name",))
        store.append("u", 1, b"three")
        await store.drain()
        self.assertIsNone(store.fault)
        self.assertEqual((store.flushed_seq("s"), store.flushed_seq("u")), (2, 1))
        self.assertEqual(await store.read_events("s", 0), [(1, b"one"), (2, b"two")])
        self.assertEqual(await store.read_events("u", 0), [(1, b"three")])
        # The surrogate was mended, the duplicate skipped and recorded.
        self.assertEqual(await store.query("SELECT name FROM sessions WHERE id = 'u'"), [("bad \ufffd name",)])
        self.assertEqual(store.rows_failed, 1)
        failures = await store.query("SELECT session, seq, statement, error FROM write_failures")
        self.assertEqual(len(failures), 1)
        self.assertEqual(failures[0][:3], ("s", 1, "event"))
        self.assertIn("IntegrityError", failures[0][3])
        self.assertNotIn("duplicate seq", failures[0][3])  # never a row's values
        await store.close()
        self.assertEqual(store.lost, 0)

    def test_unopenable_store_is_a_clear_error(self) -> None:
        path = store_path()
        with open(path, "wb") as f:
            f.write(b"this is not a database" * 100)
        store = EventStore(path, reactor)
        with self.assertRaises(StoreError) as caught:
            store.open_sync()
        self.assertIn(path, str(caught.exception))

    def test_newer_schema_is_refused(self) -> None:
        path = store_path()
        conn = sqlite3.connect(path)
        conn.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION + 1}")
        conn.close()
        with self.assertRaises(StoreError) as caught:
            EventStore(path, reactor).open_sync()
        self.assertIn("newer", str(caught.exception))


class MigrationTests(unittest.TestCase):
    timeout = 60

    def test_version_1_store_upgrades_keeping_every_session_and_event(self) -> None:
        path = store_path()
        # A store exactly as schema version 1 left it.
        conn = sqlite3.connect(path, isolation_level=None)
        schema.MIGRATIONS[1](conn)
        conn.execute("PRAGMA user_version = 1")
        for s in range(3):
            conn.execute("INSERT INTO sessions(id, name, created, state) VALUES (?, ?, ?, ?)",
                         (f"ss_{s}", f"session {s}", f"2026-01-0{s + 1}", "open" if s else "closed"))
            conn.executemany("INSERT INTO events(session, seq, body) VALUES (?, ?, ?)",
                             [(f"ss_{s}", seq, b'{"seq":%d}' % seq) for seq in range(1, 101)])
        conn.execute("INSERT INTO runs(id, session, state) VALUES ('run_x', 'ss_1', 'running')")
        conn.close()

        store = EventStore(path, reactor)
        snapshot = store.open_sync()
        self.assertEqual([(s.id, s.name, s.state, s.last_seq) for s in snapshot.sessions], [
            ("ss_0", "session 0", "closed", 100), ("ss_1", "session 1", "open", 100), ("ss_2", "session 2", "open", 100),
        ])
        self.assertEqual([(r.id, r.state, r.pgid) for r in snapshot.unfinished_runs], [("run_x", "running", None)])
        self.assertEqual(snapshot.variables, [])
        check = sqlite3.connect(path)
        self.assertEqual(check.execute("PRAGMA user_version").fetchone()[0], schema.SCHEMA_VERSION)
        self.assertEqual(check.execute("SELECT COUNT(*) FROM events").fetchone()[0], 300)
        bodies = [b for (b,) in check.execute("SELECT body FROM events WHERE session = 'ss_2' ORDER BY seq")]
        self.assertEqual(bodies, [b'{"seq":%d}' % seq for seq in range(1, 101)])
        check.execute("INSERT INTO variables(session, name, value) VALUES ('ss_1', 'x', '1')")  # v2 table works
        check.close()
        store._conn.close()

    def test_failed_migration_rolls_back(self) -> None:
        path = store_path()
        conn = sqlite3.connect(path, isolation_level=None)
        schema.MIGRATIONS[1](conn)
        conn.execute("PRAGMA user_version = 1")
        conn.execute("CREATE TABLE variables (x)")  # makes migration 2 fail halfway
        with self.assertRaises(sqlite3.OperationalError):
            schema.migrate(conn)
        self.assertEqual(conn.execute("PRAGMA user_version").fetchone()[0], 1)
        columns = [row[1] for row in conn.execute("PRAGMA table_info(runs)")]
        self.assertNotIn("pgid", columns)
        conn.close()
