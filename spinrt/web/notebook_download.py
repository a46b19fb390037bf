"""``GET /api/sessions/<id>/notebook.ipynb``: a session as a Jupyter notebook, with its outputs.

The notebook is the session's document as nbformat 4.5, written the way
``spin run`` writes an executed notebook, with the same code
(:mod:`spinrt.ipynb` for the cells, :mod:`spinrt.cli.notebook` for the
outputs):

- every cell as ``spinrt.ipynb.notebook_of`` writes it (type, options,
  output variable and a protocol id that is no nbformat id in
  ``metadata.spin``), so ``notebook.save`` with ``ipynb`` imports it back
  to the same cells; the notebook's ``metadata.spin.parameters`` are those
  of the library notebook the session was made from, when it still exists;
- each code cell carries the outputs of its *latest run that started*, as
  ``stream`` / ``display_data`` / ``execute_result`` / ``error`` outputs
  (``OutputBuilder``), with ``execution_count`` numbering the runs in the
  order they started. A run that never started (queued, skipped, cancelled
  while queued) leaves the previous run's outputs, as Jupyter keeps a
  cell's outputs until it runs again;
- a markdown cell that ran shows its rendered text and keeps its template
  in ``metadata.spin.source``;
- each cell that ran has ``metadata.spin.run``: ``{status, duration_ms}``
  (``spin run``'s record) plus ``id`` (the run) and ``by`` (who ran it).

The outputs are folded from the session's log as for ``session.snapshot``
(:mod:`spinrt.sessions.snapshot`: clears and display updates applied,
adjacent stream text merged), read in bounded batches on the store's thread
and folded in slices on the reactor thread; the notebook is then built,
validated with nbformat and encoded in the reactor's thread pool. The
bounds are larger than a snapshot's: each run keeps its first and last
``MAX_OUTPUT_BYTES / 2`` of output and all runs together ``BUDGET`` (the
oldest runs give way first); a cut is marked in the output's text with the
number of bytes left out and the route that serves the whole text. Events
are masked when they are appended, so the notebook shows secrets as
``***`` like everything else.

The token goes in the ``Authorization`` header only, checked by the caller
(:class:`spinrt.web.run_output.SessionsResource`, which routes here).
Errors (JSON ``{"error": {code, message}}``): 404 ``not_found`` for an
unknown session, 500 ``internal`` when the notebook cannot be built.
"""

from __future__ import annotations

import re
import urllib.parse
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from twisted.internet.defer import Deferred, DeferredSemaphore
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.web import http
from twisted.web.server import NOT_DONE_YET, Request

from .. import ipynb
from ..cli.notebook import CellRun, OutputBuilder, executed
from ..notebooks import NotebookError
from ..sessions.snapshot import RunRecord, SnapshotFolder, fold_history
from . import httpauth
from .ops_snapshot import cooperator

if TYPE_CHECKING:
    from nbformat import NotebookNode

_log = Logger()

ROUTE = "notebook.ipynb"
CONTENT_TYPE = b"application/x-ipynb+json"  # what Jupyter serves .ipynb files as
MAX_OUTPUT_BYTES = 4 * 1024 * 1024  # per run: its first and last 2 MiB
BUDGET = 32 * 1024 * 1024  # every run's outputs together
CONCURRENT = 2  # notebooks built at a time, runtime-wide
_slots = DeferredSemaphore(CONCURRENT)
_UNSAFE_IN_FILE_NAMES = '\\/:*?"<>|'
_NOT_ASCII_SAFE = re.compile(r"[^A-Za-z0-9._ ()-]")


class _Folder(SnapshotFolder):
    """A snapshot fold that also keeps each run's ``run.finished`` fields."""

    def __init__(self) -> None:
        super().__init__(MAX_OUTPUT_BYTES, budget=BUDGET)
        self.finished: dict[str, dict[str, Any]] = {}

    def feed_event(self, event: dict[str, Any]) -> None:
        run = event.get("run")
        if event.get("event") == "run.finished" and isinstance(run, str):
            self.finished[run] = {k: event.get(k) for k in ("status", "duration_ms", "exit_code")}
        super().feed_event(event)


def latest_runs(runs: Sequence[RunRecord], cell_ids: set[str]) -> list[RunRecord]:
    """Of ``runs`` (in the order they were queued), the latest one that
    started of each cell in ``cell_ids``, in the order they were queued."""
    latest: dict[str, RunRecord] = {}
    for record in runs:
        if record.started is not None and isinstance(record.cell_id, str) and record.cell_id in cell_ids:
            latest[record.cell_id] = record
    chosen = {id(record) for record in latest.values()}
    return [record for record in runs if id(record) in chosen]


def _cut_note(session_id: str, run_id: str, output: Mapping[str, Any]) -> str:
    what = f"a {output['output']}" if isinstance(output.get("output"), str) else "output"
    return (f"\n[\u2026 {output.get('bytes', 0)} bytes of {what} left out here; the run's whole text: "
            f"GET /api/sessions/{session_id}/runs/{run_id}/output \u2026]\n")


def build(session_id: str, cells: list[dict[str, Any]], parameters: list[dict[str, Any]] | None,
          runs: Sequence[RunRecord], finished: Mapping[str, Mapping[str, Any]]) -> NotebookNode:
    """The session's notebook (validated), from its document ``cells`` (in
    order), the notebook ``parameters`` (None: none) and its folded ``runs``
    with their ``run.finished`` fields; IpynbError if it cannot be made valid."""
    nb = ipynb.notebook_of(cells, parameters, field="document")
    position = {str(cell["id"]): i for i, cell in enumerate(cells)}
    builder = OutputBuilder()
    plan: list[tuple[CellRun, RunRecord]] = []
    for record in latest_runs(runs, set(position)):
        index = position[record.cell_id]
        kind = nb.cells[index].cell_type
        if kind not in ("code", "markdown"):
            continue
        run = CellRun(index=index, number=len(plan) + 1, kind=kind, cell=cells[index], run_id=record.run)
        builder.started(run)
        error = None
        for output in record.outputs.render():
            event = output.get("event")
            if event == "error":
                error = output.get("error")  # goes in with run.finished, as spin run does
            elif event == "cut":
                name = next((o.name for o in reversed(run.outputs) if o.output_type == "stream"), "stdout")
                builder.event(run, {"event": "stream", "name": name, "text": _cut_note(session_id, record.run, output)})
            else:
                builder.event(run, output)
        ended = finished.get(record.run)
        if ended is not None:
            builder.finished(run, {**ended, "error": error})
        else:
            run.status = record.status  # still running when the download began
        plan.append((run, record))
    out = executed(nb, [run for run, _ in plan])
    for run, record in plan:
        out.cells[run.index].metadata["spin"]["run"].update(id=record.run, by=record.by)
    ipynb.validate(out, "the session's notebook")
    return out


def file_name(name: str) -> str:
    """``Content-Disposition: attachment`` for a notebook named ``name``:
    an ASCII ``filename`` (other characters as ``_``) and the whole name in
    ``filename*`` (RFC 6266, RFC 8187), never a path or a control character."""
    stem = name.removesuffix(".ipynb")
    clean = "".join(ch if ch.isprintable() and ch not in _UNSAFE_IN_FILE_NAMES else "_" for ch in stem)
    clean = clean.strip(" .")[:150] or "notebook"
    plain = _NOT_ASCII_SAFE.sub("_", clean)
    whole = urllib.parse.quote(clean + ".ipynb", safe="")
    return f"attachment; filename=\"{plain}.ipynb\"; filename*=UTF-8''{whole}"


async def _parameters(manager: Any, notebook: str | None) -> list[dict[str, Any]] | None:
    library = getattr(manager, "notebooks", None)
    if notebook is None or library is None:
        return None
    try:
        found = await library.get(notebook)
    except (NotebookError, OSError):
        return None  # renamed, deleted or broken since: the cells are what matters
    parameters: list[dict[str, Any]] = found["parameters"]
    return parameters


async def session_notebook(manager: Any, session: Any) -> bytes:
    """The session's notebook as the bytes of an ``.ipynb`` file (module docstring)."""
    clock = manager.clock
    await _slots.acquire()
    steps = cooperator(clock)
    try:
        # One instant: the document and the runs are those of events 1..upto.
        upto = session.last_seq
        cells = session.document_cells()
        folder = _Folder()
        await fold_history(session, upto, lambda frames: steps.cooperate(folder.feeding(frames)).whenDone())
        parameters = await _parameters(manager, getattr(session, "notebook", None))

        def encoded() -> bytes:
            return ipynb.dumps(build(session.id, cells, parameters, list(folder.runs.values()), folder.finished))

        data: bytes = await deferToThreadPool(clock, clock.getThreadPool(), encoded)
        return data
    finally:
        steps.stop()
        _slots.release()


def render(request: Request, manager: Any, session: Any) -> Any:
    """Answer the route for ``session`` (its token already checked)."""
    gone: list[object] = []
    request.notifyFinish().addErrback(gone.append)

    def send(data: bytes) -> None:
        if gone:
            return
        request.setHeader(b"content-type", CONTENT_TYPE)
        request.setHeader(b"content-disposition", file_name(session.name or session.id).encode("ascii"))
        request.setHeader(b"content-length", str(len(data)).encode("ascii"))
        request.write(data)
        request.finish()

    def failed(failure: Any) -> None:
        _log.failure("building the notebook of session {session} failed", failure, session=session.id)
        if gone:
            return
        request.setResponseCode(http.INTERNAL_SERVER_ERROR)
        request.setHeader(b"content-type", b"application/json")
        request.write(httpauth.json_error("internal", "the session's notebook could not be built"))
        request.finish()

    Deferred.fromCoroutine(session_notebook(manager, session)).addCallbacks(send, failed)
    return NOT_DONE_YET
