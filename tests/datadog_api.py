"""A stand-in Datadog API (twisted.web) answering as Datadog documents it; no
Datadog is reachable here. Sources, cited per response:

- [auth] https://docs.datadoghq.com/api/latest/authentication/ (DD-API-KEY, DD-APPLICATION-KEY;
  "Validate API key": GET /api/v1/validate -> {"valid": true}; a bad key: 403
  {"errors": ["Forbidden"]}, the documented error body {"errors": [string]})
- [rate] https://docs.datadoghq.com/api/latest/rate-limits/ (429 "Too many requests" with
  X-RateLimit-Limit, X-RateLimit-Period, X-RateLimit-Remaining, X-RateLimit-Reset (seconds
  until the reset), X-RateLimit-Name)
- [query] https://docs.datadoghq.com/api/latest/metrics/#query-timeseries-points
  (GET /api/v1/query?from&to&query -> {"status": "ok", "res_type": "time_series", "series":
  [{"metric", "display_name", "scope", "expression", "pointlist": [[ms, value]], "length",
  "interval", "start", "end", "unit"}], "from_date", "to_date", "query"}; a bad query: 400
  {"errors": ["Error parsing query: ..."]})
- [logs] https://docs.datadoghq.com/api/latest/logs/#search-logs (POST /api/v2/logs/events/search
  {"filter": {"query", "from", "to"}, "page": {"limit", "cursor"}, "sort"} -> {"data": [{"id",
  "type": "log", "attributes": {"timestamp", "status", "service", "host", "message", "tags",
  "attributes"}}], "meta": {"page": {"after"}, "status": "done"}, "links": {"next"}};
  https://docs.datadoghq.com/logs/guide/collect-multiple-logs-with-pagination/)
- [monitors] https://docs.datadoghq.com/api/latest/monitors/#get-all-monitor-details (page,
  page_size, name; a list of monitors: id, name, type, query, overall_state, tags,
  options.silenced) and #mute-a-monitor / #unmute-a-monitor (POST, {"end"}, the monitor)
"""

from __future__ import annotations

import json
from typing import Any

from twisted.web.server import Request

from .fake_api import FakeApi

API_KEY = "0123456789abcdef0123456789abcdef"
APP_KEY = "fedcba9876543210fedcba9876543210fedcba98"
BUSY_KEY = "b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0"
T = 1796032800  # 2026-11-30T10:00:00Z

LOGS = [{"id": f"AQAAAY{n:04d}", "type": "log", "attributes": {
    "timestamp": f"2026-11-30T10:{59 - n % 60:02d}:00.000Z", "status": "error", "service": "checkout",
    "host": f"web-{n % 3}", "message": f"payment timeout {n}", "tags": ["env:prod"], "attributes": {}}}
    for n in range(2500)]
MONITORS = [{"id": 1000 + n, "name": f"checkout 5xx {n}", "type": "metric alert", "overall_state": "Alert" if n == 0
             else "OK", "query": "avg(last_5m):sum:trace.http.request.errors{service:checkout} > 5",
             "tags": ["team:pay"], "options": {"silenced": {}}} for n in range(120)]


class FakeDatadog(FakeApi):
    def __init__(self) -> None:
        super().__init__()
        self.muted: dict[int, Any] = {}

    def route(self, request: Request, seen: dict[str, Any], body: bytes) -> bytes:
        path, args = seen["path"], seen["args"]
        api, app = request.getHeader("dd-api-key"), request.getHeader("dd-application-key")
        if api == BUSY_KEY:  # [rate]
            for name, value in (("limit", "100"), ("period", "60"), ("remaining", "0"), ("reset", "42"),
                                ("name", "query")):
                request.setHeader(f"x-ratelimit-{name}", value)
            body = self.json(request, 429, {"errors": ["Too many requests"]})
            request.setResponseCode(429, b"Too Many Requests")
            return body
        if api != API_KEY:
            return self.json(request, 403, {"errors": ["Forbidden"]})  # [auth]
        if path == "/api/v1/validate":
            return self.json(request, 200, {"valid": True})
        if app != APP_KEY:
            return self.json(request, 403, {"errors": ["Forbidden"]})
        if path == "/api/v1/query":
            return self._query(request, args)
        if path == "/api/v2/logs/events/search" and seen["method"] == "POST":
            return self._logs(request, json.loads(body))
        if path == "/api/v1/monitor":
            page, size = int(args["page"][0]), int(args["page_size"][0])
            found = [m for m in MONITORS if args.get("name", [""])[0] in m["name"]]
            return self.json(request, 200, found[page * size:(page + 1) * size])
        if path.startswith("/api/v1/monitor/") and seen["method"] == "POST":
            _, _, _, _, ident, verb = path.split("/")
            found = [m for m in MONITORS if str(m["id"]) == ident]
            if not found:
                return self.json(request, 404, {"errors": ["Monitor not found"]})
            monitor = json.loads(json.dumps(found[0]))
            if verb == "mute":
                self.muted[monitor["id"]] = json.loads(body or b"{}")
                monitor["options"]["silenced"] = {"*": self.muted[monitor["id"]].get("end")}
            else:
                self.muted.pop(monitor["id"], None)
            return self.json(request, 200, monitor)
        return self.json(request, 404, {"errors": ["Not found"]})

    def _query(self, request: Request, args: dict[str, list[str]]) -> bytes:  # [query]
        query = args["query"][0]
        start, end = int(args["from"][0]), int(args["to"][0])
        if query.count("{") != query.count("}"):
            return self.json(request, 400, {"errors": [f"Error parsing query: \n unable to parse {query}: "
                                                       "Rule 'scope_expr' didn't match"]})
        if query == "garbage.shape":
            return self.json(request, 200, {"status": "ok", "series": "none"})
        points = [[(start + 60 * i) * 1000.0, 0.5 * i] for i in range(3)]
        return self.json(request, 200, {"status": "ok", "res_type": "time_series", "from_date": start * 1000,
                                        "to_date": end * 1000, "query": query, "series": [{
                                            "metric": "trace.http.request.errors", "display_name":
                                            "trace.http.request.errors", "scope": "service:checkout",
                                            "expression": query, "pointlist": points, "length": 3, "interval": 60,
                                            "start": start * 1000, "end": end * 1000, "unit": None}]})

    def _logs(self, request: Request, body: dict[str, Any]) -> bytes:  # [logs]
        page = body.get("page") or {}
        start = int(page.get("cursor") or 0)
        limit = int(page.get("limit", 10))
        found = LOGS[start:start + limit]
        after = start + len(found)
        meta: dict[str, Any] = {"elapsed": 12, "request_id": "pddv1", "status": "done"}
        answer: dict[str, Any] = {"data": found, "meta": meta}
        if after < len(LOGS):
            meta["page"] = {"after": str(after)}
            answer["links"] = {"next": f"https://api.datadoghq.com/api/v2/logs/events?page[cursor]={after}"}
        return self.json(request, 200, answer)
