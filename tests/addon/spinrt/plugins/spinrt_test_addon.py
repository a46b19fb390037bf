"""An add-on cell type, installed the way a user's add-on is: a
``spinrt/plugins/NAME.py`` on ``sys.path`` (tests put this directory on the
runtime's PYTHONPATH). ``shout`` prints its source in capitals, the
``times`` option (default 1) times."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import succeed
from twisted.plugin import IPlugin
from zope.interface import implementer

from spinrt.cells.base import ICellProcessor, ICellType, Outcome


@implementer(ICellProcessor)
class ShoutProcessor:
    def run(self, cell: Any, ctx: Any) -> Any:
        times = cell.options.get("times", 1)
        if not isinstance(times, int) or not 0 < times <= 100:
            return succeed(Outcome.failed("bad_option", "OptionError", "'times' must be an integer from 1 to 100"))
        ctx.stream("stdout", (cell.source.upper() + "\n") * times)
        return succeed(Outcome(status="ok"))

    def close_session(self, session_id: str) -> None:
        return None

    def stop(self) -> None:
        return None


@implementer(IPlugin, ICellType)
class ShoutType:
    name = "shout"

    def make_processor(self, services: Any) -> ShoutProcessor:
        return ShoutProcessor()


shout = ShoutType()
