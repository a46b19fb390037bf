"""Markdown cells: the (template-expanded) text, shown as text/markdown."""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from ..protocol import Cell
from .base import CellContext, ICellProcessor, Outcome, RuntimeServices


@implementer(ICellProcessor)
class MarkdownProcessor:
    def __init__(self, services: RuntimeServices) -> None:
        self.services = services

    def run(self, cell: Cell, ctx: CellContext) -> Deferred[Outcome]:
        ctx.display({"text/markdown": cell.source, "text/plain": cell.source})
        return succeed(Outcome(status="ok"))

    def close_session(self, session_id: str) -> None:
        return None

    def stop(self) -> None:
        return None
