"""datadog cells against tests/datadog_api.py (a stand-in answering as
Datadog's API reference documents; each shape cites it): a metrics query as
a chart with the series as the CellResult, a log search across cursor pages
up to a limit, monitors listed across pages, muted and unmuted only with
allow_writes; 403, 404, 429 with the rate-limit headers, a bad query, bodies
of the wrong shape; sites; and no key in any event."""

from __future__ import annotations

import json
from typing import Any

from twisted.trial import unittest

from spinrt.integrations.datadog import datadog

from . import tls
from .datadog_api import API_KEY, APP_KEY, BUSY_KEY, FakeDatadog
from .integration_support import run_cell
from .support import Client, start_runtime, ws_url


class DatadogTests(unittest.TestCase):
    timeout = 60

    async def setUp(self) -> None:
        self.api = FakeDatadog()
        _, port = tls.listen_http(self, self.api)
        self.url = f"http://localhost:{port}"
        self.service = await start_runtime(self, environ={"DD_API_KEY": API_KEY, "DD_APP_KEY": APP_KEY})
        self.client = await Client.connect(ws_url(self.service))
        self.addCleanup(self.client.close)
        reply = await self.client.request("connections.set", name="dd", type="datadog", url=self.url,
                                          api_key="{{secret:DD_API_KEY}}", app_key="{{secret:DD_APP_KEY}}")
        self.assertTrue(reply["ok"], reply)
        self.sid = (await self.client.request("session.create", name="dd"))["session"]["id"]

    async def dd(self, source: str, variable: str | None = None, **options: Any) -> tuple[dict[str, Any], list[str]]:
        return await run_cell(self.client, self.sid, "datadog", source, variable, **options)

    def var(self, name: str) -> Any:
        return self.service.manager.get(self.sid).variables[name]

    async def test_metrics_logs_monitors(self) -> None:
        reply = await self.client.request("connections.test", name="dd")
        self.assertEqual(reply.get("detail"), f"Datadog at {self.url}: the API key is valid", reply)
        query = "sum:trace.http.request.errors{service:checkout}.as_rate()"
        finished, texts = await self.dd(query, variable="errors", start="now-1h")
        self.assertEqual(finished["status"], "ok", finished)
        sent = self.api.requests[-1]
        self.assertEqual(sent["args"]["query"], [query])
        self.assertEqual(int(sent["args"]["to"][0]) - int(sent["args"]["from"][0]), 3600)
        self.assertRegex(texts[0], r"^1 series, 3 points, ")
        (result,) = [e for e in self.client.events(run=finished["run"]) if e["event"] == "result"]
        self.assertIn("<svg", result["data"]["image/svg+xml"])
        self.assertEqual([p[1] for p in self.var("errors")["result"][0]["pointlist"]], [0.0, 0.5, 1.0])
        # Logs: 2500 match; pages of at most 1000 follow meta.page.after up to the limit.
        finished, texts = await self.dd("service:checkout status:error", kind="logs", limit=120, variable="logs")
        searches = [json.loads(r["body"]) for r in self.api.requests if r["path"] == "/api/v2/logs/events/search"]
        self.assertEqual([s["page"] for s in searches], [{"limit": 120}])
        self.assertEqual(searches[0]["filter"]["query"], "service:checkout status:error")
        self.assertEqual(texts[0], "120 logs (more in Datadog: raise options.limit)")
        finished, texts = await self.dd("service:checkout", kind="logs", limit=5000, variable="all")
        searches = [json.loads(r["body"]) for r in self.api.requests if r["path"] == "/api/v2/logs/events/search"]
        self.assertEqual([s["page"] for s in searches[1:]],
                         [{"limit": 1000}, {"limit": 1000, "cursor": "1000"}, {"limit": 1000, "cursor": "2000"}])
        self.assertEqual((self.var("all")["count"], self.var("all")["truncated"]), (2500, False))
        self.assertEqual(len({log["id"] for log in self.var("all")["result"]}), 2500)
        self.assertEqual(texts[1].splitlines()[0].split(), ["TIMESTAMP", "STATUS", "SERVICE", "HOST", "MESSAGE"])
        # Monitors: 120 across two pages of 100.
        finished, texts = await self.dd("", kind="monitors", limit=500, variable="mons")
        pages = [r["args"]["page"] for r in self.api.requests if r["path"] == "/api/v1/monitor"]
        self.assertEqual(pages, [["0"], ["1"]])
        self.assertEqual(self.var("mons")["count"], 120)
        finished, texts = await self.dd("list checkout 5xx 11", kind="monitors")
        self.assertEqual(self.api.requests[-1]["args"]["name"], ["checkout 5xx 11"])
        finished, _ = await self.dd("mute 1000", kind="monitors")
        self.assertEqual(finished["error"]["code"], "writes_not_allowed")
        self.assertEqual(self.api.muted, {})
        finished, texts = await self.dd("mute 1000", kind="monitors", allow_writes=True, end="2026-11-30T12:00:00Z")
        self.assertEqual(self.api.muted, {1000: {"end": 1796040000}})
        self.assertEqual(texts, ["muted monitor 1000 (checkout 5xx 0) until 2026-11-30T12:00:00.000Z"])
        finished, texts = await self.dd("unmute 1000", kind="monitors", allow_writes=True)
        self.assertEqual(self.api.muted, {})
        for r in self.api.requests:
            self.assertEqual((r["method"], r["authorization"]), (r["method"], ""))  # keys in DD-* headers only
        self.assertNotIn(API_KEY, json.dumps(self.client.messages))
        self.assertNotIn(APP_KEY, json.dumps(self.client.messages))

    async def test_errors(self) -> None:
        await self.client.request("connections.set", name="busy", type="datadog", url=self.url, api_key=BUSY_KEY,
                                  app_key=APP_KEY)
        await self.client.request("connections.set", name="wrong", type="datadog", url=self.url, api_key=API_KEY,
                                  app_key="0000")
        cases = [
            ("avg:system.load.1{*", {}, "remote_forbidden", "403 Forbidden: Forbidden"),
            ("avg:system.load.1{*", {"connection": "busy"}, "rate_limited",
             "429 Too Many Requests: Too many requests (Datadog's rate limit query of 100 requests per 60 s is "
             "used up; it resets in 42 s)"),
            ("garbage.shape", {}, "bad_response", "no list of series"),
            ("mute 42", {"kind": "monitors", "allow_writes": True}, "not_found", "404 Not Found: Monitor not found"),
            ("mute soon", {"kind": "monitors", "allow_writes": True}, "bad_command", "usage: mute MONITOR_ID"),
            ("x", {"kind": "traces"}, "bad_option", "options.kind must be one of metrics, logs, monitors"),
            ("x", {"start": "now", "end": "now-1h"}, "bad_option", "options.start must be before options.end"),
            ("x", {"kind": "logs", "limit": 0}, "bad_option", "options.limit must be from 1 to 5000"),
            ("", {}, "bad_option", "the source is a metrics query"),
        ]
        for source, options, code, words in cases:
            options.setdefault("connection", "wrong" if code == "remote_forbidden" else "dd")
            finished, _ = await self.dd(source, **options)
            self.assertEqual((finished["status"], finished["error"]["code"]), ("error", code), (source, finished))
            self.assertIn(words, finished["error"]["evalue"], (source, finished["error"]["evalue"]))
        finished, _ = await self.dd("avg:system.load.1{*")
        self.assertEqual(finished["error"]["code"], "http_error")
        self.assertIn("400 Bad Request: Error parsing query:", finished["error"]["evalue"])
        for fields, words in [({"site": "EU", "url": self.url}, "either 'site'"), ({}, "either 'site'"),
                              ({"site": "Mars"}, "'site' must be one of")]:
            reply = await self.client.request("connections.set", name="x", type="datadog", api_key="a", app_key="b",
                                              **fields)
            self.assertIn(words, reply["error"]["message"])
        reply = await self.client.request("connections.set", name="eu", type="datadog", site="eu", api_key="a",
                                          app_key="b")
        self.assertTrue(reply["ok"], reply)
        dumped = json.dumps(self.client.messages)
        for secret in (API_KEY, APP_KEY, BUSY_KEY):
            self.assertNotIn(secret, dumped)


class SiteTests(unittest.TestCase):
    def test_sites(self) -> None:
        class Conn:
            name = "c"

            def __init__(self, **fields: str) -> None:
                self.fields = fields

            def get(self, key: str) -> Any:
                return self.fields.get(key)

        self.assertEqual(datadog.base_url(Conn(site="eu")), "https://api.datadoghq.eu")
        self.assertEqual(datadog.base_url(Conn(site="Gov")), "https://api.ddog-gov.com")
        self.assertEqual(datadog.base_url(Conn(url="https://dd.example")), "https://dd.example")
        self.assertEqual(datadog.headers(Conn(api_key="k", app_key="a")), {"DD-API-KEY": "k", "DD-APPLICATION-KEY": "a"})
