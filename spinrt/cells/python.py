"""Python cells on IPython kernels: one kernel per session, output as events.

A session gets its kernel on its first Python cell, from the warm pool when
one is ready. Kernel output maps onto protocol events (``stream``,
``display``, ``display.update``, ``clear``, ``result``); errors become the
run's ``error``. Cancel and timeout send SIGINT and keep the kernel's state;
a kernel that ignores it is restarted after ``INTERRUPT_GRACE`` seconds. A
kernel that dies ends its run with ``kernel_died`` and the session's next
Python cell gets a new one.

Everything here runs on the reactor's asyncio loop; the public methods return
Deferreds (``Deferred.fromFuture``) because Twisted coroutines cannot await
asyncio futures.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any, Callable, Coroutine, Mapping

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from ..protocol import Cell
from .base import CellContext, ICellProcessor, Outcome, RuntimeServices
from .kernel_launcher import KernelLauncher
from .kernel_pool import KernelPool
from .kernels import Kernel, KernelDied, KernelStartError, Request, background
from .python_output import RunOutput, outcome_of

_log = Logger()

INTERRUPT_RESEND = 1.0  # seconds before a second SIGINT
INTERRUPT_GRACE = 3.0  # seconds before a kernel that ignores SIGINT is restarted
VARIABLE_LIMIT = 16 * 1024 * 1024  # bytes of JSON per value get_variables returns

# The in-kernel helpers, reached without touching the user's namespace.
_K = "__import__('spinrt.cells.kernel_startup', fromlist=['_'])"


def _deferred(coro: Coroutine[Any, Any, Any]) -> Deferred[Any]:
    return Deferred.fromFuture(asyncio.ensure_future(coro))


@implementer(ICellProcessor)
class PythonProcessor:
    def __init__(self, services: RuntimeServices) -> None:
        self.services = services
        self.launcher = KernelLauncher(services)
        size = int(services.settings.get("kernel_pool", 1))
        self.pool = KernelPool(self.launcher, size, services.home)
        self._kernels: dict[str, Kernel] = {}
        self._starting: dict[str, asyncio.Future[Kernel]] = {}
        self._closed: set[str] = set()
        self._secret_source: Callable[[str], Mapping[str, str]] | None = None
        self._variable_source: Callable[[str], Mapping[str, Any]] | None = None
        if size:
            services.reactor.callWhenRunning(self.pool.fill)

    def _status(self, sid: str, state: str) -> None:
        self.services.emit_event(sid, "kernel.status", state=state)

    # -- cells -------------------------------------------------------------------------

    def run(self, cell: Cell, ctx: CellContext) -> Deferred[Outcome]:
        return _deferred(self._run(cell, ctx))

    async def _run(self, cell: Cell, ctx: CellContext) -> Outcome:
        sid = ctx.session_id
        loop = asyncio.get_running_loop()
        interrupted: asyncio.Future[str] = loop.create_future()

        def on_interrupt(reason: str) -> None:
            if not interrupted.done():
                interrupted.set_result(reason)

        ctx.on_interrupt(on_interrupt)
        kernel = self._live(sid)
        if kernel is None:
            try:
                kernel = await self._unless_interrupted(self._kernel_for(sid), interrupted)
            except KernelStartError as e:
                return Outcome.failed("kernel_start_failed", "KernelStartError", str(e))
        if kernel is None or interrupted.done():
            return Outcome.failed("cancelled", "Cancelled", "cancelled before it started")
        output = RunOutput(ctx)
        request = kernel.execute(cell.source, output=output)
        self._status(sid, "busy")
        interrupted.add_done_callback(lambda _: background(self._interrupt(kernel, request, output)))
        try:
            reply = await request.future
        except KernelDied as e:
            output.flush()
            if e.intentional:  # kernel.restart, or the session or runtime stopping
                code = "kernel_restarted" if "restarted" in e.description else "kernel_stopped"
                return Outcome.failed(code, "KernelRestarted" if code == "kernel_restarted" else "KernelStopped",
                                      f"the kernel {e.description} while this cell ran; its variables are lost")
            return Outcome.failed(
                "kernel_died", "KernelDied",
                f"the Python kernel {e.description} while this cell ran; its variables are lost "
                "and the next Python cell starts a new kernel")
        output.flush()
        if self._kernels.get(sid) is kernel:
            self._status(sid, "idle")
        return outcome_of(reply, ctx)

    async def _unless_interrupted(self, coro: Coroutine[Any, Any, Kernel],
                                  interrupted: asyncio.Future[str]) -> Kernel | None:
        task = asyncio.ensure_future(coro)
        either: set[asyncio.Future[Any]] = {task, interrupted}
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        # The kernel keeps starting for the session's next cell.
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return None

    async def _interrupt(self, kernel: Kernel, request: Request, output: RunOutput) -> None:
        if request.future.done():
            return

        def sigint() -> None:
            background(kernel.interrupt())

        # SIGINT reaches Python code only while the kernel runs a cell: if this
        # one is still queued in the kernel, send it the moment it starts.
        if request.busy:
            sigint()
        else:
            request.on_busy = sigint
        for wait, last in ((INTERRUPT_RESEND, False), (INTERRUPT_GRACE - INTERRUPT_RESEND, True)):
            try:
                await asyncio.wait_for(asyncio.shield(request.future), wait)
                return
            except asyncio.TimeoutError:
                pass
            except Exception:
                return  # the kernel died or was restarted meanwhile
            if not last and request.busy:
                sigint()
        sid = kernel.session_id
        if sid is None or self._kernels.get(sid) is not kernel:
            return
        output.stream("stderr", f"\n[spin] the kernel did not stop within {INTERRUPT_GRACE:g} s of "
                                "the interrupt; restarting it (its variables are lost)\n")
        output.flush()
        await self._restart(sid, "was restarted because it did not respond to an interrupt")

    # -- kernels of sessions -------------------------------------------------------------

    def _live(self, sid: str) -> Kernel | None:
        kernel = self._kernels.get(sid)
        if kernel is None:
            return None
        if kernel.alive and not kernel.closing:
            return kernel
        self._lost(kernel)
        return None

    def _lost(self, kernel: Kernel) -> None:
        """A session's kernel died: say so once, forget it."""
        sid = kernel.session_id
        if sid is not None and self._kernels.get(sid) is kernel:
            del self._kernels[sid]
            self._status(sid, "dead")

    async def _kernel_for(self, sid: str, announce: bool = True) -> Kernel:
        kernel = self._live(sid)
        if kernel is not None:
            return kernel
        starting = self._starting.get(sid)
        if starting is None:
            starting = asyncio.ensure_future(self._acquire(sid, announce))
            self._starting[sid] = starting

            def done(f: asyncio.Future[Kernel]) -> None:
                if self._starting.get(sid) is f:
                    del self._starting[sid]
                if not f.cancelled():
                    f.exception()  # retrieved here; awaiters see it too

            starting.add_done_callback(done)
        return await asyncio.shield(starting)

    async def _acquire(self, sid: str, announce: bool) -> Kernel:
        if announce:
            self._status(sid, "starting")
        kernel = await self.pool.take()
        from_pool = kernel is not None
        if kernel is None:
            try:
                kernel = await self.launcher.start(self.services.session_dir(sid))
            except KernelStartError:
                self._status(sid, "dead")
                raise
        if sid in self._closed or self.launcher.stopping:
            await kernel.shutdown("was not needed any more")
            raise KernelStartError("the session was closed")
        kernel.session_id = sid
        kernel.on_death.append(lambda k, description: self._lost(k))
        self._kernels[sid] = kernel
        # Pipelined ahead of the session's first cell: no extra round trip.
        cwd = self.services.session_dir(sid) if from_pool else None
        secrets, variables = self._sourced(self._secret_source, sid), self._sourced(self._variable_source, sid)
        setup = kernel.execute(
            f"{_K}._setup({cwd!r}, {json.dumps(secrets)!r}, {json.dumps(variables, default=str)!r})",
            silent=True,
        )
        setup.future.add_done_callback(lambda f: self._check_silent(f, kernel, "setup"))
        self._status(sid, "idle")
        return kernel

    @staticmethod
    def _sourced(source: Callable[[str], Mapping[str, Any]] | None, sid: str) -> dict[str, Any]:
        if source is None:
            return {}
        try:
            return dict(source(sid))
        except Exception:
            _log.failure("session {sid}: reading the values for a new kernel failed", sid=sid)
            return {}

    def _check_silent(self, future: asyncio.Future[dict[str, Any]], kernel: Kernel, what: str) -> None:
        if future.cancelled() or future.exception() is not None:
            return
        reply = future.result()
        if reply.get("status") != "ok":
            # Only the exception's name: its text could quote a secret.
            _log.error("kernel {id}: {what} failed with {ename}", id=kernel.id, what=what,
                       ename=reply.get("ename"))

    def session_kernel(self, session_id: str) -> Deferred[Kernel]:
        """The session's kernel, started now (from the pool when one is ready)
        if it has none; KernelStartError. For the Jupyter face, which
        forwards a client's requests to it (``Kernel.forward``)."""
        return _deferred(self._kernel_for(session_id))

    def restart_kernel(self, session_id: str) -> Deferred[None]:
        return _deferred(self._restart(session_id, "was restarted"))

    async def _restart(self, sid: str, why: str) -> None:
        self._status(sid, "restarting")
        await self._shut_down_kernel(sid, why)
        if sid in self._closed:
            return
        try:
            await self._kernel_for(sid, announce=False)
        except KernelStartError as e:
            _log.error("session {sid}: no new kernel after a restart: {e}", sid=sid, e=e)

    def close_session(self, session_id: str) -> Deferred[None]:
        return _deferred(self._close(session_id))

    async def _close(self, sid: str) -> None:
        self._closed.add(sid)
        await self._shut_down_kernel(sid, "was shut down with its session")

    async def _shut_down_kernel(self, sid: str, why: str) -> None:
        """Shut the session's kernel down, after one still starting is ready."""
        starting = self._starting.get(sid)
        if starting is not None:
            with contextlib.suppress(Exception):  # a failed start leaves nothing to shut down
                await asyncio.shield(starting)
        kernel = self._kernels.pop(sid, None)
        if kernel is not None:
            await kernel.shutdown(why)

    def stop(self) -> Deferred[None]:
        return _deferred(self._stop())

    async def _stop(self) -> None:
        self.launcher.stopping = True
        await self.pool.stop()
        await self.launcher.stop()
        self._kernels.clear()

    # -- the hook for variables and secrets ----------------------------------------------

    def kernel_counts(self) -> dict[str, int]:
        """``{alive, starting, pooled}``: kernels serving sessions, being
        started for one or for the pool, and started and idle in the pool
        (the ``spin_kernels`` gauge)."""
        alive = sum(1 for k in self._kernels.values() if k.alive and not k.closing)
        return {"alive": alive, "starting": len(self._starting) + self.pool.starting, "pooled": len(self.pool.ready)}

    def has_kernel(self, session_id: str) -> bool:
        """Does the session have a running kernel? (Never starts one.)"""
        kernel = self._kernels.get(session_id)
        return kernel is not None and kernel.alive and not kernel.closing

    def set_secret_source(self, source: Callable[[str], Mapping[str, str]] | None) -> None:
        """``source(session_id)`` -> the session's secrets, pushed into each new kernel."""
        self._secret_source = source

    def set_variable_source(self, source: Callable[[str], Mapping[str, Any]] | None) -> None:
        """``source(session_id)`` -> JSON variables, set as globals in each new kernel."""
        self._variable_source = source

    async def _silent(self, sid: str, code: str, expressions: dict[str, str] | None = None,
                      what: str = "request") -> dict[str, Any] | None:
        kernel = self._kernels.get(sid)
        if kernel is None or not kernel.alive or kernel.closing:
            return None
        try:
            reply = await kernel.execute(code, silent=True, user_expressions=expressions).future
        except KernelDied:
            return None
        if reply.get("status") != "ok":
            _log.error("kernel {id}: {what} failed with {ename}", id=kernel.id, what=what,
                       ename=reply.get("ename"))
            return None
        return reply

    def set_variables(self, session_id: str, values: Mapping[str, Any]) -> Deferred[bool]:
        """Set kernel globals from JSON values; False (and nothing started) without a kernel.
        CellResult-shaped dicts become ``CellResult`` objects; names that are not
        Python identifiers are skipped."""
        values = {k: v for k, v in values.items() if _is_name(k)}
        code = f"{_K}._set_variables({json.dumps(values, default=str)!r})"
        return _deferred(self._applied(self._silent(session_id, code, what="set_variables")))

    def get_variables(self, session_id: str, names: list[str] | None = None) -> Deferred[dict[str, Any]]:
        """The JSON-able values of these kernel globals (all public ones when None);
        undefined, non-identifier or non-JSON names are left out. A running cell
        is waited for (the kernel runs one request at a time)."""
        if names is not None:
            names = [n for n in names if _is_name(n)]
        expr = f"{_K}._variables_json({names!r}, {VARIABLE_LIMIT})"
        return _deferred(self._read(session_id, expr))

    async def _read(self, sid: str, expr: str) -> dict[str, Any]:
        reply = await self._silent(sid, "", {"v": expr}, what="get_variables")
        if reply is None:
            return {}
        result = (reply.get("user_expressions") or {}).get("v") or {}
        if result.get("status") != "ok":
            _log.error("get_variables failed with {ename}", ename=result.get("ename"))
            return {}
        values: dict[str, Any] = json.loads(result["data"]["text/plain"])
        return values

    def clear_variables(self, session_id: str, names: list[str] | None = None) -> Deferred[bool]:
        """Delete these kernel globals (all public ones when None)."""
        if names is not None:
            names = [n for n in names if _is_name(n)]
        code = f"{_K}._clear_variables({names!r})"
        return _deferred(self._applied(self._silent(session_id, code, what="clear_variables")))

    def set_secrets(self, session_id: str, secrets: Mapping[str, str]) -> Deferred[bool]:
        """Add secrets to the kernel's ``SpinSecrets``; False without a kernel."""
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in secrets.items()):
            raise TypeError("secrets must map names to string values")
        code = f"{_K}._set_secrets({json.dumps(dict(secrets))!r})"
        return _deferred(self._applied(self._silent(session_id, code, what="set_secrets")))

    def delete_secrets(self, session_id: str, names: list[str]) -> Deferred[bool]:
        """Remove names from the kernel's ``SpinSecrets``; False without a kernel."""
        code = f"{_K}._del_secrets({json.dumps(list(names))!r})"
        return _deferred(self._applied(self._silent(session_id, code, what="delete_secrets")))

    @staticmethod
    async def _applied(pending: Coroutine[Any, Any, dict[str, Any] | None]) -> bool:
        return (await pending) is not None


def _is_name(name: Any) -> bool:
    return isinstance(name, str) and name.isidentifier()
