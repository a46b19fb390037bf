"""Where a session document is kept in the store, and how a start rebuilds it.

The log is the source of truth (DESIGN.md): the document is the fold of the
session's ``cell.*`` events (:mod:`.document`). Two helpers keep a start
fast however long the log (schema version 4, :mod:`.schema`):

- ``document_events`` lists the seq of every document event. Its row is
  queued just before the event, so a committed event always has one; a row
  whose event a crash lost points at nothing, or (once the seq is reused)
  at another kind of event, and the fold skips it.
- ``documents`` holds a snapshot of the fold up to a seq: written every
  ``SNAPSHOT_EVERY`` document events, at a clean stop, and after a start
  that had to fold many events. A snapshot is queued after the events it
  sums up, so a committed one never claims events that are not stored.

A start reads the snapshot and folds only the document events after it.
A snapshot that cannot be read is ignored: the whole fold is redone.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from .document import Document, fold
from .rows import unpack

_log = Logger()

SNAPSHOT_EVERY = 500  # document events between snapshots

INDEX_SQL = "INSERT OR IGNORE INTO document_events(session, seq) VALUES (?, ?)"
SNAPSHOT_SQL = "INSERT OR REPLACE INTO documents(session, seq, body) VALUES (?, ?, ?)"
_READ_SNAPSHOT = "SELECT seq, body FROM documents WHERE session = ?"
_READ_EVENTS = (
    "SELECT e.body FROM document_events d JOIN events e ON e.session = d.session AND e.seq = d.seq"
    " WHERE d.session = ? AND d.seq > ? ORDER BY d.seq"
)


def restore(store: Any, session: str) -> tuple[Document, int]:
    """The session's document from the store, before its thread starts
    (``EventStore.query_sync``), and how many events were folded beyond
    the snapshot."""
    doc, after = Document(), 0
    for seq, body in store.query_sync(_READ_SNAPSHOT, (session,)):
        try:
            doc, after = Document.from_snapshot(bytes(body)), seq
        except ValueError:
            _log.warn("session {session}: unreadable document snapshot; folding its log instead",
                      session=session)
    folded = 0

    def bodies() -> Any:
        nonlocal folded
        for (body,) in store.query_sync(_READ_EVENTS, (session, after)):
            folded += 1
            yield unpack(body)

    return fold(bodies(), doc), folded
