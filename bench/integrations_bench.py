"""Integration cells: what they cost (not run by CI).

    .venv/bin/python bench/integrations_bench.py [--n 30]

- charts: matplotlib's cold start (import + first chart, in a fresh
  process) and warm draws of 1, 10 and 30 series of 250 points; SVG sizes;
- tables: text + HTML + JSON of 1000 rows;
- end to end against a real Prometheus (Debian's, as the tests start it):
  an instant query and a 1 h range query with its chart, ``cell.run`` to
  ``run.finished`` over the WebSocket, median and p90; and the gaps in a
  10 ms reactor heartbeat meanwhile (charts are drawn in the chart worker
  process, so they should not show there).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from twisted.internet import asyncioreactor  # noqa: E402

asyncioreactor.install()

from twisted.internet import defer, reactor, task  # noqa: E402


def cold_chart() -> float:
    code = ("import time; t=time.perf_counter(); from spinrt.integrations import charts; "
            "charts.draw([('a', [(1.7e9 + i, float(i)) for i in range(250)])], 'x'); "
            "print(time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    return float(out.stdout.strip())


def warm_charts() -> list[tuple[int, float, int]]:
    from spinrt.integrations import charts

    rows = []
    for n in (1, 10, 30):
        series = [(f'up{{instance="host-{s}:9100"}}', [(1.7e9 + 14 * i, float((i * s) % 17)) for i in range(250)])
                  for s in range(n)]
        charts.draw(series, "warm-up")
        times = []
        for _ in range(5):
            t = time.perf_counter()
            svg = charts.draw(series, "rate(node_cpu_seconds_total[5m])")
            times.append(time.perf_counter() - t)
        rows.append((n, statistics.median(times), len(svg)))
    return rows


def tables_cost() -> float:
    from spinrt.integrations.tables import Table

    table = Table(["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
                  [[f"pod-{i}", "1/1", "Running", i % 3, "5d"] for i in range(1000)])
    t = time.perf_counter()
    for _ in range(10):
        table.bundle("pods")
    return (time.perf_counter() - t) / 10


class Case:
    """What tests.support.start_runtime and tests.prometheus need of a TestCase."""

    def __init__(self) -> None:
        self.cleanups: list[Any] = []

    def addCleanup(self, f: Any, *args: Any) -> None:
        self.cleanups.append((f, args))

    def fail(self, message: str) -> None:
        raise SystemExit(message)

    async def clean(self) -> None:
        for f, args in reversed(self.cleanups):
            result = f(*args)
            if isinstance(result, defer.Deferred):
                await result


async def end_to_end(n: int) -> dict[str, Any]:
    from tests import prometheus
    from tests.support import Client, eventually, start_runtime, ws_url

    case = Case()
    os.chdir(tempfile.mkdtemp(prefix="integrations-bench-"))
    try:
        exporter = prometheus.Exporter(case)
        prom = await prometheus.TestPrometheus([exporter.address]).start(case)
        service = await start_runtime(case)
        client = await Client.connect(ws_url(service))
        case.addCleanup(client.close)
        reply = await client.request("connections.set", name="p", type="prometheus", url=prom.url)
        assert reply["ok"], reply
        sid = (await client.request("session.create", name="bench"))["session"]["id"]
        await eventually(lambda: exporter.collector.scrapes >= 4, timeout=30)
        out: dict[str, Any] = {}
        gaps: list[float] = []
        last = [time.perf_counter()]

        def beat() -> None:
            now = time.perf_counter()
            gaps.append(now - last[0])
            last[0] = now

        for label, cell in (("instant", {"type": "prometheus", "source": "spin_test_temperature"}),
                            ("range 1h + chart", {"type": "prometheus", "source": "rate(spin_test_requests_total[5s])",
                                                  "options": {"start": "now-1h"}})):
            times = []
            heart = task.LoopingCall(beat)
            gaps.clear()
            last[0] = time.perf_counter()
            heart.start(0.01)
            for i in range(n):
                print(label, i, flush=True) if os.environ.get("BENCH_VERBOSE") else None
                t = time.perf_counter()
                finished = await client.run(sid, cell, timeout=120)
                assert finished["status"] == "ok", finished
                times.append(time.perf_counter() - t)
            heart.stop()
            times.sort()
            out[label] = (statistics.median(times), times[int(len(times) * 0.9)])
            gaps.sort()
            out[f"reactor heartbeat (10 ms) during {label}: largest gap"] = gaps[-1]
            out[f"reactor heartbeat (10 ms) during {label}: p99 gap"] = gaps[int(len(gaps) * 0.99)]
        return out
    finally:
        await case.clean()


async def main(n: int) -> None:
    print(f"chart, cold (import matplotlib + first draw, fresh process): {cold_chart() * 1000:.0f} ms")
    for series, seconds, size in warm_charts():
        print(f"chart, warm, {series:2d} series x 250 points: {seconds * 1000:.1f} ms, SVG {size / 1024:.0f} KiB")
    print(f"table of 1000 rows (text + HTML + JSON): {tables_cost() * 1000:.1f} ms")
    for label, value in (await end_to_end(n)).items():
        if isinstance(value, tuple):
            print(f"{label}: median {value[0] * 1000:.1f} ms, p90 {value[1] * 1000:.1f} ms (n={n})")
        else:
            print(f"{label}: {value * 1000:.1f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=30)
    args = parser.parse_args()
    os.environ.setdefault("SPIN_TOKEN", "bench")
    task.react(lambda _: defer.ensureDeferred(main(args.n)))
