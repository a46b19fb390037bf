"""History that can be kept tidy: ``session.delete``, ``--history-retention-days`` and
``spin backup`` (a consistent copy while the runtime writes, restored into a new home)."""

from __future__ import annotations

import io
import os
import shutil
import sqlite3
import tempfile
import time

import treq
from twisted.internet import reactor
from twisted.trial import unittest
from twisted.web.client import HTTPConnectionPool

from spinrt.cli.main import cli
from spinrt.sessions import schema

from .support import TOKEN, Client, eventually, sleep, start_runtime, ws_url
from .test_cli import base_environ

TABLES = ("events", "runs", "variables", "document_events", "documents")


def rows_of(home: str, sid: str) -> dict[str, int]:
    conn = sqlite3.connect(os.path.join(home, "var", "spin.sqlite3"))
    try:
        counts = {t: conn.execute(f"SELECT COUNT(*) FROM {t} WHERE session = ?", (sid,)).fetchone()[0] for t in TABLES}
        counts["sessions"] = conn.execute("SELECT COUNT(*) FROM sessions WHERE id = ?", (sid,)).fetchone()[0]
        return counts
    finally:
        conn.close()


class SessionDeleteTests(unittest.TestCase):
    timeout = 60

    async def test_a_closed_session_goes_for_good(self) -> None:
        home = tempfile.mkdtemp(prefix="spin-home-", dir=os.path.abspath("."))
        service = await start_runtime(self, home=home)
        url = ws_url(service)
        owner = await Client.connect(url)
        self.addCleanup(owner.close)
        sid = (await owner.request("session.create", name="doomed", variables={"x": 1}))["session"]["id"]
        keep = (await owner.request("session.create", name="kept"))["session"]["id"]
        self.assertTrue((await owner.request("cell.set", session=sid, cell={"id": "c1", "type": "shell",
                                                                          "source": "echo out"}))["ok"])
        finished = await owner.run(sid, {"id": "c1", "type": "shell", "source": "echo out", "output_variable": "r"})
        run = finished["run"]
        await owner.run(keep, {"type": "shell", "source": "echo still here"})
        reply = await owner.request("session.delete", session=sid)
        self.assertEqual(reply["error"]["code"], "session_open")
        self.assertIn("close it first", reply["error"]["message"])
        self.assertTrue((await owner.request("session.close", session=sid))["ok"])
        await service.store.drain()
        before = rows_of(home, sid)
        self.assertTrue(all(before[t] for t in ("events", "runs", "variables", "document_events", "sessions")), before)
        self.assertTrue(os.path.isdir(os.path.join(home, "sessions", sid)))
        # A viewer reading the closed session's history...
        secret = (await owner.request("tokens.create", name="reader", role="viewer"))["secret"]
        reader = await Client.connect(url, token=secret)
        self.addCleanup(reader.close)
        self.assertTrue((await reader.request("session.attach", session=sid))["ok"])
        self.assertEqual((await reader.request("session.delete", session=sid))["error"]["code"], "forbidden")
        reply = await owner.request("session.delete", session=sid)
        self.assertTrue(reply["ok"], reply)
        self.assertEqual(rows_of(home, sid), {t: 0 for t in (*TABLES, "sessions")})
        self.assertFalse(os.path.exists(os.path.join(home, "sessions", sid)))
        listed = [s["id"] for s in (await owner.request("session.list"))["sessions"]]
        self.assertEqual(listed, [keep])
        self.assertEqual((await reader.request("session.attach", session=sid))["error"]["code"], "no_such_session")
        self.assertEqual((await owner.request("session.delete", session=sid))["error"]["code"], "no_such_session")
        pool = HTTPConnectionPool(reactor, persistent=False)
        base = url.replace("ws://", "http://").rsplit("/", 1)[0]
        response = await treq.get(f"{base}/api/sessions/{sid}/runs/{run}/output",
                                  headers={"Authorization": f"Bearer {TOKEN}"}, pool=pool)
        self.assertEqual(response.code, 404)
        await response.content()
        rows = await service.audit.page()
        self.assertEqual([(r["identity"], r["outcome"]) for r in rows if r["action"] == "session.delete"],
                         [("owner", "session_open"), ("reader", "forbidden"), ("owner", "ok"),
                          ("owner", "no_such_session")])
        # The other session is whole, and the deleted one does not come back after a restart.
        await owner.close()
        await reader.close()
        await service.stopService()
        service = await start_runtime(self, home=home)
        self.assertEqual(list(service.manager.sessions), [keep])
        self.assertGreater(rows_of(home, keep)["events"], 3)


class RetentionTests(unittest.TestCase):
    timeout = 60

    async def test_sessions_closed_long_ago_are_deleted_and_no_other(self) -> None:
        home = tempfile.mkdtemp(prefix="spin-home-", dir=os.path.abspath("."))
        service = await start_runtime(self, "--history-retention-days", "2", home=home)
        owner = await Client.connect(ws_url(service))
        self.addCleanup(owner.close)
        service.manager.wallclock = lambda: time.time() - 3 * 86400  # what follows happened 3 days ago
        old_closed = (await owner.request("session.create", name="old closed"))["session"]["id"]
        await owner.run(old_closed, {"type": "markdown", "source": "# then"})
        self.assertTrue((await owner.request("session.close", session=old_closed))["ok"])
        old_open = (await owner.request("session.create", name="old open"))["session"]["id"]  # never touched
        service.manager.wallclock = time.time
        recent = (await owner.request("session.create", name="recent closed"))["session"]["id"]
        self.assertTrue((await owner.request("session.close", session=recent))["ok"])
        deleted = await service.history.prune()
        self.assertEqual(deleted, [old_closed])
        self.assertEqual(sorted(service.manager.sessions), sorted([old_open, recent]))
        self.assertEqual(rows_of(home, old_closed)["events"], 0)
        self.assertEqual(await service.history.prune(), [])

    async def test_off_by_default_and_at_start_when_on(self) -> None:
        home = tempfile.mkdtemp(prefix="spin-home-", dir=os.path.abspath("."))
        service = await start_runtime(self, home=home)
        self.assertEqual(service.config.history_retention_days, 0)
        service.manager.wallclock = lambda: time.time() - 400 * 86400
        owner = await Client.connect(ws_url(service))
        sid = (await owner.request("session.create", name="ancient"))["session"]["id"]
        self.assertTrue((await owner.request("session.close", session=sid))["ok"])
        await owner.close()
        self.assertEqual(await service.history.prune(), [])  # off: nothing
        await service.stopService()
        service = await start_runtime(self, "--history-retention-days", "365", home=home)
        await eventually(lambda: service.history.deleted == 1)
        self.assertNotIn(sid, service.manager.sessions)


class BackupTests(unittest.TestCase):
    timeout = 90

    async def spin(self, *argv: str) -> tuple[int, str]:
        out, err = io.StringIO(), io.StringIO()
        code = await cli(list(argv), reactor, environ=base_environ(), stdout=out, stderr=err)
        return code, err.getvalue()

    async def test_a_consistent_copy_while_the_runtime_writes_restores_whole(self) -> None:
        home = tempfile.mkdtemp(prefix="spin-home-", dir=os.path.abspath("."))
        service = await start_runtime(self, home=home)
        owner = await Client.connect(ws_url(service))
        self.addCleanup(owner.close)
        sid = (await owner.request("session.create", name="busy"))["session"]["id"]
        reply = await owner.request("cell.run", session=sid, cell={
            "type": "shell", "source": "for i in $(seq 1 100000); do echo line $i; sleep 0.002; done"})
        run = reply["run"]
        await owner.wait_for(lambda m: m.get("event") == "stream" and "line 300" in m["text"], 30)
        target = os.path.join(tempfile.mkdtemp(dir=os.path.abspath(".")), "spin-backup.sqlite3")
        code, err = await self.spin("backup", target, "--home", home)  # while output pours in
        self.assertEqual(code, 0, err)
        self.assertRegex(err, rf"^spin: backed up {home}/var/spin.sqlite3 to {target}: 1 sessions, \d+ events, "
                              rf"[\d.]+ MiB \(schema {schema.SCHEMA_VERSION}\)\n$")
        self.assertEqual(os.stat(target).st_mode & 0o777, 0o600)
        self.assertTrue((await owner.request("run.cancel", session=sid, run=run))["ok"])
        # The copy is one instant: its events are 1..N with no gap, a prefix of the live log.
        check = sqlite3.connect(target)
        seqs = [s for (s,) in check.execute("SELECT seq FROM events WHERE session = ? ORDER BY seq", (sid,))]
        self.assertEqual(check.execute("PRAGMA integrity_check").fetchone()[0], "ok")
        check.close()
        self.assertEqual(seqs, list(range(1, len(seqs) + 1)))
        self.assertGreater(len(seqs), 100)
        # Restored into a new home, the runtime serves it.
        restored = tempfile.mkdtemp(prefix="spin-home-", dir=os.path.abspath("."))
        os.makedirs(os.path.join(restored, "var"))
        shutil.copy(target, os.path.join(restored, "var", "spin.sqlite3"))
        again = await start_runtime(self, home=restored)
        reader = await Client.connect(ws_url(again))
        self.addCleanup(reader.close)
        reply = await reader.request("session.attach", session=sid)
        self.assertTrue(reply["ok"], reply)
        await eventually(lambda: len(reader.events(session=sid)) >= len(seqs) + 1, 30)
        replayed = [m["seq"] for m in reader.events(session=sid)]
        self.assertEqual(replayed[:len(seqs)], seqs)
        # The run interrupted by the "crash" the copy froze is finished as such.
        finished = [m for m in reader.events(session=sid, run=run, kind="run.finished")]
        self.assertEqual(finished[0]["error"]["code"], "runtime_restarted")

    async def test_refusals(self) -> None:
        home = tempfile.mkdtemp(prefix="spin-home-", dir=os.path.abspath("."))
        code, err = await self.spin("backup", os.path.join(home, "x.sqlite3"), "--home", home)
        self.assertEqual(code, 2)
        self.assertIn("no store at", err)
        await start_runtime(self, home=home)
        existing = os.path.join(home, "exists")
        open(existing, "w").close()
        code, err = await self.spin("backup", existing, "--home", home)
        self.assertEqual((code, "never overwrites" in err), (2, True))
        code, err = await self.spin("backup", os.path.join(home, "no", "dir", "x"), "--home", home)
        self.assertEqual((code, "does not exist" in err), (2, True))
        await sleep(0)
