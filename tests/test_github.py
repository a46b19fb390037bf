"""github cells against tests/github_api.py (a stand-in answering as GitHub's
REST and GraphQL references document; each shape cites them): issues across
Link-header pages up to a limit, one issue, pull requests, commits, compare,
workflow runs and jobs, a failed job's log through the redirect to log
storage (without the token; a slow download cancelled and closed), a comment
only with allow_writes, GraphQL and
its errors; rate limits (used up, secondary with Retry-After), 401/403/404,
bodies that are not what the reference says, and the token in no event."""

from __future__ import annotations

import json
from typing import Any

from twisted.trial import unittest

from spinrt.integrations.github_command import parse

from . import tls
from .github_api import EXHAUSTED, READ_ONLY, SECONDARY, TOKEN, FakeGitHub
from .integration_support import run_cell
from .support import Client, eventually, start_runtime, ws_url


class GitHubTests(unittest.TestCase):
    timeout = 60

    async def setUp(self) -> None:
        self.api = FakeGitHub()
        _, self.api.port = tls.listen_http(self, self.api)
        self.url = f"http://localhost:{self.api.port}"
        self.service = await start_runtime(self, environ={"GITHUB_TOKEN": TOKEN})
        self.client = await Client.connect(ws_url(self.service))
        self.addCleanup(self.client.close)
        reply = await self.client.request("connections.set", name="gh", type="github", url=self.url,
                                          token="{{secret:GITHUB_TOKEN}}")
        self.assertTrue(reply["ok"], reply)
        for name, token in (("ro", READ_ONLY), ("spent", EXHAUSTED), ("busy", SECONDARY), ("bad", "ghp_wrong")):
            reply = await self.client.request("connections.set", name=name, type="github", url=self.url, token=token)
            self.assertTrue(reply["ok"], reply)
        self.sid = (await self.client.request("session.create", name="gh"))["session"]["id"]

    async def gh(self, source: str, variable: str | None = None, **options: Any) -> tuple[dict[str, Any], list[str]]:
        options.setdefault("connection", "gh")
        return await run_cell(self.client, self.sid, "github", source, variable, **options)

    def var(self, name: str) -> Any:
        return self.service.manager.get(self.sid).variables[name]

    async def test_reads(self) -> None:
        types = (await self.client.request("connections.types"))["types"]
        self.assertEqual([(f["name"], f["secret"]) for f in types["github"]["fields"]],
                         [("url", False), ("token", True), ("ca", False)])
        reply = await self.client.request("connections.test", name="gh")
        self.assertEqual(reply.get("detail"), f"GitHub at {self.url} as octocat (4998 of 5000 requests left)", reply)
        # 250 issues and PRs, 100 a page: three pages followed by Link, PRs left out.
        finished, texts = await self.gh("issues octo/app --limit 250", variable="issues")
        self.assertEqual(finished["status"], "ok", finished)
        pages = [r for r in self.api.requests if r["path"] == "/repos/octo/app/issues"]
        self.assertEqual([r["args"].get("page", ["1"])[0] for r in pages], ["1", "2", "3"])
        self.assertEqual(pages[0]["args"]["per_page"], ["100"])
        self.assertEqual(pages[0]["args"]["state"], ["open"])
        self.assertTrue(all(r["authorization"] == f"Bearer {TOKEN}" for r in pages))
        issues = self.var("issues")
        self.assertEqual(len(issues["result"]), 225)  # 25 of the 250 are pull requests
        self.assertEqual(issues["rate_limit"], {"limit": 5000, "remaining": 4995, "used": 5, "resource": "core",
                                                "reset": "2026-11-30T11:00:00.000Z"})
        self.assertFalse(issues["truncated"])
        self.assertEqual(texts[0], "225 issues")
        self.assertEqual(texts[1].splitlines()[0].split(), ["NUMBER", "TITLE", "STATE", "LABELS", "AUTHOR", "UPDATED"])
        self.assertEqual(texts[1].splitlines()[1].split()[:4], ["249", "Checkout", "fails", "#249"])
        # A limit stops following pages and says more are left.
        finished, texts = await self.gh("issues octo/app --label bug", variable="bugs", limit=20)
        self.assertEqual(self.api.requests[-1]["args"]["labels"], ["bug"])
        self.assertEqual(self.api.requests[-1]["args"]["per_page"], ["20"])
        self.assertEqual((len(self.var("bugs")["result"]), self.var("bugs")["truncated"]), (20, True))
        self.assertEqual(texts[0], "20 issues (more on GitHub: raise --limit)")
        finished, texts = await self.gh("issues octo/app 7", variable="one")
        self.assertEqual(self.var("one")["result"]["title"], "Checkout fails #7")
        self.assertTrue(texts[0].startswith("#7 Checkout fails #7 [open] by hubot"), texts)
        finished, texts = await self.gh("pulls octo/app", variable="pulls")
        self.assertEqual(len(self.var("pulls")["result"]), 25)
        self.assertIn("fix-250", texts[1])
        finished, texts = await self.gh("commits octo/app --since 2026-11-29T00:00:00Z --branch main")
        self.assertEqual(self.api.requests[-1]["args"]["since"], ["2026-11-29T00:00:00Z"])
        self.assertEqual(self.api.requests[-1]["args"]["sha"], ["main"])
        self.assertIn("Fix payment timeout 1", texts[1])
        self.assertNotIn("longer text", texts[1])
        finished, texts = await self.gh("compare octo/app v1.0.0...main", variable="cmp")
        self.assertEqual(texts[0], "v1.0.0...main: ahead, 3 ahead, 0 behind")
        self.assertEqual(self.var("cmp")["result"]["files"][0]["filename"], "pay.py")
        # Workflow runs: the failing one, its jobs, its log.
        finished, texts = await self.gh("runs octo/app --workflow deploy.yml --status failure", variable="runs")
        self.assertEqual(self.api.requests[-1]["path"], "/repos/octo/app/actions/workflows/deploy.yml/runs")
        self.assertEqual([r["id"] for r in self.var("runs")["result"]], [42])
        finished, texts = await self.gh("runs octo/app 42", variable="run")
        self.assertIn("run 42 of deploy on main: completed, failure", texts[0])
        self.assertIn("Run pytest", texts[1])
        self.assertEqual(len(self.var("run")["result"]["jobs"]), 2)
        finished, texts = await self.gh("run-log octo/app {{runs.result.0.id}}", variable="log")  # the last cell's
        self.assertEqual(finished["status"], "ok", finished)
        (blob,) = [r for r in self.api.requests if r["path"].startswith("/blob/")]
        self.assertEqual((blob["path"], blob["authorization"]), ("/blob/102.txt", ""))  # no token to log storage
        self.assertTrue(texts[0].startswith("job 'test' (failure), failing step: Run pytest; the last 3 of 3 log"))
        (log,) = self.var("log")["result"]
        self.assertEqual(log["failed_steps"], ["Run pytest"])
        self.assertEqual(log["errors"], ["2026-11-30T10:41:05.1000000Z ##[error]Process completed with exit code 1."])
        # GraphQL, the escape hatch.
        finished, texts = await self.gh("graphql\nquery($n: Int) { viewer { login } }", variable="q",
                                        variables={"n": 1})
        self.assertEqual(self.var("q")["result"]["viewer"], {"login": "octocat"})
        self.assertEqual(json.loads(self.api.requests[-1]["body"])["variables"], {"n": 1})
        self.assertNotIn(TOKEN, json.dumps(self.client.messages))

    async def test_cancel_a_slow_log_download(self) -> None:
        reply = await self.client.request("cell.run", session=self.sid, cell={
            "id": "l", "type": "github", "source": "run-log octo/app 44", "options": {"connection": "gh"}})
        run = reply["run"]
        await eventually(lambda: self.api.open_blobs == 1, timeout=10)
        await self.client.request("run.cancel", session=self.sid, run=run)
        finished = await self.client.wait_for(lambda m: m.get("event") == "run.finished" and m["run"] == run)
        self.assertEqual(finished["status"], "cancelled")
        await eventually(lambda: self.api.open_blobs == 0, timeout=10)  # the download was closed

    async def test_comment_needs_allow_writes(self) -> None:
        finished, _ = await self.gh("comment octo/app 7", body="Rolled back in #8")
        self.assertEqual(finished["error"]["code"], "writes_not_allowed")
        finished, _ = await self.gh("graphql\nmutation { addComment(input: {}) { clientMutationId } }")
        self.assertEqual(finished["error"]["code"], "writes_not_allowed")
        self.assertEqual(self.api.comments, [])
        finished, texts = await self.gh("comment octo/app 7", body="Rolled back in #8", allow_writes=True,
                                        variable="c")
        self.assertEqual(finished["status"], "ok", finished)
        self.assertEqual(self.api.comments[0]["body"], "Rolled back in #8")
        self.assertEqual(texts, ["commented on octo/app#7: https://github.com/octo/app/issues/7#issuecomment-9000"])
        finished, _ = await self.gh("comment octo/app 7", body="x", allow_writes=True, connection="ro")
        self.assertEqual((finished["error"]["code"], finished["error"]["evalue"]),
                         ("remote_forbidden", "403 Forbidden: Resource not accessible by personal access token"))

    async def test_errors(self) -> None:
        cases = [
            ("issues octo/app", {"connection": "bad"}, "remote_unauthorized", "401 Unauthorized: Bad credentials"),
            ("issues octo/gone", {}, "not_found", "404 Not Found: Not Found"),
            ("issues octo/app", {"connection": "spent"}, "rate_limited",
             "403 Forbidden: GitHub's rate limit (5000 requests, core) is used up; it resets at 2026-11-30T11:00:00.000Z"),
            ("runs octo/app", {"connection": "busy"}, "rate_limited",
             "429 Too Many Requests: You have exceeded a secondary rate limit. Please wait a few minutes before you "
             "try again. (a secondary rate limit: retry after 60 s)"),
            ("issues octo/broken", {}, "bad_response", "not JSON: '<html><body>Unicorn!"),
            ("run-log octo/app 43", {}, "bad_response", "str, not a list in jobs"),
            ("graphql\n{ nope }", {}, "graphql_error", "Field 'nope' doesn't exist on type 'Query'"),
            ("graphql", {}, "bad_command", "the query goes on the lines after"),
            ("deploy octo/app", {}, "bad_command", "unknown command 'deploy'"),
            ("issues app", {}, "bad_command", "issues needs OWNER/REPO first"),
            ("compare octo/app main", {}, "bad_command", "BASE...HEAD"),
            ("issues octo/app --colour red", {}, "bad_command", "unknown flag --colour"),
            ("issues octo/app --limit 0", {}, "bad_option", "--limit must be a whole number from 1 to 5000"),
            ("issues octo/app --since yesterday", {}, "bad_option", "--since must be a time"),
            ("comment octo/app 7", {"allow_writes": True}, "bad_option", "comment needs options.body"),
            ("issues octo/app", {"colour": "red"}, "bad_option", "a github cell has no option 'colour'"),
        ]
        for source, options, code, words in cases:
            finished, _ = await self.gh(source, **options)
            self.assertEqual((finished["status"], finished["error"]["code"]), ("error", code), (source, finished))
            self.assertIn(words, finished["error"]["evalue"], (source, finished["error"]["evalue"]))
        # The last request of the hour succeeds and says the limit is now used up.
        self.api.remaining = 1
        finished, _ = await self.gh("commits octo/app")
        self.assertEqual(finished["status"], "ok", finished)
        warned = "".join(e["text"] for e in self.client.events(run=finished["run"], kind="stream")
                         if e["name"] == "stderr")  # in pieces: the masker holds a secret's length back
        self.assertEqual(warned, "GitHub's rate limit (5000 requests, core) is now used up; it resets at "
                                 "2026-11-30T11:00:00.000Z\n")
        finished = await self.client.run(self.sid, {"id": "md", "type": "markdown", "source": "still here"})
        self.assertEqual(finished["status"], "ok")
        reply = await self.client.request("connections.test", name="bad")
        self.assertEqual(reply["error"]["code"], "remote_unauthorized")
        reply = await self.client.request("connections.set", name="basic", type="github", url=self.url,
                                          username="octocat", password="pw")
        self.assertIn("a github connection has no field 'password', 'username'", reply["error"]["message"])
        dumped = json.dumps(self.client.messages)
        for secret in (TOKEN, READ_ONLY, EXHAUSTED, SECONDARY, "ghp_wrong"):
            self.assertNotIn(secret, dumped)


class GrammarTests(unittest.TestCase):
    def test_parse(self) -> None:
        self.assertEqual(parse("runs octo/app --status=failure --label a --label b", {"limit": 5}),
                         {"verb": "runs", "repo": "octo/app", "args": [],
                          "flags": {"limit": 5, "status": "failure", "label": ["a", "b"]}, "query": ""})
        self.assertEqual(parse("graphql\n{ viewer { login } }\n", {})["query"], "{ viewer { login } }")
        self.assertEqual(parse("issues octo/app  # open bugs", {"label": "bug"})["flags"], {"label": ["bug"]})
