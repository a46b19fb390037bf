"""Run a notebook's cells on a runtime: an embedded one, or the one at ``--url``.

The embedded runtime is the daemon's own ``RuntimeService``, started in this
process on 127.0.0.1:<random port> with a random token; either way cells go
over the real WebSocket (client.py), the code path the UI uses.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import tempfile
from typing import Any, Mapping

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python import usage

from .. import protocol as proto
from .client import Connection, RequestFailed, RuntimeUnavailable
from .notebook import CellRun, OutputBuilder
from .report import Reporter

_log = Logger()

CANCEL_GRACE = 30.0  # how long a cancelled cell gets to really stop


class HomeInUse(Exception):
    """The embedded runtime's SPIN_HOME belongs to someone else (exit 2)."""


# -- the embedded runtime -------------------------------------------------------------------


def _daemon_owning(home: str) -> str | None:
    """'pid N' when a live spin-runtime daemon wrote home/var/runtime.json."""
    try:
        with open(os.path.join(home, "var", "runtime.json")) as f:
            pid = int(json.load(f)["pid"])
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return f"pid {pid}" if pid != os.getpid() and b"spin-runtime" in cmdline else None


class EmbeddedRuntime:
    """``RuntimeService`` in this process, on 127.0.0.1:0, with a random token."""

    def __init__(self, reactor: Any, environ: Mapping[str, str], home: str | None) -> None:
        self.reactor = reactor
        self.environ = environ
        self.temporary = home is None
        self.home = os.path.abspath(home) if home else tempfile.mkdtemp(prefix="spin-run-")
        self.token = secrets.token_urlsafe(32)
        self.service: Any = None
        self._lock: int | None = None

    def start(self) -> str:
        """Start listening; the ws:// URL. HomeInUse or RuntimeUnavailable."""
        from ..tap import Options, makeService

        if not self.temporary:
            self._claim_home()
        environ = dict(self.environ)
        environ["SPIN_TOKEN"] = self.token
        environ["SPIN_HOME"] = self.home
        try:
            options = Options()
            # No warm kernel: a one-shot run starts the one kernel it needs.
            options.parseOptions(["--home", self.home, "--endpoint", "tcp:0:interface=127.0.0.1",
                                  "--kernel-pool", "0"])
            service = makeService(options, self.reactor, environ)
            service.privilegedStartService()
            service.startService()
        except (SystemExit, usage.UsageError) as e:
            self.release()
            raise RuntimeUnavailable(f"the embedded runtime could not start: {e}") from None
        self.service = service
        return str(getattr(service, "addresses")[0]["url"])

    def _claim_home(self) -> None:
        # Starting a runtime on a directory finishes (and kills) the runs it
        # finds unfinished: never do that to a live daemon's or another run's.
        owner = _daemon_owning(self.home)
        if owner is not None:
            raise HomeInUse(f"SPIN_HOME {self.home} belongs to a running spin-runtime ({owner}): run against "
                            f"it with --url, or give this run its own --home")
        var = os.path.join(self.home, "var")
        try:
            os.makedirs(var, mode=0o700, exist_ok=True)
            fd = os.open(os.path.join(var, "spin-run.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            return  # makeService explains an unusable SPIN_HOME
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise HomeInUse(f"SPIN_HOME {self.home} is in use by another `spin run`: give this run "
                            f"its own --home") from None
        self._lock = fd

    async def stop(self) -> None:
        try:
            if self.service is not None and self.service.running:
                await self.service.stopService()
        finally:
            self.release()

    def release(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None
        if self.temporary:
            shutil.rmtree(self.home, ignore_errors=True)


# -- one notebook, run as a linked chain --------------------------------------------------------


class NotebookRun:
    """Submits the cells as one ``cells.run`` chain and follows their events.

    ``stop(note)`` (max duration, a signal) cancels the first unfinished run;
    the chain then skips the rest. ``finished`` fires once every run has its
    ``run.finished``, the connection is lost, or a stop's grace has passed."""

    def __init__(self, conn: Connection, runs: list[CellRun], reporter: Reporter, reactor: Any) -> None:
        self.conn = conn
        self.runs = runs
        self.reporter = reporter
        self.reactor = reactor
        self.builder = OutputBuilder()
        self.session: str | None = None
        self.stopped: str | None = None  # why stop() was called
        self.lost: str | None = None
        self.finished: Deferred[None] = Deferred()
        self._by_id: dict[str, CellRun] = {}
        self._queued = 0
        self._current: CellRun | None = None
        self._grace: Any = None
        conn.on_event = self._event
        conn.lost.addCallback(self._lost)

    async def start(self, name: str, variables: dict[str, Any], secret_values: dict[str, str]) -> None:
        reply = await self.conn.request("session.create", name=name, variables=variables)
        self.session = reply["session"]["id"]
        if secret_values:
            await self.conn.request("secrets.set", session=self.session, secrets=secret_values)
        if not self.runs or self.stopped is not None:
            self._settle()
            return
        # Events of the chain may arrive before this reply: runs are matched
        # to cells by the order of their run.queued events.
        await self.conn.request("cells.run", session=self.session, cells=[r.cell for r in self.runs],
                                stop_on_error=True)
        if self.stopped is not None:
            await self._cancel_first()

    def _lost(self, why: str) -> str:
        self.lost = why
        self._settle()
        return why

    def _settle(self) -> None:
        if self._grace is not None and self._grace.active():
            self._grace.cancel()
        if not self.finished.called:
            self.finished.callback(None)

    def _event(self, event: dict[str, Any]) -> None:
        if event.get("session") != self.session or self.session is None:
            return
        kind = event.get("event")
        if kind == "run.queued":
            if self._queued < len(self.runs):
                run = self.runs[self._queued]
                self._queued += 1
                run.run_id = str(event.get("run"))
                self._by_id[run.run_id] = run
            return
        if kind == "variable.set":
            if self._current is not None:
                self.builder.event(self._current, event)
            return
        found = self._by_id.get(str(event.get("run")))
        if found is None:
            return
        run = found
        if kind == "run.started":
            self._current = run
            self.builder.started(run)
            self.reporter.cell_started(run)
        elif kind == "run.finished":
            note = None
            if self.stopped is not None and event.get("status") == "cancelled":
                note = self.stopped
            self.builder.finished(run, event, note)
            if self._current is run:
                self._current = None
            self.reporter.cell_finished(run)
            if all(r.status is not None for r in self.runs):
                self._settle()
        else:
            self.builder.event(run, event)
            self.reporter.output(run, event)

    def stop(self, note: str) -> None:
        """Cancel what is running, skip the rest; give it CANCEL_GRACE seconds."""
        if self.stopped is not None or self.finished.called:
            return
        self.stopped = note
        self._grace = self.reactor.callLater(CANCEL_GRACE, self._settle)
        if self._queued:
            Deferred.fromCoroutine(self._cancel_first()).addErrback(
                lambda f: _log.failure("cancelling the run failed", f))

    async def _cancel_first(self) -> None:
        for run in self.runs:
            if run.status is not None or run.run_id is None:
                continue
            try:
                await self.conn.request("run.cancel", session=self.session, run=run.run_id)
                return
            except RequestFailed as e:
                if e.code != proto.NO_SUCH_RUN:  # else it just finished: try the next one
                    raise
            except RuntimeUnavailable:
                return

    async def close(self) -> None:
        """Close the session (its processes and kernel) on the runtime; best effort."""
        if self.session is None or self.lost is not None:
            return
        try:
            await self.conn.request("session.close", session=self.session, timeout=20.0)
        except (RequestFailed, RuntimeUnavailable) as e:
            _log.warn("could not close session {session}: {e}", session=self.session, e=e)
