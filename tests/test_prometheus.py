"""prometheus cells against a real Prometheus (tests/prometheus.py): instant and
range queries, the chart, the CellResult read from a python cell, a parse
error with Prometheus' own message, an unreachable server, connections.test,
and the clear errors of a missing connection or a bad option, the session
living on after each."""

from __future__ import annotations

from typing import Any

from twisted.trial import unittest

from . import prometheus
from .sshd import free_port
from .support import Client, eventually, start_runtime, ws_url


class PrometheusCellTests(unittest.TestCase):
    timeout = 120

    async def setUp(self) -> None:
        prometheus.require(self)
        self.exporter = prometheus.Exporter(self)
        self.prom = await prometheus.TestPrometheus([self.exporter.address]).start(self)
        self.service = await start_runtime(self)
        self.client = await Client.connect(ws_url(self.service))
        self.addCleanup(self.client.close)
        reply = await self.client.request("connections.set", name="prom", type="prometheus", url=self.prom.url)
        self.assertTrue(reply["ok"], reply)
        self.assertEqual(reply["connection"], {"name": "prom", "type": "prometheus", "default": True,
                                               "url": self.prom.url})
        self.sid = (await self.client.request("session.create", name="prom"))["session"]["id"]
        # Three scrapes of the exporter: enough samples for rate() over 5 s.
        await eventually(lambda: self.exporter.collector.scrapes >= 4, timeout=30)

    async def run_cell(self, source: str, **options: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        variable = options.pop("output_variable", None)
        cell = {"id": "p", "type": "prometheus", "source": source, "options": options}
        if variable:
            cell["output_variable"] = variable
        finished = await self.client.run(self.sid, cell)
        return finished, self.client.events(run=finished["run"])

    async def test_instant_query_table_and_variable(self) -> None:
        finished, events = await self.run_cell('spin_test_temperature{job="exporter"}', output_variable="temps")
        self.assertEqual(finished["status"], "ok", finished)
        (result,) = [e for e in events if e["event"] == "result"]
        data = result["data"]
        self.assertEqual(result["variable"], "temps")
        lines = data["text/plain"].splitlines()
        self.assertEqual(lines[0].split(), ["__name__", "instance", "job", "room", "value"])
        self.assertEqual(sorted(line.split()[3:] for line in lines[1:]), [["cellar", "12"], ["kitchen", "21.5"]])
        self.assertIn("<th>room</th>", data["text/html"])
        self.assertEqual(sorted((r["room"], r["value"]) for r in data["application/json"]),
                         [("cellar", "12"), ("kitchen", "21.5")])
        (note,) = [e for e in events if e["event"] == "display"]
        self.assertIn("instant vector · 2 series", note["data"]["text/plain"])
        # The CellResult, from a python cell: the API's data.result as sent.
        finished = await self.client.run(self.sid, {"id": "py", "type": "python", "source": (
            "rooms = sorted(s['metric']['room'] for s in temps.result)\n"
            "print(temps.result_type, rooms, temps['result'][0]['value'][1] in ('12', '21.5'))")})
        self.assertEqual(finished["status"], "ok", finished)
        self.assertEqual(self.client.output(finished["run"]), "vector ['cellar', 'kitchen'] True\n")

    async def test_range_query_draws_a_chart(self) -> None:
        finished, events = await self.run_cell('rate(spin_test_requests_total{code="200"}[5s])',
                                          start="now-30s", step="1s", output_variable="rate")
        self.assertEqual(finished["status"], "ok", finished)
        (result,) = [e for e in events if e["event"] == "result"]
        svg = result["data"]["image/svg+xml"]
        self.assertTrue(svg.lstrip().startswith("<?xml"), svg[:100])
        self.assertIn("<svg", svg)
        self.assertNotIn("<script", svg)
        self.assertIn("rate(spin_test_requests_total", svg)  # the title, as text
        self.assertRegex(result["data"]["text/plain"], r"^range: 1 series, \d+ points, .* step 1s$")
        # The rate is the exporter's: 5 per scrape, one scrape a second.
        variable = self.service.manager.get(self.sid).variables["rate"]
        self.assertEqual(variable["result_type"], "matrix")
        values = [float(v) for _, v in variable["result"][0]["values"]]
        self.assertTrue(values and all(v > 0 for v in values) and 3.5 <= values[-1] <= 6.5, values)
        self.assertEqual(variable["step"], "1")
        # start alone, no step: a range ending now with about 250 points.
        finished, events = await self.run_cell("up", start="now-1h")
        self.assertEqual(finished["status"], "ok", finished)
        (result,) = [e for e in events if e["event"] == "result"]
        self.assertIn("step 14s", result["data"]["text/plain"])

    async def test_errors_and_the_session_lives_on(self) -> None:
        finished, events = await self.run_cell("rate(up[5m]")
        self.assertEqual(finished["status"], "error")
        self.assertEqual(finished["error"]["code"], "query_error")
        self.assertIn("400 Bad Request", finished["error"]["evalue"])
        self.assertIn("parse error", finished["error"]["evalue"])  # Prometheus' own words
        # Bad options, each named.
        for options, code, words in [
            ({"start": "yesterday"}, "bad_option", "options.start"),
            ({"step": "1m"}, "bad_option", "give options.start too"),
            ({"start": "now-1m", "end": "now-2m"}, "bad_option", "must be before"),
            ({"colour": "red"}, "bad_option", "no option 'colour'"),
            ({"connection": "nope"}, "unknown_connection", "prom"),
        ]:
            finished, _ = await self.run_cell("up", **options)
            self.assertEqual((finished["status"], finished["error"]["code"]), ("error", code), options)
            self.assertIn(words, finished["error"]["evalue"])
        # An unreachable server: connection_error; connections.test says unreachable.
        dead = f"http://127.0.0.1:{free_port()}"
        reply = await self.client.request("connections.set", name="dead", type="prometheus", url=dead)
        self.assertFalse(reply["connection"]["default"])  # prom stays the default
        finished, _ = await self.run_cell("up", connection="dead")
        self.assertEqual(finished["error"]["code"], "connection_error")
        self.assertIn("refused the connection", finished["error"]["evalue"])
        reply = await self.client.request("connections.test", name="dead")
        self.assertEqual(reply["error"]["code"], "unreachable", reply)
        reply = await self.client.request("connections.test", name="prom")
        self.assertTrue(reply["ok"], reply)
        self.assertEqual(reply["status"], "ok")
        self.assertRegex(reply["detail"], r"^Prometheus 2\.\d+")
        # No default any more: a cell naming no connection says what to do.
        self.assertTrue((await self.client.request("connections.delete", name="prom"))["ok"])
        finished, _ = await self.run_cell("up")
        self.assertEqual(finished["error"]["code"], "no_connection")
        self.assertIn("dead", finished["error"]["evalue"])
        # ... and the session still runs cells.
        finished, events = await self.run_cell("vector(42)", connection="dead")
        self.assertEqual(finished["error"]["code"], "connection_error")
        reply = await self.client.request("connections.set", name="prom2", type="prometheus", url=self.prom.url,
                                          default=True)
        finished, events = await self.run_cell("scalar(vector(42))")
        self.assertEqual(finished["status"], "ok", finished)
        (result,) = [e for e in events if e["event"] == "result"]
        self.assertEqual(result["data"]["text/plain"], "scalar: 42")


class DoneWhenTests(unittest.TestCase):
    """Issue 15's "done when": in one session, a prometheus cell draws the last
    hour of a rate as a chart, a kubernetes cell lists the failing pods of a
    namespace, and a python cell reads both results from their output variables."""

    timeout = 120

    async def test_rate_chart_failing_pods_and_python(self) -> None:
        from .kubernetes_api import ADMIN_TOKEN, FakeKubernetes
        from .tls import listen_http

        prometheus.require(self)
        exporter = prometheus.Exporter(self)
        prom = await prometheus.TestPrometheus([exporter.address]).start(self)
        _, port = listen_http(self, FakeKubernetes())
        service = await start_runtime(self, environ={"K8S_TOKEN": ADMIN_TOKEN})
        client = await Client.connect(ws_url(service))
        self.addCleanup(client.close)
        for params in ({"name": "metrics", "type": "prometheus", "url": prom.url},
                       {"name": "shop-cluster", "type": "kubernetes", "url": f"http://127.0.0.1:{port}",
                        "token": "{{secret:K8S_TOKEN}}", "namespace": "shop"}):
            self.assertTrue((await client.request("connections.set", **params))["ok"])
        sid = (await client.request("session.create", name="runbook"))["session"]["id"]
        await eventually(lambda: exporter.collector.scrapes >= 4, timeout=30)
        chart = await client.run(sid, {"id": "rate", "type": "prometheus", "output_variable": "rate",
                                       "source": 'rate(spin_test_requests_total{code="200"}[5s])',
                                       "options": {"start": "now-1h"}})
        pods = await client.run(sid, {"id": "pods", "type": "kubernetes", "output_variable": "pods",
                                      "source": "get pods --field-selector=status.phase!=Running"})
        for finished in (chart, pods):
            self.assertEqual(finished["status"], "ok", finished)
        (drawn,) = [e for e in client.events(run=chart["run"]) if e["event"] == "result"]
        self.assertIn("<svg", drawn["data"]["image/svg+xml"])
        (listed,) = [e for e in client.events(run=pods["run"]) if e["event"] == "result"]
        self.assertEqual([line.split()[0] for line in listed["data"]["text/plain"].splitlines()[1:]],
                         ["batch-1", "pending-1"])
        finished = await client.run(sid, {"id": "py", "type": "python", "source": (
            "latest = float(rate.result[0]['values'][-1][1])\n"
            "failing = [p['metadata']['name'] for p in pods.objects]\n"
            "print(rate.result_type, latest > 0, failing)")})
        self.assertEqual(finished["status"], "ok", finished)
        self.assertEqual(client.output(finished["run"]), "matrix True ['batch-1', 'pending-1']\n")
