"""``session.snapshot``: a session's runs and outputs as they stand, in bounded memory.

PROTOCOL.md section 10: a client opening a session with a long history
loads its snapshot, then attaches with ``since = last_seq``. The snapshot
is the fold of exactly the events ``1..last_seq`` (the document included),
so nothing is shown twice or missed between the two.

:class:`SnapshotFolder` is pure: it is fed encoded events in seq order and
keeps, per run, a bounded head and tail of its outputs (:mod:`.outputs`).
:func:`fold_history` reads the events in bounded batches, from the store
(on the store's thread) or, for those not released to it yet, from the
session's in-memory tail, so a 1 GB history is never in memory at once.
The caller folds each batch in slices (:meth:`SnapshotFolder.feeding`, run
by a Cooperator), so the reactor keeps serving everyone meanwhile: folding
in a thread instead holds the reactor up far longer (CPython's lock
between threads favours the busy thread; measured in bench/snapshot_bench.py).

Bounds beyond a run's own (``max_output_bytes``): the outputs of all runs
together, shown or cut out but kept (:attr:`.RunOutputs.held`), are kept to
``budget`` bytes while folding (the oldest runs' outputs give way: they
show one cut marker), ``runs`` lists the newest
``max_runs`` runs (``runs_omitted`` counts the older ones), and
:meth:`SnapshotFolder.result` fits the encoded reply into one message.
"""

from __future__ import annotations

import collections
from typing import Any, Awaitable, Callable, Iterator

import orjson
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from .outputs import DisplayIndex, RunOutputs

_log = Logger()

DEFAULT_MAX_OUTPUT_BYTES = 256 * 1024  # per run; the protocol layer bounds what a client may ask
BUDGET = 32 * 1024 * 1024  # every run's held outputs together (shown, or cut out but kept)
MAX_RUNS = 10_000
# One batch of events read and folded at a time. Small enough that reading
# it (Python code on the store's thread) never holds the reactor up for long.
READ_BYTES = 1024 * 1024
STEP = 256  # events folded between two chances for the reactor to run
READ_ROWS = 100_000


class RunRecord:
    __slots__ = ("run", "queued_seq", "cell_id", "type", "by", "status", "started", "finished", "outputs")

    def __init__(self, run: str, cell_id: Any, type: Any, by: Any, outputs: RunOutputs, queued_seq: Any = None) -> None:
        self.run = run
        self.queued_seq = queued_seq
        self.cell_id = cell_id
        self.type = type
        self.by = by
        self.status = "queued"
        self.started: str | None = None
        self.finished: str | None = None
        self.outputs = outputs

    def describe(self) -> dict[str, Any]:
        return {
            "run": self.run, "queued_seq": self.queued_seq, "cell_id": self.cell_id, "type": self.type,
            "status": self.status,
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
        self.held = 0  # bytes all runs hold (RunOutputs.held): what the budget bounds
        self.runs_omitted = 0
        self.last_seq = 0
        self._evictable: collections.deque[str] = collections.deque()  # run ids, oldest first

    def feed(self, frames: list[tuple[int, bytes]]) -> None:
        """Fold encoded events (``(seq, frame)``, in seq order)."""
        for _ in self.feeding(frames):
            pass

    def feeding(self, frames: list[tuple[int, bytes]]) -> Iterator[None]:
        """:meth:`feed` in steps of ``STEP`` events (for a Cooperator: a
        long history is folded on the reactor thread in slices of a few ms)."""
        loads, feed_event = orjson.loads, self.feed_event
        for i, (seq, frame) in enumerate(frames, 1):
            try:
                event = loads(frame)
            except orjson.JSONDecodeError:
                _log.warn("snapshot: event {seq} is not JSON; skipped", seq=seq)
                continue
            if type(event) is dict:
                feed_event(event)
            self.last_seq = seq
            if i % STEP == 0:
                yield None

    def feed_event(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        run_id = event.get("run")
        if kind == "stream":  # nearly every event of a long history: the short way
            record = self.runs.get(run_id) if isinstance(run_id, str) else None
            text = event.get("text")
            if record is not None and isinstance(text, str):
                outputs = record.outputs
                before = outputs.held
                outputs.stream("stderr" if event.get("name") == "stderr" else "stdout", text)
                self._spent(outputs.held - before, run_id)
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
        before = outputs.held
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
        self._spent(outputs.held - before, run_id)

    @property
    def shown(self) -> int:
        """Bytes shown by all runs."""
        return sum(record.outputs.shown for record in self.runs.values())

    # -- inside ------------------------------------------------------------------------

    def _queued(self, run_id: str, event: dict[str, Any]) -> None:
        old = self.runs.pop(run_id, None)
        if old is not None:  # the same id twice (a damaged log): the later one stands
            self.held -= old.outputs.held
            old.outputs.evict()
        self.runs[run_id] = RunRecord(run_id, event.get("cell_id"), event.get("type"), event.get("by"),
                                      RunOutputs(self.limit, self.displays), event.get("seq"))
        self._evictable.append(run_id)
        while len(self.runs) > self.max_runs:
            _, oldest = self.runs.popitem(last=False)
            self.held -= oldest.outputs.held
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
            before = owner.held
            owner.update(item, output, _size(output))  # one let go meanwhile is left alone
            self._spent(owner.held - before, None)

    def _spent(self, delta: int, current: Any) -> None:
        self.held += delta
        if self.held <= self.budget:
            return
        # The oldest runs' outputs give way to newer ones; never the run
        # being fed (it is bounded by its own limit).
        kept: list[str] = []
        while self.held > self.budget and self._evictable:
            run_id = self._evictable.popleft()
            record = self.runs.get(run_id)
            if record is None or record.outputs.evicted:
                continue
            if run_id == current:
                kept.append(run_id)
                continue
            self.held -= record.outputs.held
            record.outputs.evict()
        self._evictable.extendleft(reversed(kept))

    def result(self, max_bytes: int | None = None) -> dict[str, Any]:
        """``{runs, runs_omitted}`` of the reply, encoded within ``max_bytes``
        (a WebSocket message carries at most ``--max-message-size``): the
        oldest runs' outputs give way first (a cut marker stands for them),
        then the oldest runs themselves (counted in ``runs_omitted``)."""
        into: dict[str, Any] = {}
        for _ in self.resulting(into, max_bytes, encoded=False):
            pass
        return into

    def resulting(self, into: dict[str, Any], max_bytes: int | None = None, *,
                  encoded: bool = True) -> Iterator[None]:
        """:meth:`result` into ``into`` in steps of a run or so; with
        ``encoded`` each run is an ``orjson.Fragment`` (encoded once, here, in
        steps, rather than all at once with the reply)."""
        records = list(self.runs.values())
        runs: list[Any] = []
        sizes: list[int] = []
        for record in records:
            runs.append(_encode(record.describe()))
            sizes.append(len(runs[-1]) + 1)
            yield None
        omitted = self.runs_omitted
        if max_bytes is not None:
            total = sum(sizes) + 64
            for i, record in enumerate(records):
                if total <= max_bytes:
                    break
                if record.outputs.shown:
                    record.outputs.evict()
                    runs[i] = _encode(record.describe())
                    total += len(runs[i]) + 1 - sizes[i]
                    sizes[i] = len(runs[i]) + 1
                    yield None
            dropped = 0
            while total > max_bytes and dropped < len(runs):
                total -= sizes[dropped]
                dropped += 1
            if dropped:
                runs = runs[dropped:]
                omitted += dropped
        into["runs"] = [orjson.Fragment(r) if encoded else orjson.loads(r) for r in runs]
        into["runs_omitted"] = omitted


def _encode(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS, default=str)


def _size(output: dict[str, Any]) -> int:
    return len(_encode(output))


Fold = Callable[[list[tuple[int, bytes]]], Awaitable[Any]]


async def read_batch(session: Any, after: int, batch_bytes: int = READ_BYTES) -> list[tuple[int, bytes]]:
    """The session's next events after seq ``after`` (``(seq, frame)``,
    about ``batch_bytes`` of them): from its in-memory tail while that holds
    them, else from the store (read on its thread). The tail keeps every
    event the store has not released (committed, or in its spill file, whose
    reads wait for the commit: EventStore.read_events), so nothing falls
    between the two.
    Empty when there is no later event; a gap (rows the store had to skip)
    is stepped over."""
    frames = session.tail_from(after + 1, limit_bytes=batch_bytes)
    if frames is None:
        # Bounded by bytes, not rows: small events come many to a batch.
        frames = await session.store.read_events(session.id, after, limit=READ_ROWS, max_bytes=batch_bytes)
        if not frames:
            frames = session.tail_from(after + 1, limit_bytes=batch_bytes)
    if not frames and after < session.last_seq:
        _log.error("session {session}: event {seq} is missing", session=session.id, seq=after + 1)
    return frames or []


async def fold_history(session: Any, upto: int, fold: Fold, batch_bytes: int = READ_BYTES) -> int:
    """Fold every event of ``session`` with seq 1..``upto``, in bounded
    batches (:func:`read_batch`), each by ``await fold(batch)``; returns the
    last seq folded. The next batch is read (on the store's thread) while one
    is folded: two batches in memory at most."""
    pos = 0
    reading = Deferred.fromCoroutine(read_batch(session, pos, batch_bytes)) if upto > 0 else None
    while reading is not None:
        frames = await reading
        reading = None
        if frames and frames[-1][0] > upto:
            frames = [f for f in frames if f[0] <= upto]
        if not frames:
            break
        pos = frames[-1][0]
        if pos < upto:
            reading = Deferred.fromCoroutine(read_batch(session, pos, batch_bytes))
        await fold(frames)
    return pos
