"""Prometheus metrics (``GET /metrics``), produced with ``prometheus_client``.

Each runtime has its own ``CollectorRegistry`` (never the library's global
one: tests start several runtimes in one process). Counters and histograms
are updated as things happen (runs, sessions, refused tokens, store
commits); gauges of the runtime's state (connections, sessions, queues, the
store's backlog, kernels) are read when Prometheus scrapes, by
:class:`_StateCollector`. ``ProcessCollector`` adds the process's resident
memory, CPU time and open files under ``spin_process_*``.

Names follow Prometheus' conventions (base units, ``_total`` for counters,
``_seconds``/``_bytes``), all prefixed ``spin_``; the cell type is the
``cell_type`` label, ``other`` for a type the runtime does not have (so a
client cannot grow the label set).

``MetricsResource`` serves the text format (or OpenMetrics when the
scraper asks for it) to any token, or to anyone with ``--metrics-public``.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from twisted.web.resource import Resource
from twisted.web.server import Request

from .protocol import RUN_STATUSES
from .web import httpauth

OTHER = "other"
# Cells run from milliseconds (markdown, a quick shell) to hours (a long job).
RUN_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, float("inf"))
COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, float("inf"))


class RuntimeMetrics:
    """The runtime's metrics. ``state()`` returns the gauges' values at scrape
    time: ``{connections, sessions_open, sessions_closed, runs_queued,
    runs_running, store_pending_bytes, store_pending_changes, store_writable,
    kernels: {state: n}, tokens}``. ``cell_types``: the types the runtime has."""

    def __init__(self, state: Callable[[], dict[str, Any]], cell_types: Iterable[str]) -> None:
        self.cell_types = frozenset(cell_types)
        self.registry = registry = CollectorRegistry()
        self.runs_started = Counter("spin_runs_started", "Runs that started, by cell type.",
                                    ["cell_type"], registry=registry)
        self.runs_finished = Counter("spin_runs_finished", "Runs that finished, by cell type and status "
                                     "(ok, error, cancelled, timeout, skipped).",
                                     ["cell_type", "status"], registry=registry)
        self.run_duration = Histogram("spin_run_duration_seconds", "How long started runs took, by cell type.",
                                      ["cell_type"], buckets=RUN_BUCKETS, registry=registry)
        self.sessions_created = Counter("spin_sessions_created", "Sessions created since the runtime started.",
                                        registry=registry)
        self.auth_failures = Counter("spin_auth_failures", "Refused tokens, by reason (no_token, wrong_token, "
                                     "expired_token, revoked_token).", ["reason"], registry=registry)
        self.auth_throttled = Counter("spin_auth_throttled", "Refused tokens answered 429 by the failure "
                                      "throttle (the address had too many waiting).", registry=registry)
        self.store_commit = Histogram("spin_store_commit_seconds", "Time to write and commit one batch of the "
                                      "event store.", buckets=COMMIT_BUCKETS, registry=registry)
        self.store_rows = Counter("spin_store_rows_written", "Rows the event store committed.", registry=registry)
        # Every series present at 0 from the start: rate() and absent-alerts
        # need it, and a dashboard is not empty before the first run.
        for reason in ("no_token", "wrong_token", "expired_token", "revoked_token"):
            self.auth_failures.labels(reason)
        # Each labelled series a run counts in, looked up once (labels()
        # takes a lock and checks its arguments at every call); a few dozen
        # at most: the cell types, "other", and the statuses.
        self._series: dict[tuple[Any, ...], Any] = {}
        for cell_type in sorted(self.cell_types):
            self._child(self.runs_started, cell_type)
            self._child(self.run_duration, cell_type)
            for status in RUN_STATUSES:
                self._child(self.runs_finished, cell_type, status)
        ProcessCollector(namespace="spin", registry=registry)
        registry.register(_StateCollector(state))

    def cell_type(self, name: str) -> str:
        return name if name in self.cell_types else OTHER

    # -- hooks ------------------------------------------------------------------------

    def session_created(self) -> None:
        self.sessions_created.inc()

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (metric, *labels)
        child = self._series.get(key)
        if child is None:
            child = self._series[key] = metric.labels(*labels)
        return child

    def run_started(self, cell_type: str) -> None:
        self._child(self.runs_started, self.cell_type(cell_type)).inc()

    def run_finished(self, cell_type: str, status: str, seconds: float | None) -> None:
        """``seconds`` None: the run never started (cancelled or skipped while queued)."""
        label = self.cell_type(cell_type)
        self._child(self.runs_finished, label, status).inc()
        if seconds is not None:
            self._child(self.run_duration, label).observe(seconds)

    def token_refused(self, address: str, refusal: Any, route: str, throttled: bool) -> None:
        self.auth_failures.labels(refusal.reason).inc()
        if throttled:
            self.auth_throttled.inc()

    def committed(self, seconds: float, rows: int) -> None:
        self.store_commit.observe(seconds)
        self.store_rows.inc(rows)

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The body and content type for a scrape with this ``Accept`` header."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


class _StateCollector:
    """Gauges read from the runtime at each scrape."""

    def __init__(self, state: Callable[[], dict[str, Any]]) -> None:
        self._state = state

    def describe(self) -> list[Metric]:
        return []  # not known before a scrape; the registry does not need them

    def collect(self) -> Iterable[Metric]:
        s = self._state()
        yield GaugeMetricFamily("spin_connections", "Open WebSocket connections.", value=s["connections"])
        sessions = GaugeMetricFamily("spin_sessions", "Sessions the runtime holds, by state.", labels=["state"])
        sessions.add_metric(["open"], s["sessions_open"])
        sessions.add_metric(["closed"], s["sessions_closed"])
        yield sessions
        yield GaugeMetricFamily("spin_runs_queued", "Runs waiting in session queues.", value=s["runs_queued"])
        yield GaugeMetricFamily("spin_runs_running", "Runs executing now.", value=s["runs_running"])
        yield GaugeMetricFamily("spin_store_pending_bytes", "Bytes waiting to be committed to the event store.",
                                value=s["store_pending_bytes"])
        yield GaugeMetricFamily("spin_store_pending_changes", "Changes waiting to be committed to the event store.",
                                value=s["store_pending_changes"])
        yield GaugeMetricFamily("spin_store_writable", "1 while the event store writes, 0 while it cannot.",
                                value=1 if s["store_writable"] else 0)
        kernels = GaugeMetricFamily("spin_kernels", "Python kernels, by state (alive: serving a session; "
                                    "starting; pooled: started and idle).", labels=["state"])
        for state, count in sorted(s["kernels"].items()):
            kernels.add_metric([state], count)
        yield kernels
        yield GaugeMetricFamily("spin_tokens", "Named tokens not revoked.", value=s["tokens"])


class MetricsResource(Resource):
    """``GET /metrics``: any role's token (header or ``?token=``), or none with ``--metrics-public``."""

    isLeaf = True

    def __init__(self, metrics: RuntimeMetrics, gate: Any, public: bool = False) -> None:
        super().__init__()
        self._metrics = metrics
        self._gate = gate
        self._public = public

    def render_GET(self, request: Request) -> Any:
        request.setHeader(b"cache-control", b"no-store")
        if not self._public:
            verdict, answer = httpauth.admit(self._gate, request, "metrics", query=True)
            if verdict is None:
                return answer
        accept = request.getHeader(b"accept")
        body, content_type = self._metrics.exposition(accept.decode("latin-1") if accept is not None else None)
        request.setHeader(b"content-type", content_type.encode("ascii"))
        return body

