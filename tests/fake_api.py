"""The base of the stand-in API servers integration tests run against
(tests/kubernetes_api.py, tests/grafana_api.py, ...): a twisted.web leaf
resource that records every request and answers JSON. A new integration's
fake subclasses it, answers in ``route`` as the API's documentation says,
and cites that documentation for each response shape."""

from __future__ import annotations

import json
from typing import Any

from twisted.web.resource import Resource
from twisted.web.server import Request


class FakeApi(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[dict[str, Any]] = []

    def render(self, request: Request) -> Any:
        body = request.content.read()
        seen = {
            "method": request.method.decode(), "path": request.path.decode(),
            "args": {k.decode(): [v.decode() for v in vs] for k, vs in request.args.items()},
            "authorization": request.getHeader("authorization") or "",
            "accept": request.getHeader("accept") or "",
            "content_type": request.getHeader("content-type") or "",
            "body": body.decode("utf-8", "replace"),
        }
        self.requests.append(seen)
        return self.route(request, seen, body)

    def route(self, request: Request, seen: dict[str, Any], body: bytes) -> Any:
        raise NotImplementedError

    @staticmethod
    def json(request: Request, code: int, body: Any) -> bytes:
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(body).encode()
