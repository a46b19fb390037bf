"""Jupyter kernels as spin sessions: the registry behind /jupyter/api/kernels.

One kernel, two views: each Jupyter kernel is a spin session (its Python
kernel, or for ``spin-shell`` its shell cells) with a UUID the runtime
assigns (``session.jupyter_kernel_id``; jupyter_server routes only
UUID-shaped ids). Executions from Jupyter clients are runs in the
session's log like any other, so spin clients watch them live and Jupyter
clients watch spin runs on iopub. The Jupyter face is a client of the
session: it follows the log with a :class:`Subscription` (the kernel's
*monitor*: execution counts, state, last activity) and each channels
WebSocket follows it with its own (spinrt.web.jupyter.channels).

Lifecycle: ``create`` (POST, 201), ``delete`` (DELETE, 204; the spin
session is closed, its history stays readable), ``interrupt`` (the running
run is cancelled: a Python cell gets SIGINT, a shell cell's process group
is ended), ``restart`` (a new Python kernel; answers once it is up).
``--cull-idle-kernels SECONDS``: a kernel that ran nothing and had no
connection, Jupyter or spin, for that long is culled (iopub ``status:
dead`` to anyone still listening, then gone: 404).
"""

from __future__ import annotations

import collections
import time
import uuid
from typing import Any, Callable, Mapping

import attrs
import orjson
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from ...protocol import Cell
from . import framing

_log = Logger()

PYTHON, SHELL = "python3", "spin-shell"
DEFAULT_SPEC = PYTHON
CELL_TYPES = {PYTHON: "python", SHELL: "shell"}
LAUNCH_TIMEOUT = 40.0  # seconds (KERNEL_LAUNCH_TIMEOUT's default in jupyter_server)
MAX_LAUNCH_TIMEOUT = 600.0
KEPT_RUNS = 4096  # runs whose request, source and count a kernel remembers
KEPT_CURSORS = 256  # clients (session_id) whose place in the log a kernel remembers
USERNAME_LIMIT = 64


class KernelError(Exception):
    """A request the registry refuses: an HTTP ``status`` and a message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def kernelspecs(base: str) -> dict[str, Any]:
    """``GET /api/kernelspecs``: every spec with ``name``, ``spec`` and
    ``resources`` (jupyter_server skips entries lacking one); ``base`` is
    the URL path the resources are served under (``/jupyter``)."""
    return {"default": DEFAULT_SPEC, "kernelspecs": {name: kernelspec(name, base) for name in CELL_TYPES}}


def kernelspec(name: str, base: str) -> dict[str, Any]:
    if name == PYTHON:
        spec = {"argv": ["python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "Python 3 (spin)", "language": "python"}
    else:
        spec = {"argv": ["bash"], "display_name": "Shell (spin)", "language": "bash"}
    spec.update({"interrupt_mode": "signal", "env": {}, "metadata": {"spin": {"cell_type": CELL_TYPES[name]}}})
    return {"name": name, "spec": spec, "resources": {"logo-svg": f"{base}/kernelspecs/{name}/logo-svg.svg"}}


def logo(name: str) -> bytes:
    """The kernelspec's one resource: a small SVG badge."""
    label = "py" if name == PYTHON else "sh"
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64" viewBox="0 0 64 64">'
            f'<rect width="64" height="64" rx="10" fill="#2f5d8a"/><text x="32" y="42" font-size="26" '
            f'font-family="monospace" text-anchor="middle" fill="#fff">{label}</text></svg>').encode()


def filter_env(env: Any) -> tuple[float, str | None, list[str]]:
    """A create request's ``env`` -> (launch timeout, username, names
    dropped). Only an allow-list is used: ``KERNEL_LAUNCH_TIMEOUT`` (seconds,
    1 to 600), ``KERNEL_USERNAME`` (recorded, at most 64 characters);
    ``KERNEL_WORKING_DIR`` is a path on the client's host and is ignored;
    everything else is dropped. Nothing reaches the kernel's environment.
    KernelError 400 for an ``env`` that is not an object of strings."""
    if env is None:
        return LAUNCH_TIMEOUT, None, []
    if not isinstance(env, dict) or not all(isinstance(k, str) for k in env):
        raise KernelError(400, "'env' must be an object of strings")
    timeout, username, dropped = LAUNCH_TIMEOUT, None, []
    for key, value in env.items():
        if key == "KERNEL_LAUNCH_TIMEOUT":
            try:
                timeout = float(value)
            except (TypeError, ValueError):
                raise KernelError(400, "env.KERNEL_LAUNCH_TIMEOUT must be a number of seconds") from None
            if not 1 <= timeout <= MAX_LAUNCH_TIMEOUT:  # also refuses nan
                raise KernelError(400, f"env.KERNEL_LAUNCH_TIMEOUT must be between 1 and {MAX_LAUNCH_TIMEOUT:g} seconds")
        elif key == "KERNEL_USERNAME":
            if isinstance(value, str) and value.strip():
                username = value.strip()[:USERNAME_LIMIT]
        elif key != "KERNEL_WORKING_DIR":
            dropped.append(key[:64])
    return timeout, username, sorted(dropped)


@attrs.define
class JupyterRequest:
    """An execute_request that became a run: its header (the parent of what
    it causes), the client (``session_id``) its reply goes to."""

    header: dict[str, Any]
    client: str
    stop_on_error: bool = True
    aborted: bool = False  # cancelled after an earlier error: its reply says "aborted"


@attrs.define
class RunInfo:
    source: str = ""
    by: str | None = None
    type: str = ""
    count: int | None = None


class _Monitor:
    """The kernel's own subscription sink: always writable, so always live."""

    writable = True
    jupyter = True  # not a spin client

    def __init__(self, kernel: "JupyterKernel") -> None:
        self.kernel = kernel

    def send(self, frame: bytes) -> None:
        try:
            self.kernel.observe(orjson.loads(frame))
        except Exception:
            _log.failure("jupyter kernel {id}: following the log failed", id=self.kernel.id)


class JupyterKernel:
    def __init__(self, registry: "JupyterKernels", session: Any, spec: str, username: str | None) -> None:
        self.registry = registry
        self.id = str(uuid.uuid4())
        self.session = session
        self.spec = spec
        self.cell_type = CELL_TYPES[spec]
        self.username = username
        self.key = uuid.uuid4().hex  # header.session of the messages the runtime makes
        self.state = "starting" if spec == PYTHON else "idle"
        self.last_activity = registry.wallclock()
        self.last_connected = registry.clock.seconds()
        self.connections: dict[str, Any] = {}  # client session_id -> its ChannelConnection
        self.cursors: collections.OrderedDict[str, int] = collections.OrderedDict()
        self.requests: collections.OrderedDict[str, JupyterRequest] = collections.OrderedDict()
        # By cell id (the request's msg_id) while enqueue runs: its first events come before it returns.
        self._pending: dict[Any, JupyterRequest] = {}
        self.runs: collections.OrderedDict[str, RunInfo] = collections.OrderedDict()
        self.execution_count = 0
        self.restarting = False  # a REST restart: its kernel.status restarting is not news to clients
        self.gone = False
        session.jupyter_kernel_id = self.id
        self.monitor = session.subscribe(_Monitor(self), session.last_seq)

    # -- the model -------------------------------------------------------------

    def model(self) -> dict[str, Any]:
        """jupyter_server's kernel model; ``last_activity`` always with
        microseconds and ``Z``, ``connections`` the channels WebSockets
        plus the spin clients attached."""
        return {
            "id": self.id,
            "name": self.spec,
            "last_activity": framing.iso_epoch(self.last_activity),
            "execution_state": self.state,
            "connections": len(self.connections) + self.spin_clients(),
        }

    def spin_clients(self) -> int:
        return sum(1 for sub in list(self.session.subscribers) if not getattr(sub.sink, "jupyter", False))

    def touch(self) -> None:
        self.last_activity = self.registry.wallclock()

    # -- the log ---------------------------------------------------------------

    def observe(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        run = event.get("run")
        if kind == "run.queued":
            self._remember(run, RunInfo(source=event.get("source") or "", by=event.get("by"),
                                        type=event.get("type") or ""))
        elif kind == "run.started":
            self.count_for(run)
            self.state = "busy"
            self.touch()
        elif kind == "run.finished":
            self.state = "busy" if self.session.queue else "idle"
            self.touch()
            request = self.request_of(run)
            if request is not None and request.stop_on_error and event.get("status") not in ("ok", None):
                # As ipykernel does: an error aborts the requests queued behind it.
                self.abort_queued()
        elif kind == "kernel.status":
            state = event.get("state")
            if state in ("starting", "restarting", "dead"):
                self.state = state
            elif state == "idle" and self.session.current is None:
                self.state = "idle"
        elif kind == "session.closed":
            self.state = "dead"
            self.registry.clock.callLater(0, self.registry.forget, self, "its spin session was closed")

    def _remember(self, run: Any, info: RunInfo) -> None:
        if isinstance(run, str):
            self.runs[run] = info
            while len(self.runs) > KEPT_RUNS:
                self.runs.popitem(last=False)

    def count_for(self, run: str) -> int:
        """The run's execution count: the next one the first time it is asked
        for (in log order: the monitor asks at each run.started)."""
        info = self.runs.get(run)
        if info is None:
            info = RunInfo()
            self._remember(run, info)
        if info.count is None:
            self.execution_count += 1
            info.count = self.execution_count
        return info.count

    def request_of(self, run: Any) -> JupyterRequest | None:
        """The Jupyter request behind a run, if a Jupyter client asked for it."""
        request = self.requests.get(run)
        if request is None and self._pending:
            live = self.session.runs.get(run)
            if live is not None and live.cell.id in self._pending:
                request = self._pending.pop(live.cell.id)
                self._keep(run, request)
        return request

    def _keep(self, run: str, request: JupyterRequest) -> None:
        self.requests[run] = request
        while len(self.requests) > KEPT_RUNS:
            self.requests.popitem(last=False)

    def parent_of(self, run: str) -> dict[str, Any]:
        """The header of the request behind a run: the client's
        execute_request, or one made up for a run from a spin client."""
        request = self.request_of(run)
        if request is not None:
            return request.header
        info = self.runs.get(run) or RunInfo()
        return {"msg_id": run, "msg_type": "execute_request", "session": f"spin-{self.session.id}",
                "username": info.by or "spin", "date": "", "version": framing.PROTOCOL_VERSION}

    # -- requests --------------------------------------------------------------

    def execute(self, code: str, header: dict[str, Any], client: str, by: str, stop_on_error: bool) -> str:
        """An execute_request as a run of the session; the run id.
        ProtocolError (session closed, queue full)."""
        cell_id = header.get("msg_id")
        request = JupyterRequest(header, client, stop_on_error)
        self._pending[cell_id] = request
        try:
            run = self.session.enqueue([Cell(id=cell_id, type=self.cell_type, source=code, options={})],
                                       by=by, verbatim=True)[0]
        finally:
            self._pending.pop(cell_id, None)
        if run.id not in self.requests:
            self._keep(run.id, request)
        self.touch()
        return run.id

    def interrupt(self) -> None:
        """Cancel the running run (SIGINT to a Python cell, the process group of a shell cell)."""
        current = self.session.current
        if current is not None:
            self.session.interrupt(current, "cancelled")
        self.touch()

    def abort_queued(self) -> None:
        """Cancel the queued runs Jupyter clients asked for with stop_on_error.

        Called while the log is offering an event: they leave the queue now
        (before the session's worker takes the next run) and are finished on
        the next turn, since appending to the log now would reach the other
        subscribers ahead of the event they are being offered."""
        session = self.session
        for run in list(session.queue):
            request = self.request_of(run.id)
            if request is not None and request.stop_on_error and not request.aborted:
                request.aborted = True
                session.queue.remove(run)
                self.registry.clock.callLater(0, session.finish, run, "cancelled")

    def cursor_for(self, client: str) -> int | None:
        """Where a reconnecting client (its ``session_id``) left the log, once."""
        return self.cursors.pop(client, None)

    def left(self, client: str, seq: int) -> None:
        self.cursors[client] = seq
        self.cursors.move_to_end(client)
        while len(self.cursors) > KEPT_CURSORS:
            self.cursors.popitem(last=False)
        self.last_connected = self.registry.clock.seconds()


class JupyterKernels:
    """The registry: kernel id -> JupyterKernel, and culling."""

    def __init__(self, manager: Any, clock: Any, *, cull_idle: float = 0.0,
                 wallclock: Callable[[], float] = time.time) -> None:
        self.manager = manager
        self.clock = clock
        self.wallclock = wallclock
        self.kernels: dict[str, JupyterKernel] = {}
        self.cull_idle = cull_idle
        self._culler: LoopingCall | None = None
        self.on_gone: list[Callable[[JupyterKernel], None]] = []  # the sessions API forgets its entries

    def start(self) -> None:
        if self.cull_idle > 0:
            self._culler = LoopingCall(self.cull)
            self._culler.clock = self.clock
            self._culler.start(min(60.0, max(0.5, self.cull_idle / 4)), now=False)

    def stop(self) -> None:
        if self._culler is not None and self._culler.running:
            self._culler.stop()

    def get(self, kernel_id: str) -> JupyterKernel:
        kernel = self.kernels.get(kernel_id)
        if kernel is None:
            raise KernelError(404, f"Kernel does not exist: {kernel_id[:64]}")
        return kernel

    def list(self) -> list[JupyterKernel]:
        return list(self.kernels.values())

    async def create(self, body: Mapping[str, Any], by: str) -> JupyterKernel:
        """POST /api/kernels ``{name?, env?}`` (and ``path``, ignored): a new
        session and, for python3, its kernel started before the answer
        (within KERNEL_LAUNCH_TIMEOUT). KernelError."""
        name = body.get("name") or DEFAULT_SPEC
        if name not in CELL_TYPES:
            raise KernelError(404, f"No such kernel {str(name)[:64]!r}: this runtime has {', '.join(CELL_TYPES)}")
        timeout, username, dropped = filter_env(body.get("env"))
        if dropped:
            _log.info("jupyter kernel create by {by}: env names dropped (only KERNEL_LAUNCH_TIMEOUT and "
                      "KERNEL_USERNAME are used): {names}", by=by, names=", ".join(dropped))
        session = self.manager.create(name=f"jupyter {name} ({username or by})", by=by)
        kernel = JupyterKernel(self, session, name, username)
        self.kernels[kernel.id] = kernel
        if name == PYTHON:
            try:
                await self._started(kernel, timeout)
            except KernelError:
                await self.delete(kernel.id)
                raise
        return kernel

    async def _started(self, kernel: JupyterKernel, timeout: float) -> None:
        python = self.manager.processors.get("python")
        if python is None:
            raise KernelError(500, "this runtime has no Python kernels")
        started: Deferred[Any] = python.session_kernel(kernel.session.id)
        started.addTimeout(timeout, self.clock)
        try:
            await started
        except Exception as e:
            raise KernelError(500, f"the Python kernel did not start: {e or type(e).__name__}") from None
        if kernel.state == "starting":
            kernel.state = "idle"

    async def delete(self, kernel_id: str) -> None:
        """Shut the kernel down and close its session (its history stays)."""
        kernel = self.get(kernel_id)
        self.forget(kernel, "it was shut down")
        await self.manager.close(kernel.session.id)

    async def restart(self, kernel_id: str) -> JupyterKernel:
        """Cancel the Jupyter requests still queued, then a new Python
        kernel (the running cell ends ``kernel_restarted``); returns once it
        is up. spin-shell: the running command is interrupted."""
        kernel = self.get(kernel_id)
        for run in list(kernel.session.queue):
            if run.id in kernel.requests:
                kernel.requests[run.id].aborted = True
                kernel.session.cancel(run.id, "cancelled")
        if kernel.spec == PYTHON:
            kernel.restarting = True
            try:
                await self.manager.restart_kernel(kernel.session.id)
            finally:
                kernel.restarting = False
            kernel.state = "idle" if kernel.session.current is None else "busy"
            kernel.execution_count = 0
        else:
            kernel.interrupt()
        kernel.touch()
        return kernel

    def forget(self, kernel: JupyterKernel, why: str) -> None:
        """The kernel is gone: its channels get iopub ``status: dead`` and
        are closed; its id answers 404 from now on."""
        if kernel.gone:
            return
        kernel.gone = True
        kernel.state = "dead"
        self.kernels.pop(kernel.id, None)
        kernel.monitor.close()
        for conn in list(kernel.connections.values()):
            conn.kernel_gone(why)
        for listener in list(self.on_gone):
            listener(kernel)
        _log.info("jupyter kernel {id} (session {sid}) is gone: {why}", id=kernel.id, sid=kernel.session.id, why=why)

    def cull(self) -> list[str]:
        """Cull kernels idle and unconnected for ``cull_idle`` seconds; their ids."""
        now = self.clock.seconds()
        culled = []
        for kernel in list(self.kernels.values()):
            busy = kernel.session.current is not None or bool(kernel.session.queue)
            if busy or kernel.connections or kernel.spin_clients():
                kernel.last_connected = now
                continue
            idle_since = max(kernel.last_connected, now - (self.wallclock() - kernel.last_activity))
            if now - idle_since >= self.cull_idle:
                culled.append(kernel.id)
                self.forget(kernel, f"culled after {self.cull_idle:g} s idle with no connection")
                closing = Deferred.fromCoroutine(self.manager.close(kernel.session.id))
                closing.addErrback(lambda f: _log.failure("closing a culled kernel's session failed", f))
        return culled
