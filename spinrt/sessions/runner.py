"""Executes one run: find its processor, apply the timeout, settle its status."""

from __future__ import annotations

from typing import Any, Mapping

from twisted.logger import Logger

from .. import protocol as proto
from ..cells.base import CellContext, ICellProcessor, Outcome, RuntimeServices
from .session import Run, Session

_log = Logger()


def timeout_of(options: Mapping[str, Any]) -> float | None:
    value = options.get("timeout_s")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError("options.timeout_s must be a positive number of seconds")
    return float(value)


class RunExecutor:
    def __init__(self, services: RuntimeServices, processors: Mapping[str, ICellProcessor]) -> None:
        self.services = services
        self.processors = processors

    async def __call__(self, session: Session, run: Run) -> None:
        cell = run.cell
        processor = self.processors.get(cell.type)
        if processor is None:
            known = ", ".join(sorted(self.processors))
            session.finish(run, "error", error=proto.run_error(
                "unknown_cell_type", "UnknownCellType",
                f"no cell type {cell.type[:64]!r} on this runtime (it has: {known})"))
            return
        try:
            timeout = timeout_of(cell.options)
        except ValueError as e:
            session.finish(run, "error", error=proto.run_error("bad_option", "OptionError", str(e)))
            return
        ctx = CellContext(
            run_id=run.id,
            session_id=session.id,
            emit=session.emit,
            services=self.services,
            producers=session.store,
            record_pgid=lambda pgid: session.store.execute(
                "UPDATE runs SET pgid = ? WHERE id = ?", (pgid, run.id)
            ),
        )
        run.ctx = ctx
        if run.interrupt_reason is not None:  # cancelled between queue and start
            ctx.interrupt(run.interrupt_reason)
        timer = None
        if timeout is not None:
            timer = self.services.reactor.callLater(timeout, self._time_out, session, run)
        try:
            outcome: Outcome = await processor.run(cell, ctx)
        except Exception as e:
            _log.failure("{type} cell processor failed on run {run}", type=cell.type, run=run.id)
            outcome = Outcome.failed(proto.INTERNAL, type(e).__name__, f"the {cell.type} cell processor failed")
        finally:
            if timer is not None and timer.active():
                timer.cancel()
        status = outcome.status
        error = outcome.error
        if run.interrupt_reason is not None:
            status = "timeout" if run.interrupt_reason == "timeout" else "cancelled"
            message = (
                f"the run exceeded its timeout of {timeout:g} s" if status == "timeout"
                else "the run was cancelled"
            )
            error = proto.run_error(status, "Timeout" if status == "timeout" else "Cancelled", message)
        if outcome.value is not None and cell.output_variable:
            outcome.value["status"] = status
            session.set_variable(cell.output_variable, outcome.value)
        session.finish(run, status, exit_code=outcome.exit_code, error=error)

    def _time_out(self, session: Session, run: Run) -> None:
        if run.state == "running":
            session.interrupt(run, "timeout")
