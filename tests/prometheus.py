"""A real Prometheus for tests: Debian's ``prometheus`` binary on 127.0.0.1, a
free port, a 1 s scrape interval, its config and data in a temp dir. It
scrapes itself and a tiny exporter the test serves (:class:`Exporter`,
prometheus_client on twisted.web), whose counter grows by a known amount per
scrape so a ``rate()`` has a known value.

Where it cannot run, ``unavailable()`` gives the reason: tests skip with it,
except under CI (``CI`` set), where they fail (tests/needs.py).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.twisted import MetricsResource
from twisted.internet import defer, reactor
from twisted.web.resource import Resource
from twisted.web.server import Site

from . import needs
from .sshd import _Output, free_port  # _Output: a child's output into .log, .ended at its end
from .support import eventually

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PER_SCRAPE = 5  # spin_test_requests_total grows by this much per scrape


def unavailable() -> str | None:
    if not os.path.exists(PROMETHEUS):
        return f"{PROMETHEUS} not found: apt-get install prometheus"
    return None


def require(testcase: Any) -> None:
    needs.require(testcase, unavailable(), "Prometheus tests")


class _Collector:
    """A counter that grows by PER_SCRAPE per scrape, and a gauge per pod."""

    def __init__(self) -> None:
        self.scrapes = 0

    def collect(self) -> Any:
        self.scrapes += 1
        counter = CounterMetricFamily("spin_test_requests", "Requests seen (test exporter)", labels=["code"])
        counter.add_metric(["200"], self.scrapes * PER_SCRAPE)
        counter.add_metric(["500"], self.scrapes)
        yield counter
        gauge = GaugeMetricFamily("spin_test_temperature", "A gauge (test exporter)", labels=["room"])
        gauge.add_metric(["kitchen"], 21.5)
        gauge.add_metric(["cellar"], 12.0)
        yield gauge


class Exporter:
    """/metrics on 127.0.0.1:<random>, stopped at cleanup."""

    def __init__(self, testcase: Any) -> None:
        registry = CollectorRegistry()
        self.collector = _Collector()
        registry.register(self.collector)  # type: ignore[arg-type]
        root = Resource()
        root.putChild(b"metrics", MetricsResource(registry))
        self.port = reactor.listenTCP(0, Site(root), interface="127.0.0.1")
        testcase.addCleanup(self.port.stopListening)
        self.address = f"127.0.0.1:{self.port.getHost().port}"


class TestPrometheus:
    """``prometheus --config.file ... --web.listen-address 127.0.0.1:<port>``."""

    def __init__(self, targets: list[str], directory: str | None = None) -> None:
        self.dir = directory or tempfile.mkdtemp(prefix="prometheus-", dir=os.path.abspath("."))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.targets = targets
        self.log = bytearray()
        self.ended: defer.Deferred[None] = defer.Deferred()
        self.process: Any = None

    def _config(self) -> str:
        path = os.path.join(self.dir, "prometheus.yml")
        exporters = ", ".join(f"'{t}'" for t in self.targets)
        with open(path, "w") as f:
            f.write(f"""\
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: ['127.0.0.1:{self.port}']
  - job_name: exporter
    static_configs:
      - targets: [{exporters}]
""")
        return path

    async def start(self, testcase: Any) -> "TestPrometheus":
        config = self._config()
        self.process = reactor.spawnProcess(
            _Output(self), PROMETHEUS,
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={self.dir}/data",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=info"],
            env={"PATH": os.environ.get("PATH", "")})
        testcase.addCleanup(self.stop)

        def ready() -> bool:
            if self.ended.called:
                raise AssertionError(f"prometheus exited: {self.log.decode(errors='replace')}")
            return b"Server is ready to receive web requests." in self.log

        await eventually(ready, timeout=30)
        return self

    def stop(self) -> defer.Deferred[None]:
        if self.process is not None and not self.ended.called:
            self.process.signalProcess("TERM")
            timer = reactor.callLater(10, lambda: self.ended.called or self.process.signalProcess("KILL"))
            self.ended.addBoth(lambda r: timer.cancel() if timer.active() else None)
        return self.ended
