"""``jenkins`` cells: trigger a build and follow it, a build's status and log, stop a build.

Connection: ``url`` (Jenkins' root, e.g. ``https://jenkins.example`` or
``https://host/jenkins``), ``username`` and ``token`` (an API token:
User, Security, API Token; sent as HTTP basic authentication, as Jenkins
asks), ``ca``.

The source is one command (docs/integrations.rst, "jenkins")::

    build JOB [NAME=VALUE ...]   (options.allow_writes) queue, wait, stream the console, report the result
    status JOB [NUMBER]          the build (default: the last builds of the job)
    log JOB NUMBER               the console text, followed until the build finishes
    stop JOB NUMBER              (options.allow_writes)

``JOB`` may name a job in folders: ``folder/sub/job``.

API: https://www.jenkins.io/doc/book/using/remote-access-api/ ("Submitting
jobs": POST job/NAME/build or buildWithParameters, 201 with the queue
item's Location; "CSRF protection": GET crumbIssuer/api/json, the crumb
in its crumbRequestField header, same web session);
https://www.jenkins.io/doc/book/security/csrf-protection/; the queue item
(``queue/item/ID/api/json``: ``why``, ``cancelled``, ``executable``);
progressive console output (``logText/progressiveText?start=N``: the text
from byte N, ``X-Text-Size`` the next start, ``X-More-Data: true`` while
the build runs); ``job/NAME/NUMBER/api/json`` (``building``, ``result``,
``duration`` in ms); ``job/NAME/NUMBER/stop``.
"""

from __future__ import annotations

import re
import shlex
from typing import Any
from urllib.parse import quote, urlsplit

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.logger import Logger

from ..cells.base import Outcome
from .base import TOKEN, URL, USERNAME, CA, IntegrationError
from .cell import IntegrationRun
from .connections import Connection
from .http import HttpApi, Reply, authorization, status_error
from .http_integration import HttpIntegration
from .tables import Table
from .times import parse_duration, rfc3339

COMMANDS = {"build": (1, None), "status": (1, 2), "log": (2, 2), "stop": (2, 2)}
WRITES = ("build", "stop")
_log = Logger()
LOG_KEPT = 2000  # console lines kept in the CellResult (the output has them all)
_PARAM = re.compile(r"([A-Za-z_][A-Za-z0-9_.-]*)=(.*)\Z", re.S)


def _bad(message: str) -> IntegrationError:
    return IntegrationError("bad_command", message + " (see docs/integrations.rst, jenkins)")


def parse(source: str) -> dict[str, Any]:
    """``{verb, job, number, params}`` of a cell's source, or bad_command."""
    lines = [line for line in source.strip().splitlines() if line.strip() and not line.strip().startswith("#")]
    if len(lines) != 1:
        raise _bad("the source is one command, e.g. 'build deploy-checkout VERSION=1.4.2'")
    try:
        words = shlex.split(lines[0], comments=True)
    except ValueError as e:
        raise _bad(f"cannot read the command: {e}") from None
    verb = words[0] if words else ""
    if verb not in COMMANDS:
        raise _bad(f"unknown command {verb[:40]!r}; one of {', '.join(COMMANDS)}")
    low, high = COMMANDS[verb]
    args = words[1:]
    if verb != "build" and not low <= len(args) <= high:
        usage = {"status": "status JOB [NUMBER]", "log": "log JOB NUMBER", "stop": "stop JOB NUMBER"}[verb]
        raise _bad(f"usage: {usage}")
    if not args or "=" in args[0] or args[0].strip("/") == "":
        raise _bad(f"{verb} needs a job name first")
    job, rest = args[0].strip("/"), args[1:]
    params: list[tuple[str, str]] = []
    number = None
    if verb == "build":
        for word in rest:
            found = _PARAM.match(word)
            if not found:
                raise _bad(f"build takes NAME=VALUE parameters, not {word[:40]!r}")
            params.append((found.group(1), found.group(2)))
    elif rest:
        if not rest[0].isdigit():
            raise _bad(f"{verb}: the build number must be a whole number, not {rest[0][:40]!r}")
        number = int(rest[0])
    return {"verb": verb, "job": job, "number": number, "params": params}


def job_path(job: str) -> str:
    """``/job/a/job/b`` for ``a/b`` (a job in a folder), each name quoted."""
    return "".join(f"/job/{quote(part, safe='')}" for part in job.split("/") if part)


class Jenkins(HttpIntegration):
    name = "jenkins"
    description = "A Jenkins controller (a user and an API token): trigger, follow, stop builds"
    url_example = "https://jenkins.example"
    fields = (attrs.evolve(URL, description="Jenkins' root URL, e.g. https://jenkins.example"),
              attrs.evolve(USERNAME, description="The Jenkins user the API token belongs to"),
              attrs.evolve(TOKEN, description="The user's API token (prefer a reference: {{secret:NAME}})"),
              CA)
    test_path = "/api/json"
    default_timeout = 3600.0
    options = {
        "allow_writes": "allow build and stop (default false)",
        "poll_s": "seconds between polls of the queue and the console (default 2)",
    }

    def check(self, fields: Any) -> None:
        if bool(fields.get("username")) != bool(fields.get("token")):
            raise IntegrationError("bad_request", "'username' and 'token' (the user's API token) go together")
        # The token is the user's password here: checked as HTTP basic credentials.
        super().check({**{k: v for k, v in fields.items() if k != "token"}, "password": fields.get("token")})

    def headers(self, connection: Connection) -> dict[str, str]:
        user = connection.get("username")
        return authorization(basic=(user, connection.get("token") or "")) if user else {}

    def test_detail(self, data: Any, api: HttpApi) -> str:
        jobs = len(data.get("jobs") or []) if isinstance(data, dict) else 0
        return f"Jenkins at {api.base_url} ({jobs} jobs at the top level)"

    async def execute(self, run: IntegrationRun) -> Outcome:
        command = parse(run.cell.source)
        if command["verb"] in WRITES and not run.option("allow_writes", (bool,), False):
            raise IntegrationError("writes_not_allowed", f"'{command['verb']}' changes Jenkins: set the cell option "
                                                         "allow_writes: true to run it")
        try:
            poll = parse_duration(run.options.get("poll_s", 2), "poll_s")
        except ValueError as e:
            raise IntegrationError("bad_option", str(e)) from None
        api = await self.api(run.services, run.connection, run)
        handler = getattr(self, "_" + command["verb"])
        value = await handler(run, api, command, poll)
        value.update(command=run.cell.source.strip(), job=command["job"])
        return Outcome(status="ok", value=value)

    # -- requests ----------------------------------------------------------------------

    async def _json(self, api: HttpApi, path: str, what: str) -> dict[str, Any]:
        data = await api.get_json(path)
        if not isinstance(data, dict):
            raise IntegrationError("bad_response", f"Jenkins answered {what} with {type(data).__name__}, not an object")
        return data

    async def _post(self, api: HttpApi, path: str, form: list[tuple[str, str]] | None = None) -> Reply:
        """A POST with the CSRF crumb when Jenkins issues one (404 from the
        crumb issuer: CSRF protection is off) and the crumb's web session."""
        headers: dict[str, str] = {}
        reply = await api.call("GET", "/crumbIssuer/api/json")
        if reply.status == 200:
            crumb = reply.json()
            if not isinstance(crumb, dict) or not isinstance(crumb.get("crumb"), str):
                raise IntegrationError("bad_response", "Jenkins' crumb issuer answered without a crumb")
            headers[str(crumb.get("crumbRequestField") or "Jenkins-Crumb")] = crumb["crumb"]
            cookie = reply.headers.get("set-cookie", "").split(";", 1)[0]
            if cookie:
                headers["Cookie"] = cookie
        elif reply.status != 404:
            raise status_error(reply)
        sent = await api.call("POST", path, data=b"" if not form else None, form=dict(form) if form else None,
                              headers=headers)
        if not 200 <= sent.status < 400:
            raise status_error(sent)
        return sent

    # -- commands ----------------------------------------------------------------------

    async def _build(self, run: IntegrationRun, api: HttpApi, command: dict[str, Any], poll: float) -> dict[str, Any]:
        path = job_path(command["job"]) + ("/buildWithParameters" if command["params"] else "/build")
        reply = await self._post(api, path, command["params"])
        location = reply.headers.get("location", "")
        found = re.search(r"/queue/item/([0-9]+)/?\Z", urlsplit(location).path)
        if not found:
            raise IntegrationError("bad_response", f"Jenkins queued the build without a queue item's Location "
                                                   f"({reply.status} {reply.reason})")
        item_id = found.group(1)
        run.show({"text/plain": f"queued {command['job']} (queue item {item_id})"})
        said = None
        while True:
            item = await self._json(api, f"/queue/item/{item_id}/api/json", "the queue item")
            if item.get("cancelled"):
                raise IntegrationError("build_cancelled", f"the queue item {item_id} of {command['job']} was "
                                                          "cancelled before it started")
            executable = item.get("executable")
            if isinstance(executable, dict) and isinstance(executable.get("number"), int):
                break
            if item.get("why") and item["why"] != said:
                said = item["why"]
                run.warn(f"waiting: {said}")
            await deferLater(run.reactor, poll)
        number = executable["number"]
        value = await self._follow(run, api, command["job"], number, poll, stop_on_cancel=True)
        value["queue_item"] = int(item_id)
        return value

    async def _follow(self, run: IntegrationRun, api: HttpApi, job: str, number: int, poll: float,
                      stop_on_cancel: bool = False) -> dict[str, Any]:
        """Stream the console until the build finishes, then its result
        (``build_failed`` with the build in the error's value unless SUCCESS)."""
        base = f"{job_path(job)}/{number}"
        if stop_on_cancel:
            run.ctx.on_interrupt(lambda reason: self._stop_later(run, job, number) if reason == "cancelled" else None)
        run.ctx.display({"text/plain": f"{job} #{number}: {api.base_url}{base}/console"})
        start, text = 0, []
        while True:
            reply = await api.call("GET", f"{base}/logText/progressiveText", params=[("start", str(start))])
            if not 200 <= reply.status < 300:
                raise status_error(reply)
            if reply.text:
                run.ctx.stream("stdout", reply.text)
                text.append(reply.text)
            size = reply.headers.get("x-text-size", "")
            if not size.isdigit():
                raise IntegrationError("bad_response", "Jenkins' progressive console answer has no X-Text-Size")
            start = int(size)
            if reply.headers.get("x-more-data", "").lower() != "true":
                break
            await deferLater(run.reactor, poll)
        build = await self._json(api, f"{base}/api/json", "the build")
        while build.get("building"):  # the console ends a moment before the build does
            await deferLater(run.reactor, poll)
            build = await self._json(api, f"{base}/api/json", "the build")
        lines = "".join(text).splitlines()
        value = {"result": build, "number": number, "build_result": build.get("result"),
                 "log": "\n".join(lines[-LOG_KEPT:])}
        summary = (f"{job} #{number} finished: {build.get('result')} "
                   f"in {(build.get('duration') or 0) / 1000:.1f} s ({build.get('url') or api.base_url + base})")
        run.show({"text/plain": summary})
        if build.get("result") != "SUCCESS":
            raise IntegrationError("build_failed", summary, value={**value, "text": summary})
        return value

    def _stop_later(self, run: IntegrationRun, job: str, number: int) -> None:
        """The cell was cancelled while following a build it started: stop
        the build too, on a request of its own (the run's are aborted)."""
        async def stop() -> None:
            api = await self.api(run.services, run.connection)
            await self._post(api, f"{job_path(job)}/{number}/stop")

        def failed(failure: Any) -> None:  # the run has ended: the runtime's log is left to tell
            _log.failure("could not stop {job} #{number} after its cell was cancelled", failure, job=job, number=number)

        Deferred.fromCoroutine(stop()).addErrback(failed)

    async def _status(self, run: IntegrationRun, api: HttpApi, command: dict[str, Any], poll: float) -> dict[str, Any]:
        path = job_path(command["job"])
        columns = ["NUMBER", "RESULT", "BUILDING", "STARTED", "DURATION", "URL"]

        def row(b: dict[str, Any]) -> list[Any]:
            started = rfc3339(b["timestamp"] / 1000) if isinstance(b.get("timestamp"), (int, float)) else None
            return [b.get("number"), b.get("result"), b.get("building"), started,
                    f"{(b.get('duration') or 0) / 1000:.1f} s", b.get("url")]

        if command["number"] is not None:
            build = await self._json(api, f"{path}/{command['number']}/api/json", "the build")
            run.table(Table(columns, [row(build)]))
            return {"result": build}
        tree = "builds[number,result,building,timestamp,duration,url]{0,20}"
        data = await self._json(api, f"{path}/api/json?tree={quote(tree, safe='[],{}')}", "the job")
        builds = data.get("builds")
        if not isinstance(builds, list):
            raise IntegrationError("bad_response", "Jenkins' job answer has no list of builds")
        run.table(Table(columns, [row(b) for b in builds if isinstance(b, dict)], empty="No builds."))
        return {"result": builds}

    async def _log(self, run: IntegrationRun, api: HttpApi, command: dict[str, Any], poll: float) -> dict[str, Any]:
        return await self._follow(run, api, command["job"], command["number"], poll)

    async def _stop(self, run: IntegrationRun, api: HttpApi, command: dict[str, Any], poll: float) -> dict[str, Any]:
        await self._post(api, f"{job_path(command['job'])}/{command['number']}/stop")
        run.show({"text/plain": f"asked Jenkins to stop {command['job']} #{command['number']}"})
        return {"result": {"stopped": command["number"]}}


jenkins = Jenkins()
