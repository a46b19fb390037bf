"""``session.snapshot`` (PROTOCOL.md section 10): a session's document, runs
and outputs as they stand, so a client need not replay a long history.

The reply covers exactly the events up to its ``last_seq``: the document
and ``last_seq`` are taken at one instant, then the events ``1..last_seq``
are read in bounded batches (on the store's thread) and folded in slices
on the reactor thread (see :mod:`spinrt.sessions.snapshot`). A client
attaching with ``since = last_seq`` then gets every later event once.

The reply is one WebSocket message, so it is built to fit
``--max-message-size`` (Autobahn drops a larger outgoing message); that also
bounds what a snapshot holds in memory while it is built. At most
``CONCURRENT`` snapshots are built at a time, runtime-wide.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import DeferredSemaphore
from twisted.internet.task import Cooperator

from .. import protocol as proto
from ..sessions.snapshot import DEFAULT_MAX_OUTPUT_BYTES, SnapshotFolder, fold_history

CONCURRENT = 2
DEFAULT_MAX_MESSAGE = 16 * 1024 * 1024  # --max-message-size's default
TOO_LARGE = "too_large"
_slots = DeferredSemaphore(CONCURRENT)


def document_of(session: Any) -> dict[str, Any]:
    """``{notebook, cells}``: the session's document as it is now."""
    snapshot = getattr(session, "document_snapshot", None)
    if callable(snapshot):
        return dict(snapshot())
    document = getattr(session, "document", None)
    cells = getattr(document, "cells", None)
    return {"notebook": getattr(session, "notebook", None), "cells": cells() if callable(cells) else []}


def cooperator(clock: Any) -> Cooperator:
    """Runs steps of work on the reactor thread for ~10 ms at a time, then
    lets the reactor serve others (``clock``: the reactor, or a test Clock)."""
    return Cooperator(scheduler=lambda step: clock.callLater(0, step))


async def session_snapshot(conn: Any, req: proto.Request) -> dict[str, Any]:
    session = conn.manager.get(req.params["session"])
    limit = req.params.get("max_output_bytes", DEFAULT_MAX_OUTPUT_BYTES)
    steps = cooperator(conn.manager.clock)
    # The reply is one message: what a message may hold bounds it (and the fold's memory).
    max_bytes = getattr(conn, "max_message_size", None) or DEFAULT_MAX_MESSAGE
    await _slots.acquire()
    try:
        # One instant: nothing can fall between what the snapshot covers
        # and what an attach since last_seq replays.
        upto = session.last_seq
        document = document_of(session)
        room = max_bytes - len(proto.encode({"document": document, "last_seq": upto, "re": req.id})) - 256
        if room <= 0:
            raise proto.ProtocolError(
                TOO_LARGE, f"the session's document alone is over {max_bytes} bytes, the largest message "
                "the runtime sends (--max-message-size); use session.document")
        folder = SnapshotFolder(limit, budget=room)
        await fold_history(session, upto, lambda frames: steps.cooperate(folder.feeding(frames)).whenDone())
        result: dict[str, Any] = {}
        await steps.cooperate(folder.resulting(result, room)).whenDone()
    finally:
        _slots.release()
        steps.stop()
    return {"document": document, **result, "last_seq": upto}
