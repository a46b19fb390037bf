"""Executes one run: find its processor, apply the timeout, settle its status."""

from __future__ import annotations

from typing import Any, Mapping

import attrs

from twisted.logger import Logger

from .. import protocol as proto
from ..cells.base import CellContext, ICellProcessor, Outcome, RuntimeServices
from .. import templates
from ..secrets import lookup_secret
from .masking import MaskerError
from .session import Run, Session

_log = Logger()


class SessionResolver:
    """Template values for one run: session variables (plus Python globals
    fetched for it), the runtime environment, and secrets."""

    def __init__(self, variables: Mapping[str, Any], secrets: Mapping[str, str], environ: Mapping[str, str],
                 runtime_secrets: Mapping[str, str] | None = None) -> None:
        self._variables = variables
        self._secrets = secrets
        self._environ = environ
        self._runtime_secrets = runtime_secrets  # spinrt.secret_store, after the session's own

    def variable(self, name: str) -> object:
        return self._variables[name]

    def env(self, name: str) -> str:
        if name == "SPIN_TOKEN":  # never reachable from a cell
            raise KeyError(name)
        return self._environ[name]

    def secret(self, name: str) -> str:
        return lookup_secret(name, self._secrets, self._environ, self._runtime_secrets)


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
            if not run.verbatim:
                cell = await self._expand(session, cell)
        except templates.TemplateError as e:
            session.finish(run, "error", error=proto.run_error("template_error", "TemplateError", str(e)))
            return
        except MaskerError as e:
            session.finish(run, "error", error=proto.run_error(proto.INTERNAL, "MaskerError", f"{e}; the cell did not run"))
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
            emit_stream=session.emit_stream,
            services=self.services,
            producers=session.store,
            masker=lambda: session.masker,
            record_pgid=lambda pgid: session.record_process_group(run, pgid),
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
            ctx.flush_streams()
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
            python = self.processors.get("python")
            if python is not None and python.has_kernel(session.id):
                # A CellResult object in the kernel's globals, under the same name.
                await python.set_variables(session.id, {cell.output_variable: session.variables[cell.output_variable]})
        session.finish(run, status, exit_code=outcome.exit_code, error=error)

    async def _expand(self, session: Session, cell: proto.Cell) -> proto.Cell:
        """The cell with every placeholder of its source and options filled in."""
        if "{{" not in cell.source and "{{" not in repr(cell.options):
            return cell
        variables: dict[str, Any] = dict(session.variables)
        wanted = (templates.variable_names(cell.source) | templates.variable_names(dict(cell.options))) - set(variables)
        python = self.processors.get("python")
        if wanted and python is not None and python.has_kernel(session.id):
            # Python globals, read without running user-visible code.
            variables.update(await python.get_variables(session.id, sorted(wanted)))
        resolver = SessionResolver(variables, session.template_secrets, self.services.environ,
                                   self.services.settings.get("runtime_secrets"))
        source, options, used = templates.expand_cell_with_secrets(cell.source, dict(cell.options), resolver)
        if used:
            # The cell starts (and can print them) only once they are masked.
            await session.learn_secret_values(used)
        return attrs.evolve(cell, source=source, options=options)

    def _time_out(self, session: Session, run: Run) -> None:
        if run.state == "running":
            session.interrupt(run, "timeout")
