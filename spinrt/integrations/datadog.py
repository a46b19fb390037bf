"""``datadog`` cells: metrics queries, log search, monitors (list, mute, unmute).

Connection: ``site`` (US1, US3, US5, EU, AP1, AP2, Gov) or ``url`` (the API
root), ``api_key`` and ``app_key`` (sent as ``DD-API-KEY`` and
``DD-APPLICATION-KEY``; prefer ``{{secret:NAME}}`` references), ``ca``.

``options.kind`` says what the source is:

- ``metrics`` (default): a metrics query, through ``GET /api/v1/query``
  (options ``start``, default ``now-1h``, and ``end``, default ``now``),
  drawn as a time-series chart as Prometheus ranges are;
- ``logs``: a log search query, through ``POST /api/v2/logs/events/search``,
  following ``meta.page.after`` cursors up to ``limit`` logs;
- ``monitors``: ``[list] [NAME FILTER]``, ``mute ID``, ``unmute ID`` (writes:
  ``allow_writes``; ``end`` ends a mute).

API: https://docs.datadoghq.com/api/latest/ ("Metrics: Query timeseries
points" (v1), "Logs: Search logs" (v2, "Pagination"), "Monitors: Get all
monitor details", "Mute a monitor", "Unmute a monitor";
"Authentication"; "Rate limits": X-RateLimit-Limit, -Period, -Remaining,
-Reset (seconds), -Name); https://docs.datadoghq.com/getting_started/site/.
"""

from __future__ import annotations

from typing import Any, Mapping

import attrs

from ..cells.base import Outcome
from . import charts
from .base import CA, URL, Field, IntegrationError
from .cell import IntegrationRun
from .connections import Connection
from .http import HttpApi, Reply, status_error
from .http_integration import HttpIntegration, literal
from .tables import Table
from .times import parse_time, rfc3339

SITES = {"US1": "https://api.datadoghq.com", "US3": "https://api.us3.datadoghq.com",
         "US5": "https://api.us5.datadoghq.com", "EU": "https://api.datadoghq.eu",
         "AP1": "https://api.ap1.datadoghq.com", "AP2": "https://api.ap2.datadoghq.com",
         "GOV": "https://api.ddog-gov.com"}
KINDS = ("metrics", "logs", "monitors")
DEFAULT_LIMIT = 100
MAX_LIMIT = 5000
LOG_PAGE = 1000  # the largest page.limit of a log search
MONITOR_PAGE = 100


def rate_limit(reply: Reply) -> dict[str, Any] | None:
    """Datadog's X-RateLimit-* headers: limit, period, remaining, reset (seconds from now), name."""
    h = reply.headers
    if "x-ratelimit-limit" not in h:
        return None
    number = (lambda k: int(h[k]) if h.get(k, "").isdigit() else None)
    return {"limit": number("x-ratelimit-limit"), "period": number("x-ratelimit-period"),
            "remaining": number("x-ratelimit-remaining"), "reset": number("x-ratelimit-reset"),
            "name": h.get("x-ratelimit-name")}


class Datadog(HttpIntegration):
    name = "datadog"
    description = "Datadog (an API key and an application key): metrics, logs, monitors"
    url_example = "https://api.datadoghq.com"
    fields = (Field("site", "Datadog site: US1, US3, US5, EU, AP1, AP2 or Gov (or give 'url')"),
              attrs.evolve(URL, required=False, description="API root instead of a site, e.g. https://api.datadoghq.com"),
              Field("api_key", "API key, sent as DD-API-KEY (prefer {{secret:NAME}})", required=True, secret=True),
              Field("app_key", "Application key, sent as DD-APPLICATION-KEY (prefer {{secret:NAME}})", required=True,
                    secret=True),
              CA)
    test_path = "/api/v1/validate"
    options = {
        "kind": "metrics (default), logs or monitors",
        "start": "metrics and logs: start (default now-1h)", "end": "metrics and logs: end (default now); "
                                                                   "mute: when the mute ends",
        "limit": f"logs and monitors: at most this many (default {DEFAULT_LIMIT}, at most {MAX_LIMIT})",
        "allow_writes": "allow mute and unmute (default false)",
    }

    def check(self, fields: Mapping[str, Any]) -> None:
        site = fields.get("site")
        if bool(site) == bool(fields.get("url")):
            raise IntegrationError("bad_request", "give either 'site' (US1, US3, US5, EU, AP1, AP2, Gov) or 'url'")
        if literal(site) and site.upper() not in SITES:
            raise IntegrationError("bad_request", f"'site' must be one of US1, US3, US5, EU, AP1, AP2, Gov, "
                                                  f"not {site[:40]!r}")
        super().check(fields)

    def base_url(self, connection: Connection) -> Any:
        site = connection.get("site")
        if site:
            found = SITES.get(str(site).upper())
            if found is None:
                raise IntegrationError("bad_connection", f"connection {connection.name!r}: unknown site {site[:40]!r}")
            return found
        return connection.get("url")

    def headers(self, connection: Connection) -> dict[str, str]:
        keys = {"DD-API-KEY": connection.get("api_key") or "", "DD-APPLICATION-KEY": connection.get("app_key") or ""}
        if any("\r" in v or "\n" in v for v in keys.values()):
            raise IntegrationError("bad_connection", "a credential holds a line break")
        return keys

    def test_detail(self, data: Any, api: HttpApi) -> str:
        return f"Datadog at {api.base_url}: the API key is valid"

    async def execute(self, run: IntegrationRun) -> Outcome:
        return await self.run_choice(run, "kind", KINDS)

    # -- shared ------------------------------------------------------------------------

    async def _call(self, api: HttpApi, method: str, path: str, **kw: Any) -> Any:
        """The JSON of a 2xx answer; 429 is ``rate_limited`` with when it resets."""
        reply = await api.call(method, path, **kw)
        if reply.status == 429:
            rate = rate_limit(reply) or {}
            wait = rate.get("reset") or reply.headers.get("retry-after")
            raise IntegrationError("rate_limited", f"{status_error(reply).message} (Datadog's rate limit "
                                                   f"{rate.get('name') or ''} of {rate.get('limit')} requests per "
                                                   f"{rate.get('period')} s is used up; it resets in {wait} s)",
                                   status=429, value={"rate_limit": rate})
        if not 200 <= reply.status < 300:
            raise status_error(reply)
        data = reply.json()
        if not isinstance(data, (dict, list)):
            raise IntegrationError("bad_response", f"Datadog answered {path} with {type(data).__name__}")
        return data

    def _window(self, run: IntegrationRun) -> tuple[float, float]:
        now = run.reactor.seconds()
        try:
            start = parse_time(run.options.get("start", "now-1h"), "start", now)
            end = parse_time(run.options.get("end", "now"), "end", now)
        except ValueError as e:
            raise IntegrationError("bad_option", str(e)) from None
        if not start < end:
            raise IntegrationError("bad_option", "options.start must be before options.end")
        return start, end

    def _limit(self, run: IntegrationRun) -> int:
        limit = run.option("limit", (int,), DEFAULT_LIMIT)
        if not 1 <= limit <= MAX_LIMIT:
            raise IntegrationError("bad_option", f"options.limit must be from 1 to {MAX_LIMIT}")
        return limit

    # -- kinds -------------------------------------------------------------------------

    async def _metrics(self, run: IntegrationRun, api: HttpApi) -> dict[str, Any]:
        query = run.cell.source.strip()
        if not query:
            raise IntegrationError("bad_option", "the source is a metrics query, e.g. "
                                                 "sum:trace.http.request.errors{service:checkout}.as_rate()")
        start, end = self._window(run)
        data = await self._call(api, "GET", "/api/v1/query",
                                params=[("from", str(int(start))), ("to", str(int(end))), ("query", query)])
        if not isinstance(data, dict) or data.get("status") == "error" or not isinstance(data.get("series"), list):
            said = data.get("error") if isinstance(data, dict) else None
            raise IntegrationError("query_error" if said else "bad_response",
                                   said or "Datadog's query answer has no list of series")
        series = []
        for s in data["series"]:
            points = [(t / 1000.0, float(v)) for t, v in s.get("pointlist") or [] if v is not None]
            series.append((s.get("display_name") or s.get("expression") or s.get("metric") or "", points,
                           s.get("scope")))
        total = sum(len(p) for _, p, _ in series)
        summary = f"{len(series)} series, {total} points, {rfc3339(start)} to {rfc3339(end)}"
        if not series:
            run.show({"text/plain": f"{summary} (no data)"})
        else:
            labelled = [(f"{name} {{{scope}}}" if scope and scope != "*" else name, points)
                        for name, points, scope in series]
            svg = await charts.render(run.reactor, labelled, query)
            run.show({"image/svg+xml": svg, "text/plain": summary})
        return {"result": data["series"], "query": query, "start": rfc3339(start), "end": rfc3339(end)}

    async def _logs(self, run: IntegrationRun, api: HttpApi) -> dict[str, Any]:
        query = run.cell.source.strip() or "*"
        start, end = self._window(run)
        limit = self._limit(run)
        logs: list[Any] = []
        cursor = None
        more = False
        while True:
            page: dict[str, Any] = {"limit": min(LOG_PAGE, limit - len(logs))}
            if cursor:
                page["cursor"] = cursor
            data = await self._call(api, "POST", "/api/v2/logs/events/search", json_body={
                "filter": {"query": query, "from": rfc3339(start), "to": rfc3339(end)},
                "sort": "-timestamp", "page": page})
            found = data.get("data") if isinstance(data, dict) else None
            if not isinstance(found, list):
                raise IntegrationError("bad_response", "Datadog's log search answer has no list in 'data'")
            logs.extend(found)
            cursor = ((data.get("meta") or {}).get("page") or {}).get("after")
            if not cursor or not found:
                break
            if len(logs) >= limit:
                more = True
                break
        rows = []
        for entry in logs:
            a = (entry.get("attributes") or {}) if isinstance(entry, dict) else {}
            rows.append([a.get("timestamp"), a.get("status"), a.get("service"), a.get("host"), a.get("message")])
        run.table(Table(["TIMESTAMP", "STATUS", "SERVICE", "HOST", "MESSAGE"], rows, empty="No logs matched."),
                  note=f"{len(logs)} logs" + (" (more in Datadog: raise options.limit)" if more else ""))
        return {"result": logs, "count": len(logs), "truncated": more, "query": query,
                "start": rfc3339(start), "end": rfc3339(end)}

    async def _monitors(self, run: IntegrationRun, api: HttpApi) -> dict[str, Any]:
        words = run.cell.source.split()
        verb = words[0] if words and words[0] in ("list", "mute", "unmute") else "list"
        rest = words[1:] if words and words[0] == verb else words
        if verb == "list":
            return await self._list_monitors(run, api, " ".join(rest))
        if len(rest) != 1 or not rest[0].isdigit():
            raise IntegrationError("bad_command", f"usage: {verb} MONITOR_ID (a number)")
        if not run.option("allow_writes", (bool,), False):
            raise IntegrationError("writes_not_allowed", f"'{verb}' changes Datadog: set the cell option "
                                                         "allow_writes: true to run it")
        body: dict[str, Any] = {}
        if verb == "mute" and run.options.get("end") is not None:
            try:
                body["end"] = int(parse_time(run.options["end"], "end", run.reactor.seconds()))
            except ValueError as e:
                raise IntegrationError("bad_option", str(e)) from None
        monitor = await self._call(api, "POST", f"/api/v1/monitor/{rest[0]}/{verb}", json_body=body)
        until = f" until {rfc3339(body['end'])}" if "end" in body else ""
        run.show({"text/plain": f"{verb}d monitor {rest[0]} ({monitor.get('name', '')}){until}"})
        return {"result": monitor}

    async def _list_monitors(self, run: IntegrationRun, api: HttpApi, name: str) -> dict[str, Any]:
        limit = self._limit(run)
        monitors: list[Any] = []
        page = 0
        while len(monitors) < limit:
            params = [("page", str(page)), ("page_size", str(MONITOR_PAGE))] + ([("name", name)] if name else [])
            found = await self._call(api, "GET", "/api/v1/monitor", params=params)
            if not isinstance(found, list):
                raise IntegrationError("bad_response", "Datadog's monitor listing is not a list")
            monitors.extend(found)
            if len(found) < MONITOR_PAGE:
                break
            page += 1
        more = len(monitors) > limit
        monitors = monitors[:limit]
        rows = [[m.get("id"), m.get("name"), m.get("overall_state"), m.get("type"),
                 "muted" if (m.get("options") or {}).get("silenced") else "", ", ".join(m.get("tags") or [])]
                for m in monitors]
        run.table(Table(["ID", "NAME", "STATE", "TYPE", "MUTED", "TAGS"], rows, empty="No monitors."),
                  note=f"{len(monitors)} monitors" + (" (more in Datadog: raise options.limit)" if more else ""))
        return {"result": monitors, "count": len(monitors), "truncated": more}


datadog = Datadog()
