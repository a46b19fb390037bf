"""jenkins cells against tests/jenkins_api.py (a stand-in answering as Jenkins'
remote access API documents; each shape cites it): a parameterized build
with the CSRF crumb and its web session, the queue item waited on until it
is a build, the progressive console streamed line by line, the result; a
failed build; status and stop; cancelling the cell in the middle of a slow
console stream stops the build; 401/403/404, bodies Jenkins would not send,
and the token in no event."""

from __future__ import annotations

import base64
import json
from typing import Any

from twisted.trial import unittest

from spinrt.integrations.jenkins import job_path, parse

from . import tls
from .jenkins_api import CRUMB, TOKEN, USER, FakeJenkins
from .support import Client, eventually, start_runtime, ws_url


class JenkinsTests(unittest.TestCase):
    timeout = 60

    async def setUp(self) -> None:
        self.api = FakeJenkins()
        _, self.api.port = tls.listen_http(self, self.api)
        self.url = f"http://localhost:{self.api.port}"
        self.service = await start_runtime(self, environ={"JENKINS_TOKEN": TOKEN})
        self.client = await Client.connect(ws_url(self.service))
        self.addCleanup(self.client.close)
        reply = await self.client.request("connections.set", name="ci", type="jenkins", url=self.url,
                                          username=USER, token="{{secret:JENKINS_TOKEN}}")
        self.assertTrue(reply["ok"], reply)
        self.sid = (await self.client.request("session.create", name="j"))["session"]["id"]

    async def j(self, source: str, variable: str | None = None, **options: Any) -> tuple[dict[str, Any], str]:
        options.setdefault("poll_s", 0.05)
        cell: dict[str, Any] = {"id": "j", "type": "jenkins", "source": source, "options": options}
        if variable:
            cell["output_variable"] = variable
        finished = await self.client.run(self.sid, cell)
        return finished, self.client.output(finished["run"])

    def var(self, name: str) -> Any:
        return self.service.manager.get(self.sid).variables[name]

    async def test_build_and_follow(self) -> None:
        reply = await self.client.request("connections.test", name="ci")
        self.assertEqual(reply.get("detail"), f"Jenkins at {self.url} (1 jobs at the top level)", reply)
        finished, _ = await self.j("build ops/rollback VERSION=1.4.1")
        self.assertEqual(finished["error"]["code"], "writes_not_allowed")
        self.assertEqual(self.api.queued, [])
        finished, output = await self.j("build ops/rollback VERSION=1.4.1 'REASON=checkout 5xx'", variable="b",
                                        allow_writes=True)
        self.assertEqual(finished["status"], "ok", finished)
        (post,) = [r for r in self.api.requests if r["method"] == "POST"]
        self.assertEqual(post["path"], "/job/ops/job/rollback/buildWithParameters")
        self.assertEqual(self.api.queued[0]["params"], {"VERSION": "1.4.1", "REASON": "checkout 5xx"})
        self.assertEqual(post["authorization"], "Basic " + base64.b64encode(f"{USER}:{TOKEN}".encode()).decode())
        starts = [r["args"]["start"][0] for r in self.api.requests if r["path"].endswith("/progressiveText")]
        self.assertEqual(starts, ["0", "20", "51", "88"])  # each the X-Text-Size of the answer before
        self.assertIn("Started by user ops\nRolling back checkout to 1.4.1\nkubectl rollout undo deploy/checkout\n"
                      "Finished: SUCCESS\n", output)
        build = self.var("b")
        self.assertEqual((build["number"], build["build_result"], build["queue_item"]), (8, "SUCCESS", 1))
        self.assertEqual(build["result"]["duration"], 12345)
        self.assertTrue(build["text"].startswith("queued ops/rollback (queue item 1)\nops/rollback #8 finished: "
                                                 "SUCCESS in 12.3 s"), build["text"])
        events = self.client.events(run=finished["run"])
        self.assertIn("waiting: Waiting for next available executor\n",
                      [e.get("text") for e in events if e["event"] == "stream" and e.get("name") == "stderr"])
        # A failed build: the cell fails with the build in its value.
        finished, _ = await self.j("build ops/fails", variable="f", allow_writes=True)
        self.assertEqual((finished["error"]["code"], finished["error"]["evalue"][:30]),
                         ("build_failed", "ops/fails #8 finished: FAILURE"))
        self.assertEqual([r["path"] for r in self.api.requests if r["method"] == "POST"][-1], "/job/ops/job/fails/build")
        # status, log, stop.
        finished, output = await self.j("status ops/rollback", variable="s")
        self.assertEqual([b["number"] for b in self.var("s")["result"]], [8, 7])
        self.assertEqual(output.count("SUCCESS"), 0)  # tables are results, not streams
        self.assertEqual(self.api.requests[-1]["args"]["tree"],
                         ["builds[number,result,building,timestamp,duration,url]{0,20}"])
        finished, output = await self.j("log ops/rollback 8", variable="l")
        self.assertIn("kubectl rollout undo deploy/checkout", self.var("l")["log"])
        finished, _ = await self.j("stop ops/rollback 8", allow_writes=True)
        self.assertEqual(finished["status"], "ok", finished)
        self.assertEqual(self.api.stopped, ["rollback#8"])
        self.assertEqual(set(self.api.crumbs), {CRUMB})
        # CSRF protection off: the crumb issuer answers 404 and POSTs go without a crumb.
        self.api.csrf = False
        finished, _ = await self.j("stop ops/rollback 7", allow_writes=True)
        self.assertEqual(finished["status"], "ok", finished)
        self.assertEqual((self.api.stopped[-1], self.api.crumbs[-1]), ("rollback#7", None))
        self.assertNotIn(TOKEN, json.dumps(self.client.messages))

    async def test_cancel_stops_the_build(self) -> None:
        reply = await self.client.request("cell.run", session=self.sid, cell={
            "id": "s", "type": "jenkins", "source": "build ops/slow", "options": {"allow_writes": True, "poll_s": 0.05}})
        run = reply["run"]
        # The console's first answer came; the next one is slow: pending.
        await eventually(lambda: self.api.open_streams == 1 and self.api.requests[-1]["args"].get("start") == ["23"],
                         timeout=10)
        await self.client.request("run.cancel", session=self.sid, run=run)
        finished = await self.client.wait_for(lambda m: m.get("event") == "run.finished" and m["run"] == run)
        self.assertEqual(finished["status"], "cancelled")
        self.assertIn("Waiting for the canary\n", self.client.output(run))
        await eventually(lambda: self.api.stopped == ["slow#8"], timeout=10)
        await eventually(lambda: self.api.open_streams == 0, timeout=10)  # the stream was closed
        (stop,) = [r for r in self.api.requests if r["path"].endswith("/stop")]
        self.assertEqual(stop["method"], "POST")

    async def test_errors(self) -> None:
        await self.client.request("connections.set", name="bad", type="jenkins", url=self.url, username=USER,
                                  token="0000wrong")
        cases = [
            ("status ops/rollback", {"connection": "bad"}, "remote_unauthorized",
             "401 Unauthorized: Error 401 Invalid password/token for user: ops"),
            ("status ops/nope", {}, "not_found", "404 Not Found"),
            ("build ops/broken", {"allow_writes": True}, "bad_response", "without a queue item's Location"),
            ("deploy ops/rollback", {}, "bad_command", "unknown command 'deploy'"),
            ("log ops/rollback", {}, "bad_command", "usage: log JOB NUMBER"),
            ("stop ops/rollback last", {"allow_writes": True}, "bad_command", "must be a whole number"),
            ("build ops/rollback VERSION", {"allow_writes": True}, "bad_command", "NAME=VALUE"),
            ("status ops/rollback", {"poll_s": "soon"}, "bad_option", "options.poll_s"),
        ]
        for source, options, code, words in cases:
            finished, _ = await self.j(source, **options)
            self.assertEqual((finished["status"], finished["error"]["code"]), ("error", code), (source, finished))
            self.assertIn(words, finished["error"]["evalue"], (source, finished["error"]["evalue"]))
        reply = await self.client.request("connections.test", name="bad")
        self.assertEqual(reply["error"]["code"], "remote_unauthorized")
        reply = await self.client.request("connections.set", name="half", type="jenkins", url=self.url, username=USER)
        self.assertIn("'username' and 'token'", reply["error"]["message"])
        dumped = json.dumps(self.client.messages)
        self.assertNotIn(TOKEN, dumped)
        self.assertNotIn(CRUMB, dumped)


class GrammarTests(unittest.TestCase):
    def test_parse(self) -> None:
        self.assertEqual(parse("build team/deploy A=1 'B=two words'  # go"),
                         {"verb": "build", "job": "team/deploy", "number": None, "params": [("A", "1"),
                                                                                          ("B", "two words")]})
        self.assertEqual(parse("status deploy 12")["number"], 12)
        self.assertEqual(job_path("team/deploy app"), "/job/team/job/deploy%20app")
