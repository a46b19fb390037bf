"""Event bodies in the store: large compressible ones as LZ4 frames (spinrt.sessions.rows)."""

from __future__ import annotations

import os
import sqlite3

import orjson
from twisted.internet import reactor
from twisted.trial import unittest

from spinrt.sessions import rows, schema
from spinrt.sessions.store import EventStore
from spinrt.retention import closed_before

from .test_store import store_path


def stream_frame(seq: int, text: str) -> bytes:
    return orjson.dumps({"event": "stream", "session": "s", "seq": seq, "ts": "2026-11-30T12:00:00.000Z",
                         "run": "r_1", "name": "stdout", "text": text})


LINES = "".join(f"2026-11-30T12:00:{i % 60:02d}Z INFO pod/web-{i % 7} served GET /health 200\n"
                for i in range(4000))


class PackTests(unittest.TestCase):
    def test_small_frames_are_stored_as_they_are(self) -> None:
        frame = stream_frame(1, "x" * 100)
        self.assertIs(rows.pack(frame), frame)
        self.assertEqual(rows.unpack(frame), frame)

    def test_a_large_repetitive_frame_is_an_lz4_frame_that_unpacks_to_the_same_bytes(self) -> None:
        frame = stream_frame(2, LINES)
        packed = rows.pack(frame)
        self.assertTrue(packed.startswith(rows.LZ4_MAGIC))
        self.assertLess(len(packed), len(frame) // 4)
        self.assertEqual(rows.unpack(packed), frame)
        self.assertEqual(rows.unpack(memoryview(packed)), frame)

    def test_output_that_does_not_compress_is_stored_as_it_is(self) -> None:
        frame = stream_frame(3, os.urandom(96 * 1024).hex()[:150_000])  # hex: compresses < 25 %
        self.assertIs(rows.pack(frame), frame)

    def test_a_corrupt_frame_is_an_error_not_other_bytes(self) -> None:
        packed = bytearray(rows.pack(stream_frame(4, LINES)))
        del packed[40:80]
        with self.assertRaises(RuntimeError):
            rows.unpack(bytes(packed))


class StoredTests(unittest.TestCase):
    timeout = 60

    async def test_the_store_keeps_large_output_compressed_and_reads_back_the_json(self) -> None:
        path = store_path()
        store = EventStore(path, reactor)
        store.open_sync()
        store.start()
        store.execute("INSERT INTO sessions(id, name, created) VALUES ('s', 's', 't')")
        frames = [stream_frame(seq, LINES if seq % 2 else "small") for seq in range(1, 201)]
        for seq, frame in enumerate(frames, 1):
            store.append("s", seq, frame)
        await store.drain()
        self.assertEqual(await store.read_events("s", 0, limit=1000, max_bytes=10**9), list(enumerate(frames, 1)))
        stored = dict(await store.query("SELECT seq, body FROM events WHERE session = 's'"))
        self.assertTrue(bytes(stored[1]).startswith(rows.LZ4_MAGIC))
        self.assertEqual(bytes(stored[2]), frames[1])
        raw = sum(len(f) for f in frames)
        self.assertLess(sum(len(b) for b in stored.values()), raw // 4)
        await store.close()

    def test_retention_reads_a_packed_last_event(self) -> None:
        path = store_path()
        conn = sqlite3.connect(path, isolation_level=None)
        schema.migrate(conn)
        conn.execute("INSERT INTO sessions(id, name, created, state) VALUES ('old', 'o', '2026-01-01T00:00:00Z', 'closed')")
        conn.execute("INSERT INTO events(session, seq, body) VALUES ('old', 1, ?)", (rows.pack(stream_frame(1, LINES)),))
        self.assertEqual(closed_before(conn, 1_800_000_000.0), ["old"])
        self.assertEqual(closed_before(conn, 1_700_000_000.0), [])  # its last event's ts is 2026-11-30
        conn.close()

    def test_a_runtime_that_knows_only_version_7_refuses_the_store(self) -> None:
        path = store_path()
        conn = sqlite3.connect(path, isolation_level=None)
        schema.migrate(conn)
        self.assertEqual(conn.execute("PRAGMA user_version").fetchone()[0], 8)
        self.patch(schema, "SCHEMA_VERSION", 7)
        with self.assertRaisesRegex(sqlite3.DatabaseError, "newer than this runtime"):
            schema.migrate(conn)
        conn.close()
