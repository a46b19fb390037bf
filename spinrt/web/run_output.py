"""``GET /api/sessions/<id>/runs/<run>/output``: one run's full text output.

PROTOCOL.md sections 8 and 10: for "show more" and downloads of outputs a
snapshot cut. The token goes in the ``Authorization`` header only (a
``?token=`` is not looked at here: a download link must not carry the
token in its URL, where browsers, proxies and logs keep it); wrong or
missing tokens go through the same throttle as every route.

The body is the run's ``stream`` text as it came (stdout and stderr
interleaved; ``?stream=stdout`` or ``?stream=stderr`` picks one), as UTF-8
``text/plain``, sent as an attachment. It is read from the store in
bounded batches, starting where the run's events start (the ``runs``
table's ``started_seq``, else ``queued_seq``) and ending at its
``run.finished`` (or, for a run still going, at the last event when the
request came). A push producer stops reading while the client's socket is
full, so memory stays bounded whatever the output's size.

Errors (JSON ``{"error": {code, message}}``): 401/429 for the token, 404
``not_found`` for an unknown path, session or run (or a run of another
session), 400 ``bad_request`` for another ``stream`` value.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from .. import protocol as proto
from ..sessions.snapshot import read_batch
from . import httpauth, notebook_download
from .throttle import Gate

_log = Logger()

READ_BYTES = 1024 * 1024  # one batch of events read from the store
STREAMS = ("stdout", "stderr")
FLUSH_TIMEOUT = 5.0  # seconds to wait for a just-queued run to reach the store
FLUSH_POLL = 0.02
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class SessionsResource(Resource):
    """``/api/sessions/...``: ``<id>/runs/<run>/output`` and ``<id>/notebook.ipynb``
    (:mod:`spinrt.web.notebook_download`), both behind the header-only token."""

    isLeaf = True

    def __init__(self, gate: Gate, manager: Any) -> None:
        super().__init__()
        self._gate = gate
        self._manager = manager

    def render_GET(self, request: Request) -> Any:
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"content-type", b"application/json")
        verdict, answer = httpauth.admit(self._gate, request, "api/sessions")  # header only: no ?token=
        if verdict is None:
            return answer
        path = [p.decode("utf-8", "replace") for p in request.postpath]
        if len(path) == 2 and path[1] == notebook_download.ROUTE:
            found = self._manager.sessions.get(path[0])
            if found is None:
                return _fail(request, http.NOT_FOUND, "not_found", f"no session {path[0][:64]!r}")
            return notebook_download.render(request, self._manager, found)
        if len(path) != 4 or path[1] != "runs" or path[3] != "output":
            return _fail(request, http.NOT_FOUND, "not_found", "no such route; try /api/sessions/<id>/runs/<run>/output "
                                                               "or /api/sessions/<id>/notebook.ipynb")
        sid, run_id = path[0], path[2]
        streams = request.args.get(b"stream") or []
        stream = streams[0].decode("utf-8", "replace") if streams else None
        if len(streams) > 1 or (stream is not None and stream not in STREAMS):
            return _fail(request, http.BAD_REQUEST, "bad_request", "'stream' must be stdout or stderr (or left out for both)")
        session = self._manager.sessions.get(sid)
        if session is None:
            return _fail(request, http.NOT_FOUND, "not_found", f"no session {sid[:64]!r}")
        Deferred.fromCoroutine(self._serve(request, session, run_id, stream)).addErrback(
            lambda f: _log.failure("serving the output of run {run} failed", f, run=run_id[:64]))
        return NOT_DONE_YET

    async def _serve(self, request: Request, session: Any, run_id: str, stream: str | None) -> None:
        start = await self._start_of(session, run_id)
        if start is None:
            request.write(_fail(request, http.NOT_FOUND, "not_found",
                                f"no run {run_id[:64]!r} in session {session.id}"))
            request.finish()
            return
        name = _UNSAFE.sub("_", f"{session.id}-{run_id}{'-' + stream if stream else ''}.txt")
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"content-disposition", f'attachment; filename="{name}"'.encode("ascii"))
        producer = OutputProducer(request, session, run_id, stream, after=start - 1, upto=session.last_seq)
        request.registerProducer(producer, True)
        try:
            await producer.run()
        except Exception:
            _log.failure("reading the output of run {run} failed", run=run_id)
            request.unregisterProducer()
            request.loseConnection()  # the body is incomplete: the client must not take it as whole
            return
        request.unregisterProducer()
        if not producer.stopped:
            request.finish()

    async def _start_of(self, session: Any, run_id: str) -> int | None:
        """The seq the run's events start at (0 when unknown), or None when
        the session has no such run."""
        store = session.store
        sql = "SELECT session, started_seq, queued_seq FROM runs WHERE id = ?"
        rows = await store.query(sql, (run_id,))
        upto = session.last_seq
        if not rows and store.flushed_seq(session.id) < upto:
            # A run queued a moment ago has its row on its way to the store,
            # committed with (or before) its run.queued: wait for that.
            clock = self._manager.clock
            waited = 0.0
            while store.flushed_seq(session.id) < upto and waited < FLUSH_TIMEOUT:
                await deferLater(clock, FLUSH_POLL, lambda: None)
                waited += FLUSH_POLL
            rows = await store.query(sql, (run_id,))
        if not rows or rows[0][0] != session.id:
            return None
        started, queued = rows[0][1], rows[0][2]
        return started or queued or 1


@implementer(IPushProducer)
class OutputProducer:
    """Writes one run's stream text (events ``after+1..upto``) to ``request``,
    one batch at a time, waiting whenever the transport is paused."""

    def __init__(self, request: Request, session: Any, run_id: str, stream: str | None, *,
                 after: int, upto: int) -> None:
        self.request = request
        self.session = session
        self.run_id = run_id
        self.stream = stream
        self.after = after
        self.upto = upto
        self.paused = False
        self.stopped = False
        self._waiting: Deferred[None] | None = None
        self._needle = proto.encode({"run": run_id})[1:-1]  # b'"run":"<id>"' as events hold it
        self._finished_prefix = b'{"event":"run.finished",'
        self.written = 0

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self._wake()

    def stopProducing(self) -> None:
        self.stopped = True
        self._wake()

    def _wake(self) -> None:
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.callback(None)

    async def run(self) -> None:
        pos = self.after
        while pos < self.upto and not self.stopped:
            if self.paused:
                self._waiting = Deferred()
                await self._waiting
                continue
            frames = await read_batch(self.session, pos, READ_BYTES)
            if not frames:
                return
            text, done = self._texts(frames)
            if text and not self.stopped:
                data = "".join(text).encode("utf-8", "surrogatepass")
                self.written += len(data)
                self.request.write(data)
            if done:
                return
            pos = frames[-1][0]

    def _texts(self, frames: list[tuple[int, bytes]]) -> tuple[list[str], bool]:
        """The run's stream texts in ``frames``, and whether its run.finished was among them."""
        texts: list[str] = []
        needle = self._needle
        for seq, frame in frames:
            if seq > self.upto:
                return texts, True
            if needle not in frame:  # most events of a long session: not parsed
                continue
            finished = frame.startswith(self._finished_prefix)
            if not finished and not frame.startswith(b'{"event":"stream",'):
                continue
            event = orjson.loads(frame)
            if event.get("run") != self.run_id:
                continue
            if finished:
                return texts, True
            if self.stream is None or event.get("name") == self.stream:
                text = event.get("text")
                if isinstance(text, str):
                    texts.append(text)
        return texts, False


def _fail(request: Request, code: int, error: str, message: str) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    return httpauth.json_error(error, message)
