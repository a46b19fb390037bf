"""GET /api/sessions/<id>/runs/<run>/output: one run's full output, from the store."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import tempfile
import time
import urllib.parse
from typing import Any

import treq
from twisted.internet import defer, reactor
from twisted.internet.protocol import Protocol
from twisted.trial import unittest
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone
from twisted.web.http_headers import Headers

from spinrt import protocol as proto
from spinrt.sessions import schema
from spinrt.web import run_output

from .support import TOKEN, Client, DaemonProcess, sleep, start_runtime, ws_url

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def shell(source: str, cell_id: str = "c") -> dict[str, Any]:
    return {"id": cell_id, "type": "shell", "source": source}


class RouteTests(unittest.TestCase):
    timeout = 120

    async def setUp(self) -> None:
        self.service = await start_runtime(self)
        self.url = ws_url(self.service)
        self.base = self.url.replace("ws://", "http://").rsplit("/", 1)[0]
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.client = await Client.connect(self.url)
        self.addCleanup(self.client.close)
        self.sid = (await self.client.request("session.create"))["session"]["id"]

    async def get(self, path: str, headers: dict[str, str] | None = AUTH) -> tuple[Any, bytes]:
        response = await treq.get(self.base + path, headers=headers, pool=self.pool)
        return response, await response.content()

    def path(self, run: str, sid: str | None = None, query: str = "") -> str:
        return f"/api/sessions/{sid or self.sid}/runs/{run}/output{query}"

    async def test_streams_the_runs_output_as_it_came(self) -> None:
        script = "for i in 1 2 3; do echo out $i; echo err $i >&2; done; printf 'caf\\xc3\\xa9 \\xe2\\x82\\xac'"
        finished = await self.client.run(self.sid, shell(script))
        run = finished["run"]
        everything = "".join(e["text"] for e in self.client.events(run=run, kind="stream"))
        response, body = await self.get(self.path(run))
        self.assertEqual(response.code, 200)
        self.assertEqual(body.decode("utf-8"), everything)
        self.assertIn("café €", everything)
        headers = response.headers
        self.assertEqual(headers.getRawHeaders("content-type"), ["text/plain; charset=utf-8"])
        self.assertEqual(headers.getRawHeaders("x-content-type-options"), ["nosniff"])
        self.assertEqual(headers.getRawHeaders("cache-control"), ["no-store"])
        self.assertEqual(headers.getRawHeaders("content-disposition"),
                         [f'attachment; filename="{self.sid}-{run}.txt"'])
        for name in ("stdout", "stderr"):
            response, body = await self.get(self.path(run, query=f"?stream={name}"))
            self.assertEqual(body.decode("utf-8"), self.client.output(run, name))
            self.assertEqual(response.headers.getRawHeaders("content-disposition"),
                             [f'attachment; filename="{self.sid}-{run}-{name}.txt"'])
        # Only this run's output, in a session with others before and after it.
        before = await self.client.run(self.sid, shell("echo before"))
        after = await self.client.run(self.sid, shell("echo after"))
        self.assertEqual((await self.get(self.path(run)))[1].decode("utf-8"), everything)
        self.assertEqual((await self.get(self.path(before["run"])))[1], b"before\n")
        self.assertEqual((await self.get(self.path(after["run"])))[1], b"after\n")

    async def test_the_token_goes_in_a_header_only(self) -> None:
        run = (await self.client.run(self.sid, shell("echo secret-output")))["run"]
        quoted = urllib.parse.quote(TOKEN)
        for query, headers in [("", None), (f"?token={quoted}", None),
                               ("", {"Authorization": "Bearer wrong-token"}),
                               ("", {"Authorization": TOKEN}), ("", {"Authorization": f"Basic {TOKEN}"}),
                               ("", {"X-Token": TOKEN})]:
            started = time.monotonic()
            response, body = await self.get(self.path(run, query=query), headers)
            self.assertEqual(response.code, 401, (query, headers))
            self.assertGreaterEqual(time.monotonic() - started, 0.9)  # the throttle's delay
            self.assertEqual(json.loads(body)["error"]["code"], "unauthorized")
            self.assertNotIn(b"secret-output", body)
            self.assertEqual(response.headers.getRawHeaders("www-authenticate"), ['Bearer realm="spin-runtime"'])
        # Both header forms work; a query token beside a right header is ignored.
        for headers in (AUTH, {"Authorization": f"token {TOKEN}"}):
            response, body = await self.get(self.path(run, query="?token=wrong"), headers)
            self.assertEqual((response.code, body), (200, b"secret-output\n"))

    async def test_unknown_session_run_and_path(self) -> None:
        run = (await self.client.run(self.sid, shell("echo x")))["run"]
        other = (await self.client.request("session.create"))["session"]["id"]
        cases = [
            self.path(run, sid="ss_nope"),
            self.path("run_nope"),
            self.path(run, sid=other),  # a run of another session
            self.path("run_%00%ff"),
            f"/api/sessions/{self.sid}",
            f"/api/sessions/{self.sid}/runs/{run}",
            f"/api/sessions/{self.sid}/runs/{run}/output/more",
            f"/api/sessions/{self.sid}/jobs/{run}/output",
            "/api/sessions",
        ]
        for path in cases:
            response, body = await self.get(path)
            self.assertEqual(response.code, 404, path)
            self.assertEqual(json.loads(body)["error"]["code"], "not_found", path)
            self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/json"])
        for query in ("?stream=stdin", "?stream=", "?stream=stdout&stream=stderr", "?stream=STDOUT"):
            response, body = await self.get(self.path(run, query=query))
            self.assertEqual(response.code, 400, query)
            self.assertEqual(json.loads(body)["error"]["code"], "bad_request")
        # The unknown are told apart only with the token.
        response, _ = await self.get(self.path("run_nope"), None)
        self.assertEqual(response.code, 401)

    async def test_runs_without_output_and_runs_still_going(self) -> None:
        reply = await self.client.request("cells.run", session=self.sid,
                                          cells=[shell("exit 3", "a"), shell("echo never", "b")])
        first, skipped = reply["runs"]
        await self.client.wait_for(lambda m: m.get("event") == "run.finished" and m.get("run") == skipped)
        for run in (first, skipped):  # exited without a word; never started
            response, body = await self.get(self.path(run))
            self.assertEqual((response.code, body), (200, b""))
        # A run still going: what it printed so far, and the response ends.
        going = (await self.client.request("cell.run", session=self.sid,
                                           cell=shell("echo first part; sleep 30")))["run"]
        await self.client.wait_for(lambda m: m.get("event") == "stream" and m.get("run") == going)
        response, body = await self.get(self.path(going))
        self.assertEqual((response.code, body), (200, b"first part\n"))
        await self.client.request("run.cancel", session=self.sid, run=going)

    async def test_a_run_asked_for_at_once(self) -> None:
        """The run's row may not be in the store yet: the route waits for it."""
        for _ in range(5):
            run = (await self.client.request("cell.run", session=self.sid, cell=shell("echo quick")))["run"]
            response, _ = await self.get(self.path(run))
            self.assertEqual(response.code, 200)
        await self.client.wait_for(lambda m: m.get("event") == "run.finished" and m.get("run") == run)

    async def test_a_client_that_leaves_mid_download(self) -> None:
        run = (await self.client.run(self.sid, shell("seq 1 3000000")))["run"]  # ~21 MB
        producers: list[run_output.OutputProducer] = []
        original = run_output.OutputProducer.run

        def recorded(producer: run_output.OutputProducer) -> Any:
            producers.append(producer)
            return original(producer)

        self.patch(run_output.OutputProducer, "run", recorded)
        agent = Agent(reactor, pool=self.pool)
        url = f"{self.base}{self.path(run)}".encode()
        headers = Headers({b"authorization": [f"Bearer {TOKEN}".encode()]})
        response = await agent.request(b"GET", url, headers)
        left: defer.Deferred[None] = defer.Deferred()

        class Leaving(Protocol):
            def dataReceived(self, data: bytes) -> None:
                self.transport.stopProducing()  # hang up after the first bytes

            def connectionLost(self, reason: Any) -> None:
                left.callback(None)

        response.deliverBody(Leaving())
        await left
        await sleep(0.5)  # the runtime notices; trial fails the test on any logged error
        (producer,) = producers
        self.assertTrue(producer.stopped)
        self.assertLess(producer.written, 10_000_000)  # it stopped reading, far from the end
        # Others are served as before.
        body = _SlowBody(pause_every=1 << 30, pause_for=0)
        (await agent.request(b"GET", url, headers)).deliverBody(body)
        await body.done
        self.assertEqual(body.size, len("".join(f"{i}\n" for i in range(1, 3_000_001))))

    async def test_history_survives_a_restart_and_old_rows(self) -> None:
        run = (await self.client.run(self.sid, shell("seq 1 2000")))["run"]
        expected = "".join(f"{i}\n" for i in range(1, 2001)).encode()
        home = self.service.config.home
        await self.client.close()
        await self.service.stopService()
        self.service = await start_runtime(self, home=home)
        self.base = ws_url(self.service).replace("ws://", "http://").rsplit("/", 1)[0]
        self.assertEqual((await self.get(self.path(run)))[1], expected)
        # A run from before the store knew where runs start (NULL): read from seq 1.
        self.service.store.execute("UPDATE runs SET queued_seq = NULL, started_seq = NULL WHERE id = ?", (run,))
        await self.service.store.drain()
        self.assertEqual((await self.get(self.path(run)))[1], expected)


class MigrationTests(unittest.TestCase):
    def test_runs_learn_where_their_events_start(self) -> None:
        path = os.path.join(tempfile.mkdtemp(prefix="spin-store-", dir=os.path.abspath(".")), "events.db")
        conn = sqlite3.connect(path, isolation_level=None)
        for version in range(1, 5):
            schema.MIGRATIONS[version](conn)
        conn.execute("PRAGMA user_version = 4")
        conn.execute("INSERT INTO sessions(id, name, created) VALUES ('ss_1', 'a', 'now')")
        events = [("run.queued", "run_a"), ("run.queued", "run_b"), ("run.started", "run_a"),
                  ("stream", "run_a"), ("run.finished", "run_a"), ("run.started", "run_b"),
                  ("run.queued", "run_lost")]
        for seq, (kind, run) in enumerate(events, 1):
            body = proto.encode(proto.event(kind, "ss_1", seq, "t", run=run, text='"event":"run.started"'))
            conn.execute("INSERT INTO events VALUES ('ss_1', ?, ?)", (seq, body))
        conn.execute("INSERT INTO events VALUES ('ss_1', 8, ?)", (b'{"event":"run.started",broken',))
        for run in ("run_a", "run_b", "run_lost", "run_none"):
            conn.execute("INSERT INTO runs(id, session, state) VALUES (?, 'ss_1', 'finished')", (run,))
        schema.migrate(conn)
        rows = dict((r[0], r[1:]) for r in conn.execute("SELECT id, queued_seq, started_seq FROM runs"))
        self.assertEqual(rows, {"run_a": (1, 3), "run_b": (2, 6), "run_lost": (7, None), "run_none": (None, None)})
        self.assertEqual(conn.execute("SELECT COUNT(*) FROM events").fetchone()[0], 8)  # history kept
        self.assertEqual(conn.execute("PRAGMA user_version").fetchone()[0], schema.SCHEMA_VERSION)
        conn.close()


# -- 100 MB through a real daemon, read slowly ---------------------------------------------


class _SlowBody(Protocol):
    """Counts and hashes a response body, pausing its transport now and then
    (a slow client), never keeping it."""

    def __init__(self, pause_every: int, pause_for: float) -> None:
        self.size = 0
        self.sha = hashlib.sha256()
        self.done: defer.Deferred[None] = defer.Deferred()
        self._pause_every = pause_every
        self._pause_for = pause_for
        self._next_pause = pause_every

    def dataReceived(self, data: bytes) -> None:
        self.size += len(data)
        self.sha.update(data)
        if self.size >= self._next_pause:
            self._next_pause += self._pause_every
            self.transport.pauseProducing()
            reactor.callLater(self._pause_for, self.transport.resumeProducing)

    def connectionLost(self, reason: Any) -> None:
        if reason.check(ResponseDone):
            self.done.callback(None)
        else:
            self.done.errback(reason)


class LargeOutputTests(unittest.TestCase):
    timeout = 300

    async def test_100_mb_streams_with_bounded_memory(self) -> None:
        home = tempfile.mkdtemp(prefix="spin-home-", dir=os.path.abspath("."))
        daemon = DaemonProcess(home, "--kernel-pool", "0")
        self.addCleanup(daemon.stop)
        url = await daemon.ready()
        base = url.replace("ws://", "http://").rsplit("/", 1)[0]
        client = await Client.connect(url)
        self.addCleanup(client.close)
        sid = (await client.request("session.create"))["session"]["id"]
        await client.request("session.detach", session=sid)  # the test keeps none of the 100 MB
        size = 100 * 1000 * 1000
        line = "0123456789" * 9 + "abcdefghi\n"  # 100 bytes
        reply = await client.request("cell.run", session=sid,
                                     cell=shell(f"yes {line[:-1]} | head -c {size}"))
        run = reply["run"]

        async def finished() -> dict[str, Any]:
            snapshot = await client.request("session.snapshot", session=sid, max_output_bytes=1024)
            return {r["run"]: r for r in snapshot["runs"]}[run]

        described: dict[str, Any] = {}
        deadline = time.monotonic() + 200
        while not described or described["status"] == "running" or described["status"] == "queued":
            self.assertLess(time.monotonic(), deadline)
            await sleep(0.5)
            described = await finished()
        self.assertEqual(described["status"], "ok")
        self.assertEqual(described["truncated"], {"bytes_total": size, "bytes_shown": 1024})
        expected = hashlib.sha256((line * (size // len(line))).encode()).hexdigest()

        baseline = daemon.rss_kb()
        agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))
        response = await agent.request(b"GET", f"{base}/api/sessions/{sid}/runs/{run}/output".encode(),
                                       Headers({b"authorization": [f"Bearer {TOKEN}".encode()]}))
        self.assertEqual(response.code, 200)
        body = _SlowBody(pause_every=4 * 1024 * 1024, pause_for=0.05)
        response.deliverBody(body)
        peak = baseline
        while not body.done.called:
            peak = max(peak, daemon.rss_kb())
            await sleep(0.05)
        await body.done
        self.assertEqual(body.size, size)
        self.assertEqual(body.sha.hexdigest(), expected)
        growth_mb = (peak - baseline) / 1024
        # Whole in memory, the body alone would be 100 MB (and its events more).
        self.assertLess(growth_mb, 40, f"RSS grew by {growth_mb:.0f} MB while streaming 100 MB")
