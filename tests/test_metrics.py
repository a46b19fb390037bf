"""``GET /metrics``: parsed with prometheus_client's own parser, its counters checked
against a scripted workload on a real runtime; who may scrape it."""

from __future__ import annotations

from typing import Any

import treq
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.trial import unittest
from twisted.web.client import HTTPConnectionPool

from .support import TOKEN, Client, start_runtime, ws_url


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of an exposition."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


class MetricsTests(unittest.TestCase):
    timeout = 60

    async def setUp(self) -> None:
        self.pool = HTTPConnectionPool(reactor, persistent=False)

    async def start(self, *extra: str) -> None:
        self.service = await start_runtime(self, *extra)
        self.url = ws_url(self.service)
        self.base = self.url.replace("ws://", "http://").rsplit("/", 1)[0]

    async def scrape(self, token: str | None = TOKEN, accept: str | None = None) -> Any:
        headers = {}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if accept is not None:
            headers["Accept"] = accept
        response = await treq.get(self.base + "/metrics", headers=headers, pool=self.pool)
        response.text_body = await response.text()
        return response

    async def test_counters_follow_a_scripted_workload(self) -> None:
        await self.start()
        owner = await Client.connect(self.url)
        self.addCleanup(owner.close)
        with self.assertRaises(ConnectionError):
            await Client.connect(self.url, token="wrong")
        sids = [(await owner.request("session.create", name=f"m{i}"))["session"]["id"] for i in range(3)]
        self.assertTrue((await owner.request("session.close", session=sids[2]))["ok"])
        sid = sids[0]
        outcomes = []
        for cell in [{"type": "shell", "source": "echo ok"}, {"type": "shell", "source": "sleep 0.2"},
                     {"type": "shell", "source": "exit 3"}, {"type": "markdown", "source": "# hi"},
                     {"type": "no-such-type", "source": ""}]:
            outcomes.append((await owner.run(sid, cell))["status"])
        self.assertEqual(outcomes, ["ok", "ok", "error", "ok", "error"])
        # A chain that fails at its first cell: the second is skipped, never started.
        reply = await owner.request("cells.run", session=sid, cells=[{"type": "shell", "source": "false"},
                                                                    {"type": "shell", "source": "echo never"}])
        await owner.wait_for(lambda m: m.get("event") == "run.finished" and m["run"] == reply["runs"][1])
        await self.service.store.drain()

        response = await self.scrape()
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["text/plain; version=0.0.4; charset=utf-8"])
        s = samples(response.text_body)
        self.assertEqual(s[("spin_runs_started_total", (("cell_type", "shell"),))], 4)
        self.assertEqual(s[("spin_runs_started_total", (("cell_type", "markdown"),))], 1)
        self.assertEqual(s[("spin_runs_started_total", (("cell_type", "other"),))], 1)
        self.assertEqual(s[("spin_runs_started_total", (("cell_type", "python"),))], 0)  # there from the start
        finished = {labels: v for (name, labels), v in s.items() if name == "spin_runs_finished_total" and v}
        self.assertEqual(finished, {
            (("cell_type", "shell"), ("status", "ok")): 2,
            (("cell_type", "shell"), ("status", "error")): 2,
            (("cell_type", "shell"), ("status", "skipped")): 1,
            (("cell_type", "markdown"), ("status", "ok")): 1,
            (("cell_type", "other"), ("status", "error")): 1,
        })
        # Durations of started runs only; the sleep is in the 0.25 s bucket or above.
        self.assertEqual(s[("spin_run_duration_seconds_count", (("cell_type", "shell"),))], 4)
        self.assertGreaterEqual(s[("spin_run_duration_seconds_sum", (("cell_type", "shell"),))], 0.2)
        self.assertEqual(s[("spin_run_duration_seconds_bucket", (("cell_type", "shell"), ("le", "+Inf")))], 4)
        self.assertLessEqual(s[("spin_run_duration_seconds_bucket", (("cell_type", "shell"), ("le", "0.1")))], 3)
        self.assertEqual(s[("spin_sessions_created_total", ())], 3)
        self.assertEqual(s[("spin_sessions", (("state", "open"),))], 2)
        self.assertEqual(s[("spin_sessions", (("state", "closed"),))], 1)
        self.assertEqual(s[("spin_connections", ())], 1)
        self.assertEqual(s[("spin_runs_queued", ())], 0)
        self.assertEqual(s[("spin_runs_running", ())], 0)
        self.assertEqual(s[("spin_auth_failures_total", (("reason", "wrong_token"),))], 1)
        self.assertEqual(s[("spin_auth_failures_total", (("reason", "expired_token"),))], 0)
        self.assertEqual(s[("spin_auth_throttled_total", ())], 0)
        self.assertEqual(s[("spin_store_writable", ())], 1)
        self.assertGreater(s[("spin_store_commit_seconds_count", ())], 0)
        self.assertEqual(s[("spin_store_rows_written_total", ())], self.service.store.rows_written)
        self.assertGreater(s[("spin_process_resident_memory_bytes", ())], 10 * 1024 * 1024)
        self.assertEqual(s[("spin_kernels", (("state", "alive"),))], 0)
        self.assertEqual(s[("spin_tokens", ())], 0)
        for name, _ in s:
            self.assertTrue(name.startswith("spin_"), name)

    async def test_openmetrics_when_asked(self) -> None:
        await self.start()
        response = await self.scrape(accept="application/openmetrics-text; version=1.0.0")
        self.assertEqual(response.code, 200)
        self.assertTrue(response.headers.getRawHeaders("content-type")[0].startswith("application/openmetrics-text"))
        names = {family.name for family in openmetrics_families(response.text_body)}
        self.assertIn("spin_runs_started", names)
        self.assertTrue(response.text_body.endswith("# EOF\n"))

    async def test_any_role_may_scrape_and_no_one_without_a_token(self) -> None:
        await self.start()
        response = await self.scrape(token=None)
        self.assertEqual(response.code, 401)
        owner = await Client.connect(self.url)
        self.addCleanup(owner.close)
        secret = (await owner.request("tokens.create", name="prometheus", role="viewer"))["secret"]
        response = await self.scrape(token=secret)
        self.assertEqual(response.code, 200)
        self.assertEqual(samples(response.text_body)[("spin_tokens", ())], 1)
        self.assertEqual(samples(response.text_body)[("spin_auth_failures_total", (("reason", "no_token"),))], 1)
        self.assertNotIn(secret, response.text_body)
        self.assertNotIn(TOKEN, response.text_body)

    async def test_metrics_public(self) -> None:
        await self.start("--metrics-public")
        response = await self.scrape(token=None)
        self.assertEqual(response.code, 200)
        self.assertIn(("spin_connections", ()), samples(response.text_body))
        # Only /metrics opens: the rest still needs a token.
        response = await treq.get(self.base + "/api/status", pool=self.pool)
        self.assertEqual(response.code, 401)
        await response.content()


class DashboardTests(unittest.TestCase):
    timeout = 60

    async def test_the_grafana_dashboard_asks_only_for_metrics_the_runtime_has(self) -> None:
        import json
        import os
        import re

        path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "deploy", "grafana",
                            "spin-runtime.json")
        with open(path) as f:
            dashboard = json.load(f)
        exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
        wanted = {re.sub(r"_(bucket|count|sum)$", "", name) for e in exprs for name in re.findall(r"\bspin_[a-z_]+", e)}
        service = await start_runtime(self, "--metrics-public")
        base = ws_url(service).replace("ws://", "http://").rsplit("/", 1)[0]
        response = await treq.get(base + "/metrics", pool=HTTPConnectionPool(reactor, persistent=False))
        text = await response.text()
        names = set()
        for family in text_string_to_metric_families(text):
            names.add(family.name)
            names.update(sample.name for sample in family.samples)
        self.assertEqual(wanted - names, set())
        self.assertGreaterEqual(len(wanted), 12)
        ids = [p["id"] for p in dashboard["panels"]]
        self.assertEqual(len(ids), len(set(ids)))
