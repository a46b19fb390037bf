"""A Python cell's kernel messages as protocol events, and its outcome.

iopub ``stream`` -> ``stream`` (small chunks merged, large ones split, never
dropped), ``display_data`` -> ``display``, ``update_display_data`` ->
``display.update``, ``execute_result`` -> ``result``, ``clear_output`` ->
``clear``. The execute_reply becomes the run's Outcome.
"""

from __future__ import annotations

from typing import Any

from ..protocol import run_error
from .base import CellContext, Outcome

STREAM_CHUNK = 64 * 1024  # characters per stream event at most
STREAM_FLUSH_DELAY = 0.005  # seconds small stream chunks wait to be merged

NO_STDIN = (
    "input() and getpass() are not available in Python cells: the runtime has no "
    "stdin channel. Pass values in with session variables, or read secrets with "
    'SpinSecrets.get_secret("NAME").'
)


class RunOutput:
    """One run's iopub messages -> protocol events, stream text merged."""

    def __init__(self, ctx: CellContext) -> None:
        self.ctx = ctx
        self._parts: list[str] = []
        self._size = 0
        self._name = "stdout"
        self._timer: Any = None

    def __call__(self, msg: dict[str, Any]) -> None:
        kind = msg["msg_type"]
        content = msg["content"]
        if kind == "stream":
            self.stream(content.get("name", "stdout"), content.get("text", ""))
            return
        if kind not in ("display_data", "update_display_data", "execute_result", "clear_output"):
            return  # error (the reply carries it), execute_input, comm_* ...
        self.flush()  # keep streams and rich output in the order produced
        ctx = self.ctx
        display_id = (content.get("transient") or {}).get("display_id")
        if kind == "display_data":
            ctx.display(content.get("data") or {}, content.get("metadata"), display_id)
        elif kind == "update_display_data":
            if display_id is not None:
                ctx.update_display(display_id, content.get("data") or {}, content.get("metadata"))
        elif kind == "execute_result":
            ctx.result(content.get("data") or {})
        else:
            ctx.clear(bool(content.get("wait")))

    def stream(self, name: str, text: str) -> None:
        if not text:
            return
        if name != self._name and self._parts:
            self.flush()  # stdout/stderr interleaving as produced
        self._name = name
        self._parts.append(text)
        self._size += len(text)
        if self._size >= STREAM_CHUNK:
            self.flush()
        elif self._timer is None:
            self._timer = self.ctx.reactor.callLater(STREAM_FLUSH_DELAY, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
        if not self._parts:
            return
        text = "".join(self._parts)
        self._parts, self._size = [], 0
        for start in range(0, len(text), STREAM_CHUNK):
            self.ctx.stream(self._name, text[start:start + STREAM_CHUNK])


def outcome_of(reply: dict[str, Any], ctx: CellContext) -> Outcome:
    status = reply.get("status")
    if status == "ok":
        for payload in reply.get("payload") or ():
            if payload.get("source") == "page" and payload.get("data"):
                ctx.display(payload["data"])  # `obj?` help text
        return Outcome(status="ok")
    if status == "error":
        ename = str(reply.get("ename", "Error"))
        evalue = str(reply.get("evalue", ""))
        traceback = [str(line) for line in reply.get("traceback") or ()]
        code = "python_error"
        if ename == "StdinNotImplementedError":
            code, evalue = "stdin_not_supported", NO_STDIN
        return Outcome(status="error", error=run_error(code, ename, evalue, traceback))
    return Outcome.failed("aborted", "Aborted", "the kernel did not run this cell (aborted)")
