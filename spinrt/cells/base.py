"""What every cell type shares: the plugin interfaces, the run context, outcomes.

A cell type is a Twisted plugin providing ``ICellType`` (found with
``getPlugins(ICellType, spinrt.plugins)``). The runtime asks it once for an
``ICellProcessor``; the processor runs cells of that type for every session.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from zope.interface import Attribute, Interface

from ..protocol import Cell, run_error
from ..secrets import Masker, StreamMasker


class ICellType(Interface):
    """A plugin: one cell type (``name`` is the protocol's ``cell.type``)."""

    name = Attribute("The cell type, e.g. 'shell'.")

    def make_processor(services: "RuntimeServices") -> "ICellProcessor":
        """Build the processor that runs cells of this type."""


class ICellProcessor(Interface):
    def run(cell: Cell, ctx: "CellContext") -> "Deferred[Outcome]":
        """Run one cell; fire with its Outcome (never errback for user errors).

        The processor calls ``ctx.on_interrupt`` to learn of cancellation
        and timeouts, and fires only once the work has really stopped."""

    def close_session(session_id: str) -> "Deferred[None] | None":
        """Release what this processor holds for a session (processes, kernels)."""

    def stop() -> "Deferred[None] | None":
        """The runtime is stopping: release everything."""


@attrs.define
class RuntimeServices:
    """What the runtime lends to cell processors."""

    reactor: Any
    home: str
    environ: Mapping[str, str]
    # Settings from the command line that cell types read (e.g. "kernel_pool").
    settings: Mapping[str, Any] = attrs.field(factory=dict)
    # emit_event(session_id, kind, **fields): a session-level event (kernel.status).
    emit_event: Callable[..., Any] = lambda session_id, kind, **fields: None
    # The shared outbound HTTP client (spinrt.outbound), when configured.
    outbound: Any = None
    # session_secrets(session_id) -> (secret, learn): ``secret(NAME)`` resolves
    # a ``{{secret:NAME}}`` as a template would in that session (KeyError if
    # unset); ``learn(values)`` fires once the session masks ``values``.
    session_secrets: Callable[[str], Any] | None = None

    # Session directories this runtime has made: see known_session_dir.
    _made_dirs: set[str] = attrs.field(factory=set, init=False, repr=False)

    def session_dir(self, session_id: str) -> str:
        """``SPIN_HOME/sessions/<id>``, made (mode 0700) if it is not there."""
        path = os.path.join(self.home, "sessions", session_id)
        os.makedirs(path, mode=0o700, exist_ok=True)
        self._made_dirs.add(path)
        return path

    def forget_session_dir(self, session_id: str) -> None:
        """The session was deleted, its directory with it."""
        self._made_dirs.discard(os.path.join(self.home, "sessions", session_id))

    def known_session_dir(self, session_id: str) -> str:
        """:meth:`session_dir`, without looking again once this runtime has
        made it (two system calls and a raised error per run otherwise). A
        caller that finds it gone (a cell deleted it) calls session_dir."""
        path = os.path.join(self.home, "sessions", session_id)
        return path if path in self._made_dirs else self.session_dir(session_id)

    def child_environment(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The runtime's environment for a child process, minus the token."""
        env = {k: v for k, v in self.environ.items() if k != "SPIN_TOKEN"}
        if extra:
            env.update(extra)
        return env


@attrs.define
class Outcome:
    status: str  # ok / error (cancelled / timeout are decided by the session)
    exit_code: int | None = None
    error: dict[str, Any] | None = None
    value: dict[str, Any] | None = None  # the CellResult for output_variable

    @classmethod
    def failed(cls, code: str, ename: str, evalue: str, **kw: Any) -> "Outcome":
        return cls(status="error", error=run_error(code, ename, evalue), **kw)


class CellContext:
    """One run's handle on its session: emit outputs, learn of interrupts."""

    def __init__(
        self,
        *,
        run_id: str,
        session_id: str,
        emit: Callable[..., int],
        services: RuntimeServices,
        producers: Any,
        record_pgid: Callable[[int], None] = lambda pgid: None,
        masker: Callable[[], Masker] = Masker,
        emit_stream: Callable[[str, str, str, Masker], int] | None = None,
    ) -> None:
        self.run_id = run_id
        self.session_id = session_id
        self._emit = emit
        # emit_stream(run, name, text, masker): text already masked with
        # masker, so the session does not mask it a second time.
        self._emit_stream = emit_stream or (
            lambda run, name, text, masker: emit("stream", run=run, name=name, text=text)
        )
        self.services = services
        self._producers = producers
        self._record_pgid = record_pgid
        self._masker = masker
        self._stream_masker = StreamMasker()
        self.interrupted: str | None = None
        self._interrupt_handlers: list[Callable[[str], None]] = []

    @property
    def reactor(self) -> Any:
        return self.services.reactor

    @property
    def workdir(self) -> str:
        """The session's directory (see RuntimeServices.known_session_dir)."""
        return self.services.known_session_dir(self.session_id)

    # -- outputs -----------------------------------------------------------------

    def stream(self, name: str, text: str) -> None:
        masker = self._masker()
        if masker:
            # Hold back a secret's length so one split across pieces is caught.
            text = self._stream_masker.feed(masker, name, text)
        if text:
            self._emit_stream(self.run_id, name, text, masker)

    def flush_streams(self) -> None:
        """Emit what masking held back; called once the run's work has ended."""
        masker = self._masker()
        for name, text in self._stream_masker.flush(masker):
            self._emit_stream(self.run_id, name, text, masker)

    def display(self, data: dict[str, Any], metadata: dict[str, Any] | None = None, display_id: str | None = None) -> None:
        fields: dict[str, Any] = {"run": self.run_id, "data": data, "metadata": metadata or {}}
        if display_id is not None:
            fields["display_id"] = display_id
        self._emit("display", **fields)

    def update_display(self, display_id: str, data: dict[str, Any], metadata: dict[str, Any] | None = None) -> None:
        self._emit("display.update", run=self.run_id, display_id=display_id, data=data, metadata=metadata or {})

    def clear(self, wait: bool = False) -> None:
        self._emit("clear", run=self.run_id, wait=wait)

    def result(self, data: dict[str, Any], variable: str | None = None) -> None:
        fields: dict[str, Any] = {"run": self.run_id, "data": data}
        if variable is not None:
            fields["variable"] = variable
        self._emit("result", **fields)

    def started_process_group(self, pgid: int) -> None:
        """Record the run's process group, so a restart after a crash can end it."""
        self._record_pgid(pgid)

    # -- secrets -----------------------------------------------------------------

    def secret(self, name: str) -> str:
        """A secret as ``{{secret:NAME}}`` would give it in this run's session
        (session, then runtime secret store, then environment); KeyError."""
        if self.services.session_secrets is not None:
            return self.services.session_secrets(self.session_id)[0](name)
        from ..secrets import lookup_secret

        return lookup_secret(name, {}, self.services.environ, self.services.settings.get("runtime_secrets"))

    def mask_values(self, values: Any) -> "Deferred[None]":
        """Fires once every later output of this session masks ``values``
        (credentials a cell type resolved itself, e.g. a connection's token):
        await it before emitting anything that could hold one."""
        if self.services.session_secrets is not None:
            result: Deferred[None] = self.services.session_secrets(self.session_id)[1](values)
            return result
        from twisted.internet.defer import succeed

        return succeed(None)

    # -- backpressure ------------------------------------------------------------

    def add_producer(self, producer: IPushProducer) -> None:
        """Pause this producer while the store is behind."""
        self._producers.add_producer(producer)

    def remove_producer(self, producer: IPushProducer) -> None:
        self._producers.remove_producer(producer)

    # -- interrupts --------------------------------------------------------------

    def on_interrupt(self, handler: Callable[[str], None]) -> None:
        """Call ``handler(reason)`` when the run is cancelled or times out."""
        if self.interrupted is not None:
            handler(self.interrupted)
        else:
            self._interrupt_handlers.append(handler)

    def interrupt(self, reason: str) -> None:
        if self.interrupted is not None:
            return
        self.interrupted = reason
        handlers, self._interrupt_handlers = self._interrupt_handlers, []
        for handler in handlers:
            handler(reason)
