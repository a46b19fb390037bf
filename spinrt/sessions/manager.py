"""SessionManager: creates, finds and closes sessions; restores them at start."""

from __future__ import annotations

import os
import shutil
import signal
import time
from typing import Any, Callable, Iterable, Mapping

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, gatherResults
from twisted.internet.threads import deferToThread
from twisted.logger import Logger

from .. import protocol as proto
from ..cells.base import ICellProcessor
from . import document_log
from .document import ABSENT, initial_cells
from .masking import MaskerBuilder, MaskerError, build_in_thread
from .session import RunExecutor, Session, new_id
from .store import EventStore
from .tails import DEFAULT_TAIL_MEMORY, TailBudget

_log = Logger()

SHUTDOWN_GRACE = 10.0  # seconds running cells get to stop at shutdown


class SessionManager(Service):
    def __init__(
        self,
        store: EventStore,
        executor: RunExecutor,
        processors: Mapping[str, ICellProcessor],
        clock: Any,
        wallclock: Callable[[], float] = time.time,
        build_masker: MaskerBuilder | None = None,
        tail_memory: int = DEFAULT_TAIL_MEMORY,
    ) -> None:
        self.store = store
        # What the in-memory tails of all sessions may hold together (bytes).
        self.tails = TailBudget(tail_memory)
        # Maskers take up to ~0.5 s to build: never on the reactor thread.
        self.build_masker = build_masker or build_in_thread(clock)
        self.executor = executor
        self.processors = processors
        self.clock = clock
        self.wallclock = wallclock
        self.sessions: dict[str, Session] = {}
        self.started_at = wallclock()
        # Told of sessions created and of every session's runs (spinrt.metrics), or None.
        self.observer: Any = None
        store.on_flush(self._flushed)

    # -- lifecycle -----------------------------------------------------------------

    def restore_sync(self) -> None:
        """Open the store, rebuild sessions, finish runs a crash interrupted.

        Runs before the reactor does (privilegedStartService), so the blocking
        open cannot stall anything."""
        snapshot = self.store.open_sync()
        for stored in snapshot.sessions:
            self.sessions[stored.id] = self._session(
                id=stored.id, name=stored.name, created=stored.created,
                last_seq=stored.last_seq, state=stored.state, notebook=stored.notebook,
            )
        self._restore_documents()
        for sid, name, value in snapshot.variables:
            if sid in self.sessions:
                self.sessions[sid].variables[name] = value
        for run in snapshot.unfinished_runs:
            if run.pgid:
                _kill_leftover_group(run.pgid)
            session = self.sessions.get(run.session)
            if session is None:
                continue
            self.store.execute("UPDATE runs SET state = 'finished' WHERE id = ?", (run.id,))
            session.emit(
                "run.finished",
                run=run.id,
                status="error",
                duration_ms=0,
                error=proto.run_error(
                    "runtime_restarted",
                    "RuntimeRestarted",
                    "the runtime stopped while this run was "
                    + ("running" if run.state == "running" else "queued")
                    + "; its process is gone",
                ),
            )
        if snapshot.unfinished_runs:
            _log.info("finished {n} runs interrupted by the last stop", n=len(snapshot.unfinished_runs))

    def _restore_documents(self) -> None:
        started, folded = time.monotonic(), 0
        for session in self.sessions.values():
            session.document, count = document_log.restore(self.store, session.id)
            folded += count
            if count >= document_log.SNAPSHOT_EVERY:
                session.save_document()  # the next start need not fold them again
        if folded:
            _log.info("rebuilt session documents from {n} events in {s:.2f} s",
                      n=folded, s=time.monotonic() - started)

    def _session(self, **kw: Any) -> Session:
        session = Session(store=self.store, clock=self.clock, executor=self.executor, wallclock=self.wallclock,
                          build_masker=self.build_masker, tails=self.tails, **kw)
        session.observer = self.observer
        return session

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        workers = [
            w for w in (s.interrupt_all("cancelled") for s in self.sessions.values()) if w is not None
        ]
        if workers:
            _log.info("stopping {n} running cells", n=len(workers))
            done = DeferredList(workers, consumeErrors=True)
            timer = self.clock.callLater(SHUTDOWN_GRACE, done.cancel)
            try:
                await done
            except Exception:
                pass
            if timer.active():
                timer.cancel()
        for processor in self.processors.values():
            try:
                await _maybe(processor.stop())
            except Exception:
                _log.failure("stopping a cell processor failed")
        # Anything still unfinished is recorded as cancelled before the store closes.
        for session in self.sessions.values():
            for run in list(session.runs.values()):
                session.finish(run, "cancelled", error=proto.run_error(
                    "cancelled", "Cancelled", "the runtime stopped"))
            if session.document_unsaved:
                session.save_document()
        await self.store.close()

    def _flushed(self, last: dict[str, int]) -> None:
        for sid in last:
            session = self.sessions.get(sid)
            if session is not None:
                session.trim_tail()
        self.tails.committed()

    # -- operations ------------------------------------------------------------------

    def create(self, name: str | None = None, variables: Mapping[str, Any] | None = None,
               notebook: Mapping[str, Any] | None = None, by: str = "owner") -> Session:
        """A new open session. ``notebook`` (as ``NotebookLibrary.get``
        returns it): the document starts as its cells (``cell.set`` events
        by ``by``) and the session remembers its name. DocumentError
        ``document_full`` (nothing created) when the notebook is too large."""
        cells = initial_cells(notebook["cells"]) if notebook is not None else []
        sid = new_id("ss")
        created = proto.timestamp(self.wallclock())
        notebook_name = notebook["name"] if notebook is not None else None
        session = self._session(id=sid, name=name or notebook_name or sid, created=created,
                                notebook=notebook_name)
        self.sessions[sid] = session
        if self.observer is not None:
            self.observer.session_created()
        self.store.execute(
            "INSERT INTO sessions(id, name, created, state, notebook) VALUES (?, ?, ?, 'open', ?)",
            (sid, session.name, created, notebook_name),
        )
        for key, value in (variables or {}).items():
            if isinstance(key, str) and key.isidentifier():
                session.set_variable(key, value)
        for cell in cells:
            session.edit_document("cell.set", session.document.plan_set(cell, ABSENT), by)
        return session

    def get(self, sid: str) -> Session:
        session = self.sessions.get(sid)
        if session is None:
            raise proto.ProtocolError(proto.NO_SUCH_SESSION, f"no session {sid[:64]!r}")
        return session

    def list(self) -> list[dict[str, Any]]:
        return [s.describe() for s in self.sessions.values()]

    async def close(self, sid: str) -> None:
        session = self.get(sid)
        worker = session.close()
        if worker is not None:
            await worker
        await gatherResults([
            _maybe(p.close_session(sid)) for p in self.processors.values()
        ])

    async def delete(self, sid: str) -> int:
        """Remove a closed session and all its history for good (its events,
        runs, variables, document and working directory); the number of
        events deleted. ProtocolError ``session_open`` for an open session:
        close it first. Clients still reading it stop receiving it."""
        session = self.get(sid)
        if session.state != "closed":
            raise proto.ProtocolError("session_open", f"session {sid} is open: close it first (session.close)")
        del self.sessions[sid]
        for sub in list(session.subscribers):
            sub.close()
        self.tails.forget(session)
        deleted = await self.store.delete_session(sid)
        services = getattr(self.executor, "services", None)
        home = getattr(services, "home", None)
        if home is not None:
            directory = os.path.join(home, "sessions", sid)
            forget = getattr(services, "forget_session_dir", None)
            if forget is not None:
                forget(sid)
            await deferToThread(shutil.rmtree, directory, True)
        _log.info("session {sid} deleted ({n} events)", sid=sid, n=deleted)
        return deleted

    @property
    def kernels(self) -> Any:
        """The Python processor, when this runtime has one (it holds the kernels)."""
        return self.processors.get("python")

    async def set_secrets(self, sid: str, secrets: Mapping[str, str]) -> None:
        """Returns once the session's masker covers the values (built in a
        thread; until then the kernel does not get them). ProtocolError."""
        session = self.get(sid)
        try:
            await session.set_secrets(dict(secrets))
        except MaskerError:
            raise proto.ProtocolError(
                proto.INTERNAL, "the runtime could not build the masker for these secrets; they were not set"
            ) from None
        kernels = self.kernels
        if kernels is not None and kernels.has_kernel(sid):
            await kernels.set_secrets(sid, secrets)  # SpinSecrets.get_secret sees them at once

    async def delete_secrets(self, sid: str, names: list[str]) -> list[str]:
        """Forget a session's secrets, in the session and in its kernel; the names removed."""
        session = self.get(sid)
        removed = session.delete_secrets(names)
        kernels = self.kernels
        if removed and kernels is not None and kernels.has_kernel(sid):
            await kernels.delete_secrets(sid, removed)
        return removed

    async def clear_variables(self, sid: str, names: list[str] | None) -> None:
        session = self.get(sid)
        session.clear_variables(names)
        kernels = self.kernels
        if kernels is not None and kernels.has_kernel(sid):
            await kernels.clear_variables(sid, names)

    async def restart_kernel(self, sid: str) -> None:
        session = self.get(sid)
        if session.state != "open":
            raise proto.ProtocolError(proto.SESSION_CLOSED, f"session {sid} is closed")
        processor = self.processors.get("python")
        restart = getattr(processor, "restart_kernel", None)
        if restart is None:
            raise proto.ProtocolError("no_kernel", "this runtime has no Python kernels")
        await restart(sid)

    def counts(self) -> dict[str, int]:
        open_sessions = sum(1 for s in self.sessions.values() if s.state == "open")
        running = sum(1 for s in self.sessions.values() if s.current is not None)
        queued = sum(len(s.queue) for s in self.sessions.values())
        return {"sessions": len(self.sessions), "open_sessions": open_sessions,
                "running": running, "queued": queued}


def _kill_leftover_group(pgid: int) -> None:
    """A process group a killed runtime left behind (kill -9): end it."""
    try:
        os.killpg(pgid, signal.SIGKILL)
        _log.info("killed process group {pgid} left by the previous runtime", pgid=pgid)
    except (ProcessLookupError, PermissionError):
        pass


def _maybe(result: Deferred[Any] | None) -> Deferred[Any]:
    if isinstance(result, Deferred):
        return result
    d: Deferred[Any] = Deferred()
    d.callback(result)
    return d


def processors_of(types: Iterable[Any], services: Any) -> dict[str, ICellProcessor]:
    return {t.name: ICellProcessor(t.make_processor(services)) for t in types}
