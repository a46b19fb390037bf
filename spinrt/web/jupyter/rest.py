"""The Jupyter kernels API's HTTP routes under ``/jupyter`` (PROTOCOL.md section 8).

Routes (relative to ``/jupyter``; roles in spinrt.roles.JUPYTER_ROUTE_ROLES):

- ``GET api`` -> ``{"version"}``
- ``GET api/kernelspecs``, ``GET api/kernelspecs/<name>``, ``GET kernelspecs/<name>/<file>``
- ``GET|POST api/kernels`` (POST: 201 and the model),
  ``GET|DELETE api/kernels/<id>`` (DELETE: 204, again 204 for a kernel
  already deleted), ``POST api/kernels/<id>/interrupt`` (204),
  ``POST api/kernels/<id>/restart`` (200 and the model, once it is back),
  ``GET api/kernels/<id>/channels`` (the WebSocket: spinrt.web.jupyter.channels)
- ``GET|POST api/sessions``, ``GET|PATCH|DELETE api/sessions/<id>``

The token: ``Authorization: token T`` or ``Bearer T``, or ``?token=T``
(the access log shows it as REDACTED); ``token `` with nothing after it is
no token. A wrong one waits for the failure throttle like every route.
Errors are JSON ``{"reason", "message"}`` (jupyter_server shows both);
unknown paths answer 404 without asking for a token (``/jupyter/`` and
``/jupyter/tree`` too: VS Code probes them).
"""

from __future__ import annotations

import collections
import re
from typing import Any, Awaitable

import orjson
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from ... import roles
from .. import httpauth
from ..auth import find_token
from .kernels import CELL_TYPES, KernelError, kernelspec, kernelspecs, logo

_log = Logger()

API_VERSION = "2.14.0"  # the Jupyter Server REST API these routes follow (sessions, kernels, kernelspecs)
MAX_BODY = 1024 * 1024
_UUID = re.compile(r"\w+-\w+-\w+-\w+-\w+")  # jupyter_server's kernel id route
REMEMBERED_DELETES = 1024  # deleted kernel ids whose second DELETE still answers 204

Route = tuple[str, dict[str, str]]


def match(segments: list[str]) -> Route | None:
    """A path under /jupyter -> (route template, its parameters), or None."""
    s = segments
    n = len(s)
    if n >= 1 and s[0] == "kernelspecs" and n == 3:
        return "kernelspecs/{name}/{file}", {"name": s[1], "file": s[2]}
    if not s or s[0] != "api":
        return None
    if n == 1:
        return "api", {}
    if s[1] == "kernelspecs" and n <= 3:
        return ("api/kernelspecs", {}) if n == 2 else ("api/kernelspecs/{name}", {"name": s[2]})
    if s[1] == "kernels":
        if n == 2:
            return "api/kernels", {}
        if n == 3:
            return "api/kernels/{id}", {"id": s[2]}
        if n == 4 and s[3] in ("interrupt", "restart", "channels"):
            return f"api/kernels/{{id}}/{s[3]}", {"id": s[2]}
    if s[1] == "sessions" and n <= 3:
        return ("api/sessions", {}) if n == 2 else ("api/sessions/{id}", {"id": s[2]})
    return None


def error_body(request: Request, status: int, message: str) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    reason = http.RESPONSES.get(status, b"Error").decode("ascii")
    return orjson.dumps({"reason": reason, "message": message})


class JupyterResource(Resource):
    """``/jupyter``: one leaf that routes by path (see the module's docstring)."""

    isLeaf = True

    def __init__(self, face: Any) -> None:
        super().__init__()
        self.face = face
        self.deleted: collections.OrderedDict[str, None] = collections.OrderedDict()

    def render(self, request: Request) -> Any:
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-content-type-options", b"nosniff")
        segments = [p.decode("utf-8", "replace") for p in request.postpath]
        while segments and segments[-1] == "":
            segments.pop()
        found = match(segments)
        if found is None:
            return error_body(request, http.NOT_FOUND, "Not Found")
        template, params = found
        method = request.method.decode("ascii", "replace")
        key = f"{method} {template}"
        needed = roles.JUPYTER_ROUTE_ROLES.get(key)
        if needed is None:
            allowed = sorted(k.split(" ", 1)[0] for k in roles.JUPYTER_ROUTE_ROLES if k.split(" ", 1)[1] == template)
            request.setHeader(b"allow", ", ".join(allowed).encode())
            return error_body(request, http.NOT_ALLOWED, f"{method} is not allowed on /jupyter/{template}")
        headers = {k.decode("latin-1").lower(): v[0].decode("latin-1")
                   for k, v in request.requestHeaders.getAllRawHeaders()}
        query = {k.decode("utf-8", "replace"): [v.decode("utf-8", "replace") for v in vs]
                 for k, vs in request.args.items()}
        gate = self.face.gate
        verdict = httpauth.check(gate, request, find_token(headers, (), query))
        if not verdict.accepted:
            return self._refuse(request, verdict)
        identity = verdict.identity
        if not roles.allows(identity.role, needed):
            if gate.audit is not None:
                gate.audit.record(f"{method} /jupyter/{template}", identity=identity,
                                  client=httpauth.client_address(request), outcome="forbidden")
            return error_body(request, http.FORBIDDEN, f"your role '{identity.role}' may not {method} "
                                                       f"/jupyter/{template}; it needs the role '{needed}' or above")
        if template == "api/kernels/{id}/channels":
            return self.face.channels.render(request, params["id"])
        handler = getattr(self, "_" + re.sub(r"\W+", "_", key.replace("{", "").replace("}", "")).strip("_").lower())
        body: Any = {}
        if method in ("POST", "PATCH"):
            raw = request.content.read(MAX_BODY + 1) if request.content is not None else b""
            if len(raw) > MAX_BODY:
                return error_body(request, http.REQUEST_ENTITY_TOO_LARGE, f"the body is over {MAX_BODY} bytes")
            try:
                body = orjson.loads(raw) if raw.strip() else {}
            except orjson.JSONDecodeError as e:
                return error_body(request, http.BAD_REQUEST, f"the body is not JSON: {e}")
            if not isinstance(body, dict):
                return error_body(request, http.BAD_REQUEST, "the body must be a JSON object")
        request.setHeader(b"content-type", b"application/json")
        Deferred.fromCoroutine(self._answer(request, handler(request, params, body, identity), key, params,
                                            identity))
        return NOT_DONE_YET

    def _refuse(self, request: Request, verdict: Any) -> Any:
        def refusal() -> bytes:
            if verdict.retry_after:
                request.setHeader(b"retry-after", str(verdict.retry_after).encode())
                return error_body(request, 429, "too many failed attempts; retry later")
            request.setHeader(b"www-authenticate", b'Bearer realm="spin-runtime"')
            return error_body(request, http.UNAUTHORIZED, "missing or wrong token")

        if verdict.answer is None:
            return refusal()
        gone: list[object] = []
        request.notifyFinish().addErrback(gone.append)

        def answer(_: None) -> None:
            if not gone:
                request.write(refusal())
                request.finish()

        verdict.answer.addCallback(answer)
        return NOT_DONE_YET

    async def _answer(self, request: Request, pending: Awaitable[tuple[int, Any]], key: str,
                      params: dict[str, str], identity: Any) -> None:
        gone: list[object] = []
        request.notifyFinish().addErrback(gone.append)
        try:
            status, value = await pending
            outcome = "ok"
        except KernelError as e:
            status, value, outcome = e.status, None, "error"
            data = error_body(request, e.status, e.message)
        except Exception:
            _log.failure("jupyter route {key} failed", key=key)
            status, value, outcome = 500, None, "error"
            data = error_body(request, 500, "the runtime failed to handle this request")
        else:
            request.setResponseCode(status)
            data = b"" if value is None else value if isinstance(value, bytes) else orjson.dumps(value)
        if not key.startswith("GET") and self.face.gate.audit is not None:
            self.face.gate.audit.record(f"jupyter {key}", identity=identity, client=httpauth.client_address(request),
                                        target={k: v[:64] for k, v in params.items()}, outcome=outcome)
        if gone:
            return
        if data:
            request.write(data)
        request.finish()

    # -- handlers: (request, params, body, identity) -> awaitable (status, JSON value or None) ------

    async def _get_api(self, request: Request, params: dict[str, str], body: Any, who: Any) -> tuple[int, Any]:
        return 200, {"version": API_VERSION}

    async def _get_api_kernelspecs(self, request: Request, params: dict[str, str], body: Any,
                                   who: Any) -> tuple[int, Any]:
        return 200, kernelspecs(self.face.base)

    async def _get_api_kernelspecs_name(self, request: Request, params: dict[str, str], body: Any,
                                        who: Any) -> tuple[int, Any]:
        if params["name"] not in CELL_TYPES:
            raise KernelError(404, f"Kernel spec {params['name'][:64]!r} not found")
        return 200, kernelspec(params["name"], self.face.base)

    async def _get_kernelspecs_name_file(self, request: Request, params: dict[str, str], body: Any,
                                         who: Any) -> tuple[int, Any]:
        if params["name"] not in CELL_TYPES or params["file"] != "logo-svg.svg":
            raise KernelError(404, f"no resource {params['file'][:64]!r} for kernel spec {params['name'][:64]!r}")
        request.setHeader(b"content-type", b"image/svg+xml")
        request.setHeader(b"cache-control", b"max-age=3600")
        return 200, logo(params["name"])

    async def _get_api_kernels(self, request: Request, params: dict[str, str], body: Any,
                               who: Any) -> tuple[int, Any]:
        return 200, [k.model() for k in self.face.kernels.list()]

    async def _post_api_kernels(self, request: Request, params: dict[str, str], body: Any,
                                who: Any) -> tuple[int, Any]:
        kernel = await self.face.kernels.create(body, who.name)
        request.setHeader(b"location", f"{self.face.base}/api/kernels/{kernel.id}".encode())
        return 201, kernel.model()

    async def _get_api_kernels_id(self, request: Request, params: dict[str, str], body: Any,
                                  who: Any) -> tuple[int, Any]:
        return 200, self.face.kernels.get(params["id"]).model()

    async def _delete_api_kernels_id(self, request: Request, params: dict[str, str], body: Any,
                                     who: Any) -> tuple[int, Any]:
        kernel_id = params["id"]
        if kernel_id in self.deleted and kernel_id not in self.face.kernels.kernels:
            return 204, None  # idempotent: jupyter_server retries a DELETE on 5xx
        await self.face.kernels.delete(kernel_id)
        self.deleted[kernel_id] = None
        while len(self.deleted) > REMEMBERED_DELETES:
            self.deleted.popitem(last=False)
        return 204, None

    async def _post_api_kernels_id_interrupt(self, request: Request, params: dict[str, str], body: Any,
                                             who: Any) -> tuple[int, Any]:
        self.face.kernels.get(params["id"]).interrupt()
        return 204, None

    async def _post_api_kernels_id_restart(self, request: Request, params: dict[str, str], body: Any,
                                           who: Any) -> tuple[int, Any]:
        kernel = await self.face.kernels.restart(params["id"])
        return 200, kernel.model()

    async def _get_api_sessions(self, request: Request, params: dict[str, str], body: Any,
                                who: Any) -> tuple[int, Any]:
        return 200, self.face.sessions.list()

    async def _post_api_sessions(self, request: Request, params: dict[str, str], body: Any,
                                 who: Any) -> tuple[int, Any]:
        record = await self.face.sessions.create(body, who.name)
        return 201, self.face.sessions.model(record)

    async def _get_api_sessions_id(self, request: Request, params: dict[str, str], body: Any,
                                   who: Any) -> tuple[int, Any]:
        return 200, self.face.sessions.model(self.face.sessions.get(params["id"]))

    async def _patch_api_sessions_id(self, request: Request, params: dict[str, str], body: Any,
                                     who: Any) -> tuple[int, Any]:
        record = await self.face.sessions.patch(params["id"], body, who.name)
        return 200, self.face.sessions.model(record)

    async def _delete_api_sessions_id(self, request: Request, params: dict[str, str], body: Any,
                                      who: Any) -> tuple[int, Any]:
        await self.face.sessions.delete(params["id"])
        return 204, None

