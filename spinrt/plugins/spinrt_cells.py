"""The built-in cell types. Each imports its processor only when built."""

from __future__ import annotations

import importlib
from typing import Any

from twisted.plugin import IPlugin
from zope.interface import implementer

from spinrt.cells.base import ICellType


@implementer(IPlugin, ICellType)
class BuiltinCellType:
    def __init__(self, name: str, processor: str) -> None:
        self.name = name
        self._processor = processor

    def make_processor(self, services: Any) -> Any:
        module, _, attr = self._processor.partition(":")
        return getattr(importlib.import_module(module), attr)(services)

    def __repr__(self) -> str:
        return f"<cell type {self.name}>"


shell = BuiltinCellType("shell", "spinrt.cells.shell:ShellProcessor")
markdown = BuiltinCellType("markdown", "spinrt.cells.markdown:MarkdownProcessor")
rest = BuiltinCellType("rest", "spinrt.cells.rest:RestProcessor")
llm = BuiltinCellType("llm", "spinrt.cells.llm:LlmProcessor")
python = BuiltinCellType("python", "spinrt.cells.python:PythonProcessor")
