"""Time-series charts as SVG, drawn server-side with matplotlib.

A chart is an ``image/svg+xml`` output, so the browser UI (whose security
policy forbids the eval that client-side chart grammars need), ``spin run``
and nbconvert all show it with no script. Drawing takes tens of
milliseconds and matplotlib's first import about a second: :func:`render`
runs in the reactor's thread pool, never on the reactor thread. Only
matplotlib's object API is used (a Figure per chart, no pyplot state), which
is safe from several threads at once.
"""

from __future__ import annotations

import io
import threading
from datetime import datetime, timezone
from typing import Any, Sequence

from twisted.internet.threads import deferToThreadPool

MAX_SERIES = 30  # lines drawn; more are counted in the title
LEGEND_ENTRIES = 12
_setup = threading.Lock()
_ready = False


def _matplotlib() -> Any:
    global _ready
    with _setup:
        if not _ready:
            import matplotlib

            matplotlib.use("svg", force=False)
            # Text as <text> (small, searchable) and stable ids (same data, same SVG).
            matplotlib.rcParams["svg.fonttype"] = "none"
            matplotlib.rcParams["svg.hashsalt"] = "spinrt"
            _ready = True
    from matplotlib.backends.backend_svg import FigureCanvasSVG
    from matplotlib.figure import Figure

    return Figure, FigureCanvasSVG


def draw(series: Sequence[tuple[str, Sequence[tuple[float, float]]]], title: str, width: float = 9.0,
         height: float = 3.6) -> str:
    """The SVG text of a line chart: one line per ``(label, [(unix seconds, value)])``."""
    import matplotlib.dates as mdates

    Figure, Canvas = _matplotlib()
    figure = Figure(figsize=(width, height), dpi=96)
    Canvas(figure)
    axes = figure.add_subplot(1, 1, 1)
    drawn = series[:MAX_SERIES]
    for label, points in drawn:
        xs = [datetime.fromtimestamp(t, timezone.utc) for t, _ in points]
        ys = [v for _, v in points]
        axes.plot(xs, ys, linewidth=1.2, label=label or "{}")
    locator = mdates.AutoDateLocator()
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=timezone.utc))
    axes.grid(True, linewidth=0.4, alpha=0.5)
    shown = title if len(series) <= MAX_SERIES else f"{title} (first {MAX_SERIES} of {len(series)} series)"
    axes.set_title(shown[:150], fontsize=10, loc="left")
    axes.set_xlabel("UTC", fontsize=8)
    if 1 < len(drawn) <= LEGEND_ENTRIES or (len(drawn) == 1 and drawn[0][0]):
        axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    figure.tight_layout()
    out = io.StringIO()
    figure.savefig(out, format="svg", bbox_inches="tight")
    return out.getvalue()


def render(reactor: Any, series: Sequence[tuple[str, Sequence[tuple[float, float]]]], title: str) -> Any:
    """Deferred firing with :func:`draw`'s SVG, drawn in the reactor's thread pool."""
    return deferToThreadPool(reactor, reactor.getThreadPool(), draw, series, title)
