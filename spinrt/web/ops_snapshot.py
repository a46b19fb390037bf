"""``session.snapshot`` (PROTOCOL.md section 10): a session's document, runs
and outputs as they stand, so a client need not replay a long history.

The reply covers exactly the events up to its ``last_seq``: the document
and ``last_seq`` are taken at one instant, then the events ``1..last_seq``
are read in bounded batches and folded off the reactor thread (see
:mod:`spinrt.sessions.snapshot`). A client attaching with ``since =
last_seq`` then gets every later event once. At most ``CONCURRENT``
snapshots are built at a time, runtime-wide: each holds up to
``snapshot.BUDGET`` bytes of outputs while it is built.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred, DeferredSemaphore, maybeDeferred
from twisted.internet.threads import deferToThreadPool

from .. import protocol as proto
from ..sessions.snapshot import DEFAULT_MAX_OUTPUT_BYTES, SnapshotFolder, fold_history

CONCURRENT = 2
_slots = DeferredSemaphore(CONCURRENT)


def document_of(session: Any) -> dict[str, Any]:
    """``{notebook, cells}``: the session's document as it is now."""
    snapshot = getattr(session, "document_snapshot", None)
    if callable(snapshot):
        return dict(snapshot())
    document = getattr(session, "document", None)
    cells = getattr(document, "cells", None)
    return {"notebook": getattr(session, "notebook", None), "cells": cells() if callable(cells) else []}


def in_thread_of(clock: Any) -> Callable[..., Deferred[Any]]:
    """Run a fold step in the reactor's thread pool (inline with a test Clock)."""
    pool = getattr(clock, "getThreadPool", None)
    if pool is None:
        return maybeDeferred
    return lambda f, *args: deferToThreadPool(clock, pool(), f, *args)


async def session_snapshot(conn: Any, req: proto.Request) -> dict[str, Any]:
    session = conn.manager.get(req.params["session"])
    limit = req.params.get("max_output_bytes", DEFAULT_MAX_OUTPUT_BYTES)
    in_thread = in_thread_of(conn.manager.clock)
    await _slots.acquire()
    try:
        # One instant: nothing can fall between what the snapshot covers
        # and what an attach since last_seq replays.
        upto = session.last_seq
        document = document_of(session)
        folder = SnapshotFolder(limit)
        await fold_history(session, upto, folder.feed, in_thread)
        result = await in_thread(folder.result)
    finally:
        _slots.release()
    return {"document": document, **result, "last_seq": upto}
