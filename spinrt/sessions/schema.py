"""Schema of the event store and its migrations.

``PRAGMA user_version`` holds the schema version. Each migration moves the
store one version up inside a transaction; none ever drops history.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Callable

SCHEMA_VERSION = 8


def _script(conn: sqlite3.Connection, script: str) -> None:
    # Statement by statement: executescript() would COMMIT the migration's
    # transaction halfway.
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


def _v1(conn: sqlite3.Connection) -> None:
    _script(
        conn,
        """
        CREATE TABLE sessions (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            created TEXT NOT NULL,
            state TEXT NOT NULL DEFAULT 'open'
        );
        CREATE TABLE events (
            session TEXT NOT NULL,
            seq INTEGER NOT NULL,
            body BLOB NOT NULL
        );
        CREATE UNIQUE INDEX events_session_seq ON events (session, seq);
        CREATE TABLE runs (
            id TEXT PRIMARY KEY,
            session TEXT NOT NULL,
            state TEXT NOT NULL
        );
        CREATE INDEX runs_unfinished ON runs (state) WHERE state != 'finished';
        """
    )


def _v2(conn: sqlite3.Connection) -> None:
    # Process groups of running cells (reaped after a crash) and session variables.
    _script(
        conn,
        """
        ALTER TABLE runs ADD COLUMN pgid INTEGER;
        CREATE TABLE variables (
            session TEXT NOT NULL,
            name TEXT NOT NULL,
            value TEXT NOT NULL,
            PRIMARY KEY (session, name)
        );
        """,
    )


def _v3(conn: sqlite3.Connection) -> None:
    # Rows a batch had to skip (their values are never kept: only where they
    # belonged and why), so a skipped row is on the record, not only in a log.
    _script(
        conn,
        """
        CREATE TABLE write_failures (
            ts REAL NOT NULL,
            session TEXT,
            seq INTEGER,
            statement TEXT NOT NULL,
            error TEXT NOT NULL
        );
        """,
    )


def _v4(conn: sqlite3.Connection) -> None:
    # Session documents (PROTOCOL.md section 10). The document is folded from
    # the log's cell.* events; document_events lists their seqs so a start
    # reads only those (written just before each such event: an entry whose
    # event was lost in a crash points at nothing or at another kind, and the
    # fold skips it). documents holds a snapshot of the fold up to seq, so a
    # start folds only the events after it. The log stays the source of truth.
    _script(
        conn,
        """
        ALTER TABLE sessions ADD COLUMN notebook TEXT;
        CREATE TABLE document_events (
            session TEXT NOT NULL,
            seq INTEGER NOT NULL,
            PRIMARY KEY (session, seq)
        ) WITHOUT ROWID;
        CREATE TABLE documents (
            session TEXT PRIMARY KEY,
            seq INTEGER NOT NULL,
            body BLOB NOT NULL
        );
        """,
    )


# Event bodies start with their kind: proto.event puts "event" first.
_QUEUED = b'{"event":"run.queued",'
_STARTED = b'{"event":"run.started",'


def _v5(conn: sqlite3.Connection) -> None:
    # Where each run's events start in its session's log (the seq of its
    # run.queued and run.started), so reading one run's output does not
    # scan the session from seq 1. Runs already in the store get theirs from
    # their events, read once here; a run whose events are missing keeps
    # NULL (its output is then read from the start of the session).
    _script(
        conn,
        """
        ALTER TABLE runs ADD COLUMN queued_seq INTEGER;
        ALTER TABLE runs ADD COLUMN started_seq INTEGER
        """,
    )
    rows = conn.execute(
        "SELECT seq, body FROM events WHERE substr(body, 1, ?) = ? OR substr(body, 1, ?) = ?",
        (len(_QUEUED), _QUEUED, len(_STARTED), _STARTED),
    )
    for seq, body in rows:  # one row at a time: a large store is never read whole
        body = bytes(body)
        try:
            run = json.loads(body).get("run")
        except (ValueError, AttributeError):
            continue
        if isinstance(run, str):
            column = "queued_seq" if body.startswith(_QUEUED) else "started_seq"
            conn.execute(f"UPDATE runs SET {column} = ? WHERE id = ? AND {column} IS NULL", (seq, run))


def _v6(conn: sqlite3.Connection) -> None:
    # Named tokens (PROTOCOL.md section 9: only each secret's SHA-256 digest,
    # hex) and the audit trail: who did what, from where (never a secret).
    # audit.id is the pagination cursor of GET /api/audit; AUTOINCREMENT so
    # that an id is never reused after pruning.
    _script(
        conn,
        """
        CREATE TABLE tokens (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            role TEXT NOT NULL,
            digest TEXT NOT NULL,
            created REAL NOT NULL,
            expires REAL,
            revoked REAL,
            last_used REAL
        );
        CREATE TABLE audit (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            ts REAL NOT NULL,
            identity TEXT,
            role TEXT,
            token TEXT,
            client TEXT,
            action TEXT NOT NULL,
            target TEXT,
            outcome TEXT NOT NULL
        );
        CREATE INDEX audit_ts ON audit (ts)
        """,
    )


def _v7(conn: sqlite3.Connection) -> None:
    # The runtime secret store (spinrt.secret_store): Fernet ciphertexts only;
    # the key is never in the store.
    _script(
        conn,
        """
        CREATE TABLE runtime_secrets (
            name TEXT PRIMARY KEY,
            value BLOB NOT NULL,
            updated REAL NOT NULL
        )
        """,
    )


def _v8(conn: sqlite3.Connection) -> None:
    # Nothing to change in the tables: from version 8 on, a large event body
    # may be an LZ4 frame (spinrt.sessions.rows), which a runtime that knows
    # only version 7 could not read; the version number keeps it out.
    pass


MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    1: _v1, 2: _v2, 3: _v3, 4: _v4, 5: _v5, 6: _v6, 7: _v7, 8: _v8,
}


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the store to SCHEMA_VERSION; returns the version it started at."""
    (start,) = conn.execute("PRAGMA user_version").fetchone()
    if start > SCHEMA_VERSION:
        raise sqlite3.DatabaseError(
            f"the store has schema version {start}, newer than this runtime "
            f"understands ({SCHEMA_VERSION}); upgrade spinrt"
        )
    for version in range(start + 1, SCHEMA_VERSION + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            MIGRATIONS[version](conn)
            conn.execute(f"PRAGMA user_version = {version}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return start
