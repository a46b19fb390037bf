"""A notebook's ``code_python`` parameters, evaluated in a short-lived kernel (PROTOCOL.md section 12).

Each request gets its own kernel (the warm pool's when one is ready, else a
new one), runs the parameters' code in order in it (a later parameter sees
what an earlier one defined), and shuts it down afterwards whatever
happened: no kernel outlives the request. The code runs as a silent
execute (nothing stored in any history) through the in-kernel helper
``kernel_startup._parameter_options``, read back with ``user_expressions``.
Code that runs longer than ``timeout`` seconds is stopped by killing its
kernel; the next parameter gets a fresh one. A failure is reported on its
parameter (``error``), never as a failed request.

Runs on the reactor's asyncio loop: ``evaluate`` is an asyncio coroutine
(bridge with ``Deferred.fromFuture(asyncio.ensure_future(...))``).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Sequence

from twisted.logger import Logger

from ..parameters import MAX_OPTIONS, described
from .kernels import Kernel, KernelDied, KernelStartError
from .python import _K, PythonProcessor

_log = Logger()

TIMEOUT = 15.0  # seconds one parameter's code may run
CONCURRENT = 2  # requests evaluating at once; others wait their turn


class ParameterEvaluator:
    """Evaluates parameters with the kernels of one Python processor (None:
    the runtime has no Python cells, and code_python parameters say so)."""

    def __init__(self, processor: PythonProcessor | None, timeout: float | None = None) -> None:
        self.processor = processor
        self.timeout = TIMEOUT if timeout is None else timeout
        self._slots: asyncio.Semaphore | None = None

    async def evaluate(self, parameters: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Checked declarations (``spinrt.parameters``) -> ``[{name, kind,
        label, default, options}]``, a code_python parameter's options
        computed, or null with ``error`` (one line) when its code failed."""
        if not any(p["kind"] == "code_python" for p in parameters):
            return [described(p) for p in parameters]
        if self.processor is None:
            return [described(p) if p["kind"] != "code_python"
                    else {**described(p), "error": "this runtime has no Python kernels"} for p in parameters]
        if self._slots is None:
            self._slots = asyncio.Semaphore(CONCURRENT)
        async with self._slots:
            return await self._evaluate(self.processor, parameters)

    async def _evaluate(self, processor: PythonProcessor,
                        parameters: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        kernel: Kernel | None = None
        start_error: str | None = None
        try:
            for parameter in parameters:
                if parameter["kind"] != "code_python":
                    out.append(described(parameter))
                    continue
                if kernel is None and start_error is None:
                    try:
                        kernel = await self._kernel(processor)
                    except KernelStartError as e:
                        start_error = f"no Python kernel to evaluate it: {e}"
                if kernel is None:
                    out.append({**described(parameter), "error": start_error})
                    continue
                options, error, usable = await self._one(kernel, parameter["code"])
                if error is None:
                    out.append(described(parameter, options))
                else:
                    out.append({**described(parameter), "error": error})
                if not usable:
                    await kernel.shutdown("was stopped: a parameter's code did not finish")
                    kernel = None
        finally:
            if kernel is not None:
                await kernel.shutdown("was a parameter kernel")
        return out

    @staticmethod
    async def _kernel(processor: PythonProcessor) -> Kernel:
        kernel = await processor.pool.take()
        if kernel is None:
            kernel = await processor.launcher.start(processor.services.home)
        return kernel

    async def _one(self, kernel: Kernel, code: str) -> tuple[list[str] | None, str | None, bool]:
        """(options, None, True), or (None, error, whether the kernel can go on)."""
        expression = f"{_K}._parameter_options({code!r}, {MAX_OPTIONS})"
        request = kernel.execute("", silent=True, user_expressions={"v": expression})
        # After a timeout the kernel's shutdown fails it: retrieved here, not logged as lost.
        request.future.add_done_callback(lambda f: f.cancelled() or f.exception())
        try:
            reply = await asyncio.wait_for(asyncio.shield(request.future), self.timeout)
        except asyncio.TimeoutError:
            return None, f"its code did not finish within {self.timeout:g} s", False
        except KernelDied as e:
            return None, f"the Python kernel {e.description} while running its code", False
        result = (reply.get("user_expressions") or {}).get("v") or {}
        if result.get("status") != "ok":
            ename, evalue = result.get("ename", "Error"), result.get("evalue", "")
            return None, f"{ename}: {evalue}" if evalue else str(ename), True
        try:
            value = json.loads(result["data"]["text/plain"])
        except (KeyError, TypeError, ValueError):
            _log.error("a parameter helper answered something unreadable")
            return None, "the kernel's answer could not be read", True
        if "error" in value:
            return None, str(value["error"]), True
        return list(value["options"]), None, True
