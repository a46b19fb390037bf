"""A session's log events as Jupyter messages.

Every run of the session (from a Jupyter client or a spin client) shows on
iopub as a kernel shows an execution: ``status: busy``, ``execute_input``,
its outputs (``stream``, ``display_data``, ``update_display_data``,
``clear_output``, ``execute_result``), an ``error`` when it failed, then
``status: idle``. A run a Jupyter client asked for also gets its
``execute_reply`` on shell, for that client alone; its messages name the
client's execute_request as their parent. A run from a spin client names a
made-up execute_request (``msg_id`` = the run id, ``username`` = who ran it).

Events are masked when they enter the log, so what is built here is too.
``execution_count`` is the session's count of runs since the Jupyter kernel
was created (reset by a restart through the Jupyter API).
"""

from __future__ import annotations

from typing import Any

from . import framing
from .kernels import JupyterKernel

# Output events: those a replay over its limit drops (and says so).
OUTPUT_EVENTS = frozenset({"stream", "display", "display.update", "clear", "result"})


class Routed:
    """A message and where it goes: every connection (``to`` None, iopub) or
    only the connection of client ``to`` (shell replies)."""

    __slots__ = ("msg", "to")

    def __init__(self, msg: dict[str, Any], to: str | None = None) -> None:
        self.msg = msg
        self.to = to


def _iopub(kernel: JupyterKernel, msg_type: str, content: dict[str, Any], parent: dict[str, Any]) -> Routed:
    return Routed(framing.message("iopub", msg_type, content, parent, session=kernel.key))


def status(kernel: JupyterKernel, state: str, parent: dict[str, Any] | None = None) -> Routed:
    return _iopub(kernel, "status", {"execution_state": state}, parent or {})


def stderr_notice(kernel: JupyterKernel, text: str, parent: dict[str, Any] | None = None) -> Routed:
    return _iopub(kernel, "stream", {"name": "stderr", "text": text}, parent or {})


def translate(kernel: JupyterKernel, event: dict[str, Any]) -> list[Routed]:
    """The messages one log event becomes (none for events Jupyter has no word for)."""
    kind = event.get("event")
    run = event.get("run")
    if kind == "kernel.status":
        state = event.get("state")
        if state in ("starting", "dead") or (state == "restarting" and not kernel.restarting):
            return [status(kernel, state)]
        return []
    if kind == "session.closed":
        return [status(kernel, "dead")]
    if not isinstance(run, str):
        return []
    parent = kernel.parent_of(run)
    if kind == "run.started":
        info = kernel.runs.get(run)
        count = kernel.count_for(run)
        return [status(kernel, "busy", parent),
                _iopub(kernel, "execute_input", {"code": info.source if info else "", "execution_count": count}, parent)]
    if kind == "stream":
        return [_iopub(kernel, "stream", {"name": event.get("name", "stdout"), "text": event.get("text", "")}, parent)]
    if kind in ("display", "display.update"):
        content: dict[str, Any] = {"data": event.get("data") or {}, "metadata": event.get("metadata") or {}}
        if event.get("display_id") is not None:
            content["transient"] = {"display_id": event["display_id"]}
        return [_iopub(kernel, "display_data" if kind == "display" else "update_display_data", content, parent)]
    if kind == "clear":
        return [_iopub(kernel, "clear_output", {"wait": bool(event.get("wait"))}, parent)]
    if kind == "result":
        count = kernel.count_for(run)
        return [_iopub(kernel, "execute_result", {"data": event.get("data") or {}, "metadata": {},
                                                  "execution_count": count}, parent)]
    if kind == "run.finished":
        return _finished(kernel, run, event, parent)
    return []


def _finished(kernel: JupyterKernel, run: str, event: dict[str, Any], parent: dict[str, Any]) -> list[Routed]:
    out: list[Routed] = []
    request = kernel.request_of(run)
    info = kernel.runs.get(run)
    count = info.count if info is not None else None  # None: it never started (cancelled while queued)
    status_ = event.get("status")
    reply: dict[str, Any]
    if status_ == "ok":
        reply = {"status": "ok", "execution_count": count, "user_expressions": {}, "payload": []}
    elif status_ == "skipped" or (request is not None and request.aborted):
        reply = {"status": "aborted", "execution_count": count}
    else:
        error = error_content(event)
        out.append(_iopub(kernel, "error", error, parent))
        reply = {"status": "error", "execution_count": count, **error}
    if request is not None:
        out.append(Routed(framing.message("shell", "execute_reply", reply, parent, session=kernel.key,
                                          metadata={"status": reply["status"]}), to=request.client))
    out.append(status(kernel, "idle", parent))  # a client's request is done at its reply and this
    return out


def error_content(event: dict[str, Any]) -> dict[str, Any]:
    """A failed run's ``error`` as Jupyter's ``{ename, evalue, traceback}``.
    A cancelled run reads ``KeyboardInterrupt`` (what an interrupt is in
    Jupyter); a traceback is never empty (frontends show only it)."""
    error = event.get("error") or {}
    status_ = event.get("status")
    ename = str(error.get("ename") or "Error")
    evalue = str(error.get("evalue") or "")
    if status_ == "cancelled":
        ename = "KeyboardInterrupt"
        evalue = evalue or "the run was cancelled"
    traceback = [str(line) for line in error.get("traceback") or ()]
    if not traceback:
        traceback = [f"{ename}: {evalue}" if evalue else ename]
    return {"ename": ename, "evalue": evalue, "traceback": traceback}
