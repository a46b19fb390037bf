"""A stand-in splunkd REST API (twisted.web, over TLS with its own CA as
splunkd's management port is) answering as Splunk documents it; no Splunk can
be installed here. Sources, cited per response:

- [auth] https://docs.splunk.com/Documentation/Splunk/latest/RESTUM/RESTusing
  ("Authentication and authorization": "Authorization: Bearer <token>" for
  authentication tokens, or HTTP basic; unauthenticated: 401 with
  {"messages": [{"type": "WARN", "text": "call not properly authenticated"}]} in JSON mode)
- [info] https://docs.splunk.com/Documentation/Splunk/latest/RESTREF/RESTsystem#server.2Finfo
  ({"entry": [{"name": "server-info", "content": {"version", "serverName", ...}}]})
- [export] https://docs.splunk.com/Documentation/Splunk/latest/RESTREF/RESTsearch#search.2Fjobs.2Fexport
  (POST search, earliest_time, latest_time, output_mode=json: the results streamed as the
  search finds them, one JSON object per line: {"preview": false, "offset": N, "result": {...}},
  the last one with "lastrow": true; messages as {"messages": [{"type", "text"}]}; a search
  that does not parse: 400 {"messages": [{"type": "FATAL", "text": "..."}]})
"""

from __future__ import annotations

import base64
import json
from typing import Any

from twisted.internet import reactor
from twisted.web.server import NOT_DONE_YET, Request

from .fake_api import FakeApi

TOKEN = "eyJraWQiOiJzcGx1bmsuc2VjcmV0IiwiYWxnIjoiSFM1MTIifQ.c3BsdW5rLXRva2Vu.c2lnbmF0dXJl"
USER, PASSWORD = "admin", "changeme-0123456789"

EVENTS = [{"_time": f"2026-11-30T10:4{n}:00.000+00:00", "host": f"web-{n}", "source": "/var/log/nginx/access.log",
           "sourcetype": "nginx", "_raw": f"GET /pay 502 {n}", "status": "502", "_cd": f"0:{n}", "_bkt": "web~0",
           "index": "web"} for n in range(4)]


def line(offset: int, event: dict[str, Any], last: bool = False) -> bytes:
    item: dict[str, Any] = {"preview": False, "offset": offset, "result": event}
    if last:
        item["lastrow"] = True
    return json.dumps(item).encode() + b"\n"


class FakeSplunk(FakeApi):
    def __init__(self) -> None:
        super().__init__()
        self.open_streams = 0

    def route(self, request: Request, seen: dict[str, Any], body: bytes) -> Any:
        basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if seen["authorization"] not in (f"Bearer {TOKEN}", basic):  # [auth]
            return self.json(request, 401, {"messages": [{"type": "WARN", "text": "call not properly authenticated"}]})
        if seen["path"] == "/services/server/info":  # [info]
            return self.json(request, 200, {"entry": [{"name": "server-info", "content": {
                "version": "9.3.1", "serverName": "splunk-1", "build": "0b8d769cb912"}}]})
        if seen["path"] != "/services/search/jobs/export" or seen["method"] != "POST":
            return self.json(request, 404, {"messages": [{"type": "ERROR", "text": "Not Found"}]})
        search = seen["args"]["search"][0]
        if "badcommand" in search:  # [export]
            return self.json(request, 400, {"messages": [{"type": "FATAL", "text":
                                                          "Unknown search command 'badcommand'."}]})
        request.setHeader(b"content-type", b"application/json; charset=UTF-8")
        if "garbage" in search:
            return b"<html>maintenance</html>\n"
        if "autocancel" in search:
            return line(0, EVENTS[0]) + json.dumps({"messages": [
                {"type": "ERROR", "text": "Search auto-canceled"}]}).encode() + b"\n"
        # Two results now, two more a moment later, as the search finds them.
        self.open_streams += 1
        request.notifyFinish().addBoth(lambda _: setattr(self, "open_streams", self.open_streams - 1))
        request.write(line(0, EVENTS[0]) + json.dumps({"preview": True, "offset": 0, "result": {"count": "1"}})
                      .encode() + b"\n" + line(1, EVENTS[1]))
        if "slow" in search:
            return NOT_DONE_YET  # nothing more until the client goes away

        def rest() -> None:
            if request.finished or request._disconnected:
                return
            request.write(line(2, EVENTS[2]) + line(3, EVENTS[3], last=True))
            request.finish()

        reactor.callLater(0.3, rest)
        return NOT_DONE_YET
