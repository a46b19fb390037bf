"""``grafana`` cells: query a data source, list firing alerts, annotate.

Connection: ``url`` and a service-account ``token`` (``Authorization:
Bearer``), optionally ``ca`` and ``datasource`` (the default data source of
its cells, by uid or name). The cell's ``options.action`` picks what it does:

- ``query`` (default): the source is the data source's query (PromQL for
  Prometheus, LogQL for Loki), sent through ``POST /api/ds/query``; options
  ``datasource``, ``start`` (default now-1h), ``end`` (default now),
  ``step``; time series come back as a chart (SVG), other frames (Loki
  lines) as a table; the CellResult has the data frames;
- ``alerts``: the Grafana-managed alerts that fire now (the Alertmanager API
  v2 Grafana serves), as a table; the source may hold label matchers, one per
  line (``severity="critical"``);
- ``annotate``: the source is the annotation's text; options ``tags``,
  ``time`` (default now), ``end`` (a region), ``dashboard_uid``,
  ``panel_id``. The CellResult has the new annotation's ``id``.

API: https://grafana.com/docs/grafana/latest/developers/http_api/ ("Data
source API": "Query a data source", "Get a single data source by name";
"Annotations API": "Create Annotation"; "Alertmanager API"; "Health API";
"Organization API": current organization; "Authentication": service
account tokens).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from ..cells.base import Outcome
from . import charts
from .base import Field, IntegrationError, http_fields
from .cell import IntegrationRun
from .http import HttpApi, for_test, status_error
from .http_integration import HttpIntegration
from .tables import Table
from .times import parse_duration, parse_time, rfc3339

ACTIONS = ("query", "alerts", "annotate")
MAX_POINTS = 1000


class Grafana(HttpIntegration):
    name = "grafana"
    description = "A Grafana instance (a service-account token): data source queries, alerts, annotations"
    url_example = "https://grafana.example"
    basic_auth = False
    fields = (*http_fields(url_example, basic=False),
              Field("datasource", "Default data source of query cells (its uid or name)"))
    options = {
        "action": "query (default), alerts or annotate",
        "datasource": "query: the data source's uid or name (default: the connection's)",
        "start": "query: start (default now-1h)", "end": "query: end (default now); annotate: end of a region",
        "step": "query: interval between points (default: about 250 points)",
        "tags": "annotate: a list of tags", "time": "annotate: when (default now)",
        "dashboard_uid": "annotate: the dashboard to put it on", "panel_id": "annotate: the panel",
    }

    async def test(self, connection: Any, services: Any) -> str:
        api = await self.api(services, connection)
        try:
            health = await api.get_json("/api/health")
            org = await api.get_json("/api/org")  # needs the token; /api/health does not
        except IntegrationError as e:
            raise for_test(e) from None
        return f"Grafana {health.get('version', '?')} at {api.base_url} (organization {org.get('name', '?')!r})"

    async def execute(self, run: IntegrationRun) -> Outcome:
        return await self.run_choice(run, "action", ACTIONS)

    # -- query -------------------------------------------------------------------------

    async def _datasource(self, api: HttpApi, ref: str) -> dict[str, Any]:
        """``{uid, type, name}`` of a data source given by uid or name."""
        for path in (f"/api/datasources/uid/{quote(ref, safe='')}", f"/api/datasources/name/{quote(ref, safe='')}"):
            reply = await api.call("GET", path)
            if reply.status == 200:
                return reply.json()
            if reply.status != 404:
                raise status_error(reply)
        raise IntegrationError("unknown_datasource", f"Grafana has no data source with the uid or name {ref!r}")

    async def _query(self, run: IntegrationRun, api: HttpApi) -> dict[str, Any]:
        query = run.cell.source.strip()
        if not query:
            raise IntegrationError("bad_option", "the cell's source is the data source's query (PromQL, LogQL)")
        ref = run.option("datasource") or run.connection.get("datasource")
        if not ref:
            raise IntegrationError("bad_option", "options.datasource (a uid or name) is needed, or a 'datasource' "
                                                 "on the connection")
        now = run.reactor.seconds()
        try:
            start = parse_time(run.options.get("start", "now-1h"), "start", now)
            end = parse_time(run.options.get("end", "now"), "end", now)
            step = parse_duration(run.options["step"], "step") if run.options.get("step") else (end - start) / 250
        except ValueError as e:
            raise IntegrationError("bad_option", str(e)) from None
        if not start < end:
            raise IntegrationError("bad_option", "options.start must be before options.end")
        source = await self._datasource(api, ref)
        target: dict[str, Any] = {"refId": "A", "datasource": {"uid": source["uid"], "type": source.get("type")},
                                  "expr": query, "intervalMs": max(1, int(step * 1000)), "maxDataPoints": MAX_POINTS}
        if source.get("type") == "loki":
            target["queryType"] = "range"
        else:
            target.update(range=True, instant=False)
        body = {"queries": [target], "from": str(int(start * 1000)), "to": str(int(end * 1000))}
        reply = await api.call("POST", "/api/ds/query", json_body=body)
        data = reply.json() if reply.body else {}
        result = (data.get("results") or {}).get("A") or {} if isinstance(data, dict) else {}
        if result.get("error") or not 200 <= reply.status < 300:
            said = result.get("error") or (data.get("message") if isinstance(data, dict) else None)
            if reply.status in (401, 403) or not said:
                raise status_error(reply)
            raise IntegrationError("query_error", f"{reply.status} {reply.reason}: {said}", status=reply.status)
        frames = result.get("frames") or []
        await self._show_frames(run, frames, f"{source.get('name', ref)}: {query}", start, end)
        return {"frames": frames, "datasource": {"uid": source["uid"], "name": source.get("name"),
                                                 "type": source.get("type")},
                "query": query, "start": rfc3339(start), "end": rfc3339(end)}

    async def _show_frames(self, run: IntegrationRun, frames: list[dict[str, Any]], title: str,
                           start: float, end: float) -> None:
        series: list[tuple[str, list[tuple[float, float]]]] = []
        tables: list[Table] = []
        for frame in frames:
            fields = (frame.get("schema") or {}).get("fields") or []
            values = (frame.get("data") or {}).get("values") or []
            kinds = [f.get("type") for f in fields]
            if "time" in kinds and "number" in kinds and len(values) == len(fields):
                times = values[kinds.index("time")]
                for field, column in zip(fields, values):
                    if field.get("type") != "number":
                        continue
                    labels = field.get("labels") or {}
                    label = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) or field.get("name", "")
                    points = [(t / 1000.0, float(v)) for t, v in zip(times, column) if v is not None]
                    series.append((f"{{{label}}}" if labels else label, points))
            elif fields:
                names = [f.get("name", "") for f in fields]
                rows = [list(row) for row in zip(*values)] if values else []
                if "time" in kinds:
                    i = kinds.index("time")
                    for row in rows:
                        row[i] = rfc3339(row[i] / 1000.0) if isinstance(row[i], (int, float)) else row[i]
                tables.append(Table(names, rows, empty="(no rows)"))
        if series:
            points = sum(len(p) for _, p in series)
            summary = f"{len(series)} series, {points} points, {rfc3339(start)} to {rfc3339(end)}"
            svg = await charts.render(run.reactor, series, title)
            run.show({"image/svg+xml": svg, "text/plain": summary})
        for table in tables:
            run.table(table)
        if not series and not tables:
            run.show({"text/plain": "(no data)"})

    # -- alerts ------------------------------------------------------------------------

    async def _alerts(self, run: IntegrationRun, api: HttpApi) -> dict[str, Any]:
        params = [("active", "true"), ("silenced", "false"), ("inhibited", "false")]
        params += [("filter", line.strip()) for line in run.cell.source.splitlines() if line.strip()]
        alerts = await api.get_json("/api/alertmanager/grafana/api/v2/alerts", params=params)
        if not isinstance(alerts, list):
            raise IntegrationError("bad_response", "Grafana's Alertmanager API did not answer a list of alerts")
        rows = []
        for alert in alerts:
            labels, notes = alert.get("labels") or {}, alert.get("annotations") or {}
            rows.append([labels.get("alertname", ""), (alert.get("status") or {}).get("state", ""),
                         labels.get("severity", ""), alert.get("startsAt", ""),
                         notes.get("summary") or notes.get("description") or "",
                         ", ".join(f"{k}={v}" for k, v in sorted(labels.items())
                                   if k not in ("alertname", "severity", "__alert_rule_uid__"))])
        run.table(Table(["ALERTNAME", "STATE", "SEVERITY", "STARTS AT", "SUMMARY", "LABELS"], rows,
                        empty="No firing alerts."), note=f"{len(alerts)} firing alert(s)")
        return {"alerts": alerts}

    # -- annotate ----------------------------------------------------------------------

    async def _annotate(self, run: IntegrationRun, api: HttpApi) -> dict[str, Any]:
        text = run.cell.source.strip()
        if not text:
            raise IntegrationError("bad_option", "the cell's source is the annotation's text, e.g. incident started")
        tags = run.option("tags", (list,), [])
        if not all(isinstance(t, str) for t in tags):
            raise IntegrationError("bad_option", "options.tags must be a list of strings")
        now = run.reactor.seconds()
        try:
            when = parse_time(run.options.get("time", "now"), "time", now)
            end = parse_time(run.options["end"], "end", now) if run.options.get("end") is not None else None
        except ValueError as e:
            raise IntegrationError("bad_option", str(e)) from None
        body: dict[str, Any] = {"text": text, "tags": tags, "time": int(when * 1000)}
        if end is not None:
            body["timeEnd"] = int(end * 1000)
        if run.option("dashboard_uid"):
            body["dashboardUID"] = run.option("dashboard_uid")
        if run.option("panel_id", (int,)) is not None:
            body["panelId"] = run.option("panel_id", (int,))
        answer = await api.get_json("/api/annotations", method="POST", json_body=body)
        run.show({"text/plain": f"annotation {answer.get('id')} added at {rfc3339(when)}"
                                f"{' tagged ' + ', '.join(tags) if tags else ''}: {text}"})
        return {"id": answer.get("id"), "message": answer.get("message"), "time": rfc3339(when), "tags": tags}


grafana = Grafana()
