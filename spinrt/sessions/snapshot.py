"""``session.snapshot``: a session's runs and outputs as they stand, in bounded memory.

PROTOCOL.md section 10: a client opening a session with a long history
loads its snapshot, then attaches with ``since = last_seq``. The snapshot
is the fold of exactly the events ``1..last_seq`` (the document included),
so nothing is shown twice or missed between the two.

:class:`SnapshotFolder` is pure: it is fed encoded events in seq order and
keeps, per run, a bounded head and tail of its outputs (:mod:`.outputs`).
:func:`fold_history` reads the events in bounded batches, from the store
(on the store's thread) or, for those not committed yet, from the
session's in-memory tail, and folds each batch with ``in_thread`` (off the
reactor thread), so a 1 GB history is never in memory at once.

Bounds beyond a run's own (``max_output_bytes``): the outputs of all runs
together are kept to ``budget`` bytes (the oldest runs' outputs give way:
they show one cut marker), and ``runs`` lists the newest ``max_runs`` runs
(``runs_omitted`` counts the older ones).
"""

from __future__ import annotations

import collections
from typing import Any, Awaitable, Callable

import orjson
from twisted.logger import Logger

from .outputs import DisplayIndex, RunOutputs

_log = Logger()

DEFAULT_MAX_OUTPUT_BYTES = 256 * 1024  # per run; the protocol layer bounds what a client may ask
BUDGET = 32 * 1024 * 1024  # every run's shown outputs together
MAX_RUNS = 10_000
READ_BYTES = 4 * 1024 * 1024  # one batch of events read and folded at a time


class RunRecord:
    __slots__ = ("run", "cell_id", "type", "by", "status", "started", "finished", "outputs")

    def __init__(self, run: str, cell_id: Any, type: Any, by: Any, outputs: RunOutputs) -> None:
        self.run = run
        self.cell_id = cell_id
        self.type = type
        self.by = by
        self.status = "queued"
        self.started: str | None = None
        self.finished: str | None = None
        self.outputs = outputs

    def describe(self) -> dict[str, Any]:
        return {
            "run": self.run, "cell_id": self.cell_id, "type": self.type, "status": self.status,
            "started": self.started, "finished": self.finished, "by": self.by,
            "outputs": self.outputs.render(),
            "truncated": {"bytes_total": self.outputs.total, "bytes_shown": self.outputs.shown},
        }


class SnapshotFolder:
    def __init__(self, max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES, *,
                 budget: int = BUDGET, max_runs: int = MAX_RUNS) -> None:
        self.limit = max_output_bytes
        self.budget = max(budget, 4 * max_output_bytes)
        self.max_runs = max_runs
        self.runs: collections.OrderedDict[str, RunRecord] = collections.OrderedDict()
        self.displays = DisplayIndex()
        self.shown = 0  # bytes shown by all runs
        self.runs_omitted = 0
        self.last_seq = 0
        self._evictable: collections.deque[str] = collections.deque()  # run ids, oldest first

    def feed(self, frames: list[tuple[int, bytes]]) -> None:
        """Fold encoded events (``(seq, frame)``, in seq order)."""
        loads, feed_event = orjson.loads, self.feed_event
        for seq, frame in frames:
            try:
                event = loads(frame)
            except orjson.JSONDecodeError:
                _log.warn("snapshot: event {seq} is not JSON; skipped", seq=seq)
                continue
            if type(event) is dict:
                feed_event(event)
        if frames:
            self.last_seq = frames[-1][0]

    def feed_event(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        run_id = event.get("run")
        if kind == "stream":  # nearly every event of a long history: the short way
            record = self.runs.get(run_id) if isinstance(run_id, str) else None
            text = event.get("text")
            if record is not None and isinstance(text, str):
                outputs = record.outputs
                before = outputs.head_bytes + outputs.tail_bytes
                outputs.stream("stderr" if event.get("name") == "stderr" else "stdout", text)
                self.shown += outputs.head_bytes + outputs.tail_bytes - before
                if self.shown > self.budget:
                    self._spent(0, run_id)
            return
        if kind == "display.update":
            self._update(event)
            return
        if kind == "run.queued":
            if isinstance(run_id, str):
                self._queued(run_id, event)
            return
        record = self.runs.get(run_id) if isinstance(run_id, str) else None
        if record is None:
            return
        outputs = record.outputs
        before = outputs.shown
        if kind in ("display", "result"):
            output = {k: v for k, v in event.items() if k not in ("session", "seq", "ts", "run")}
            display_id = event.get("display_id") if kind == "display" else None
            outputs.whole(kind, output, _size(output), display_id if isinstance(display_id, str) else None)
        elif kind == "clear":
            outputs.clear(bool(event.get("wait")))
        elif kind == "run.started":
            record.status = "running"
            record.started = event.get("ts")
        elif kind == "run.finished":
            record.status = event.get("status") or "error"
            record.finished = event.get("ts")
            error = event.get("error")
            if isinstance(error, dict):
                output = {"event": "error", "error": error}
                outputs.whole("error", output, _size(output))
        self._spent(outputs.shown - before, run_id)

    # -- inside ------------------------------------------------------------------------

    def _queued(self, run_id: str, event: dict[str, Any]) -> None:
        old = self.runs.pop(run_id, None)
        if old is not None:  # the same id twice (a damaged log): the later one stands
            self.shown -= old.outputs.shown
            old.outputs.evict()
        self.runs[run_id] = RunRecord(run_id, event.get("cell_id"), event.get("type"), event.get("by"),
                                      RunOutputs(self.limit, self.displays))
        self._evictable.append(run_id)
        while len(self.runs) > self.max_runs:
            _, oldest = self.runs.popitem(last=False)
            self.shown -= oldest.outputs.shown
            oldest.outputs.evict()  # forgets its displays
            self.runs_omitted += 1

    def _update(self, event: dict[str, Any]) -> None:
        display_id = event.get("display_id")
        if not isinstance(display_id, str):
            return
        items = self.displays.get(display_id)
        if not items:
            return
        for item in items:
            owner = item.owner
            if owner is None:
                continue
            # The display keeps its own fields (display_id, the run it is
            # in): only data and metadata change.
            output = dict(item.output or {"event": "display", "display_id": display_id})
            output["data"] = event.get("data")
            output["metadata"] = event.get("metadata") or {}
            before = owner.shown
            owner.update(item, output, _size(output))
            self._spent(owner.shown - before, None)

    def _spent(self, delta: int, current: Any) -> None:
        self.shown += delta
        if self.shown <= self.budget:
            return
        # The oldest runs' outputs give way to newer ones; never the run
        # being fed (it is bounded by its own limit).
        kept: list[str] = []
        while self.shown > self.budget and self._evictable:
            run_id = self._evictable.popleft()
            record = self.runs.get(run_id)
            if record is None or record.outputs.evicted:
                continue
            if run_id == current:
                kept.append(run_id)
                continue
            self.shown -= record.outputs.shown
            record.outputs.evict()
        self._evictable.extendleft(reversed(kept))

    def result(self) -> dict[str, Any]:
        """``{runs, runs_omitted}`` of the reply."""
        return {"runs": [r.describe() for r in self.runs.values()], "runs_omitted": self.runs_omitted}


def _size(output: dict[str, Any]) -> int:
    return len(orjson.dumps(output, option=orjson.OPT_NON_STR_KEYS, default=str))


InThread = Callable[..., Awaitable[Any]]


async def fold_history(session: Any, upto: int, feed: Callable[[list[tuple[int, bytes]]], None],
                       in_thread: InThread, batch_bytes: int = READ_BYTES) -> int:
    """Feed ``feed`` every event of ``session`` with seq 1..``upto``, in
    bounded batches, each folded by ``in_thread(feed, batch)``; returns the
    last seq fed. Events the store has not committed yet come from the
    session's in-memory tail (it keeps every uncommitted event)."""
    pos = 0
    while pos < upto:
        frames = session.tail_from(pos + 1, limit_bytes=batch_bytes)
        if frames is None:
            frames = await session.store.read_events(session.id, pos, max_bytes=batch_bytes)
            if not frames:
                frames = session.tail_from(pos + 1, limit_bytes=batch_bytes)
                if not frames:
                    _log.error("snapshot of session {session}: event {seq} is missing", session=session.id,
                               seq=pos + 1)
                    break
        if frames[-1][0] > upto:
            frames = [f for f in frames if f[0] <= upto]
            if not frames:
                break
        await in_thread(feed, frames)
        pos = frames[-1][0]
    return pos
