"""Notebooks in and out: ``.ipynb`` cells -> protocol cells, runtime events -> nbformat outputs.

Cells are read as ``spinrt.ipynb`` says (cell type, options and output
variable in ``metadata.spin``). Markdown cells run as ``markdown`` cells,
so the runtime expands their templates; the executed notebook shows the
expanded text and keeps the template in ``metadata.spin.source``, so running
an executed notebook again starts from the same templates. Raw cells are not
run. Outputs come from runtime events, which the runtime has already masked.
"""

from __future__ import annotations

import copy
import json
import re
from typing import TYPE_CHECKING, Any

import attrs

from .. import ipynb

if TYPE_CHECKING:
    from nbformat import NotebookNode

_JSON_MIME = re.compile(r"^application/(.*\+)?json$")
FAILED = ("error", "timeout", "cancelled")


# The notebook cannot be read or run as written (one line for the user).
NotebookError = ipynb.IpynbError


@attrs.define(eq=False)
class CellRun:
    """One runnable notebook cell and everything its run produced."""

    index: int  # position in the notebook's cells
    number: int  # 1-based among the runnable cells
    kind: str  # the notebook cell_type: code / markdown
    cell: dict[str, Any]  # the protocol cell sent to the runtime
    run_id: str | None = None
    status: str | None = None  # None: never finished (runtime lost, gave up waiting)
    duration_ms: int | None = None
    exit_code: int | None = None
    error: dict[str, Any] | None = None
    execution_count: int | None = None
    outputs: list[NotebookNode] = attrs.field(factory=list)
    variables: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    rendered: str | None = None  # markdown: the text after templates
    clear_pending: bool = False

    @property
    def type(self) -> str:
        return str(self.cell["type"])

    @property
    def headline(self) -> str:
        for line in str(self.cell.get("source", "")).splitlines():
            line = line.strip()
            if line:
                return line if len(line) <= 60 else line[:59] + "\u2026"
        return ""


# -- reading ----------------------------------------------------------------------------


def load(path: str) -> NotebookNode:
    """Read and validate a notebook, or NotebookError."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise NotebookError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    return ipynb.parse(text, path)


def plan(nb: NotebookNode) -> list[CellRun]:
    """The cells to run, in order, or NotebookError for bad ``metadata.spin``."""
    runs: list[CellRun] = []
    for index, nbcell in enumerate(nb.cells):
        cell = ipynb.spin_cell(nbcell, index)
        if cell is not None:
            runs.append(CellRun(index=index, number=len(runs) + 1, kind=nbcell.cell_type, cell=cell))
    return runs


# -- events -> outputs ---------------------------------------------------------------------


def _mimebundle(data: Any) -> dict[str, Any]:
    """A MIME bundle nbformat accepts: non-JSON types must hold text."""
    if not isinstance(data, dict):
        return {"text/plain": json.dumps(data, default=str)}
    bundle: dict[str, Any] = {}
    for key, value in data.items():
        key = str(key)
        if _JSON_MIME.match(key) or isinstance(value, str):
            bundle[key] = value
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            bundle[key] = "".join(value)
        else:
            bundle[key] = json.dumps(value, default=str, ensure_ascii=False)
    return bundle


def _metadata(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


class OutputBuilder:
    """Applies one session's events to the cells they belong to."""

    def __init__(self) -> None:
        self._displays: dict[str, list[NotebookNode]] = {}
        self._count = 0

    def started(self, run: CellRun) -> None:
        if run.kind == "code":
            self._count += 1
            run.execution_count = self._count

    def _add(self, run: CellRun, output: NotebookNode) -> NotebookNode:
        if run.clear_pending:
            run.outputs.clear()
            run.clear_pending = False
        if output.output_type == "stream" and run.outputs:
            last = run.outputs[-1]
            if last.output_type == "stream" and last.name == output.name:
                last.text += output.text
                return last
        run.outputs.append(output)
        return output

    def event(self, run: CellRun, event: dict[str, Any]) -> None:
        from nbformat.v4 import new_output  # see spinrt.ipynb: not at import

        kind = event.get("event")
        if kind == "stream":
            name = "stderr" if event.get("name") == "stderr" else "stdout"
            self._add(run, new_output("stream", name=name, text=str(event.get("text", ""))))
        elif kind == "display":
            data = _mimebundle(event.get("data"))
            output = self._add(run, new_output("display_data", data=data, metadata=_metadata(event.get("metadata"))))
            if run.kind == "markdown" and "text/markdown" in data:
                run.rendered = data["text/markdown"]
            display_id = event.get("display_id")
            if isinstance(display_id, str):
                self._displays.setdefault(display_id, []).append(output)
        elif kind == "display.update":
            for output in self._displays.get(str(event.get("display_id")), []):
                output.data = _mimebundle(event.get("data"))
                output.metadata = _metadata(event.get("metadata"))
        elif kind == "clear":
            if event.get("wait"):
                run.clear_pending = True
            else:
                run.outputs.clear()
        elif kind == "result":
            self._add(run, new_output("execute_result", data=_mimebundle(event.get("data")),
                                      metadata={}, execution_count=run.execution_count))
        elif kind == "variable.set":
            run.variables[str(event.get("name"))] = {"type": event.get("type"), "preview": event.get("preview")}

    def finished(self, run: CellRun, event: dict[str, Any], note: str | None = None) -> None:
        """A ``run.finished``: record it; failures become an ``error`` output."""
        from nbformat.v4 import new_output

        run.status = str(event.get("status"))
        run.duration_ms = event.get("duration_ms")
        run.exit_code = event.get("exit_code")
        if run.status not in FAILED:
            return
        error = dict(event.get("error") or {})
        error.setdefault("ename", {"timeout": "Timeout", "cancelled": "Cancelled"}.get(run.status, "Error"))
        error.setdefault("evalue", f"the cell finished with status {run.status}")
        if note:
            error["evalue"] = note
            error["traceback"] = []
        run.error = error
        traceback = [str(line) for line in error.get("traceback") or []]
        if not traceback:  # Jupyter shows only the traceback: never leave it empty
            traceback = [f"{error['ename']}: {error['evalue']}"]
        self._add(run, new_output("error", ename=str(error["ename"]), evalue=str(error["evalue"]),
                                  traceback=traceback))


# -- writing ------------------------------------------------------------------------------


def executed(nb: NotebookNode, runs: list[CellRun]) -> NotebookNode:
    """A copy of the notebook holding this run's outputs (and no stale ones)."""
    out = copy.deepcopy(nb)
    for run in runs:
        nbcell = out.cells[run.index]
        spin = nbcell.setdefault("metadata", {}).setdefault("spin", {})
        spin["run"] = {"status": run.status or "not_finished", "duration_ms": run.duration_ms}
        if run.kind == "markdown":
            if run.rendered is not None and run.rendered != run.cell["source"]:
                spin["source"] = run.cell["source"]
                nbcell.source = run.rendered
            continue
        nbcell.outputs = [copy.deepcopy(o) for o in run.outputs]
        nbcell.execution_count = run.execution_count
    return out


def write(nb: NotebookNode, path: str) -> None:
    """Write atomically: a reader never sees half a notebook."""
    ipynb.write_atomic(path, ipynb.dumps(nb))
