"""grafana cells against tests/grafana_api.py (a stand-in answering as Grafana's
HTTP API documents; each shape cites it): a data source query drawn as a
chart or shown as a table, firing alerts, an annotation from a runbook,
a service-account token from a secret reference over TLS with the instance's
own CA, and the errors (401, 403, a bad query, an unknown data source, a
missing connection), the session living on after each."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

from twisted.trial import unittest

from . import tls
from .grafana_api import EDITOR_TOKEN, VIEWER_TOKEN, FakeGrafana
from .support import Client, start_runtime, ws_url


class GrafanaTests(unittest.TestCase):
    timeout = 60

    async def setUp(self) -> None:
        directory = tempfile.mkdtemp(prefix="grafana-", dir=os.path.abspath("."))
        self.pki = tls.make_pki(directory, "Grafana CA")
        self.api = FakeGrafana()
        _, port = tls.listen_https(self, self.api, self.pki.server, self.pki.intermediate)
        self.url = f"https://localhost:{port}"
        other = tls.make_pki(directory, "Runtime CA")
        self.service = await start_runtime(self, environ={"REQUESTS_CA_BUNDLE": other.bundle,
                                                          "GRAFANA_TOKEN": EDITOR_TOKEN})
        self.client = await Client.connect(ws_url(self.service))
        self.addCleanup(self.client.close)
        reply = await self.client.request("connections.set", name="grafana", type="grafana", url=self.url,
                                          token="{{secret:GRAFANA_TOKEN}}", ca=self.pki.root.cert_path,
                                          datasource="Prometheus")
        self.assertTrue(reply["ok"], reply)
        self.assertEqual(reply["connection"]["token"], {"set": True, "reference": "{{secret:GRAFANA_TOKEN}}"})
        self.sid = (await self.client.request("session.create", name="g"))["session"]["id"]

    async def g(self, source: str, variable: str | None = None, **options: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        cell: dict[str, Any] = {"id": "g", "type": "grafana", "source": source, "options": options}
        if variable:
            cell["output_variable"] = variable
        finished = await self.client.run(self.sid, cell)
        return finished, self.client.events(run=finished["run"])

    def results(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [e["data"] for e in events if e["event"] == "result"]

    async def test_query_alerts_annotate(self) -> None:
        reply = await self.client.request("connections.test", name="grafana")
        self.assertEqual(reply.get("detail"), f"Grafana 11.3.0 at {self.url} (organization 'Main Org.')", reply)
        # A Prometheus data source: a chart; the frames are the CellResult.
        finished, events = await self.g('sum(rate(http_requests_total{status=~"5.."}[5m]))', variable="errors",
                                        start="now-1h")
        self.assertEqual(finished["status"], "ok", finished)
        (data,) = self.results(events)
        self.assertIn("<svg", data["image/svg+xml"])
        self.assertRegex(data["text/plain"], r"^1 series, 3 points, ")
        (query,) = [r for r in self.api.requests if r["path"] == "/api/ds/query"]
        sent = json.loads(query["body"])
        self.assertEqual(sent["queries"][0]["datasource"], {"uid": "prom1", "type": "prometheus"})
        self.assertEqual(sent["queries"][0]["expr"], 'sum(rate(http_requests_total{status=~"5.."}[5m]))')
        self.assertEqual(int(sent["to"]) - int(sent["from"]), 3600 * 1000)
        self.assertEqual(query["authorization"], f"Bearer {EDITOR_TOKEN}")
        variable = self.service.manager.get(self.sid).variables["errors"]
        self.assertEqual(variable["frames"][0]["data"]["values"][1], [0.5, 0.75, 1.25])
        self.assertEqual(variable["datasource"]["type"], "prometheus")
        # Loki by uid: log lines as a table.
        finished, events = await self.g('{app="checkout"} |= "error"', datasource="loki1")
        (data,) = self.results(events)
        lines = data["text/plain"].splitlines()
        self.assertEqual(lines[0].split(), ["labels", "Time", "Line"])
        self.assertIn("error: payment timeout again", lines[2])
        self.assertIn("2026-", lines[1])  # times as RFC 3339
        # Firing alerts, filtered by the source's matchers.
        finished, events = await self.g("", action="alerts", variable="alerts")
        (data,) = self.results(events)
        rows = data["text/plain"].splitlines()
        self.assertEqual(rows[0].split()[:3], ["ALERTNAME", "STATE", "SEVERITY"])
        self.assertEqual([r.split()[0] for r in rows[1:]], ["HighErrorRate", "DiskFilling"])
        self.assertEqual(len(self.service.manager.get(self.sid).variables["alerts"]["alerts"]), 2)
        finished, events = await self.g('severity="critical"', action="alerts")
        (data,) = self.results(events)
        self.assertEqual(len(data["application/json"]), 1)
        self.assertEqual(self.api.requests[-1]["args"]["filter"], ['severity="critical"'])
        # An annotation from a runbook.
        finished, events = await self.g("incident started", action="annotate", tags=["incident", "checkout"],
                                        variable="note")
        self.assertEqual(finished["status"], "ok", finished)
        (annotation,) = self.api.annotations
        self.assertEqual((annotation["text"], annotation["tags"]), ("incident started", ["incident", "checkout"]))
        self.assertLess(abs(annotation["time"] / 1000 - self.service.reactor.seconds()), 30)
        self.assertEqual(self.service.manager.get(self.sid).variables["note"]["id"], 1)
        self.assertRegex(self.results(events)[0]["text/plain"],
                         r"^annotation 1 added at .* tagged incident, checkout: incident started$")
        self.assertNotIn(EDITOR_TOKEN, json.dumps(self.client.messages))

    async def test_errors_and_the_session_lives_on(self) -> None:
        cases = [
            ("rate(x[5m]", {}, "query_error", "400 Bad Request: bad_data: 1:6: parse error: unclosed left parenthesis"),
            ("up", {"datasource": "Graphite"}, "unknown_datasource", "'Graphite'"),
            ("up", {"action": "explode"}, "bad_option", "options.action must be one of query, alerts, annotate"),
            ("", {"action": "annotate"}, "bad_option", "annotation's text"),
            ("x", {"action": "annotate", "tags": "a,b"}, "bad_option", "options.tags must be a list"),
            ("up", {"start": "last tuesday"}, "bad_option", "options.start"),
            ("up", {"connection": "nope"}, "unknown_connection", "grafana"),
        ]
        for source, options, code, words in cases:
            finished, _ = await self.g(source, **options)
            self.assertEqual((finished["status"], finished["error"]["code"]), ("error", code), (source, options))
            self.assertIn(words, finished["error"]["evalue"], (source, options))
        await self.client.request("connections.set", name="viewer", type="grafana", url=self.url,
                                  token=VIEWER_TOKEN, ca=self.pki.root.cert_path)
        finished, _ = await self.g("incident started", action="annotate", connection="viewer")
        self.assertEqual(finished["error"]["code"], "remote_forbidden")
        self.assertEqual(finished["error"]["evalue"], "403 Forbidden: You'll need additional permissions to perform "
                                                      "this action. Permissions needed: annotations:create")
        await self.client.request("connections.set", name="wrong", type="grafana", url=self.url,
                                  token="glsa_wrong_token_0000", ca=self.pki.root.cert_path, datasource="Prometheus")
        finished, _ = await self.g("up", connection="wrong")
        self.assertEqual(finished["error"]["code"], "remote_unauthorized")
        self.assertEqual(finished["error"]["evalue"], "401 Unauthorized: Invalid API key")
        reply = await self.client.request("connections.test", name="wrong")
        self.assertEqual(reply["error"]["code"], "remote_unauthorized")
        reply = await self.client.request("connections.set", name="basic", type="grafana", url=self.url,
                                          username="admin")
        self.assertIn("no field 'username'", reply["error"]["message"])
        for name in ("grafana", "viewer", "wrong"):
            await self.client.request("connections.delete", name=name)
        finished, _ = await self.g("up")
        self.assertEqual(finished["error"]["code"], "no_connection")
        finished = await self.client.run(self.sid, {"id": "md", "type": "markdown", "source": "still here"})
        self.assertEqual(finished["status"], "ok")
