"""The audit trail: exactly the expected rows after a scripted session (and no secret
anywhere in SPIN_HOME), GET /api/audit pages (cursor, since, until, limit, refusals),
``spin audit``, retention pruning on the store's thread, and schema 6's migration."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import tempfile
import threading
import time

import treq
from twisted.internet import reactor
from twisted.trial import unittest
from twisted.web.client import HTTPConnectionPool

from spinrt import audit as audit_module
from spinrt.audit import AuditTrail, parse_time, target_of
from spinrt.cli import admin
from spinrt.cli.main import cli
from spinrt.config import ConfigError, RuntimeConfig
from spinrt.sessions import schema
from spinrt.sessions.store import EventStore

from .support import TOKEN, Client, start_runtime, ws_url
from .test_cli import base_environ

SECRET_VALUE = "s3cr3t-value-Qx7Zp"
EPOCH = 1_800_000_000.0  # 2027-01-15T08:00:00Z


class TargetTests(unittest.TestCase):
    def test_only_ids_and_names_reach_a_row(self) -> None:
        target = target_of({
            "id": "r1", "op": "secrets.set", "session": "ss_1", "secrets": {"B": SECRET_VALUE, "A": "x"},
            "cell": {"id": "c1", "type": "shell", "source": f"echo {SECRET_VALUE}", "options": {"env": {"K": "v"}}},
            "host_ssh": {"enabled": True, "username": "u", "private_key": "-----BEGIN", "passphrase": "pp"},
            "private_key": "-----BEGIN", "passphrase": "pp", "token": "spin.tk0123456789abcdef." + "a" * 43,
        })
        self.assertEqual(target, {"session": "ss_1", "secrets": ["A", "B"],
                                  "cells": [{"id": "c1", "type": "shell"}],
                                  "host_ssh": {"enabled": True, "username": "u"}, "token": "(not a token id)"})
        self.assertEqual(target_of({"token": "tk0123456789abcdef"}), {"token": "tk0123456789abcdef"})
        self.assertEqual(target_of({"session": "x" * 1000})["session"], "x" * 200)

    def test_times(self) -> None:
        self.assertEqual(parse_time("since", "2027-01-15T08:00:00Z"), EPOCH)
        self.assertEqual(parse_time("since", "2027-01-15T09:00:00+01:00"), EPOCH)
        self.assertEqual(parse_time("since", "2027-01-15T08:00:00"), EPOCH)  # naive: UTC
        self.assertEqual(parse_time("since", "2027-01-15"), EPOCH - 8 * 3600)
        for bad in ("yesterday", "", "2027-13-01", "1800000000"):
            with self.assertRaises(ValueError) as caught:
                parse_time("until", bad)
            self.assertIn("'until' must be an ISO 8601 time", str(caught.exception))

    def test_retention_setting(self) -> None:
        config = RuntimeConfig.from_options({"audit-retention-days": "7"}, {"SPIN_TOKEN": "t"})
        self.assertEqual(config.audit_retention_days, 7.0)
        self.assertEqual(RuntimeConfig.from_options({}, {"SPIN_TOKEN": "t"}).audit_retention_days, 90.0)
        for bad in ("-1", "soon", "nan", "99999999"):
            with self.assertRaises(ConfigError) as caught:
                RuntimeConfig.from_options({"audit-retention-days": bad}, {"SPIN_TOKEN": "t"})
            self.assertIn("--audit-retention-days", str(caught.exception))


class ScriptedSessionTests(unittest.TestCase):
    timeout = 90

    async def test_the_trail_holds_exactly_what_happened_and_no_secret(self) -> None:
        home = tempfile.mkdtemp(prefix="spin-home-", dir=os.path.abspath("."))
        service = await start_runtime(self, "--trusted-proxy", "127.0.0.1/32", home=home)
        url = ws_url(service)
        owner = await Client.connect(url)
        reply = await owner.request("notebook.save", name="runbook", cells=[
            {"id": "c1", "type": "shell", "source": "echo key={{secret:API_KEY}}"}])
        self.assertTrue(reply["ok"], reply)
        reply = await owner.request("tokens.create", name="alice", role="runner")
        token_id, secret = reply["token"]["id"], reply["secret"]
        with self.assertRaises(ConnectionError):
            await Client.connect(url, token="not-the-token", headers={"X-Forwarded-For": "203.0.113.5"})
        alice = await Client.connect(url, token=secret, headers={"X-Forwarded-For": "198.51.100.20"})
        created = await alice.request("session.create", notebook="runbook")
        sid = created["session"]["id"]
        self.assertTrue((await alice.request("secrets.set", session=sid, secrets={"API_KEY": SECRET_VALUE}))["ok"])
        self.assertTrue((await alice.request("session.document", session=sid))["ok"])  # a read: no row
        run = await alice.request("cell.run", session=sid, cell_id="c1")
        finished = await alice.wait_for(lambda m: m.get("event") == "run.finished" and m["run"] == run["run"])
        self.assertEqual(finished["status"], "ok")
        self.assertEqual(alice.output(run["run"]), "key=***\n")
        refused = await alice.request("session.close", session=sid)
        self.assertEqual(refused["error"]["code"], "forbidden")
        await alice.close()
        await owner.close()

        pool = HTTPConnectionPool(reactor, persistent=False)
        base = url.replace("ws://", "http://").rsplit("/", 1)[0]
        # The owner reads the trail through the route, after the disconnects are in.
        for _ in range(100):
            response = await treq.get(base + "/api/audit", headers={"Authorization": f"Bearer {TOKEN}"}, pool=pool)
            body = await response.text()
            rows = [json.loads(line) for line in body.splitlines()]
            if sum(r["action"] == "disconnect" for r in rows) == 2:
                break
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/x-ndjson; charset=utf-8"])
        seen = [(r["action"], r["identity"], r["role"], r["client"], r["target"], r["outcome"]) for r in rows]
        self.assertEqual(seen, [
            ("connect", "owner", "owner", "127.0.0.1", {"route": "/ws"}, "ok"),
            ("notebook.save", "owner", "owner", "127.0.0.1",
             {"name": "runbook", "cells": [{"id": "c1", "type": "shell"}]}, "ok"),
            ("tokens.create", "owner", "owner", "127.0.0.1", {"name": "alice", "role": "runner"}, "ok"),
            ("auth", None, None, "203.0.113.5", {"route": "/ws"}, "wrong_token"),
            ("connect", "alice", "runner", "198.51.100.20", {"route": "/ws"}, "ok"),
            ("session.create", "alice", "runner", "198.51.100.20", {"notebook": "runbook"}, "ok"),
            ("secrets.set", "alice", "runner", "198.51.100.20", {"session": sid, "secrets": ["API_KEY"]}, "ok"),
            ("cell.run", "alice", "runner", "198.51.100.20", {"session": sid, "cell_id": "c1"}, "ok"),
            ("session.close", "alice", "runner", "198.51.100.20", {"session": sid}, "forbidden"),
            ("disconnect", "alice", "runner", "198.51.100.20", {"route": "/ws"}, "ok"),  # no close code given
            ("disconnect", "owner", "owner", "127.0.0.1", {"route": "/ws"}, "ok"),  # no close code given
        ])
        self.assertEqual([r["token"] for r in rows if r["identity"] == "alice"], [token_id] * 6)
        ids = [r["id"] for r in rows]
        self.assertEqual(ids, sorted(ids))
        ts = [r["ts"] for r in rows]
        self.assertEqual(ts, sorted(ts))
        self.assertRegex(ts[0], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        # Everything on disk, the store with its WAL included: no secret, no token.
        await service.stopService()
        found = []
        for root, _, files in os.walk(home):
            for name in files:
                with open(os.path.join(root, name), "rb") as f:
                    data = f.read()
                for needle in (SECRET_VALUE, secret, secret.split(".")[2], TOKEN):
                    if needle.encode() in data:
                        found.append((name, needle[:8]))
        self.assertEqual(found, [])


class PagesTests(unittest.TestCase):
    timeout = 60

    async def setUp(self) -> None:
        self.service = await start_runtime(self)
        self.url = ws_url(self.service)
        self.base = self.url.replace("ws://", "http://").rsplit("/", 1)[0]
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        trail = self.service.audit
        self.now = EPOCH
        trail.wallclock = lambda: self.now
        for i in range(25):  # one row a minute from 08:00
            trail.record("cell.run", client="192.0.2.1", target={"session": f"ss_{i}"})
            self.now += 60

    async def get(self, query: str = "", token: str | None = TOKEN) -> tuple[int, list | dict]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = await treq.get(self.base + "/api/audit" + query, headers=headers, pool=self.pool)
        body = await response.text()
        if response.code != 200:
            return response.code, json.loads(body)
        return 200, [json.loads(line) for line in body.splitlines()]

    async def test_cursor_since_until_and_limit(self) -> None:
        code, first = await self.get("?limit=10")
        self.assertEqual((code, len(first)), (200, 10))
        self.assertEqual(first[0]["target"], {"session": "ss_0"})
        code, second = await self.get(f"?limit=10&cursor={first[-1]['id']}")
        self.assertEqual([r["target"]["session"] for r in second], [f"ss_{i}" for i in range(10, 20)])
        code, last = await self.get(f"?limit=10&cursor={second[-1]['id']}")
        self.assertEqual(len(last), 5)  # fewer than the limit: the last page
        code, empty = await self.get(f"?cursor={last[-1]['id']}")
        self.assertEqual((code, empty), (200, []))
        code, window = await self.get("?since=2027-01-15T08:05:00Z&until=2027-01-15T08:08:00Z")
        self.assertEqual([r["target"]["session"] for r in window], ["ss_5", "ss_6", "ss_7"])
        self.assertEqual(window[0]["ts"], "2027-01-15T08:05:00.000Z")
        code, window = await self.get("?since=2027-01-15T09:05:00%2B01:00&limit=2")  # an offset
        self.assertEqual([r["target"]["session"] for r in window], ["ss_5", "ss_6"])
        code, window = await self.get(f"?since=2027-01-15T08:05:00Z&limit=2&cursor={window[-1]['id']}")
        self.assertEqual([r["target"]["session"] for r in window], ["ss_7", "ss_8"])
        code, everything = await self.get()
        self.assertEqual(len(everything), 25)

    async def test_bad_queries_and_refusals(self) -> None:
        for query, word in [("?since=yesterday", "'since'"), ("?until=2027-99-01", "'until'"),
                            ("?limit=0", "'limit'"), ("?limit=10001", "'limit'"), ("?limit=ten", "'limit'"),
                            ("?cursor=-1", "'cursor'"), ("?limit=1&limit=2", "more than once")]:
            code, body = await self.get(query)
            self.assertEqual((code, body["error"]["code"]), (400, "bad_request"), query)
            self.assertIn(word, body["error"]["message"])
        code, body = await self.get(token=None)
        self.assertEqual(code, 401)
        response = await treq.get(self.base + f"/api/audit?token={TOKEN}", pool=self.pool)
        self.assertEqual(response.code, 401)  # the header only: a token never goes in this URL
        await response.content()
        owner = await Client.connect(self.url)
        self.addCleanup(owner.close)
        for role in ("viewer", "runner", "editor"):
            secret = (await owner.request("tokens.create", name=f"{role}-1", role=role))["secret"]
            code, body = await self.get(token=secret)
            self.assertEqual((code, body["error"]["code"]), (403, "forbidden"), role)
        secret = (await owner.request("tokens.create", name="second-owner", role="owner"))["secret"]
        code, rows = await self.get("?limit=10000", token=secret)
        self.assertEqual(code, 200)
        forbidden = [r for r in rows if r["outcome"] == "forbidden"]
        self.assertEqual([(r["action"], r["identity"]) for r in forbidden],
                         [("GET /api/audit", "viewer-1"), ("GET /api/audit", "runner-1"),
                          ("GET /api/audit", "editor-1")])
        auth = [r for r in rows if r["action"] == "auth"]
        self.assertEqual([r["outcome"] for r in auth], ["no_token", "no_token"])
        self.assertNotIn(TOKEN, json.dumps(rows))

    async def test_spin_audit(self) -> None:
        self.patch(admin, "PAGE", 7)  # several pages
        out, err = io.StringIO(), io.StringIO()
        code = await cli(["audit", "--url", self.url, "--since", "2027-01-15T08:03:00Z", "--limit", "15"], reactor,
                         environ=base_environ(SPIN_TOKEN=TOKEN), stdout=out, stderr=err)
        self.assertEqual(code, 0, err.getvalue())
        lines = out.getvalue().splitlines()
        self.assertEqual(len(lines), 15)
        self.assertEqual(lines[0], "2027-01-15T08:03:00.000Z  -  from 192.0.2.1  cell.run  session=ss_3  -> ok")
        out = io.StringIO()
        code = await cli(["audit", "--url", self.url, "--json", "--until", "2027-01-15T08:02:00Z"], reactor,
                         environ=base_environ(SPIN_TOKEN=TOKEN), stdout=out, stderr=err)
        self.assertEqual([json.loads(line)["target"]["session"] for line in out.getvalue().splitlines()],
                         ["ss_0", "ss_1"])
        owner = await Client.connect(self.url)
        self.addCleanup(owner.close)
        viewer = (await owner.request("tokens.create", name="v", role="viewer"))["secret"]
        out, err = io.StringIO(), io.StringIO()
        code = await cli(["audit", "--url", self.url], reactor, environ=base_environ(SPIN_TOKEN=viewer),
                         stdout=out, stderr=err)
        self.assertEqual(code, 1)
        self.assertIn("forbidden", err.getvalue())
        code = await cli(["audit", "--url", self.url, "--limit", "0"], reactor,
                         environ=base_environ(SPIN_TOKEN=TOKEN), stdout=out, stderr=err)
        self.assertEqual(code, 2)


class RetentionTests(unittest.TestCase):
    timeout = 60

    def open_store(self) -> EventStore:
        path = os.path.join(tempfile.mkdtemp(dir=os.path.abspath(".")), "spin.sqlite3")
        store = EventStore(path, reactor)
        store.open_sync()
        store.start()
        self.addCleanup(store.close)
        return store

    async def test_old_rows_are_pruned_in_chunks_on_the_store_thread(self) -> None:
        store = self.open_store()
        now = [EPOCH - 100 * 86400]
        trail = AuditTrail(store, reactor, retention_days=90, wallclock=lambda: now[0])
        for _ in range(23):  # 100 days old
            trail.record("cell.run")
        now[0] = EPOCH - 89 * 86400
        for _ in range(4):  # 89 days old: kept
            trail.record("cell.set")
        now[0] = EPOCH
        await store.drain()
        self.patch(audit_module, "PRUNE_CHUNK", 5)
        threads: list[int] = []
        original = store.in_store_thread

        def watched(work):
            def on_thread(conn):
                threads.append(threading.get_ident())
                return work(conn)
            return original(on_thread)

        store.in_store_thread = watched
        self.assertEqual(await trail.prune(), 23)
        self.assertEqual(len(threads), 5)  # 5 + 5 + 5 + 5 + 3: writes may go between chunks
        self.assertNotIn(threading.get_ident(), threads)  # never the reactor's thread
        rows = await trail.page()
        self.assertEqual([r["action"] for r in rows], ["cell.set"] * 4)
        self.assertEqual(await trail.prune(), 0)
        self.assertEqual(await AuditTrail(store, reactor, retention_days=0).prune(), 0)  # 0: keep for ever

    async def test_the_runtime_prunes_at_start(self) -> None:
        home = tempfile.mkdtemp(prefix="spin-home-", dir=os.path.abspath("."))
        service = await start_runtime(self, "--audit-retention-days", "1", home=home)
        service.audit.wallclock = lambda: time.time() - 2 * 86400
        service.audit.record("cell.run", target={"session": "old"})
        await service.stopService()
        service = await start_runtime(self, "--audit-retention-days", "1", home=home)
        for _ in range(200):
            if service.audit.pruned:
                break
            await treq_sleep(0.02)
        self.assertEqual(service.audit.pruned, 1)
        rows = await service.audit.page()
        self.assertNotIn("old", json.dumps(rows))


def treq_sleep(seconds: float):
    from .support import sleep

    return sleep(seconds)


class MigrationTests(unittest.TestCase):
    def test_a_version_5_store_gains_tokens_audit_and_runtime_secrets_keeping_its_history(self) -> None:
        path = os.path.join(tempfile.mkdtemp(dir=os.path.abspath(".")), "spin.sqlite3")
        conn = sqlite3.connect(path, isolation_level=None)
        for version in range(1, 6):
            schema.MIGRATIONS[version](conn)
        conn.execute("PRAGMA user_version = 5")
        conn.execute("INSERT INTO sessions(id, name, created, state) VALUES ('ss_1', 'kept', '2026-01-01', 'open')")
        conn.executemany("INSERT INTO events(session, seq, body) VALUES (?, ?, ?)",
                         [("ss_1", seq, b'{"seq":%d}' % seq) for seq in range(1, 51)])
        conn.close()
        store = EventStore(path, reactor)
        snapshot = store.open_sync()
        self.assertEqual([(s.id, s.last_seq) for s in snapshot.sessions], [("ss_1", 50)])
        store._conn.close()
        check = sqlite3.connect(path)
        self.assertEqual(check.execute("PRAGMA user_version").fetchone()[0], schema.SCHEMA_VERSION)
        self.assertEqual(check.execute("SELECT COUNT(*) FROM events").fetchone()[0], 50)
        columns = {table: [row[1] for row in check.execute(f"PRAGMA table_info({table})")]
                   for table in ("tokens", "audit", "runtime_secrets")}
        self.assertEqual(columns["runtime_secrets"], ["name", "value", "updated"])
        self.assertEqual(columns["tokens"], ["id", "name", "role", "digest", "created", "expires", "revoked", "last_used"])
        self.assertEqual(columns["audit"], ["id", "ts", "identity", "role", "token", "client", "action", "target",
                                            "outcome"])
        check.close()
