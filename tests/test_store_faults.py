"""The event store broken on purpose: poisoned rows, injected errors, a full
disk and a read-only mount on a real tmpfs, and a stop that cannot save.

What must hold every time: no other row or session loses an event, the fault
is reported (/readyz 503, /api/status, one log line per incident), writes
resume by themselves when the cause clears, and a stop that leaves events
unsaved exits non-zero.
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import subprocess
import tempfile
from typing import Any

import treq
from twisted.internet import reactor
from twisted.logger import globalLogPublisher
from twisted.web.client import HTTPConnectionPool
from twisted.trial import unittest

from spinrt.sessions import schema
from spinrt.sessions.store import EventStore, StoreError
from spinrt.sessions.writer import StoreUnavailable, write_batch

from . import needs
from .support import TOKEN, Client, DaemonProcess, eventually, start_runtime, ws_url


def new_db() -> sqlite3.Connection:
    path = os.path.join(tempfile.mkdtemp(dir=os.path.abspath(".")), "w.sqlite3")
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    schema.migrate(conn)
    return conn


class Flaky:
    """A connection that fails the statements ``fails(sql, params)`` picks,
    with ``error``; everything else goes to the real connection."""

    def __init__(self, conn: sqlite3.Connection, fails: Any, error: Any) -> None:
        self.conn = conn
        self.fails = fails
        self.error = error

    @property
    def in_transaction(self) -> bool:
        return self.conn.in_transaction

    def execute(self, sql: str, params: Any = ()) -> Any:
        if self.fails(sql, params):
            raise self.error
        return self.conn.execute(sql, params)

    def executemany(self, sql: str, rows: Any) -> Any:
        rows = list(rows)
        for row in rows:
            if self.fails(sql, row):
                raise self.error
        return self.conn.executemany(sql, rows)

    def close(self) -> None:
        self.conn.close()


def session_row(sid: str, name: str = "n") -> tuple[Any, ...]:
    return ("sql", "INSERT INTO sessions(id, name, created) VALUES (?, ?, 't')", (sid, name))


def events_of(conn: Any, sid: str) -> list[tuple[int, bytes]]:
    raw = conn.conn if isinstance(conn, Flaky) else conn
    return [(s, bytes(b)) for s, b in raw.execute(
        "SELECT seq, body FROM events WHERE session = ? ORDER BY seq", (sid,))]


class WriteBatchTests(unittest.TestCase):
    """One batch: the poison is skipped or mended, the rest is committed."""

    def test_lone_surrogates_are_mended_not_dropped(self) -> None:
        conn = new_db()
        for i, bad in enumerate(("\ud800", "x\udfff", "\udc00\ud800", "tail \udbff")):
            result = write_batch(conn, [session_row("a" + bad, bad), ("event", "b", i + 1, b"{}")])
            self.assertEqual((result.written, result.failures), (2, []))
        names = [n for (n,) in conn.execute("SELECT name FROM sessions ORDER BY rowid")]
        self.assertEqual(names, ["\ufffd", "x\ufffd", "\ufffd\ufffd", "tail \ufffd"])

    def test_duplicate_event_is_skipped_and_recorded_the_rest_written(self) -> None:
        conn = new_db()
        write_batch(conn, [("event", "s", 1, b"one")])
        result = write_batch(conn, [("event", "t", 1, b"t1"), ("event", "s", 1, b"again"),
                                    ("event", "s", 2, b"two"), session_row("x")])
        self.assertEqual(result.written, 3)
        self.assertEqual([(f.session, f.seq, f.statement) for f in result.failures], [("s", 1, "event")])
        self.assertEqual(result.last, {"t": 1, "s": 2})
        self.assertEqual(events_of(conn, "s"), [(1, b"one"), (2, b"two")])
        self.assertEqual(events_of(conn, "t"), [(1, b"t1")])
        recorded = list(conn.execute("SELECT session, seq, statement, error FROM write_failures"))
        self.assertEqual(len(recorded), 1)
        self.assertIn("IntegrityError", recorded[0][3])

    def test_an_injected_error_in_one_row_skips_only_that_row(self) -> None:
        for error in (RuntimeError("boom"), ValueError("bad value"), sqlite3.InterfaceError("bind")):
            conn = Flaky(new_db(), lambda sql, p: "poison" in str(p), error)
            result = write_batch(conn, [("event", "s", 1, b"a"), session_row("poison"),
                                        ("event", "s", 2, b"b"), session_row("fine")])
            self.assertEqual(result.written, 3, error)
            self.assertEqual(len(result.failures), 1)
            self.assertIn(type(error).__name__, result.failures[0].error)
            self.assertNotIn("poison", result.failures[0].error)  # never a row's values
            self.assertIn("INSERT INTO sessions", result.failures[0].statement)
            self.assertEqual(events_of(conn, "s"), [(1, b"a"), (2, b"b")])

    def test_a_store_error_writes_nothing_and_says_why(self) -> None:
        for error, words in ((sqlite3.OperationalError("database or disk is full"), "disk is full"),
                             (sqlite3.OperationalError("attempt to write a readonly database"), "readonly"),
                             (OSError(errno.EIO, "I/O error"), "I/O error")):
            conn = Flaky(new_db(), lambda sql, p: "sessions" in sql, error)
            with self.assertRaises(StoreUnavailable) as caught:
                write_batch(conn, [("event", "s", 1, b"a"), session_row("x"), ("event", "s", 2, b"b")])
            self.assertIn(words, caught.exception.reason)
            self.assertEqual(events_of(conn, "s"), [])  # all or nothing: the batch is retried whole
            self.assertFalse(conn.in_transaction)

    def test_every_row_failing_alike_is_the_store_not_the_rows(self) -> None:
        conn = Flaky(new_db(), lambda sql, p: True, RuntimeError("the disk went away"))
        with self.assertRaises(StoreUnavailable) as caught:
            write_batch(conn, [("event", "s", 1, b"a"), ("event", "s", 2, b"b")])
        self.assertIn("the disk went away", caught.exception.reason)
        self.assertEqual(events_of(conn, "s"), [])


class StoreFaultTests(unittest.TestCase):
    """The store's reaction over time: report, log once, retry, recover."""

    timeout = 60

    def setUp(self) -> None:
        self.logged: list[dict] = []
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)

    def store_lines(self, words: str) -> list[dict]:
        from twisted.logger import formatEvent
        return [e for e in self.logged if words in (formatEvent(e) or "")]

    async def test_injected_fault_is_reported_once_then_recovers_losing_nothing(self) -> None:
        path = os.path.join(tempfile.mkdtemp(dir=os.path.abspath(".")), "s.sqlite3")
        store = EventStore(path, reactor)
        store.open_sync()
        store.start()
        real = store._conn
        broken = {"on": True}
        store._conn = Flaky(real, lambda sql, p: broken["on"],
                            sqlite3.OperationalError("database or disk is full"))
        for sid in ("one", "two"):
            store.execute("INSERT INTO sessions(id, name, created) VALUES (?, ?, 't')", (sid, sid))
        for seq in range(1, 201):
            store.append("one" if seq % 2 else "two", (seq + 1) // 2, b'{"n":%d}' % seq)
        await eventually(lambda: store.fault is not None and store.fault.attempts >= 4, timeout=15)
        self.assertIn("database or disk is full", store.readiness())
        self.assertFalse(store.status()["writable"])
        self.assertEqual(len(self.store_lines("cannot write")), 1, "one log line per incident")
        broken["on"] = False
        await eventually(lambda: store.fault is None, timeout=10)
        await store.drain()
        self.assertIsNone(store.readiness())
        self.assertEqual(len(self.store_lines("writes again")), 1)
        for sid, first in (("one", 1), ("two", 2)):
            self.assertEqual([s for s, _ in events_of(real, sid)], list(range(1, 101)))
            self.assertEqual(events_of(real, sid)[0][1], b'{"n":%d}' % first)
        await store.close()
        self.assertEqual(store.lost, 0)

    async def test_close_of_a_store_that_cannot_write_counts_the_loss(self) -> None:
        path = os.path.join(tempfile.mkdtemp(dir=os.path.abspath(".")), "s.sqlite3")
        store = EventStore(path, reactor)
        store.open_sync()
        store.start()
        store._conn = Flaky(store._conn, lambda sql, p: True, sqlite3.OperationalError("disk I/O error"))
        for seq in range(1, 11):
            store.append("s", seq, b"x")
        await eventually(lambda: store.fault is not None)
        await store.close(timeout=1.0)
        self.assertEqual(store.lost, 10)
        self.assertTrue(self.store_lines("could not store the last 10 changes"))

    async def test_a_read_waiting_for_a_spilled_event_fails_when_the_store_closes_without_it(self) -> None:
        """An event in the spill file is read only once committed; if the
        store closes without committing it, the read fails with a clear
        error instead of waiting forever."""
        path = os.path.join(tempfile.mkdtemp(dir=os.path.abspath(".")), "s.sqlite3")
        store = EventStore(path, reactor, high_water=1024, low_water=512)
        store.open_sync()
        store.start()
        store._conn = Flaky(store._conn, lambda sql, p: True, sqlite3.OperationalError("disk I/O error"))
        for seq in range(1, 41):
            store.append("s", seq, b"x" * 100)  # past high_water: the later ones go to the spill file
        await eventually(lambda: store.released_seq("s") > store.flushed_seq("s"))
        reading = store.read_events("s", store.flushed_seq("s"))
        self.assertFalse(reading.called)
        await store.close(timeout=1.0)
        failure = self.failureResultOf(reading, StoreError)
        self.assertIn("closed before event", str(failure.value))


# -- a real filesystem that fills up or turns read-only ---------------------------


def tiny_mount(testcase: unittest.TestCase, where: str, size: str = "32m") -> str:
    """A tmpfs of ``size`` at ``where`` (created); unmounted at cleanup. Needs
    root (CI runs as root): elsewhere the test is skipped, under CI it fails."""
    os.makedirs(where, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", where],
                          capture_output=True, text=True)
    needs.require(testcase, None if done.returncode == 0 else f"cannot mount a tmpfs: {done.stderr.strip()}",
                  "full-disk tests")
    testcase.addCleanup(lambda: subprocess.run(["umount", "-l", where], capture_output=True))
    return where


def home_with_tiny_var(testcase: unittest.TestCase) -> tuple[str, str]:
    """SPIN_HOME on the ordinary disk (logs go there), its var/ (the store) on a tiny tmpfs."""
    home = tempfile.mkdtemp(prefix="spin-home-", dir=os.path.abspath("."))
    return home, tiny_mount(testcase, os.path.join(home, "var"))


def fill(directory: str) -> str:
    """Write a file until the filesystem is full; returns its path."""
    path = os.path.join(directory, "filler")
    chunk = b"\0" * 65536
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
    with open(path, "ab", buffering=0) as f:  # the last few bytes too
        try:
            while True:
                f.write(b"\0")
        except OSError:
            pass
    return path


class FullDiskTests(unittest.TestCase):
    timeout = 120

    async def start(self) -> tuple[Any, Client, str]:
        home, var = home_with_tiny_var(self)
        service = await start_runtime(self, home=home)
        client = await Client.connect(ws_url(service))
        self.addCleanup(client.close)
        self.base = f"http://127.0.0.1:{service.addresses[0]['port']}"
        return service, client, var

    async def get(self, path: str, token: bool = False) -> tuple[int, str]:
        headers = {"Authorization": f"Bearer {TOKEN}"} if token else {}
        response = await treq.get(self.base + path, headers=headers,
                                  pool=HTTPConnectionPool(reactor, persistent=False))
        return response.code, await response.text()

    async def two_sessions(self, client: Client) -> list[str]:
        sids = []
        for name in ("alpha", "beta"):
            reply = await client.request("session.create", name=name)
            sids.append(reply["session"]["id"])
        return sids

    async def assert_everything_stored(self, service: Any, client: Client, sids: list[str]) -> None:
        await service.store.drain()
        for sid in sids:
            live = {m["seq"]: m for m in client.events(session=sid)}
            stored = await service.store.read_events(sid, 0, limit=100_000, max_bytes=1 << 30)
            self.assertEqual([s for s, _ in stored], list(range(1, service.manager.get(sid).last_seq + 1)))
            for seq, body in stored:
                if seq in live:
                    self.assertEqual(json.loads(body), live[seq])

    async def test_full_disk_is_reported_and_recovers_without_losing_events(self) -> None:
        service, client, var = await self.start()
        sids = await self.two_sessions(client)
        filler = fill(var)
        big = {"type": "shell", "source": "head -c 3000000 /dev/zero | tr '\\0' x; echo"}
        finished = [await client.run(sid, big, timeout=60) for sid in sids]
        self.assertEqual([f["status"] for f in finished], ["ok", "ok"])
        await eventually(lambda: service.store.fault is not None, timeout=20)
        code, body = await self.get("/readyz")
        self.assertEqual(code, 503)
        self.assertIn("disk is full", body)
        self.assertEqual(await self.get("/healthz"), (200, "ok"))  # liveness: do not restart for this
        code, body = await self.get("/api/status", token=True)
        store = json.loads(body)["store"]
        self.assertFalse(store["writable"])
        self.assertIn("disk is full", store["error"])
        # Live output kept flowing from memory meanwhile.
        self.assertEqual(len(client.output(finished[0]["run"])), 3000001)
        os.unlink(filler)
        try:
            await eventually(lambda: service.store.fault is None, timeout=20)
        except AssertionError:
            raise AssertionError(f"still failing: {service.store.fault}") from None
        self.assertEqual(await self.get("/readyz"), (200, "ok"))
        await self.assert_everything_stored(service, client, sids)

    async def test_stop_with_unsaved_events_exits_non_zero(self) -> None:
        home, var = home_with_tiny_var(self)
        daemon = DaemonProcess(home)
        self.addCleanup(daemon.stop)
        url = await daemon.ready()
        client = await Client.connect(url)
        self.addCleanup(client.close)
        sid = (await client.request("session.create", name="s"))["session"]["id"]
        await client.run(sid, {"type": "shell", "source": "true"})
        fill(var)
        await client.run(sid, {"type": "shell", "source": "head -c 2000000 /dev/zero | tr '\\0' y"}, timeout=60)
        code = await daemon.stop()
        log = daemon.log()
        self.assertEqual(code, 1, log[-3000:])
        self.assertIn("the event store cannot write", log)
        self.assertIn("changes unsaved; exiting with status 1", log)
        self.assertEqual(log.count("the event store cannot write"), 1, "one line per incident")
