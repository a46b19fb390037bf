"""A stand-in GitHub REST v3 / GraphQL API (twisted.web) answering as GitHub
documents it; no GitHub is reachable here. Sources, cited per response
(API version 2022-11-28):

- [auth] https://docs.github.com/en/rest/authentication/authenticating-to-the-rest-api
  (a bad token: 401 {"message": "Bad credentials", "documentation_url", "status": "401"})
- [errors] https://docs.github.com/en/rest/using-the-rest-api/troubleshooting-the-rest-api
  ("Resource not accessible by personal access token": 403; "Not Found": 404 for a repository
  the token cannot see)
- [rate] https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api
  ("Checking the status of your rate limit": x-ratelimit-limit / -remaining / -used / -reset
  (epoch seconds) / -resource on every answer; "Exceeding the rate limit": 403 or 429 with
  x-ratelimit-remaining 0; secondary rate limits: 403 or 429 with retry-after)
- [pages] https://docs.github.com/en/rest/using-the-rest-api/using-pagination-in-the-rest-api
  (per_page up to 100; Link: <...page=2>; rel="next", <...page=3>; rel="last")
- [issues] https://docs.github.com/en/rest/issues/issues#list-repository-issues and
  #get-an-issue ("pull requests are issues": items with a pull_request key)
- [pulls] https://docs.github.com/en/rest/pulls/pulls#list-pull-requests
- [commits] https://docs.github.com/en/rest/commits/commits#list-commits and
  #compare-two-commits (status, ahead_by, behind_by, commits, files)
- [runs] https://docs.github.com/en/rest/actions/workflow-runs#list-workflow-runs-for-a-repository,
  #list-workflow-runs-for-a-workflow, #get-a-workflow-run ({"total_count", "workflow_runs"})
- [jobs] https://docs.github.com/en/rest/actions/workflow-jobs#list-jobs-for-a-workflow-run
  ({"total_count", "jobs": [{id, name, status, conclusion, steps: [{name, conclusion, number}]}]})
  and #download-job-logs-for-a-workflow-run (302, Location: a URL that expires after a minute)
- [comments] https://docs.github.com/en/rest/issues/comments#create-an-issue-comment (201)
- [graphql] https://docs.github.com/en/graphql/guides/forming-calls-with-graphql
  ({"data": ...}; errors as 200 {"errors": [{"message", "locations", "type"}]})
"""

from __future__ import annotations

import json
from typing import Any

from twisted.web.server import NOT_DONE_YET, Request

from .fake_api import FakeApi

TOKEN = "ghp_0123456789abcdefABCDEF0123456789wxyz"
READ_ONLY = "github_pat_11AAAAAA0readonly0000000000000000"
EXHAUSTED = "ghp_exhausted000000000000000000000000000"
SECONDARY = "ghp_secondary000000000000000000000000000"
RESET = 1796036400  # 2026-11-30T11:00:00Z
DOCS = "https://docs.github.com/rest"

USER = {"login": "octocat", "id": 1, "type": "User"}


def issue(n: int) -> dict[str, Any]:  # [issues]
    item = {"id": 1000 + n, "number": n, "title": f"Checkout fails #{n}", "state": "open",
            "user": {"login": "hubot"}, "labels": [{"name": "bug"}] if n % 2 else [],
            "body": f"Steps to reproduce {n}", "html_url": f"https://github.com/octo/app/issues/{n}",
            "created_at": "2026-11-29T10:00:00Z", "updated_at": "2026-11-30T10:00:00Z", "comments": 0}
    if n % 10 == 0:
        item["pull_request"] = {"url": f"https://api.github.com/repos/octo/app/pulls/{n}"}
    return item


ISSUES = [issue(n) for n in range(250, 0, -1)]
COMMITS = [{"sha": f"{i:x}" * 40, "commit": {"author": {"name": "Mona", "date": f"2026-11-30T0{i}:00:00Z"},
                                              "message": f"Fix payment timeout {i}\n\nlonger text"}}
           for i in range(1, 4)]
RUNS = [  # [runs]
    {"id": 42, "name": "deploy", "head_branch": "main", "event": "push", "status": "completed",
     "conclusion": "failure", "created_at": "2026-11-30T10:40:00Z", "run_number": 7,
     "html_url": "https://github.com/octo/app/actions/runs/42"},
    {"id": 41, "name": "deploy", "head_branch": "main", "event": "push", "status": "completed",
     "conclusion": "success", "created_at": "2026-11-30T09:40:00Z", "run_number": 6,
     "html_url": "https://github.com/octo/app/actions/runs/41"},
]
JOBS = [  # [jobs]
    {"id": 101, "run_id": 42, "name": "build", "status": "completed", "conclusion": "success",
     "started_at": "2026-11-30T10:40:05Z", "steps": [{"name": "Set up job", "conclusion": "success", "number": 1}]},
    {"id": 102, "run_id": 42, "name": "test", "status": "completed", "conclusion": "failure",
     "started_at": "2026-11-30T10:41:00Z",
     "steps": [{"name": "Set up job", "conclusion": "success", "number": 1},
               {"name": "Run pytest", "conclusion": "failure", "number": 2}]},
]
JOB_LOG = ("2026-11-30T10:41:01.0000000Z ##[group]Run pytest\n"
           "2026-11-30T10:41:05.0000000Z FAILED tests/test_pay.py::test_timeout - TimeoutError\n"
           "2026-11-30T10:41:05.1000000Z ##[error]Process completed with exit code 1.\n")


class FakeGitHub(FakeApi):
    """Listens as http://localhost:PORT; job logs are served from
    http://127.0.0.1:PORT/blob/... (another host, as GitHub's log storage is)."""

    port = 0

    def __init__(self) -> None:
        super().__init__()
        self.comments: list[dict[str, Any]] = []
        self.remaining = 4999
        self.open_blobs = 0  # log downloads held open

    def error(self, request: Request, code: int, message: str, **extra: Any) -> bytes:
        body = self.json(request, code, {"message": message, "documentation_url": DOCS, "status": str(code), **extra})
        if code == 429:  # twisted.web knows no phrase for it; GitHub sends RFC 6585's
            request.setResponseCode(429, b"Too Many Requests")
        return body

    def rate(self, request: Request, remaining: int) -> None:  # [rate]
        for name, value in (("limit", 5000), ("remaining", remaining), ("used", 5000 - remaining),
                            ("reset", RESET), ("resource", "core")):
            request.setHeader(f"x-ratelimit-{name}", str(value))

    def route(self, request: Request, seen: dict[str, Any], body: bytes) -> bytes:
        path, auth, args = seen["path"], seen["authorization"], seen["args"]
        if path.startswith("/blob/"):  # the log storage: a signed URL, no token
            if seen["authorization"] or args.get("sig") != ["s1gn3d"]:
                return self.error(request, 403, "AuthenticationFailed")
            if path == "/blob/103.txt":  # a slow store: the answer never comes
                self.open_blobs += 1
                request.notifyFinish().addBoth(lambda _: setattr(self, "open_blobs", self.open_blobs - 1))
                return NOT_DONE_YET
            request.setHeader(b"content-type", b"text/plain")
            return JOB_LOG.encode()
        token = auth.removeprefix("Bearer ")
        if not auth.startswith("Bearer ") or token not in (TOKEN, READ_ONLY, EXHAUSTED, SECONDARY):
            return self.error(request, 401, "Bad credentials")  # [auth]
        if token == EXHAUSTED:
            self.rate(request, 0)
            return self.error(request, 403, "API rate limit exceeded for user ID 1. If you reach out to GitHub "
                                            "Support for help, please include the request ID.")
        if token == SECONDARY:
            request.setHeader(b"retry-after", b"60")
            return self.error(request, 429, "You have exceeded a secondary rate limit. Please wait a few minutes "
                                            "before you try again.")
        self.remaining -= 1
        self.rate(request, self.remaining)
        if path == "/user":
            return self.json(request, 200, USER)
        if path == "/graphql" and seen["method"] == "POST":
            return self._graphql(request, json.loads(body))
        if not path.startswith("/repos/octo/app/"):
            if path.startswith("/repos/octo/broken/"):
                request.setHeader(b"content-type", b"text/html")
                return b"<html><body>Unicorn! This page is taking too long to load.</body></html>"
            return self.error(request, 404, "Not Found")  # [errors]
        rest = path[len("/repos/octo/app/"):]
        if rest == "issues":
            return self._page(request, args, ISSUES, path)
        if rest.startswith("issues/") and rest.endswith("/comments") and seen["method"] == "POST":
            if token == READ_ONLY:
                return self.error(request, 403, "Resource not accessible by personal access token")  # [errors]
            number = int(rest.split("/")[1])
            comment = {"id": 9000 + len(self.comments), "body": json.loads(body)["body"], "user": USER,
                       "html_url": f"https://github.com/octo/app/issues/{number}#issuecomment-{9000 + len(self.comments)}",
                       "created_at": "2026-11-30T11:00:00Z"}
            self.comments.append(comment)
            return self.json(request, 201, comment)  # [comments]
        if rest.startswith("issues/"):
            found = [i for i in ISSUES if str(i["number"]) == rest.split("/")[1]]
            return self.json(request, 200, found[0]) if found else self.error(request, 404, "Not Found")
        if rest == "pulls":  # [pulls]
            pulls = [{**i, "head": {"ref": f"fix-{i['number']}"}, "base": {"ref": "main"}}
                     for i in ISSUES if "pull_request" in i]
            return self._page(request, args, pulls, path)
        if rest == "commits":
            return self.json(request, 200, COMMITS)
        if rest == "compare/v1.0.0...main":  # [commits]
            return self.json(request, 200, {"status": "ahead", "ahead_by": 3, "behind_by": 0, "total_commits": 3,
                                            "commits": COMMITS, "files": [
                                                {"filename": "pay.py", "status": "modified", "additions": 4,
                                                 "deletions": 1}]})
        if rest in ("actions/runs", "actions/workflows/deploy.yml/runs"):
            runs = [r for r in RUNS if "status" not in args or r["conclusion"] == args["status"][0]]
            return self.json(request, 200, {"total_count": len(runs), "workflow_runs": runs})
        if rest == "actions/runs/42":
            return self.json(request, 200, RUNS[0])
        if rest == "actions/runs/42/jobs":
            return self.json(request, 200, {"total_count": len(JOBS), "jobs": JOBS})
        if rest == "actions/runs/44/jobs":
            return self.json(request, 200, {"total_count": 1, "jobs": [{**JOBS[1], "id": 103, "run_id": 44}]})
        if rest == "actions/runs/43/jobs":  # an answer of an unexpected shape
            return self.json(request, 200, {"total_count": 1, "jobs": "soon"})
        if rest.startswith("actions/jobs/") and rest.endswith("/logs"):  # [jobs] download job logs
            request.setResponseCode(302)
            request.setHeader(b"location", f"http://127.0.0.1:{self.port}/blob/{rest.split('/')[2]}.txt?sig=s1gn3d"
                              .encode())
            return b""
        return self.error(request, 404, "Not Found")

    def _page(self, request: Request, args: dict[str, list[str]], items: list[Any], path: str) -> bytes:
        """[pages]: ``page`` and ``per_page``, Link next/last as GitHub writes them."""
        per = min(int(args.get("per_page", ["30"])[0]), 100)
        page = int(args.get("page", ["1"])[0])
        if "labels" in args:
            wanted = args["labels"][0].split(",")
            items = [i for i in items if all(w in [l["name"] for l in i["labels"]] for w in wanted)]
        last = max(1, -(-len(items) // per))
        base = f"http://localhost:{self.port}{path}?per_page={per}"
        rels = []
        if page < last:
            rels.append(f'<{base}&page={page + 1}>; rel="next"')
        rels.append(f'<{base}&page={last}>; rel="last"')
        request.setHeader(b"link", ", ".join(rels).encode())
        return self.json(request, 200, items[(page - 1) * per:page * per])

    def _graphql(self, request: Request, body: dict[str, Any]) -> bytes:  # [graphql]
        query = body["query"]
        if "nope" in query:
            return self.json(request, 200, {"errors": [{"path": ["query", "nope"], "extensions": {
                "code": "undefinedField", "typeName": "Query", "fieldName": "nope"},
                "locations": [{"line": 1, "column": 3}], "message": "Field 'nope' doesn't exist on type 'Query'"}]})
        return self.json(request, 200, {"data": {"viewer": {"login": USER["login"]},
                                                 "variables": body.get("variables")}})
