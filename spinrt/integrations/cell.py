"""Running an integration's cell: options, connection, secrets, deadline, errors.

:class:`IntegrationProcessor` is the ``ICellProcessor`` of every
integration. For each run it checks the options against the type's list,
picks the connection (``options.connection`` or the type's default),
resolves its references in the run's session, has the session mask every
secret value of it *before* anything is emitted, applies the type's default
deadline when the cell sets no ``timeout_s``, and turns
:class:`~spinrt.integrations.base.IntegrationError` into the run's error.
The integration's ``execute`` only does its own work, with the helpers of
:class:`IntegrationRun`.
"""

from __future__ import annotations

from typing import Any, Mapping

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from ..cells.base import CellContext, ICellProcessor, Outcome, RuntimeServices
from ..cells.httpio import Aborted, ResponseTooLarge
from ..protocol import Cell
from ..sessions.masking import MaskerError
from .base import Integration, IntegrationError
from .connections import Connection, registry_of
from .http import agents_of
from .tables import Table

_log = Logger()

COMMON_OPTIONS = {"connection": "name of the connection to use (default: the type's default connection)",
                  "timeout_s": "seconds before the run is stopped"}


class IntegrationRun:
    """One run of an integration cell, as ``Integration.execute`` sees it."""

    def __init__(self, integration: Integration, cell: Cell, ctx: CellContext, connection: Connection,
                 services: RuntimeServices) -> None:
        self.integration = integration
        self.cell = cell
        self.ctx = ctx
        self.connection = connection
        self.services = services
        self.options: Mapping[str, Any] = cell.options
        self.apis: list[Any] = []  # HttpApi objects to stop on interrupt
        self.texts: list[str] = []  # text/plain of what the run showed

    @property
    def reactor(self) -> Any:
        return self.services.reactor

    @property
    def variable(self) -> str | None:
        return self.cell.output_variable

    def track(self, api: Any) -> Any:
        """Stop ``api`` (an HttpApi) when the run is interrupted or its deadline passes."""
        self.apis.append(api)
        self.ctx.on_interrupt(api.stop)
        return api

    def stop(self, reason: str) -> None:
        for api in self.apis:
            api.stop(reason)

    # -- options ------------------------------------------------------------------------

    def option(self, name: str, kinds: tuple[type, ...] = (str,), default: Any = None) -> Any:
        """``options[name]`` of one of ``kinds`` (bool never passes as a number), or bad_option."""
        value = self.options.get(name)
        if value is None:
            return default
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            names = " or ".join({str: "a string", int: "a whole number", float: "a number",
                                 bool: "true or false", list: "a list", dict: "an object"}[k] for k in kinds)
            raise IntegrationError("bad_option", f"options.{name} must be {names}")
        return value

    # -- outputs ------------------------------------------------------------------------

    def show(self, bundle: dict[str, Any]) -> None:
        """The run's result (a MIME bundle); its ``text/plain`` becomes the
        CellResult's ``text``."""
        self.texts.append(bundle.get("text/plain", ""))
        self.ctx.result(bundle, variable=self.variable)

    def table(self, table: Table, note: str | None = None) -> None:
        """Show a table (text, HTML and JSON); ``note`` is a line above it."""
        if note:
            self.ctx.display({"text/plain": note})
        self.show(table.bundle(self.variable))

    def warn(self, text: str) -> None:
        self.ctx.stream("stderr", text if text.endswith("\n") else text + "\n")


@implementer(ICellProcessor)
class IntegrationProcessor:
    def __init__(self, integration: Integration, services: RuntimeServices) -> None:
        self.integration = integration
        self.services = services
        self.known_options = {**COMMON_OPTIONS, **integration.options}

    def run(self, cell: Cell, ctx: CellContext) -> Deferred[Outcome]:
        return Deferred.fromCoroutine(self._run(cell, ctx))

    def connection_for(self, cell: Cell, ctx: CellContext) -> Connection:
        """The run's connection, its references resolved in the run's session."""
        registry = registry_of(self.services)
        fallback = getattr(self.integration, "fallback_connection", None)
        try:
            stored = registry.choose(self.integration.name, cell.options.get("connection"))
        except IntegrationError as e:
            found = fallback(self.services) if e.code == "no_connection" and fallback is not None else None
            if found is None:
                raise
            return found
        return registry.resolve(stored, ctx.secret)

    async def _run(self, cell: Cell, ctx: CellContext) -> Outcome:
        name = self.integration.name
        unknown = sorted(set(cell.options) - set(self.known_options))
        if unknown:
            return Outcome.failed("bad_option", "OptionError",
                                  f"a {name} cell has no option {', '.join(repr(u) for u in unknown)[:200]} "
                                  f"(its options: {', '.join(self.known_options)})")
        run: IntegrationRun | None = None
        timer = None
        deadline = {"hit": False}
        try:
            connection = self.connection_for(cell, ctx)
            if connection.secrets:
                # Masked before the first output: an error message or a
                # server's echo can no longer show them.
                await ctx.mask_values(connection.secrets)
            run = IntegrationRun(self.integration, cell, ctx, connection, self.services)
            if cell.options.get("timeout_s") is None:
                def hit() -> None:
                    deadline["hit"] = True
                    if run is not None:
                        run.stop("deadline")
                timer = ctx.reactor.callLater(self.integration.default_timeout, hit)
            outcome = await self.integration.execute(run)
            if outcome.value is not None:
                # Every integration's CellResult has the text it showed
                # (and so reads as a CellResult in a kernel: spinrt.cells.kernel_startup).
                outcome.value.setdefault("text", "\n".join(t for t in run.texts if t))
            return outcome
        except IntegrationError as e:
            if ctx.interrupted is not None:
                return Outcome(status="error")
            return Outcome.failed(e.code, _ename(e.code), e.message, value=e.value)
        except (Aborted, ResponseTooLarge) as e:
            if ctx.interrupted is not None:
                return Outcome(status="error")  # the runner names it cancelled / timeout
            if deadline["hit"]:
                return Outcome.failed("timeout", "Timeout",
                                      f"the {name} cell did not finish within {self.integration.default_timeout:g} s "
                                      "(set options.timeout_s to wait longer or shorter)")
            if isinstance(e, ResponseTooLarge):
                return Outcome.failed("response_too_large", "ResponseTooLarge",
                                      f"{e} (the cap is SPIN_REST_MAX_BYTES); the connection was closed")
            return Outcome(status="error")
        except MaskerError as e:
            return Outcome.failed("internal_error", "MaskerError", f"{e}; the cell did not run")
        finally:
            if timer is not None and timer.active():
                timer.cancel()

    def close_session(self, session_id: str) -> None:
        return None  # a run's requests end with the run; nothing is held per session

    def stop(self) -> Deferred[Any]:
        from twisted.internet.defer import gatherResults

        from . import charts

        return gatherResults([agents_of(self.services).close(), charts.stop(self.services.reactor)])


def _ename(code: str) -> str:
    return "".join(part.capitalize() for part in code.split("_")) + ("" if code.endswith("error") else "Error")
