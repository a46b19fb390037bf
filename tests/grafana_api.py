"""A stand-in Grafana HTTP API (twisted.web) answering as Grafana documents it;
no Grafana can be installed here. Sources, cited per response:

- [auth] https://grafana.com/docs/grafana/latest/developers/http_api/authentication/
  (service account tokens as "Authorization: Bearer"; a bad token: 401
  {"message": "Invalid API key", "messageId": "api-key.invalid", ...})
- [access] https://grafana.com/docs/grafana/latest/developers/http_api/access_control/
  (403 "Access denied" with the permissions needed)
- [health] https://grafana.com/docs/grafana/latest/developers/http_api/other/#health-api
- [org] https://grafana.com/docs/grafana/latest/developers/http_api/org/#get-current-organization
- [ds] https://grafana.com/docs/grafana/latest/developers/http_api/data_source/
  ("Get a single data source by uid / by name": 404 {"message": "Data source not found"};
  "Query a data source": POST /api/ds/query {queries, from, to} -> {"results": {refId:
  {"status", "frames": [{"schema": {"fields": [...]}, "data": {"values": [...]}}]}}};
  a query the data source refuses: {"results": {refId: {"error", "status": 400}}}, HTTP 400)
- [annotations] https://grafana.com/docs/grafana/latest/developers/http_api/annotations/#create-annotation
  ({"message": "Annotation added", "id": 1})
- [alertmanager] https://grafana.com/docs/grafana/latest/developers/http_api/alerting_alertmanager/ and the
  Alertmanager API v2 it serves at /api/alertmanager/grafana/api/v2/alerts (gettableAlerts:
  labels, annotations, startsAt, endsAt, fingerprint, status {state, silencedBy, inhibitedBy})
"""

from __future__ import annotations

import json
from typing import Any

from twisted.web.server import Request

from .fake_api import FakeApi

EDITOR_TOKEN = "glsa_editor_0123456789abcdef_12ab34cd"
VIEWER_TOKEN = "glsa_viewer_0123456789abcdef_56ef78ab"
T = 1764496800000  # epoch ms

DATASOURCES = {  # [ds]
    "prom1": {"id": 1, "uid": "prom1", "orgId": 1, "name": "Prometheus", "type": "prometheus",
              "access": "proxy", "url": "http://prometheus:9090", "isDefault": True},
    "loki1": {"id": 2, "uid": "loki1", "orgId": 1, "name": "Loki", "type": "loki",
              "access": "proxy", "url": "http://loki:3100", "isDefault": False},
}

ALERTS = [  # [alertmanager]
    {"labels": {"alertname": "HighErrorRate", "severity": "critical", "service": "checkout",
                "__alert_rule_uid__": "abc"},
     "annotations": {"summary": "5xx above 5% for 10m"}, "startsAt": "2026-11-30T10:50:00Z",
     "endsAt": "2026-11-30T12:00:00Z", "updatedAt": "2026-11-30T11:00:00Z", "fingerprint": "a1b2c3d4",
     "generatorURL": "https://grafana.example/alerting/grafana/abc/view", "receivers": [{"name": "oncall"}],
     "status": {"state": "active", "silencedBy": [], "inhibitedBy": []}},
    {"labels": {"alertname": "DiskFilling", "severity": "warning", "instance": "db-1"},
     "annotations": {"description": "disk 91% full"}, "startsAt": "2026-11-30T09:00:00Z",
     "endsAt": "2026-11-30T12:00:00Z", "updatedAt": "2026-11-30T11:00:00Z", "fingerprint": "e5f6a7b8",
     "receivers": [{"name": "oncall"}], "status": {"state": "active", "silencedBy": [], "inhibitedBy": []}},
]


class FakeGrafana(FakeApi):
    def __init__(self) -> None:
        super().__init__()
        self.annotations: list[dict[str, Any]] = []

    def route(self, request: Request, seen: dict[str, Any], body: bytes) -> bytes:
        path, auth, args = seen["path"], seen["authorization"], seen["args"]
        if path == "/api/health":  # [health]: no token needed
            return self.json(request, 200, {"commit": "abc1234", "database": "ok", "version": "11.3.0"})
        if auth not in (f"Bearer {EDITOR_TOKEN}", f"Bearer {VIEWER_TOKEN}"):
            return self.json(request, 401, {"extra": None, "message": "Invalid API key",
                                             "messageId": "api-key.invalid", "statusCode": 401, "traceID": ""})
        editor = auth == f"Bearer {EDITOR_TOKEN}"
        if path == "/api/org":  # [org]
            return self.json(request, 200, {"id": 1, "name": "Main Org.", "address": {}})
        if path.startswith(("/api/datasources/uid/", "/api/datasources/name/")):
            key = path.rsplit("/", 1)[1]
            found = [d for d in DATASOURCES.values() if key == (d["uid"] if "/uid/" in path else d["name"])]
            if not found:
                return self.json(request, 404, {"message": "Data source not found"})
            return self.json(request, 200, found[0])
        if path == "/api/ds/query" and request.method == b"POST":
            return self._query(request, json.loads(body))
        if path == "/api/alertmanager/grafana/api/v2/alerts":
            wanted = args.get("filter", [])
            alerts = [a for a in ALERTS if all(self._match(a["labels"], f) for f in wanted)]
            return self.json(request, 200, alerts)
        if path == "/api/annotations" and request.method == b"POST":
            if not editor:  # [access]
                return self.json(request, 403, {
                    "accessErrorId": "ACE3208195470", "title": "Access denied",
                    "message": "You'll need additional permissions to perform this action. "
                               "Permissions needed: annotations:create"})
            annotation = json.loads(body)
            self.annotations.append(annotation)
            return self.json(request, 200, {"message": "Annotation added", "id": len(self.annotations)})  # [annotations]
        return self.json(request, 404, {"message": "Not found"})

    @staticmethod
    def _match(labels: dict[str, str], matcher: str) -> bool:
        key, _, value = matcher.partition("=")
        return labels.get(key.strip()) == value.strip().strip('"')

    def _query(self, request: Request, body: dict[str, Any]) -> bytes:
        """[ds] Query a data source."""
        query = body["queries"][0]
        uid = query["datasource"]["uid"]
        expr = query.get("expr", "")
        if "(" in expr and expr.count("(") != expr.count(")"):
            return self.json(request, 400, {"results": {"A": {
                "error": "bad_data: 1:6: parse error: unclosed left parenthesis", "errorSource": "downstream",
                "status": 400}}})
        start = int(body["from"])
        if uid == "loki1":
            frame = {"schema": {"refId": "A", "meta": {"type": "log-lines", "typeVersion": [0, 0]}, "fields": [
                {"name": "labels", "type": "other", "typeInfo": {"frame": "json.RawMessage"}},
                {"name": "Time", "type": "time", "typeInfo": {"frame": "time.Time"}},
                {"name": "Line", "type": "string", "typeInfo": {"frame": "string"}}]},
                "data": {"values": [[{"app": "checkout"}, {"app": "checkout"}], [start + 1000, start + 2000],
                                    ["error: payment timeout", "error: payment timeout again"]]}}
        else:
            frame = {"schema": {"refId": "A", "meta": {"type": "timeseries-multi"}, "fields": [
                {"name": "Time", "type": "time", "typeInfo": {"frame": "time.Time"}},
                {"name": "Value", "type": "number", "typeInfo": {"frame": "float64"},
                 "labels": {"service": "checkout"}, "config": {"displayNameFromDS": "checkout"}}]},
                "data": {"values": [[start, start + 60000, start + 120000], [0.5, 0.75, 1.25]]}}
        return self.json(request, 200, {"results": {"A": {"status": 200, "frames": [frame]}}})
