"""The chart worker (spinrt.integrations.charts): SVG out of a child process,
a worker that dies fails its waiting charts clearly and the next chart starts
another, NaN and infinite values draw, and the daemon's environment (its
token) never reaches the worker."""

from __future__ import annotations

import os

from twisted.internet import reactor
from twisted.trial import unittest

from spinrt.integrations import charts
from spinrt.integrations.base import IntegrationError

from .support import eventually

SERIES = [('up{job="a"}', [(1796032800.0 + 15 * i, float(i % 7)) for i in range(100)]),
          ('up{job="b"}', [(1796032800.0, float("nan")), (1796032815.0, float("inf")), (1796032830.0, 1.0)])]


class ChartWorkerTests(unittest.TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.addCleanup(charts.stop, reactor)

    async def test_svg_and_a_worker_that_dies(self) -> None:
        await charts.stop(reactor)  # a worker of this test's own, started with a token in the environment
        self.patch(os, "environ", {**os.environ, "SPIN_TOKEN": "token-of-the-daemon", "SPIN_SECRET_KEY": "k"})
        svg = await charts.render(reactor, SERIES, "up")
        self.assertTrue(svg.startswith("<?xml") and "<svg" in svg and "<script" not in svg)
        self.assertIn('up{job="a"}', svg.replace("&quot;", '"'))  # the legend, as text
        worker = charts._workers[id(reactor)]
        with open(f"/proc/{worker.transport.pid}/environ", "rb") as f:
            environment = f.read().split(b"\0")
        self.assertFalse([v for v in environment if v.startswith((b"SPIN_TOKEN=", b"SPIN_SECRET_KEY="))])
        # Killed while drawing: the waiting chart fails with a clear error...
        waiting = charts.render(reactor, SERIES * 10, "many")
        worker.transport.signalProcess("KILL")
        with self.assertRaises(IntegrationError) as caught:
            await waiting
        self.assertEqual(caught.exception.code, "chart_failed")
        await eventually(lambda: not worker.alive)
        # ... and the next chart starts a new worker.
        svg = await charts.render(reactor, SERIES[:1], "again")
        self.assertIn("<svg", svg)
        self.assertIsNot(charts._workers[id(reactor)], worker)

    async def test_many_series_are_cut_and_counted(self) -> None:
        many = [(f"s{i}", [(1796032800.0, float(i)), (1796032860.0, float(i + 1))]) for i in range(45)]
        svg = await charts.render(reactor, many, "wide")
        self.assertIn(f"wide (first {charts.MAX_SERIES} of 45 series)", svg)
