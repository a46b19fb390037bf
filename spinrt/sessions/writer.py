"""Writing one batch of the event store: all of it, or all but its poison.

Runs on the store's thread, never on the reactor. A batch is a list of
operations in the order they were queued: ``("event", session, seq, body)``
or ``("sql", statement, params)``. An event's body is stored as
:func:`.rows.pack` makes it.

Two kinds of failure are told apart, because they need opposite answers:

- **The store cannot write** (disk full, read-only file or mount, I/O error,
  a locked or closed database): nothing of the batch is written and
  :class:`StoreUnavailable` is raised; the caller keeps the batch and retries.
- **One row cannot be written** (text that is not valid Unicode, a duplicate
  ``(session, seq)``, a value SQLite cannot bind): the rest of the batch is
  committed without it. A row with lone surrogates is first tried again with
  U+FFFD in their place; what still fails is skipped and recorded in the
  ``write_failures`` table and in the returned result.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any, Sequence

import attrs

from ..strictjson import scrub
from .rows import pack

# Errors that belong to one row: the row is poison, the store is fine.
_ROW_ERRORS: tuple[type[BaseException], ...] = (
    UnicodeError, ValueError, TypeError, OverflowError,
    sqlite3.IntegrityError, sqlite3.InterfaceError, sqlite3.DataError,
)
# Errors that say the store itself cannot write now.
_STORE_ERRORS: tuple[type[BaseException], ...] = (
    sqlite3.OperationalError, OSError, MemoryError,
)

_INSERT_EVENTS = "INSERT INTO events(session, seq, body) VALUES (?, ?, ?)"
_RECORD_FAILURE = (
    "INSERT INTO write_failures(ts, session, seq, statement, error) VALUES (?, ?, ?, ?, ?)"
)


class StoreUnavailable(Exception):
    """The store cannot write at all just now; ``reason`` says why in one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@attrs.frozen
class RowFailure:
    """A row that was skipped: where it belonged and why (never its values)."""

    session: str | None
    seq: int | None
    statement: str
    error: str


@attrs.define
class BatchResult:
    last: dict[str, int]  # session -> highest seq settled (written or skipped)
    written: int
    failures: list[RowFailure] = attrs.Factory(list)


def describe(error: BaseException) -> str:
    """One line naming the error; never a row's values (the message of a
    UnicodeEncodeError holds the offending character, so it is dropped)."""
    if isinstance(error, UnicodeError):
        return f"{type(error).__name__}: text that is not valid Unicode"
    text = str(error).splitlines()[0] if str(error) else ""
    text = scrub(text)[:200]
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def write_batch(conn: sqlite3.Connection, batch: Sequence[tuple[Any, ...]]) -> BatchResult:
    """Commit ``batch`` in one transaction; see the module docstring.

    Raises :class:`StoreUnavailable` when nothing could be written."""
    try:
        return _write_whole(conn, batch)
    except _STORE_ERRORS as e:
        raise StoreUnavailable(describe(e)) from e
    except Exception:
        pass
    # Some row is poison, or the error is of a kind we cannot place: row by
    # row, isolating each; if every row fails alike, it was the store.
    return _write_rows(conn, batch)


def _rollback(conn: sqlite3.Connection) -> None:
    try:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass


def _write_whole(conn: sqlite3.Connection, batch: Sequence[tuple[Any, ...]]) -> BatchResult:
    last: dict[str, int] = {}
    conn.execute("BEGIN")
    try:
        rows: list[tuple[str, int, bytes]] = []
        for op in batch:
            if op[0] == "event":
                rows.append((op[1], op[2], pack(op[3])))
                last[op[1]] = op[2]
            else:
                if rows:
                    conn.executemany(_INSERT_EVENTS, rows)
                    rows = []
                conn.execute(op[1], op[2])
        if rows:
            conn.executemany(_INSERT_EVENTS, rows)
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise
    return BatchResult(last=last, written=len(batch))


def _execute(conn: sqlite3.Connection, op: tuple[Any, ...]) -> None:
    if op[0] == "event":
        conn.execute(_INSERT_EVENTS, (op[1], op[2], pack(op[3])))
    else:
        conn.execute(op[1], op[2])


def _scrubbed(op: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """The op with lone surrogates mended, or None when that changes nothing."""
    if op[0] != "sql":
        return None
    params = tuple(scrub(p) if isinstance(p, str) else p for p in op[2])
    return None if params == op[2] else ("sql", op[1], params)


def _write_rows(conn: sqlite3.Connection, batch: Sequence[tuple[Any, ...]]) -> BatchResult:
    result = BatchResult(last={}, written=0)
    unknown: list[tuple[tuple[Any, ...], BaseException]] = []
    try:
        conn.execute("BEGIN")
        for op in batch:
            error = _try_row(conn, op)
            if error is not None:
                mended = _scrubbed(op)
                if mended is not None and _try_row(conn, mended) is None:
                    error = None
            if error is None:
                result.written += 1
            elif isinstance(error, _ROW_ERRORS):
                result.failures.append(_failure(op, error))
            else:
                unknown.append((op, error))
            if op[0] == "event":
                result.last[op[1]] = op[2]
        if unknown and not result.written and not result.failures:
            # Every row failed the same unexplained way: that is the store,
            # not the rows. Keep them all for a retry.
            raise StoreUnavailable(describe(unknown[0][1]))
        result.failures.extend(_failure(op, e) for op, e in unknown)
        now = time.time()
        for f in result.failures:
            try:
                conn.execute(_RECORD_FAILURE, (now, f.session, f.seq, f.statement, f.error))
            except sqlite3.DatabaseError:
                pass  # the log still has it
        conn.execute("COMMIT")
    except _STORE_ERRORS as e:
        _rollback(conn)
        raise StoreUnavailable(describe(e)) from e
    except StoreUnavailable:
        _rollback(conn)
        raise
    except Exception as e:
        _rollback(conn)
        raise StoreUnavailable(describe(e)) from e
    return result


def _try_row(conn: sqlite3.Connection, op: tuple[Any, ...]) -> BaseException | None:
    conn.execute("SAVEPOINT row")
    try:
        _execute(conn, op)
    except _STORE_ERRORS:
        raise
    except Exception as e:
        conn.execute("ROLLBACK TO row")
        conn.execute("RELEASE row")
        return e
    conn.execute("RELEASE row")
    return None


def _failure(op: tuple[Any, ...], error: BaseException) -> RowFailure:
    if op[0] == "event":
        return RowFailure(session=op[1], seq=op[2], statement="event", error=describe(error))
    # The statement is our own SQL text; its parameters are never recorded.
    return RowFailure(session=None, seq=None, statement=" ".join(op[1].split())[:200],
                      error=describe(error))
