"""A stand-in Jenkins remote access API (twisted.web) answering as Jenkins
documents it; no Jenkins can be installed here. Sources, cited per response:

- [remote] https://www.jenkins.io/doc/book/using/remote-access-api/ ("Submitting jobs":
  POST job/NAME/build, job/NAME/buildWithParameters, answered 201 Created with
  "Location: <root>/queue/item/ID/"; the JSON API at .../api/json, ``tree`` filters)
- [auth] https://www.jenkins.io/doc/book/using/using-credentials/ and
  https://www.jenkins.io/doc/book/system-administration/authenticating-scripted-clients/
  (user name + API token by HTTP basic authentication; a bad token: 401 with Jenkins'
  error page "Invalid password/token for user: NAME")
- [csrf] https://www.jenkins.io/doc/book/security/csrf-protection/ (GET crumbIssuer/api/json:
  {"_class", "crumb", "crumbRequestField": "Jenkins-Crumb"}, valid in the web session of the
  request that got it; a POST without it: 403 "No valid crumb was included in the request")
- [queue] hudson.model.Queue.Item's API (https://javadoc.jenkins.io/hudson/model/Queue.Item.html,
  exported as queue/item/ID/api/json: "why", "blocked", "buildable", "cancelled" (LeftItem),
  "executable": {"number", "url"} once it became a build)
- [console] progressive console text, hudson.console.AnnotatedLargeText
  (https://javadoc.jenkins.io/hudson/console/AnnotatedLargeText.html, doProgressiveText):
  logText/progressiveText?start=N answers the text from byte N with "X-Text-Size" (the next
  start) and "X-More-Data: true" while the build is still writing
- [build] hudson.model.Run's API (job/NAME/NUMBER/api/json: number, url, building, result,
  duration (ms), timestamp (ms)); job/NAME/NUMBER/stop (POST, answered 302 to the build)
"""

from __future__ import annotations

import base64
from typing import Any

from twisted.web.server import NOT_DONE_YET, Request

from .fake_api import FakeApi

USER = "ops"
TOKEN = "11a7c0ffee0123456789abcdef012345"
CRUMB = "5f2e1d9c8b7a6f5e4d3c2b1a09f8e7d6"
SESSION = "JSESSIONID.4d3c2b1a=node0abc123def456.node0"
CONSOLE = ["Started by user ops\n", "Rolling back checkout to 1.4.1\n", "kubectl rollout undo deploy/checkout\n",
           "Finished: SUCCESS\n"]


class FakeJenkins(FakeApi):
    port = 0

    def __init__(self) -> None:
        super().__init__()
        self.queued: list[dict[str, Any]] = []  # {"job", "params", "polls"}
        self.stopped: list[str] = []
        self.open_streams = 0
        self.csrf = True  # CSRF protection on (Jenkins' default)
        self.crumbs: list[str | None] = []  # the Jenkins-Crumb header of each POST

    def page(self, request: Request, code: int, title: str) -> bytes:
        """Jenkins' own error page (HTML)."""
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"text/html;charset=utf-8")
        return (f"<html><head><title>Error {code} {title}</title></head><body><h2>HTTP ERROR {code} {title}</h2>"
                f"<table><tr><th>URI:</th><td>{request.path.decode()}</td></tr></table></body></html>").encode()

    def route(self, request: Request, seen: dict[str, Any], body: bytes) -> Any:
        path, method = seen["path"], seen["method"]
        request.setHeader(b"x-jenkins", b"2.479.1")
        expected = "Basic " + base64.b64encode(f"{USER}:{TOKEN}".encode()).decode()
        if seen["authorization"] != expected:  # [auth]
            request.setHeader(b"www-authenticate", b'Basic realm="Jenkins"')
            return self.page(request, 401, f"Invalid password/token for user: {USER}")
        if path == "/api/json":  # [remote]
            return self.json(request, 200, {"_class": "hudson.model.Hudson", "mode": "NORMAL",
                                            "jobs": [{"_class": "com.cloudbees.hudson.plugins.folder.Folder",
                                                      "name": "ops", "url": f"http://localhost:{self.port}/job/ops/"}]})
        if method == "POST":
            self.crumbs.append(request.getHeader("jenkins-crumb"))
        if not self.csrf and path == "/crumbIssuer/api/json":  # [csrf]: protection off, no crumb issuer
            return self.page(request, 404, "Not Found")
        if path == "/crumbIssuer/api/json":  # [csrf]
            request.setHeader(b"set-cookie", f"{SESSION}; Path=/; HttpOnly".encode())
            return self.json(request, 200, {"_class": "hudson.security.csrf.DefaultCrumbIssuer", "crumb": CRUMB,
                                            "crumbRequestField": "Jenkins-Crumb"})
        if self.csrf and method == "POST" and (request.getHeader("jenkins-crumb") != CRUMB
                                 or request.getHeader("cookie") != SESSION):
            return self.page(request, 403, "No valid crumb was included in the request")  # [csrf]
        parts = path.strip("/").split("/")
        if path.startswith("/queue/item/") and path.endswith("/api/json"):
            return self._queue_item(request, int(parts[2]))
        if not path.startswith("/job/ops/job/") or parts[3] not in ("rollback", "fails", "slow", "broken"):
            return self.page(request, 404, "Not Found")
        job = parts[3]
        tail = parts[4:]
        if tail in (["build"], ["buildWithParameters"]) and method == "POST":  # [remote]
            params = {k: v[0] for k, v in seen["args"].items()}
            self.queued.append({"job": job, "params": params, "polls": 0})
            request.setResponseCode(201)
            if job != "broken":
                request.setHeader(b"location", f"http://localhost:{self.port}/queue/item/{len(self.queued)}/".encode())
            return b""
        if tail == ["api", "json"]:  # [remote] with tree=builds[...]
            return self.json(request, 200, {"_class": "hudson.model.FreeStyleProject", "builds": [
                self._build(job, 8), self._build(job, 7)]})
        if len(tail) >= 1 and tail[0].isdigit():
            number = int(tail[0])
            if tail[1:] == ["api", "json"]:
                return self.json(request, 200, self._build(job, number))
            if tail[1:] == ["stop"] and method == "POST":  # [build]
                self.stopped.append(f"{job}#{number}")
                request.setResponseCode(302)
                request.setHeader(b"location", f"http://localhost:{self.port}{path[:-len('stop')]}".encode())
                return b""
            if tail[1:] == ["logText", "progressiveText"]:
                return self._console(request, job, int(seen["args"].get("start", ["0"])[0]))
        return self.page(request, 404, "Not Found")

    def _queue_item(self, request: Request, item: int) -> bytes:  # [queue]
        if not 1 <= item <= len(self.queued):
            return self.page(request, 404, "Not Found")
        entry = self.queued[item - 1]
        entry["polls"] += 1
        common = {"_class": "hudson.model.Queue$WaitingItem", "id": item, "blocked": False,
                  "task": {"name": entry["job"]}, "params": "".join(f"\n{k}={v}" for k, v in entry["params"].items())}
        if entry["polls"] == 1:
            return self.json(request, 200, {**common, "buildable": True, "executable": None,
                                            "why": "Waiting for next available executor"})
        return self.json(request, 200, {**common, "_class": "hudson.model.Queue$LeftItem", "cancelled": False,
                                        "executable": {"_class": "hudson.model.FreeStyleBuild", "number": 8,
                                                       "url": f"http://localhost:{self.port}/job/ops/job/"
                                                              f"{entry['job']}/8/"}})

    def _build(self, job: str, number: int) -> dict[str, Any]:  # [build]
        running = job == "slow" and f"slow#{number}" not in self.stopped
        return {"_class": "hudson.model.FreeStyleBuild", "number": number, "building": running,
                "result": None if running else ("FAILURE" if job == "fails" else "SUCCESS"),
                "duration": 0 if running else 12345, "timestamp": 1796032800000,
                "url": f"http://localhost:{self.port}/job/ops/job/{job}/{number}/"}

    def _console(self, request: Request, job: str, start: int) -> Any:  # [console]
        request.setHeader(b"content-type", b"text/plain;charset=utf-8")
        if job == "slow":  # a build that writes one line, then nothing until it is stopped
            self.open_streams += 1
            request.notifyFinish().addBoth(lambda _: setattr(self, "open_streams", self.open_streams - 1))
            text = b"" if start else b"Waiting for the canary\n"
            request.setHeader(b"x-text-size", str(start + len(text)).encode())
            request.setHeader(b"x-more-data", b"true")
            if start:
                return NOT_DONE_YET  # a slow answer: held open until the client goes away
            return text
        full = "".join(CONSOLE).encode()
        # One line per request, as a build writes them.
        end = full.find(b"\n", start) + 1 if start < len(full) else len(full)
        chunk = full[start:end]
        request.setHeader(b"x-text-size", str(end).encode())
        if end < len(full):
            request.setHeader(b"x-more-data", b"true")
        return chunk
