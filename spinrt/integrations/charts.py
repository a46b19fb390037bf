"""Time-series charts as SVG, drawn server-side with matplotlib.

A chart is an ``image/svg+xml`` output, so the browser UI (whose security
policy forbids the eval that client-side chart grammars need), ``spin run``
and nbconvert all show it with no script.

Drawing happens in a child process (``python -m
spinrt.integrations.chart_worker``, started at the first chart, kept for the
next ones), never in the daemon: matplotlib's import takes about a second,
a chart a few hundred milliseconds of mostly GIL-holding work, which in a
thread of the daemon stalled the reactor for up to half a second
(bench/integrations_bench.py). Requests and answers are JSON lines on the
child's stdin and stdout; the child gets no token and no secret in its
environment. If it dies, waiting charts fail and the next chart starts a new
one. Only matplotlib's object API is used (a Figure per chart, no pyplot).
"""

from __future__ import annotations

import io
import json
import os
import sys
from datetime import datetime, timezone
from typing import Any, Sequence

from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from .base import IntegrationError

_log = Logger()

MAX_SERIES = 30  # lines drawn; more are counted in the title
LEGEND_ENTRIES = 12
Series = Sequence[tuple[str, Sequence[tuple[float, float]]]]


def draw(series: Series, title: str, total: int | None = None, width: float = 9.0, height: float = 3.6) -> str:
    """The SVG text of a line chart: one line per ``(label, [(unix seconds, value)])``
    (the first MAX_SERIES; ``total``: how many there were before any cut).
    Runs in the chart worker (imports matplotlib)."""
    import matplotlib

    matplotlib.use("svg", force=False)
    # Text as <text> (small, searchable) and stable ids (same data, same SVG).
    matplotlib.rcParams["svg.fonttype"] = "none"
    matplotlib.rcParams["svg.hashsalt"] = "spinrt"
    import matplotlib.dates as mdates
    from matplotlib.backends.backend_svg import FigureCanvasSVG
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=96)
    FigureCanvasSVG(figure)
    axes = figure.add_subplot(1, 1, 1)
    drawn = series[:MAX_SERIES]
    for label, points in drawn:
        xs = [datetime.fromtimestamp(t, timezone.utc) for t, _ in points]
        axes.plot(xs, [v for _, v in points], linewidth=1.2, label=label or "{}")
    locator = mdates.AutoDateLocator()
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=timezone.utc))
    axes.grid(True, linewidth=0.4, alpha=0.5)
    total = max(total or 0, len(series))
    shown = title if total <= MAX_SERIES else f"{title} (first {MAX_SERIES} of {total} series)"
    axes.set_title(shown[:150], fontsize=10, loc="left")
    axes.set_xlabel("UTC", fontsize=8)
    if 1 < len(drawn) <= LEGEND_ENTRIES or (len(drawn) == 1 and drawn[0][0]):
        axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    out = io.StringIO()
    figure.savefig(out, format="svg", bbox_inches="tight")  # the legend outside the axes included
    return out.getvalue()


class ChartWorker(ProcessProtocol):
    """The child process that draws, and the charts waiting for it (in order)."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.waiting: list[Deferred[str]] = []
        self.buffer = bytearray()
        self.errors = bytearray()
        self.ended: Deferred[None] = Deferred()
        self.alive = True
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "MPLCONFIGDIR", "TMPDIR")}
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        reactor.spawnProcess(self, sys.executable, [sys.executable, "-m", "spinrt.integrations.chart_worker"],
                             env=env, childFDs={0: "w", 1: "r", 2: "r"})

    def draw(self, series: Series, title: str) -> Deferred[str]:
        request = json.dumps({"series": [[label, list(map(list, points))] for label, points in series[:MAX_SERIES]],
                              "total": len(series), "title": title}, allow_nan=True)
        waiting: Deferred[str] = Deferred()
        self.waiting.append(waiting)
        self.transport.write(request.encode("utf-8") + b"\n")
        return waiting

    def outReceived(self, data: bytes) -> None:
        self.buffer.extend(data)
        while b"\n" in self.buffer:
            end = self.buffer.index(b"\n")
            line, self.buffer = bytes(self.buffer[:end]), self.buffer[end + 1:]
            if not self.waiting:
                continue
            waiting = self.waiting.pop(0)
            answer = json.loads(line)
            if "svg" in answer:
                waiting.callback(answer["svg"])
            else:
                waiting.errback(Failure(IntegrationError("chart_failed", f"the chart could not be drawn: {answer.get('error')}")))

    def errReceived(self, data: bytes) -> None:
        self.errors.extend(data[-4096:])
        del self.errors[:-4096]

    def processEnded(self, reason: Failure) -> None:
        self.alive = False
        waiting, self.waiting = self.waiting, []
        if waiting:
            why = self.errors.decode("utf-8", "replace").strip().splitlines()[-1:] or ["it exited"]
            _log.error("the chart worker ended: {why}", why=why[0])
        for d in waiting:
            d.errback(Failure(IntegrationError("chart_failed", "the chart worker ended before drawing the chart")))
        self.ended.callback(None)

    def stop(self) -> Deferred[None]:
        if self.alive:
            self.transport.closeStdin()  # the worker exits at the end of its input
        return self.ended


_workers: dict[int, ChartWorker] = {}


def render(reactor: Any, series: Series, title: str) -> Deferred[str]:
    """Deferred firing with the chart's SVG, drawn by the chart worker."""
    worker = _workers.get(id(reactor))
    if worker is None or not worker.alive:
        worker = _workers[id(reactor)] = ChartWorker(reactor)
    return worker.draw(series, title)


def stop(reactor: Any) -> Deferred[None]:
    """End the chart worker (the runtime is stopping); a later chart starts another."""
    worker = _workers.pop(id(reactor), None)
    return worker.stop() if worker is not None else succeed(None)
