"""Session documents survive restarts: rebuilt from the real SQLite store at start."""

from __future__ import annotations

import os
import sqlite3
import tempfile
import time
from typing import Any

from twisted.internet import reactor
from twisted.trial import unittest

from spinrt import protocol as proto
from spinrt.sessions import document_log, schema
from spinrt.sessions.document import fold
from spinrt.sessions.manager import SessionManager
from spinrt.sessions.masking import build_inline
from spinrt.sessions.store import EventStore

from .test_session_unit import ScriptedExecutor


def store_path() -> str:
    return os.path.join(tempfile.mkdtemp(dir=os.path.abspath(".")), "spin.sqlite3")


def cell(cell_id: str, source: str = "") -> dict[str, Any]:
    return {"id": cell_id, "type": "shell", "source": source, "options": {}}


class RestoreTests(unittest.TestCase):
    timeout = 120

    def start(self, path: str) -> SessionManager:
        store = EventStore(path, reactor)
        manager = SessionManager(store, ScriptedExecutor(), {}, reactor, build_masker=build_inline)
        manager.restore_sync()
        store.start()
        self.addCleanup(lambda: store.close() if store._conn is not None else None)
        return manager

    def edit(self, manager: SessionManager, sid: str, kind: str, *args: Any) -> None:
        session = manager.get(sid)
        plan = {"cell.set": session.document.plan_set, "cell.deleted": session.document.plan_delete,
                "cell.moved": session.document.plan_move}[kind](*args)
        session.edit_document(kind, plan, "owner")

    def work(self, manager: SessionManager, sid: str) -> None:
        for cell_id in "abcde":
            self.edit(manager, sid, "cell.set", cell(cell_id, f"echo {cell_id}"))
            manager.get(sid).emit("stream", run="r", name="stdout", text="output " * 20)
        self.edit(manager, sid, "cell.moved", "e", None)
        self.edit(manager, sid, "cell.deleted", "b")
        self.edit(manager, sid, "cell.set", cell("c", "changed"), "a")

    async def test_a_clean_restart_loads_the_snapshot(self) -> None:
        path = store_path()
        manager = self.start(path)
        session = manager.create("n", notebook={"name": "nb", "cells": [cell("x", "from the notebook")]})
        self.work(manager, session.id)
        expected = session.document.cells()
        await manager.stopService()
        again = self.start(path)
        restored = again.get(session.id)
        self.assertEqual(restored.document.cells(), expected)
        self.assertEqual(restored.notebook, "nb")
        self.assertEqual(restored.describe()["notebook"], "nb")
        # The stop wrote a snapshot as of the last event: the start folded nothing.
        conn = sqlite3.connect(path)
        self.assertEqual(conn.execute("SELECT seq FROM documents WHERE session = ?", (session.id,)).fetchone()[0],
                         restored.last_seq)
        conn.close()

    async def test_after_a_crash_the_log_is_folded(self) -> None:
        path = store_path()
        manager = self.start(path)
        session = manager.create("n")
        self.work(manager, session.id)
        expected = session.document.cells()
        await manager.store.close()  # everything committed, but no stop: no snapshot
        again = self.start(path)
        self.assertEqual(again.get(session.id).document.cells(), expected)
        # New edits continue the log with the right versions.
        self.edit(again, session.id, "cell.set", cell("f"))
        self.assertEqual(again.get(session.id).document.get("f")["version"], again.get(session.id).last_seq)

    async def test_snapshots_every_so_many_edits_and_only_later_events_are_folded(self) -> None:
        self.patch(document_log, "SNAPSHOT_EVERY", 3)
        path = store_path()
        manager = self.start(path)
        session = manager.create("n")
        self.work(manager, session.id)  # 8 edits: snapshots after the 3rd and 6th
        expected = session.document.cells()
        await manager.store.close()
        store = EventStore(path, reactor)
        store.open_sync()
        document, folded = document_log.restore(store, session.id)
        self.assertEqual((document.cells(), folded), (expected, 2))
        store._conn.close()

    async def test_an_unreadable_snapshot_is_ignored(self) -> None:
        path = store_path()
        manager = self.start(path)
        session = manager.create("n")
        self.work(manager, session.id)
        expected = session.document.cells()
        await manager.stopService()
        for body in (b"garbage", b'{"cells": "no"}', b"[]"):
            conn = sqlite3.connect(path)
            conn.execute("UPDATE documents SET body = ? WHERE session = ?", (body, session.id))
            conn.commit()
            conn.close()
            store = EventStore(path, reactor)
            store.open_sync()
            document, folded = document_log.restore(store, session.id)
            self.assertEqual(document.cells(), expected)
            self.assertEqual(folded, 8)
            store._conn.close()

    async def test_index_rows_without_their_event_are_skipped(self) -> None:
        path = store_path()
        manager = self.start(path)
        session = manager.create("n")
        self.work(manager, session.id)
        expected = session.document.cells()
        last = session.last_seq
        await manager.store.close()
        conn = sqlite3.connect(path)
        stream_seqs = [seq for (seq,) in conn.execute(
            "SELECT seq FROM events WHERE session = ? AND body LIKE '%\"stream\"%'", (session.id,))]
        # A crash lost the event after its index row; later the seq was reused by output.
        conn.executemany("INSERT INTO document_events(session, seq) VALUES (?, ?)",
                         [(session.id, seq) for seq in (*stream_seqs, last + 1, last + 50)])
        conn.commit()
        conn.close()
        again = self.start(path)
        self.assertEqual(again.get(session.id).document.cells(), expected)

    def test_an_old_store_upgrades_to_empty_documents(self) -> None:
        path = store_path()
        conn = sqlite3.connect(path, isolation_level=None)
        for version in (1, 2, 3):
            schema.MIGRATIONS[version](conn)
        conn.execute("PRAGMA user_version = 3")
        conn.execute("INSERT INTO sessions(id, name, created, state) VALUES ('ss_old', 'old', 't', 'open')")
        conn.executemany("INSERT INTO events(session, seq, body) VALUES ('ss_old', ?, ?)",
                         [(seq, b'{"event":"stream","seq":%d}' % seq) for seq in range(1, 11)])
        conn.close()
        manager = self.start(path)
        old = manager.get("ss_old")
        self.assertEqual((old.last_seq, old.notebook, old.document.cells()), (10, None, []))
        check = sqlite3.connect(path)
        self.assertEqual(check.execute("PRAGMA user_version").fetchone()[0], schema.SCHEMA_VERSION)
        self.assertEqual(check.execute("SELECT COUNT(*) FROM events").fetchone()[0], 10)
        check.close()


def fill(path: str, sid: str, events: int, document_every: int) -> list[dict[str, Any]]:
    """A store holding one session of ``events`` events, every
    ``document_every``-th a cell.set over 50 cells (the others output);
    returns the document they make."""
    store = EventStore(path, reactor)
    store.open_sync()
    store._conn.close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    conn.execute("INSERT INTO sessions(id, name, created, state) VALUES (?, 'big', 't', 'open')", (sid,))
    rows, index, log = [], [], []
    for seq in range(1, events + 1):
        if seq % document_every == 0:
            body = proto.encode(proto.event(
                "cell.set", sid, seq, "t", cell=cell(f"c{seq % 50}", "echo " + "x" * 150),
                after=None if seq % 3 else f"c{(seq + 1) % 50}", version=seq, by="owner"))
            index.append((sid, seq))
            log.append(body)
        else:
            body = proto.encode(proto.event("stream", sid, seq, "t", run="r", name="stdout", text="y" * 150))
        rows.append((sid, seq, body))
    conn.executemany("INSERT INTO events(session, seq, body) VALUES (?, ?, ?)", rows)
    conn.executemany("INSERT INTO document_events(session, seq) VALUES (?, ?)", index)
    conn.execute("COMMIT")
    conn.close()
    return fold(log).cells()


class LongLogTests(unittest.TestCase):
    """A start stays fast however long the log: 100k events (see bench/document_restore.py)."""

    timeout = 300

    def restore(self, path: str) -> tuple[SessionManager, float]:
        store = EventStore(path, reactor)
        manager = SessionManager(store, ScriptedExecutor(), {}, reactor, build_masker=build_inline)
        began = time.monotonic()
        manager.restore_sync()
        took = time.monotonic() - began
        self.addCleanup(lambda: store.close() if store._conn is not None else None)
        return manager, took

    def test_100k_events_mostly_output(self) -> None:
        path = store_path()
        expected = fill(path, "ss_big", 100_000, 100)
        manager, took = self.restore(path)
        self.assertEqual(manager.get("ss_big").document.cells(), expected)
        self.assertLess(took, 2.0)

    def test_100k_document_events_and_the_next_start_loads_a_snapshot(self) -> None:
        path = store_path()
        expected = fill(path, "ss_big", 100_000, 1)
        manager, took = self.restore(path)
        self.assertEqual(manager.get("ss_big").document.cells(), expected)
        self.assertLess(took, 10.0)
        # That start queued a snapshot: once written, the next start folds nothing.
        store = manager.store
        store.start()
        d = store.drain()
        d.addCallback(lambda _: store.close())

        def again(_: Any) -> None:
            second, took = self.restore(path)
            self.assertEqual(second.get("ss_big").document.cells(), expected)
            self.assertLess(took, 1.0)

        return d.addCallback(again)
