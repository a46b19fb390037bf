"""``prometheus`` cells: PromQL through the Prometheus HTTP API.

Source: a PromQL expression. Options: ``connection``; ``time`` for an
instant query (default: the server's now); ``start`` (with ``end``, default
now, and ``step``, default about 250 points) for a range query; ``timeout_s``
(also sent to Prometheus as its evaluation timeout). Times accept ``now-1h``,
RFC 3339 and Unix seconds (:mod:`spinrt.integrations.times`).

API: https://prometheus.io/docs/prometheus/latest/querying/api/ ("Instant
queries", "Range queries", "Expression query result formats",
"Build information"). Queries are POSTed form-encoded, as the API allows,
so a long query never meets a URL length limit.

Outputs: an instant vector as a table (one column per label, then the
value); a range as a time-series chart (``image/svg+xml``, drawn
server-side); a scalar or string as text. The CellResult is ``{result_type,
result (the API's data.result, as sent), warnings, query, ...}``. Errors:
``query_error`` with Prometheus' own message (a bad expression, an
evaluation failure or timeout), ``connection_error``, ``remote_unauthorized``
and friends (:mod:`spinrt.integrations.http`).
"""

from __future__ import annotations

from typing import Any

from ..cells.base import Outcome
from . import charts
from .base import IntegrationError
from .cell import IntegrationRun
from .http import HttpApi, Reply, server_message, status_error
from .http_integration import HttpIntegration
from .tables import Table
from .times import auto_step, parse_duration, parse_time, rfc3339

CHART_POINTS = 250


def series_name(metric: dict[str, str]) -> str:
    """``up{instance="a:9090", job="x"}``: how Prometheus writes a series."""
    labels = ", ".join(f'{k}="{v}"' for k, v in sorted(metric.items()) if k != "__name__")
    name = metric.get("__name__", "")
    return f"{name}{{{labels}}}" if labels or not name else name


def vector_table(result: list[dict[str, Any]]) -> Table:
    labels = sorted({k for sample in result for k in sample.get("metric", {})} - {"__name__"})
    named = any("__name__" in s.get("metric", {}) for s in result)
    columns = (["__name__"] if named else []) + labels + ["value"]
    rows = []
    for sample in result:
        metric = sample.get("metric", {})
        value = (sample.get("value") or [None, None])[1]
        rows.append([metric.get(c, "") for c in columns[:-1]] + [value])
    return Table(columns, rows, empty="(empty result: no series matched)")


def _float(text: Any) -> float:
    try:
        return float(text)  # "NaN", "+Inf" and "-Inf" as Prometheus writes them
    except (TypeError, ValueError):
        return float("nan")


class Prometheus(HttpIntegration):
    name = "prometheus"
    description = "A Prometheus server (or a compatible API: Thanos, Mimir, VictoriaMetrics)"
    url_example = "http://prometheus:9090"
    test_path = "/api/v1/status/buildinfo"
    options = {
        "time": "evaluation time of an instant query (now-5m, RFC 3339, Unix seconds)",
        "start": "start of a range query (now-1h, ...)",
        "end": "end of a range query (default now)",
        "step": "resolution of a range query (15s, 1m; default about 250 points)",
    }

    def test_detail(self, data: Any, api: HttpApi) -> str:
        version = (data.get("data") or {}).get("version") if isinstance(data, dict) else None
        return f"Prometheus {version} at {api.base_url}" if version else f"{api.base_url} answered"

    def _params(self, run: IntegrationRun) -> tuple[str, dict[str, str]]:
        o = run.options
        now = run.reactor.seconds()
        try:
            params: dict[str, str] = {}
            if o.get("timeout_s") is not None:
                params["timeout"] = f"{float(o['timeout_s']):g}s"
            if o.get("start") is not None:
                if o.get("time") is not None:
                    raise ValueError("give options.time (an instant query) or options.start (a range query), not both")
                start = parse_time(o["start"], "start", now)
                end = parse_time(o["end"], "end", now) if o.get("end") is not None else now
                if not start < end:
                    raise ValueError(f"options.start ({rfc3339(start)}) must be before options.end ({rfc3339(end)})")
                step = parse_duration(o["step"], "step") if o.get("step") is not None else auto_step(start, end, CHART_POINTS)
                params.update(start=f"{start:.3f}", end=f"{end:.3f}", step=f"{step:g}")
                return "/api/v1/query_range", params
            for name in ("end", "step"):
                if o.get(name) is not None:
                    raise ValueError(f"options.{name} belongs to a range query: give options.start too")
            if o.get("time") is not None:
                params["time"] = f"{parse_time(o['time'], 'time', now):.3f}"
            return "/api/v1/query", params
        except ValueError as e:
            raise IntegrationError("bad_option", str(e)) from None

    async def execute(self, run: IntegrationRun) -> Outcome:
        query = run.cell.source.strip()
        if not query:
            raise IntegrationError("bad_option", "the cell's source is the PromQL query, e.g. rate(http_requests_total[5m])")
        path, params = self._params(run)
        api = await self.api(run.services, run.connection, run)
        reply = await api.call("POST", path, form={"query": query, **params})
        body = self._body(reply)
        data = body.get("data") or {}
        result_type, result = data.get("resultType"), data.get("result")
        warnings = [w for w in body.get("warnings") or [] if isinstance(w, str)]
        for warning in warnings:
            run.warn(f"Prometheus warning: {warning}")
        value = {"result_type": result_type, "result": result, "warnings": warnings, "query": query,
                 "connection": run.connection.name, **params}
        if result_type == "vector":
            table = vector_table(result or [])
            when = rfc3339(float(result[0]["value"][0])) if result else params.get("time", "now")
            run.table(table, note=f"instant vector · {len(result or [])} series · at {when}")
        elif result_type == "matrix":
            await self._chart(run, query, result or [], params)
        elif result_type in ("scalar", "string"):
            shown = (result or [None, None])[1]
            run.show({"text/plain": f"{result_type}: {shown}", "application/json": result})
        else:
            raise IntegrationError("bad_response", f"Prometheus answered an unknown result type {result_type!r}")
        return Outcome(status="ok", value=value)

    def _body(self, reply: Reply) -> dict[str, Any]:
        """The API's JSON envelope; query_error for ``status: error``."""
        try:
            body = reply.json()
        except IntegrationError:
            if 200 <= reply.status < 300:
                raise
            raise status_error(reply) from None
        if not isinstance(body, dict):
            raise IntegrationError("bad_response", "Prometheus answered JSON that is not an object")
        if body.get("status") == "error" or not 200 <= reply.status < 300:
            if reply.status in (401, 403, 404) or "errorType" not in body:
                raise status_error(reply)
            raise IntegrationError(
                "query_error", f"{reply.status} {reply.reason}: {server_message(reply)}", status=reply.status)
        return body

    async def _chart(self, run: IntegrationRun, query: str, result: list[dict[str, Any]],
                     params: dict[str, str]) -> None:
        points = sum(len(s.get("values") or []) for s in result)
        summary = (f"range: {len(result)} series, {points} points, {rfc3339(float(params['start']))} to "
                   f"{rfc3339(float(params['end']))}, step {params['step']}s")
        if not result:
            run.show({"text/plain": f"{summary} (no data: no series matched)"})
            return
        series = [(series_name(s.get("metric") or {}),
                   [(float(t), _float(v)) for t, v in s.get("values") or []]) for s in result]
        svg = await charts.render(run.reactor, series, query)
        run.show({"image/svg+xml": svg, "text/plain": summary})


prometheus = Prometheus()
