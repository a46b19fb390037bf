"""The chart worker's main loop (``python -m spinrt.integrations.chart_worker``).

One JSON request per line on stdin (``{series, total, title}``), one JSON
answer per line on stdout (``{svg}`` or ``{error}``), until stdin ends. See
:mod:`spinrt.integrations.charts`.
"""

from __future__ import annotations

import json
import sys

from .charts import draw


def main() -> None:
    for line in sys.stdin:
        try:
            request = json.loads(line)
            series = [(label, [(t, v) for t, v in points]) for label, points in request["series"]]
            answer = {"svg": draw(series, request["title"], request.get("total"))}
        except Exception as e:  # a bad request must not end the worker
            answer = {"error": f"{type(e).__name__}: {e}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
