"""Issue 19's "done when", end to end against the stand-ins of GitHub, Datadog,
Splunk and Jenkins: the last failing workflow run and its log, the Datadog
error rate from when it failed, the matching Splunk events, then a Jenkins
rollback followed to its result; each cell reads the one before through a
template, and no credential reaches an event or the runtime's log."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

from twisted.logger import formatEventAsClassicLogText, globalLogPublisher
from twisted.trial import unittest

from . import tls
from .datadog_api import API_KEY, APP_KEY, FakeDatadog
from .github_api import TOKEN as GITHUB_TOKEN, FakeGitHub
from .integration_support import run_cell
from .jenkins_api import TOKEN as JENKINS_TOKEN, USER, FakeJenkins
from .splunk_api import TOKEN as SPLUNK_TOKEN, FakeSplunk
from .support import Client, start_runtime, ws_url

SECRETS = {"GITHUB_TOKEN": GITHUB_TOKEN, "DD_API_KEY": API_KEY, "DD_APP_KEY": APP_KEY,
           "SPLUNK_TOKEN": SPLUNK_TOKEN, "JENKINS_TOKEN": JENKINS_TOKEN}


class RunbookTests(unittest.TestCase):
    timeout = 60

    async def test_runbook(self) -> None:
        log: list[str] = []

        def observe(event: dict[str, Any]) -> None:
            log.append(formatEventAsClassicLogText(event) or "")

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        github, datadog, jenkins, splunk = FakeGitHub(), FakeDatadog(), FakeJenkins(), FakeSplunk()
        _, github.port = tls.listen_http(self, github)
        _, datadog_port = tls.listen_http(self, datadog)
        _, jenkins.port = tls.listen_http(self, jenkins)
        pki = tls.make_pki(tempfile.mkdtemp(prefix="runbook-", dir=os.path.abspath(".")), "Splunk CA")
        _, splunk_port = tls.listen_https(self, splunk, pki.server, pki.intermediate)
        service = await start_runtime(self, environ=SECRETS)
        client = await Client.connect(ws_url(service))
        self.addCleanup(client.close)
        for fields in [
            {"type": "github", "url": f"http://localhost:{github.port}", "token": "{{secret:GITHUB_TOKEN}}"},
            {"type": "datadog", "url": f"http://localhost:{datadog_port}", "api_key": "{{secret:DD_API_KEY}}",
             "app_key": "{{secret:DD_APP_KEY}}"},
            {"type": "splunk", "url": f"https://localhost:{splunk_port}", "token": "{{secret:SPLUNK_TOKEN}}",
             "ca": pki.root.cert_path},
            {"type": "jenkins", "url": f"http://localhost:{jenkins.port}", "username": USER,
             "token": "{{secret:JENKINS_TOKEN}}"},
        ]:
            reply = await client.request("connections.set", name=fields["type"], **fields)
            self.assertTrue(reply["ok"], reply)
        sid = (await client.request("session.create", name="incident"))["session"]["id"]
        steps = [
            ("github", "runs octo/app --workflow deploy.yml --status failure --limit 1", "runs", {}),
            ("github", "run-log octo/app {{runs.result.0.id}}", "log", {}),
            ("datadog", "sum:trace.http.request.errors{service:checkout}.as_rate()", "errors",
             {"start": "{{runs.result.0.created_at}}"}),
            ("splunk", "index=web service=checkout status>=500", "events",
             {"earliest": "{{runs.result.0.created_at}}"}),
            ("jenkins", "build ops/rollback RUN={{runs.result.0.id}} 'REASON={{log.result.0.failed_steps.0}}'",
             "rollback", {"allow_writes": True, "poll_s": 0.05}),
        ]
        for cell_type, source, variable, options in steps:
            finished, _ = await run_cell(client, sid, cell_type, source, variable, **options)
            self.assertEqual(finished["status"], "ok", (source, finished))
        variables = service.manager.get(sid).variables
        self.assertEqual(variables["log"]["result"][0]["failed_steps"], ["Run pytest"])
        (query,) = [r for r in datadog.requests if r["path"] == "/api/v1/query"]
        self.assertEqual(query["args"]["from"], ["1796035200"])  # 2026-11-30T10:40:00Z, the run's creation
        (search,) = [r for r in splunk.requests if r["path"] == "/services/search/jobs/export"]
        self.assertEqual(search["args"]["earliest_time"], ["1796035200.000"])
        self.assertEqual(len(variables["events"]["result"]), 4)
        self.assertEqual(jenkins.queued[0]["params"], {"RUN": "42", "REASON": "Run pytest"})
        self.assertEqual(variables["rollback"]["build_result"], "SUCCESS")
        seen = json.dumps(client.messages) + "\n".join(log)
        for name, secret in SECRETS.items():
            self.assertNotIn(secret, seen, name)
