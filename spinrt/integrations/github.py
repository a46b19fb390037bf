"""``github`` cells: issues, pull requests, commits, workflow runs and their logs, comments, GraphQL.

Connection: ``url`` (the API root: ``https://api.github.com``, or
``https://HOST/api/v3`` for GitHub Enterprise Server), ``token`` (a personal
access token or an app token, sent as ``Authorization: Bearer``), ``ca``.

The source is one command (its grammar: github_command.py; docs/integrations.rst, "github")::

    issues OWNER/REPO [NUMBER]        pulls OWNER/REPO [NUMBER]
    commits OWNER/REPO                compare OWNER/REPO BASE...HEAD
    runs OWNER/REPO [RUN_ID]          run-log OWNER/REPO RUN_ID
    comment OWNER/REPO NUMBER         (options.body; options.allow_writes)
    graphql                           (the query on the following lines)

with the flags ``--state``, ``--label`` (repeatable), ``--since``,
``--workflow``, ``--status``, ``--branch``, ``--limit`` (also accepted as
cell options of the same names).

API: https://docs.github.com/en/rest (version 2022-11-28): "Issues",
"Pulls", "Commits" (list, compare), "Actions / Workflow runs" and
"Workflow jobs" (download job logs: a 302 to a short-lived URL),
"Issue comments"; "Using pagination in the REST API" (``Link`` headers);
"Rate limits for the REST API" (``x-ratelimit-*``, ``retry-after``);
https://docs.github.com/en/graphql/guides/forming-calls-with-graphql.
"""

from __future__ import annotations

import json
import re
from typing import Any, cast
from urllib.parse import quote, urlsplit

from ..cells.base import Outcome
from .base import IntegrationError, http_fields
from .cell import IntegrationRun
from .connections import Connection
from .github_command import FLAGS, WRITES, parse
from .http import HttpApi, Reply, agents_of, for_test, status_error
from .http_integration import HttpIntegration
from .tables import Table
from .times import parse_time, rfc3339

DEFAULT_LIMIT = 100
MAX_LIMIT = 5000
PAGE = 100  # the REST API's largest per_page
LOG_LINES = 200  # lines of a failed job's log shown (all of it is in the CellResult)
_LINK = re.compile(r'<([^>]*)>\s*;\s*rel="?([^",;]+)"?')


def links(reply: Reply) -> dict[str, str]:
    """``{rel: url}`` of a ``Link`` header (RFC 8288, as GitHub sends it)."""
    return {rel: url for url, rel in _LINK.findall(reply.headers.get("link", ""))}


def rate_limit(reply: Reply) -> dict[str, Any] | None:
    """The ``x-ratelimit-*`` headers: limit, remaining, used (numbers),
    resource, reset (RFC 3339); None when the answer has none."""
    h = reply.headers
    if "x-ratelimit-limit" not in h:
        return None
    number = (lambda k: int(h[k]) if h.get(k, "").isdigit() else None)
    reset = number("x-ratelimit-reset")
    return {"limit": number("x-ratelimit-limit"), "remaining": number("x-ratelimit-remaining"),
            "used": number("x-ratelimit-used"), "resource": h.get("x-ratelimit-resource"),
            "reset": rfc3339(reset) if reset is not None else None}


class GitHubApi(HttpApi):
    """An HttpApi that keeps the last rate-limit headers GitHub sent (one per run)."""

    rate: dict[str, Any] | None = None

    async def call(self, method: str, path: str, **kw: Any) -> Reply:
        reply = await super().call(method, path, **kw)
        self.rate = rate_limit(reply) or self.rate
        return reply


class GitHub(HttpIntegration):
    name = "github"
    description = "GitHub or GitHub Enterprise Server (REST v3 and GraphQL, a token)"
    url_example = "https://api.github.com"
    basic_auth = False
    fields = http_fields(url_example, basic=False)
    test_path = "/user"
    api_class = GitHubApi
    options = {
        "allow_writes": "allow comment and GraphQL mutations (default false)",
        "body": "comment: the comment's text (Markdown)",
        "variables": "graphql: the query's variables (an object)",
        **{f: f"the flag --{f} (see the command)" for f in FLAGS},
    }

    def headers(self, connection: Connection) -> dict[str, str]:
        # https://docs.github.com/en/rest/about-the-rest-api/api-versions
        return {**super().headers(connection), "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28"}

    def test_detail(self, data: Any, api: HttpApi) -> str:
        login = data.get("login", "?") if isinstance(data, dict) else "?"
        return f"GitHub at {api.base_url} as {login}"

    async def execute(self, run: IntegrationRun) -> Outcome:
        command = parse(run.cell.source, dict(run.options))
        writes = command["verb"] in WRITES or (
            command["verb"] == "graphql" and re.match(r"\s*mutation\b", command["query"]) is not None)
        if writes and not run.option("allow_writes", (bool,), False):
            raise IntegrationError("writes_not_allowed", f"'{command['verb']}' changes GitHub: set the cell "
                                                         "option allow_writes: true to run it")
        api = cast(GitHubApi, await self.api(run.services, run.connection, run))
        handler = getattr(self, "_" + command["verb"].replace("-", "_"))
        try:
            value = await handler(run, api, command)
        except IntegrationError as e:
            if e.value is None and api.rate:
                e.value = {"rate_limit": api.rate}
            raise
        if api.rate and api.rate["remaining"] == 0:
            run.warn(f"GitHub's rate limit ({api.rate['limit']} requests, {api.rate['resource'] or 'core'}) is now "
                     f"used up; it resets at {api.rate['reset']}")
        value.update(command=run.cell.source.strip().splitlines()[0], repo=command["repo"], rate_limit=api.rate)
        return Outcome(status="ok", value=value)

    # -- requests ----------------------------------------------------------------------

    async def _call(self, api: HttpApi, method: str, path: str, **kw: Any) -> Reply:
        """One request; rate-limit headers noted; a used-up limit is
        ``rate_limited`` with when it resets, other errors by status."""
        reply = await api.call(method, path, **kw)
        if 200 <= reply.status < 400:
            return reply
        if reply.status in (403, 429):
            retry = reply.headers.get("retry-after", "")
            rate = rate_limit(reply)
            if rate and rate["remaining"] == 0:
                raise IntegrationError(
                    "rate_limited", f"{reply.status} {reply.reason}: GitHub's rate limit ({rate['limit']} requests, "
                    f"{rate['resource'] or 'core'}) is used up; it resets at {rate['reset']}", status=reply.status,
                    value={"rate_limit": rate})
            if retry.isdigit():
                said = status_error(reply).message
                raise IntegrationError("rate_limited", f"{said} (a secondary rate limit: retry after {retry} s)",
                                       status=reply.status, value={"rate_limit": rate, "retry_after": int(retry)})
        raise status_error(reply)

    async def _json(self, api: HttpApi, method: str, path: str, **kw: Any) -> Any:
        return (await self._call(api, method, path, **kw)).json()

    async def _pages(self, api: HttpApi, path: str, params: list[tuple[str, str]], limit: int,
                     key: str | None = None) -> tuple[list[Any], bool]:
        """Items across the pages the ``Link: rel="next"`` headers name, up to
        ``limit``; (items, whether more were left)."""
        items: list[Any] = []
        target: str | None = path
        query: list[tuple[str, str]] | None = [*params, ("per_page", str(min(PAGE, limit)))]
        while target is not None:
            reply = await self._call(api, "GET", target, params=query)
            data = reply.json()
            page = data.get(key) if key and isinstance(data, dict) else data
            if not isinstance(page, list):
                raise IntegrationError("bad_response", f"GitHub answered {path} with "
                                                       f"{type(page).__name__}, not a list{' in ' + key if key else ''}")
            items.extend(page)
            following = links(reply).get("next")
            if len(items) >= limit:
                return items[:limit], following is not None or len(items) > limit
            if following is None:
                break
            if not following.startswith(api.base_url + "/"):
                # Never send the token anywhere but the connection's API root.
                raise IntegrationError("bad_response", "GitHub's Link header points outside the connection's API "
                                                       "root; not followed")
            target, query = following[len(api.base_url):], None
        return items, False

    # -- commands ----------------------------------------------------------------------

    def _limit(self, command: dict[str, Any]) -> int:
        value = command["flags"].get("limit", DEFAULT_LIMIT)
        if isinstance(value, bool) or not str(value).isdigit() or not 1 <= int(value) <= MAX_LIMIT:
            raise IntegrationError("bad_option", f"--limit must be a whole number from 1 to {MAX_LIMIT}")
        return int(value)

    def _since(self, run: IntegrationRun, command: dict[str, Any]) -> list[tuple[str, str]]:
        if command["flags"].get("since") is None:
            return []
        try:
            when = parse_time(command["flags"]["since"], "since", run.reactor.seconds())
        except ValueError as e:
            raise IntegrationError("bad_option", str(e).replace("options.since", "--since")) from None
        return [("since", rfc3339(when).replace(".000Z", "Z"))]

    def _listing(self, run: IntegrationRun, items: list[Any], more: bool, table: Table, what: str) -> dict[str, Any]:
        note = f"{len(items)} {what}" + (" (more on GitHub: raise --limit)" if more else "")
        run.table(table, note=note)
        return {"result": items, "count": len(items), "truncated": more}

    async def _issues(self, run: IntegrationRun, api: HttpApi, command: dict[str, Any],
                      pulls: bool = False) -> dict[str, Any]:
        repo, flags = command["repo"], command["flags"]
        kind = "pulls" if pulls else "issues"
        if command["args"]:
            item = await self._json(api, "GET", f"/repos/{repo}/{kind}/{command['args'][0]}")
            head = f"#{item.get('number')} {item.get('title', '')} [{item.get('state', '')}]"
            by = (item.get("user") or {}).get("login", "")
            run.show({"text/plain": f"{head} by {by}, updated {item.get('updated_at', '')}\n"
                                    f"{item.get('html_url', '')}\n\n{item.get('body') or ''}".rstrip()})
            return {"result": item}
        params = [("state", str(flags.get("state", "open")))] + self._since(run, command)
        if flags.get("label"):
            params.append(("labels", ",".join(flags["label"])))
        items, more = await self._pages(api, f"/repos/{repo}/{kind}", params, self._limit(command))
        if not pulls:  # the issues listing holds pull requests too (GitHub's "Issues" docs)
            items = [i for i in items if "pull_request" not in i]
        rows = [[i.get("number"), i.get("title"), i.get("state"),
                 ", ".join(l.get("name", "") for l in i.get("labels") or []),
                 (i.get("user") or {}).get("login"), i.get("updated_at")] for i in items]
        columns = ["NUMBER", "TITLE", "STATE", "LABELS", "AUTHOR", "UPDATED"]
        if pulls:
            columns[3] = "HEAD"
            for row, i in zip(rows, items):
                row[3] = (i.get("head") or {}).get("ref")
        return self._listing(run, items, more, Table(columns, rows, empty=f"No {kind} found."),
                             "pull requests" if pulls else "issues")

    async def _pulls(self, run: IntegrationRun, api: HttpApi, command: dict[str, Any]) -> dict[str, Any]:
        return await self._issues(run, api, command, pulls=True)

    def _commit_rows(self, commits: list[Any]) -> list[list[Any]]:
        return [[(c.get("sha") or "")[:7], ((c.get("commit") or {}).get("author") or {}).get("name"),
                 ((c.get("commit") or {}).get("author") or {}).get("date"),
                 ((c.get("commit") or {}).get("message") or "").split("\n", 1)[0]] for c in commits]

    async def _commits(self, run: IntegrationRun, api: HttpApi, command: dict[str, Any]) -> dict[str, Any]:
        params = self._since(run, command)
        if command["flags"].get("branch"):
            params.append(("sha", str(command["flags"]["branch"])))
        items, more = await self._pages(api, f"/repos/{command['repo']}/commits", params, self._limit(command))
        table = Table(["SHA", "AUTHOR", "DATE", "MESSAGE"], self._commit_rows(items), empty="No commits.")
        return self._listing(run, items, more, table, "commits")

    async def _compare(self, run: IntegrationRun, api: HttpApi, command: dict[str, Any]) -> dict[str, Any]:
        basehead = quote(command["args"][0], safe=".")
        data = await self._json(api, "GET", f"/repos/{command['repo']}/compare/{basehead}")
        if not isinstance(data, dict) or not isinstance(data.get("commits"), list):
            raise IntegrationError("bad_response", "GitHub's compare answer has no list of commits")
        run.table(Table(["SHA", "AUTHOR", "DATE", "MESSAGE"], self._commit_rows(data["commits"]), empty="No commits."),
                  note=f"{command['args'][0]}: {data.get('status')}, {data.get('ahead_by')} ahead, "
                       f"{data.get('behind_by')} behind")
        files = data.get("files") or []
        if files:
            run.table(Table(["FILE", "STATUS", "+", "-"], [[f.get("filename"), f.get("status"), f.get("additions"),
                                                           f.get("deletions")] for f in files]))
        return {"result": data}

    async def _runs(self, run: IntegrationRun, api: HttpApi, command: dict[str, Any]) -> dict[str, Any]:
        repo, flags = command["repo"], command["flags"]
        if command["args"]:
            return await self._one_run(run, api, repo, command["args"][0])
        path = f"/repos/{repo}/actions/runs"
        if flags.get("workflow"):
            path = f"/repos/{repo}/actions/workflows/{quote(str(flags['workflow']), safe='')}/runs"
        params = [(k, str(flags[k])) for k in ("status", "branch") if flags.get(k)]
        since = self._since(run, command)
        if since:
            params.append(("created", ">=" + since[0][1]))
        items, more = await self._pages(api, path, params, self._limit(command), key="workflow_runs")
        rows = [[r.get("id"), r.get("name"), r.get("head_branch"), r.get("event"), r.get("status"),
                 r.get("conclusion"), r.get("created_at")] for r in items]
        table = Table(["ID", "WORKFLOW", "BRANCH", "EVENT", "STATUS", "CONCLUSION", "CREATED"], rows,
                      empty="No workflow runs found.")
        return self._listing(run, items, more, table, "workflow runs")

    async def _jobs(self, api: HttpApi, repo: str, run_id: str) -> list[dict[str, Any]]:
        jobs, _ = await self._pages(api, f"/repos/{repo}/actions/runs/{run_id}/jobs", [], MAX_LIMIT, key="jobs")
        return jobs

    async def _one_run(self, run: IntegrationRun, api: HttpApi, repo: str, run_id: str) -> dict[str, Any]:
        data = await self._json(api, "GET", f"/repos/{repo}/actions/runs/{run_id}")
        jobs = await self._jobs(api, repo, run_id)
        rows = [[j.get("name"), j.get("status"), j.get("conclusion"), j.get("started_at"),
                 ", ".join(s.get("name", "") for s in j.get("steps") or [] if s.get("conclusion") == "failure")]
                for j in jobs]
        run.table(Table(["JOB", "STATUS", "CONCLUSION", "STARTED", "FAILED STEPS"], rows, empty="No jobs."),
                  note=f"run {data.get('id')} of {data.get('name')} on {data.get('head_branch')}: "
                       f"{data.get('status')}, {data.get('conclusion')} ({data.get('html_url')})")
        return {"result": {**data, "jobs": jobs}}

    async def _run_log(self, run: IntegrationRun, api: HttpApi, command: dict[str, Any]) -> dict[str, Any]:
        repo, run_id = command["repo"], command["args"][0]
        jobs = await self._jobs(api, repo, run_id)
        failed = [j for j in jobs if j.get("conclusion") in ("failure", "timed_out", "cancelled")] or jobs
        if not failed:
            raise IntegrationError("not_found", f"run {run_id} of {repo} has no jobs")
        logs = []
        for job in failed:
            text = await self._job_log(run, api, repo, job)
            steps = [s.get("name") for s in job.get("steps") or [] if s.get("conclusion") == "failure"]
            lines = text.splitlines()
            errors = [line for line in lines if "##[error]" in line]
            shown = lines[-LOG_LINES:]
            head = (f"job {job.get('name')!r} ({job.get('conclusion')}), failing step: {', '.join(steps) or 'none'}"
                    f"; the last {len(shown)} of {len(lines)} log lines:")
            run.show({"text/plain": head + "\n" + "\n".join(shown)})
            logs.append({"job_id": job.get("id"), "job": job.get("name"), "conclusion": job.get("conclusion"),
                         "failed_steps": steps, "errors": errors, "log": text})
        return {"result": logs}

    async def _job_log(self, run: IntegrationRun, api: HttpApi, repo: str, job: dict[str, Any]) -> str:
        """A job's log: GitHub answers 302 with a short-lived URL on another
        host, fetched without the token ("Download job logs for a workflow run")."""
        reply = await self._call(api, "GET", f"/repos/{repo}/actions/jobs/{job.get('id')}/logs")
        if reply.status not in (301, 302, 303, 307, 308):
            return reply.text
        location = reply.headers.get("location", "")
        parts = urlsplit(location)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise IntegrationError("bad_response", "GitHub's redirect to the job log has no absolute URL")
        # The connection's own CA still applies when the storage is its host (GitHub Enterprise Server).
        same_host = parts.netloc == urlsplit(api.base_url).netloc
        where = HttpApi(run.services, f"{parts.scheme}://{parts.netloc}",
                        agent=api.agent if same_host else agents_of(run.services).default(),
                        what="GitHub's log storage")
        run.track(where)
        fetched = await where.call("GET", location[len(where.base_url):] or "/")
        if not 200 <= fetched.status < 300:
            raise status_error(fetched)
        return fetched.text

    async def _comment(self, run: IntegrationRun, api: HttpApi, command: dict[str, Any]) -> dict[str, Any]:
        body = run.option("body")
        if not body or not body.strip():
            raise IntegrationError("bad_option", "comment needs options.body, the comment's text")
        number = command["args"][0]
        data = await self._json(api, "POST", f"/repos/{command['repo']}/issues/{number}/comments",
                                json_body={"body": body})
        run.show({"text/plain": f"commented on {command['repo']}#{number}: {data.get('html_url', '')}"})
        return {"result": data}

    async def _graphql(self, run: IntegrationRun, api: HttpApi, command: dict[str, Any]) -> dict[str, Any]:
        if not command["query"]:
            raise IntegrationError("bad_command", "graphql: the query goes on the lines after 'graphql'")
        variables = run.option("variables", (dict,), {})
        graph = api
        if api.base_url.endswith("/api/v3"):  # GitHub Enterprise Server: REST at /api/v3, GraphQL at /api/graphql
            graph = run.track(GitHubApi(run.services, api.base_url[:-len("/v3")], headers=api.headers,
                                        agent=api.agent, what=api.what))
        data = await self._json(graph, "POST", "/graphql", json_body={"query": command["query"], "variables": variables})
        if not isinstance(data, dict):
            raise IntegrationError("bad_response", "GitHub's GraphQL answer is not an object")
        if data.get("errors"):
            said = "; ".join(str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in data["errors"])
            raise IntegrationError("graphql_error", said[:500], value={"result": data.get("data"),
                                                                       "errors": data["errors"]})
        run.show({"text/plain": json.dumps(data.get("data"), indent=2, ensure_ascii=False),
                  "application/json": data.get("data")})
        return {"result": data.get("data")}

    async def test(self, connection: Connection, services: Any) -> str:
        api = await self.api(services, connection)
        try:
            reply = await self._call(api, "GET", "/user")
        except IntegrationError as e:
            raise for_test(e) from None
        detail = self.test_detail(reply.json(), api)
        rate = rate_limit(reply)
        return detail + (f" ({rate['remaining']} of {rate['limit']} requests left)" if rate else "")


github = GitHub()
