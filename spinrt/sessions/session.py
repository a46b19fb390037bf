"""A session: its append-only event log, its subscribers and its run queue.

Every output becomes an event with the next ``seq``; the event is encoded
once, queued for the store, kept in a bounded in-memory tail and offered to
each subscriber. The tails of all sessions share one budget too
(:mod:`.tails`). A subscriber that cannot keep up (its socket is full) falls
back to reading the tail or the store from its own cursor, so a slow client
costs neither memory nor the other clients' speed (:mod:`.subscription`).
"""

from __future__ import annotations

import collections
import json
import secrets as _random
import time
from typing import Any, Callable, Iterable, Protocol

import attrs
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger

from .. import protocol as proto
from ..protocol import Cell
from ..secrets import Masker, redact_credentials
from . import document_log
from .document import Document
from .masking import MaskerBuilder, SessionSecrets, build_inline
from .store import EventStore
from .subscription import Sink, Subscription
from .tails import TailBudget

_log = Logger()

TAIL_BYTES = 4 * 1024 * 1024  # per session: recent events kept in memory for fast catch-up
MAX_QUEUED_RUNS = 10_000


def type_name(value: Any) -> str:
    if isinstance(value, dict) and {"status"} <= value.keys() and (
        "exit_code" in value or "status_code" in value or "text" in value
    ):
        return "CellResult"
    return type(value).__name__


def preview(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def new_id(prefix: str) -> str:
    return f"{prefix}_{_random.token_hex(8)}"


@attrs.define(eq=False)
class Chain:
    runs: list["Run"]
    stop_on_error: bool


@attrs.define(eq=False)
class Run:
    id: str
    cell: Cell
    chain: Chain | None = None
    state: str = "queued"  # queued / running / finished
    ctx: Any = None
    started: float = 0.0
    interrupt_reason: str | None = None
    verbatim: bool = False  # run the source as it is: no template expansion (Jupyter clients' code)


class RunExecutor(Protocol):
    def __call__(self, session: "Session", run: Run) -> Deferred[None]: ...


class Session:
    def __init__(
        self,
        *,
        id: str,
        name: str,
        created: str,
        store: EventStore,
        clock: Any,
        executor: RunExecutor,
        last_seq: int = 0,
        state: str = "open",
        wallclock: Callable[[], float] = time.time,
        build_masker: MaskerBuilder = build_inline,
        notebook: str | None = None,
        tails: TailBudget | None = None,
    ) -> None:
        self.id = id
        self.name = name
        self.notebook = notebook  # the notebook it was created from
        self.document = Document()  # folded from the log: see edit_document
        self.document_unsaved = 0  # document events since its last snapshot
        self.created = created
        self.state = state
        self.last_seq = last_seq
        self.store = store
        self.clock = clock
        self._wallclock = wallclock
        self._executor = executor
        self.subscribers: set[Subscription] = set()
        self._tail: collections.deque[tuple[int, bytes]] = collections.deque()
        self._tail_bytes = 0
        self.tails = tails  # the budget all sessions' tails share, or None
        self.queue: collections.deque[Run] = collections.deque()
        self.runs: dict[str, Run] = {}  # queued and running only
        self.current: Run | None = None
        self._worker: Deferred[None] | None = None
        self.variables: dict[str, Any] = {}
        self._secrets = SessionSecrets(build_masker)
        # Told of runs starting and finishing (spinrt.metrics.RuntimeMetrics), or None.
        self.observer: Any = None
        self.jupyter_kernel_id: str | None = None  # when it backs a Jupyter kernel (spinrt.web.jupyter)
        # A run's run.queued and run.started (with their writes to the runs
        # table), held back while the run starts: see _work and _release.
        self._held: list[Callable[[], None]] = []

    def describe(self) -> dict[str, Any]:
        self._release()
        return {
            "id": self.id,
            "name": self.name,
            "created": self.created,
            "last_seq": self.last_seq,
            "state": self.state,
            "notebook": self.notebook,
            **({"jupyter_kernel_id": self.jupyter_kernel_id} if self.jupyter_kernel_id else {}),
        }

    # -- the log -------------------------------------------------------------------

    def emit(self, kind: str, **fields: Any) -> int:
        """Append an event (every string in ``fields`` masked); its seq."""
        masker = self.masker
        if masker:
            fields = masker.mask_tree(fields)
        return self._append(kind, fields)

    def emit_stream(self, run: str, name: str, text: str, masked_with: Masker) -> int:
        """Append a ``stream`` event whose ``text`` a StreamMasker has
        already masked with ``masked_with`` (CellContext.stream): masking it
        again would double the cost per byte of output. It is masked again
        only when ``masked_with`` is not the session's masker any more."""
        masker = self.masker
        if masker:
            run, name = masker.mask(run), masker.mask(name)
            if masked_with is not masker:
                text = masker.mask(text)
        return self._append("stream", {"run": run, "name": name, "text": text})

    def _append(self, kind: str, fields: dict[str, Any]) -> int:
        if self._held:
            self._release()
        seq = self.last_seq + 1
        self.last_seq = seq
        message = proto.event(kind, self.id, seq, proto.timestamp(self._wallclock()), **fields)
        frame = proto.encode(message)
        self.store.append(self.id, seq, frame)
        self._tail.append((seq, frame))
        self._tail_bytes += len(frame)
        if self.tails is not None:
            self.tails.grew(self, len(frame))
        self.trim_tail()
        for sub in list(self.subscribers):
            sub.offer(seq, frame)
        return seq

    @property
    def tail_bytes(self) -> int:
        return self._tail_bytes

    def trim_tail(self) -> None:
        if self._tail_bytes > TAIL_BYTES:
            self.shed(self._tail_bytes - TAIL_BYTES)

    def shed(self, size: int) -> int:
        """Drop about ``size`` bytes of the oldest events from the tail, only
        released ones (committed, or in the store's spill file: a reader
        gets them from the store); the bytes freed."""
        released = self.store.released_seq(self.id)
        tail = self._tail
        freed = 0
        while freed < size and tail and tail[0][0] <= released:
            freed += len(tail.popleft()[1])
        if freed:
            self._tail_bytes -= freed
            if self.tails is not None:
                self.tails.shrank(self, freed, not tail)
        return freed

    def tail_from(self, seq: int, limit_bytes: int = 1024 * 1024) -> list[tuple[int, bytes]] | None:
        """Events from ``seq`` on if memory still holds ``seq``, else None."""
        tail = self._tail
        if not tail or tail[0][0] > seq:
            return None
        start = seq - tail[0][0]
        out: list[tuple[int, bytes]] = []
        size = 0
        for i in range(start, len(tail)):
            item = tail[i]
            out.append(item)
            size += len(item[1])
            if size >= limit_bytes:
                break
        return out

    def subscribe(self, sink: Sink, since: int) -> Subscription:
        self._release()
        sub = Subscription(self, sink, min(since, self.last_seq))
        self.subscribers.add(sub)
        sub.pump()
        return sub

    # -- runs ------------------------------------------------------------------------

    def check_open(self) -> None:
        if self.state != "open":
            raise proto.ProtocolError(proto.SESSION_CLOSED, f"session {self.id} is closed")

    def check_room(self, count: int) -> None:
        """ProtocolError unless ``count`` more runs may be queued now."""
        self.check_open()
        if len(self.runs) + count > MAX_QUEUED_RUNS:
            raise proto.ProtocolError(
                proto.QUEUE_FULL, f"session {self.id} already has {len(self.runs)} runs waiting"
            )

    def enqueue(self, cells: list[Cell], stop_on_error: bool = True, linked: bool = False,
                by: str | None = None, verbatim: bool = False) -> list[Run]:
        """Queue runs of ``cells``; ``by``: who ran them (``run.queued``);
        ``verbatim``: run their sources as they are, without expanding templates."""
        self.check_room(len(cells))
        runs = [Run(id=new_id("run"), cell=cell, verbatim=verbatim) for cell in cells]
        if linked:
            chain = Chain(runs=runs, stop_on_error=stop_on_error)
            for run in runs:
                run.chain = chain
        starts_now = self._worker is None and not self.queue
        for run in runs:
            self.runs[run.id] = run
            self.queue.append(run)
            if starts_now:
                self._held.append(lambda run=run: self._announce_queued(run, by))
            else:
                self._announce_queued(run, by)
        self._start_worker()
        self._release()
        return runs

    def _announce_queued(self, run: Run, by: str | None) -> None:
        # queued_seq / started_seq: where the run's events start in the
        # log (the run output route reads from there, not from seq 1).
        self.store.execute(
            "INSERT INTO runs(id, session, state, queued_seq) VALUES (?, ?, 'queued', ?)",
            (run.id, self.id, self.last_seq + 1),
        )
        # The source before template expansion, masked like every event;
        # credentials written literally into options never reach the log.
        self.emit("run.queued", run=run.id, cell_id=run.cell.id, type=run.cell.type,
                  source=run.cell.source, options=redact_credentials(run.cell.options), by=by)

    def _announce_started(self, run: Run) -> None:
        self.store.execute("UPDATE runs SET state = 'running', started_seq = ? WHERE id = ?",
                           (self.last_seq + 1, run.id))
        self.emit("run.started", run=run.id)

    def _release(self) -> None:
        """Announce the held lifecycle events, in the order they happened.

        A run that starts at once (a cell.run on an idle session, the next
        run of a queue) has its run.queued and run.started held back until
        its processor has started its work (a shell cell's process is
        spawned) and is waiting for something: the child runs while the
        events are encoded and sent. Both are out before any other event of
        the session (every emit and every write of the session releases them
        first) and before the reactor gets control back (the start is one
        synchronous call), so no client, no reader of the store and no other
        event can see the run without them or see them out of order."""
        while self._held:
            held, self._held = self._held, []
            for i, announce in enumerate(held):
                try:
                    announce()
                except BaseException:
                    self._held[:0] = held[i + 1:]  # the rest go out with the next release, in order
                    raise

    def _write(self, sql: str, params: Iterable[Any] = ()) -> None:
        """Queue one of the session's writes to the store, after the held
        announcements (_release): the runs table and the log keep one order."""
        if self._held:
            self._release()
        self.store.execute(sql, params)

    def _start_worker(self) -> None:
        if self._worker is None and self.queue:
            worker = Deferred.fromCoroutine(self._work())
            # A queue of instant runs may already be done by now.
            if not worker.called:
                self._worker = worker

    async def _work(self) -> None:
        try:
            while self.queue:
                run = self.queue.popleft()
                self.current = run
                run.state = "running"
                run.started = self.clock.seconds()
                self._held.append(lambda run=run: self._announce_started(run))
                if self.observer is not None:
                    self.observer.run_started(run.cell.type)
                try:
                    # Runs until the processor waits (for its process, its
                    # kernel, ...): then the held events go out (_release).
                    running = ensureDeferred(self._executor(self, run))
                    try:
                        self._release()
                    except Exception:  # the run goes on; what was not announced goes with the next event
                        _log.failure("session {session}: announcing run {run} failed", session=self.id, run=run.id)
                    await running
                except Exception:
                    _log.failure("run {run} crashed the executor", run=run.id)
                if run.state != "finished":
                    self.finish(run, "error", error=proto.run_error(
                        proto.INTERNAL, "InternalError", "the runtime failed to run this cell"))
                self.current = None
        finally:
            self._worker = None

    def finish(
        self,
        run: Run,
        status: str,
        *,
        exit_code: int | None = None,
        error: dict[str, Any] | None = None,
    ) -> None:
        """Emit the run's one ``run.finished``; skip the rest of a failed chain."""
        if run.state == "finished":
            return
        duration = 0 if not run.started else int(round((self.clock.seconds() - run.started) * 1000))
        run.state = "finished"
        self.runs.pop(run.id, None)
        fields: dict[str, Any] = {"run": run.id, "status": status, "duration_ms": duration}
        if exit_code is not None:
            fields["exit_code"] = exit_code
        if error is not None:
            fields["error"] = error
        self._write("UPDATE runs SET state = 'finished' WHERE id = ?", (run.id,))
        self.emit("run.finished", **fields)
        if self.observer is not None:
            self.observer.run_finished(run.cell.type, status,
                                       self.clock.seconds() - run.started if run.started else None)
        chain = run.chain
        if chain is not None and status != "ok" and chain.stop_on_error:
            for later in chain.runs[chain.runs.index(run) + 1:]:
                if later.state == "queued":
                    self._drop_queued(later, "skipped")

    def _drop_queued(self, run: Run, status: str) -> None:
        try:
            self.queue.remove(run)
        except ValueError:
            pass
        self.finish(run, status)

    def cancel(self, run_id: str, reason: str = "cancelled") -> None:
        run = self.runs.get(run_id)
        if run is None:
            raise proto.ProtocolError(
                proto.NO_SUCH_RUN, f"no queued or running run {run_id[:64]!r} in session {self.id}"
            )
        self.interrupt(run, reason)

    def interrupt(self, run: Run, reason: str) -> None:
        if run.state == "queued":
            self._drop_queued(run, "cancelled")
        elif run.state == "running":
            if run.interrupt_reason is None:
                run.interrupt_reason = reason
            if run.ctx is not None:
                run.ctx.interrupt(reason)

    def interrupt_all(self, reason: str) -> Deferred[None] | None:
        """Cancel every queued run and interrupt the running one."""
        for run in list(self.queue):
            self.interrupt(run, reason)
        if self.current is not None:
            self.interrupt(self.current, reason)
        return self._worker

    # -- the document (PROTOCOL.md section 10) -------------------------------------------

    def edit_document(self, kind: str, fields: dict[str, Any], by: str) -> dict[str, Any]:
        """Append a document event (``cell.set`` / ``cell.deleted`` /
        ``cell.moved``, ``fields`` as ``self.document.plan_*`` gave them),
        masked like every event, and fold it into the document: what every
        client folds from the log is what the session holds. The event's
        fields."""
        self._release()  # the held announcements take their seqs before this event's
        seq = self.last_seq + 1
        fields = {**fields, "version": seq, "by": by} if kind == "cell.set" else {**fields, "by": by}
        masker = self.masker
        if masker:
            fields = masker.mask_tree(fields)
        self.store.execute(document_log.INDEX_SQL, (self.id, seq))  # before the event: see document_log
        self._append(kind, fields)
        self.document.apply({"event": kind, "seq": seq, **fields})
        self.document_unsaved += 1
        if self.document_unsaved >= document_log.SNAPSHOT_EVERY:
            self.save_document()
        return fields

    def save_document(self) -> None:
        """Queue a snapshot of the document as of ``last_seq`` (after the events it sums up)."""
        self._release()  # last_seq with the held announcements in it
        self.store.execute(document_log.SNAPSHOT_SQL, (self.id, self.last_seq, self.document.snapshot()))
        self.document_unsaved = 0

    def document_cells(self) -> list[dict[str, Any]]:
        """The document's cells in order, as protocol cells (no versions)."""
        return self.document.cells(versions=False)

    # -- secrets and variables ---------------------------------------------------------

    # The masker is rebuilt off the reactor thread; see .masking for how no
    # value can be shown before the masker that covers it is in place.
    masker = property(lambda self: self._secrets.masker, doc="What events are masked with now.")
    secrets = property(lambda self: self._secrets.ready, doc="Secrets the masker covers: what a kernel may get.")
    template_secrets = property(lambda self: self._secrets.for_templates, doc="Every secret set, also pending ones.")

    def set_secrets(self, secrets: dict[str, str]) -> Deferred[None]:
        """Fires once the masker covers the values; MaskerError if it cannot be built."""
        return self._secrets.set(secrets)

    def delete_secrets(self, names: Iterable[str]) -> list[str]:
        """Forget the named secrets (their values stay masked); the names removed."""
        return self._secrets.delete(names)

    def secret_names(self) -> list[str]:
        return self._secrets.names()

    def learn_secret_values(self, values: Iterable[str]) -> Deferred[None]:
        """Values a template substituted (e.g. environment fallbacks): fires once masked, as set_secrets."""
        return self._secrets.learn(values)

    def record_process_group(self, run: Run, pgid: int) -> None:
        """Store the process group of ``run``'s process (killed at the next
        start if the runtime died with it running); after its row exists."""
        self._write("UPDATE runs SET pgid = ? WHERE id = ?", (pgid, run.id))

    def set_variable(self, name: str, value: Any, *, persist: bool = True) -> None:
        # Values from outputs (HTTP bodies, kernel globals) may hold lone
        # surrogates or NaN: mend them so the value stores and sends as JSON.
        value = self.masker.mask_tree(proto.scrub(value))
        self.variables[name] = value
        if persist:
            self._write(
                "INSERT OR REPLACE INTO variables(session, name, value) VALUES (?, ?, ?)",
                (self.id, name, json.dumps(value, default=str)),
            )
        self.emit("variable.set", name=name, type=type_name(value), preview=preview(value))

    def clear_variables(self, names: list[str] | None = None) -> list[str]:
        """Forget the named variables (all when ``names`` is None)."""
        gone = [n for n in (self.variables if names is None else names) if n in self.variables]
        for name in gone:
            del self.variables[name]
            self._write("DELETE FROM variables WHERE session = ? AND name = ?", (self.id, name))
        return gone

    def close(self) -> Deferred[None] | None:
        if self.state == "closed":
            return None
        self.state = "closed"
        self._write("UPDATE sessions SET state = 'closed' WHERE id = ?", (self.id,))
        worker = self.interrupt_all("cancelled")
        if worker is None:
            self.emit("session.closed")
            return None
        return worker.addCallback(lambda _: self.emit("session.closed") and None)
