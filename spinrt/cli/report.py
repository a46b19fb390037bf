"""What ``spin run`` prints: human logs (live) or one JSON document (at the end)."""

from __future__ import annotations

import collections
import json
import os
import re
from typing import Any, Protocol, TextIO

import attrs

from .notebook import CellRun

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


@attrs.define
class Summary:
    """The end of a run: what the exit code says, and why."""

    notebook: str
    exit_code: int
    reason: str  # one line; empty when everything passed
    duration_ms: int
    runs: list[CellRun]
    runtime: dict[str, Any] = attrs.field(factory=dict)  # mode, url (never a token), version
    output: str | None = None

    def counts(self) -> dict[str, int]:
        return dict(collections.Counter(r.status or "not_finished" for r in self.runs))


class Reporter(Protocol):
    def begin(self, notebook: str, runs: list[CellRun], target: str) -> None: ...
    def cell_started(self, run: CellRun) -> None: ...
    def output(self, run: CellRun, event: dict[str, Any]) -> None: ...
    def cell_finished(self, run: CellRun) -> None: ...
    def end(self, summary: Summary) -> None: ...


def emit(out: TextIO, text: str) -> None:
    """Write and flush; a closed pipe (``spin run ... | head``) stops output, not the run."""
    try:
        out.write(text)
        out.flush()
    except BrokenPipeError:
        try:  # later writes (and the interpreter's final flush) go nowhere
            os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
        except (OSError, ValueError, AttributeError):
            pass


def _seconds(ms: int | None) -> str:
    return "-" if ms is None else f"{ms / 1000:.2f} s"


def _text_of(data: Any) -> str:
    if not isinstance(data, dict):
        return ""
    for mime in ("text/plain", "text/markdown"):
        value = data.get(mime)
        if isinstance(value, str):
            return value
    kinds = ", ".join(sorted(str(k) for k in data))
    return f"[{kinds}]"


def error_line(run: CellRun) -> str:
    error = run.error or {}
    text = f"{error.get('ename', 'Error')}: {error.get('evalue', '')}".strip()
    return text.splitlines()[0] if text else run.status or ""


class LogsReporter:
    """Cell headers, live output, a progress line per cell, a summary."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._total = 0
        self._done = 0
        self._begun = False
        self._line_start = True

    def _write(self, text: str) -> None:
        if not text:
            return
        emit(self.out, text)
        self._line_start = text.endswith("\n")

    def _line(self, text: str) -> None:
        if not self._line_start:
            self._write("\n")
        self._write(text + "\n")

    def _label(self, run: CellRun) -> str:
        head = f" {run.headline}" if run.headline else ""
        return f"[{run.number}/{self._total}] {run.type}:{head}"

    def begin(self, notebook: str, runs: list[CellRun], target: str) -> None:
        self._total = len(runs)
        self._begun = True
        cells = f"{len(runs)} cell" + ("" if len(runs) == 1 else "s")
        self._line(f"spin: running {notebook} ({cells}) on {target}")

    def cell_started(self, run: CellRun) -> None:
        self._line(f"==> {self._label(run)}")

    def output(self, run: CellRun, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "stream":
            self._write(_ANSI.sub("", str(event.get("text", ""))))
        elif kind in ("display", "result"):
            self._line(_ANSI.sub("", _text_of(event.get("data"))).rstrip("\n"))

    def cell_finished(self, run: CellRun) -> None:
        self._done += 1
        if run.status == "skipped":
            self._line(f"--- {self._label(run)} skipped")
            return
        if run.error:
            traceback = [_ANSI.sub("", str(t)) for t in run.error.get("traceback") or []]
            for line in "\n".join(traceback).splitlines() or [error_line(run)]:
                self._line(f"    {line}")
        extra = f", exit code {run.exit_code}" if run.exit_code not in (None, 0) else ""
        self._line(f"<== [{run.number}/{self._total}] {run.status} in {_seconds(run.duration_ms)}"
                   f"{extra} ({self._done}/{self._total} done)")

    def end(self, summary: Summary) -> None:
        if not self._begun:  # nothing ran: the reason on stderr says it all
            return
        counts = ", ".join(f"{n} {status}" for status, n in summary.counts().items()) or "no cells"
        self._line(f"=== summary: {counts} in {_seconds(summary.duration_ms)}")
        width = max((len(r.type) for r in summary.runs), default=0)
        for run in summary.runs:
            status = run.status or "not_finished"
            tail = f"  {error_line(run)}" if run.error else ""
            self._line(f"  [{run.number}] {status:<12} {_seconds(run.duration_ms):>9}  "
                       f"{run.type:<{width}}  {run.headline}{tail}")
        if summary.output:
            self._line(f"=== executed notebook written to {summary.output}")


class JsonReporter:
    """Silent while running; one JSON document on ``end``."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def begin(self, notebook: str, runs: list[CellRun], target: str) -> None:
        return None

    def cell_started(self, run: CellRun) -> None:
        return None

    def output(self, run: CellRun, event: dict[str, Any]) -> None:
        return None

    def cell_finished(self, run: CellRun) -> None:
        return None

    def end(self, summary: Summary) -> None:
        document = {
            "notebook": summary.notebook,
            "output": summary.output,
            "runtime": summary.runtime,
            "exit_code": summary.exit_code,
            "reason": summary.reason,
            "duration_ms": summary.duration_ms,
            "counts": summary.counts(),
            "cells": [
                {
                    "index": run.index,
                    "number": run.number,
                    "id": run.cell.get("id"),
                    "kind": run.kind,
                    "type": run.type,
                    "status": run.status or "not_finished",
                    "duration_ms": run.duration_ms,
                    "exit_code": run.exit_code,
                    "error": run.error,
                    "outputs": run.outputs,
                    "variables": run.variables,
                }
                for run in summary.runs
            ],
        }
        emit(self.out, json.dumps(document, indent=2, default=str, ensure_ascii=False) + "\n")


def reporter(kind: str, out: TextIO) -> LogsReporter | JsonReporter:
    return JsonReporter(out) if kind == "json" else LogsReporter(out)
