"""Named tokens (PROTOCOL.md section 9): secrets shown once and stored as digests,
identities on the wire, revocation closing live connections, expiry, restarts, and
``spin token`` against a running runtime and a twistd daemon."""

from __future__ import annotations

import hashlib
import io
import os
import sqlite3
import tempfile
import time

import treq
from twisted.internet import reactor
from twisted.trial import unittest
from twisted.web.client import HTTPConnectionPool

from spinrt.cli.main import cli
from spinrt.tokens import OWNER_IDENTITY, Identity, Refusal, TokenError, TokenRegistry

from .support import TOKEN, Client, DaemonProcess, eventually, sleep, start_runtime, ws_url
from .test_cli import base_environ


class FakeStore:
    def __init__(self) -> None:
        self.statements: list[tuple[str, tuple]] = []

    def execute(self, sql: str, params: tuple = ()) -> None:
        self.statements.append((sql, tuple(params)))


class RegistryTests(unittest.TestCase):
    def setUp(self) -> None:
        self.now = 1_800_000_000.0
        self.store = FakeStore()
        self.registry = TokenRegistry(TOKEN, self.store, wallclock=lambda: self.now)

    def test_a_secret_is_256_random_bits_stored_as_its_digest(self) -> None:
        record, secret = self.registry.create("alice", "runner")
        prefix, token_id, random_part = secret.split(".")
        self.assertEqual((prefix, token_id), ("spin", record.id))
        self.assertEqual(len(random_part), 43)  # base64url of 32 bytes
        self.assertEqual(record.digest, hashlib.sha256(secret.encode()).digest())
        (sql, params), = self.store.statements
        self.assertTrue(sql.startswith("INSERT INTO tokens"))
        self.assertNotIn(secret, repr(params))
        self.assertNotIn(random_part, repr(params))
        self.assertIn(hashlib.sha256(secret.encode()).hexdigest(), params)
        self.assertNotIn(secret, repr(record))
        other = self.registry.create("alice", "runner")[1]
        self.assertNotEqual(other, secret)  # rotation: same name, new secret

    def test_who_a_token_is(self) -> None:
        record, secret = self.registry.create("bob", "editor", 1)
        self.assertIs(self.registry.authenticate(TOKEN), OWNER_IDENTITY)
        self.assertEqual(self.registry.authenticate(secret), Identity("bob", "editor", record.id, self.now + 86400))
        self.assertEqual(self.registry.authenticate(None), Refusal("no_token"))
        wrong_secret = secret[:-1] + ("A" if secret[-1] != "A" else "B")
        for wrong in (wrong_secret, "spin.tk0000000000000000." + "a" * 43, "", "x" * 5000, TOKEN + " ",
                      secret + "x", secret.upper()):
            self.assertEqual(self.registry.authenticate(wrong), Refusal("wrong_token"), wrong[:30])
        self.now += 86400
        self.assertEqual(self.registry.authenticate(secret), Refusal("expired_token", "bob", record.id))
        self.now -= 10
        self.registry.revoke(record.id)
        self.assertEqual(self.registry.authenticate(secret), Refusal("revoked_token", "bob", record.id))

    def test_last_used_is_written_at_most_once_a_minute(self) -> None:
        record, secret = self.registry.create("carol", "viewer")
        for _ in range(5):
            self.registry.authenticate(secret)
        updates = [s for s in self.store.statements if s[0].startswith("UPDATE tokens SET last_used")]
        self.assertEqual(len(updates), 1)
        self.now += 61
        self.registry.authenticate(secret)
        self.assertEqual(len([s for s in self.store.statements if "last_used" in s[0]]), 2)
        self.assertEqual(self.registry.list()[0]["last_used"], "2027-01-15T08:01:01.000Z")

    def test_bad_requests(self) -> None:
        for name in ("", "a b", "x" * 65, "owner", "OWNER", "tab\t", "new\nline", 7, None):
            with self.assertRaises(TokenError) as caught:
                self.registry.create(name, "viewer")
            self.assertEqual(caught.exception.code, "bad_request")
        self.registry.create("José.ops@team-1", "viewer")  # Unicode letters are names too
        for role in ("root", "", None, "Owner"):
            with self.assertRaises(TokenError):
                self.registry.create("dave", role)
        for days in (0, -1, 3651, True, "7", float("nan")):
            with self.assertRaises(TokenError):
                self.registry.create("dave", "viewer", days)
        with self.assertRaises(TokenError) as caught:
            self.registry.revoke("tk_nope")
        self.assertEqual(caught.exception.code, "no_such_token")
        record, _ = self.registry.create("erin", "viewer")
        self.registry.revoke(record.id)
        with self.assertRaises(TokenError):
            self.registry.revoke(record.id)  # twice: already gone
        self.assertEqual([t["name"] for t in self.registry.list()], ["José.ops@team-1"])


class TokenWebSocketTests(unittest.TestCase):
    timeout = 60

    async def setUp(self) -> None:
        self.home = tempfile.mkdtemp(prefix="spin-home-", dir=os.path.abspath("."))
        self.service = await start_runtime(self, home=self.home)
        self.url = ws_url(self.service)
        self.owner = await Client.connect(self.url)
        self.addCleanup(self.owner.close)

    async def create(self, name: str, role: str, **extra) -> tuple[dict, str]:
        reply = await self.owner.request("tokens.create", name=name, role=role, **extra)
        self.assertTrue(reply["ok"], reply)
        return reply["token"], reply["secret"]

    async def test_create_list_and_the_identity_on_the_wire(self) -> None:
        welcome = await self.owner.wait_for(lambda m: m.get("event") == "welcome")
        self.assertEqual((welcome["you"]["name"], welcome["you"]["role"]), ("owner", "owner"))
        token, secret = await self.create("alice", "runner", expires_in_days=30)
        self.assertEqual(set(token), {"id", "name", "role", "created", "expires"})
        self.assertEqual((token["name"], token["role"]), ("alice", "runner"))
        listed = (await self.owner.request("tokens.list"))["tokens"]
        self.assertEqual([(t["id"], t["name"], t["last_used"]) for t in listed], [(token["id"], "alice", None)])
        self.assertNotIn(secret, repr(listed))
        alice = await Client.connect(self.url, token=secret)
        self.addCleanup(alice.close)
        welcome = await alice.wait_for(lambda m: m.get("event") == "welcome")
        self.assertEqual((welcome["you"]["name"], welcome["you"]["role"]), ("alice", "runner"))
        reply = await alice.request("tokens.list")
        self.assertEqual(reply["error"]["code"], "forbidden")
        listed = (await self.owner.request("tokens.list"))["tokens"]
        self.assertIsNotNone(listed[0]["last_used"])
        # HTTP routes know the token too.
        pool = HTTPConnectionPool(reactor, persistent=False)
        base = self.url.replace("ws://", "http://").rsplit("/", 1)[0]
        response = await treq.get(base + "/api/status", headers={"Authorization": f"Bearer {secret}"}, pool=pool)
        self.assertEqual(response.code, 200)
        await response.content()
        response = await treq.get(base + "/api/audit", headers={"Authorization": f"Bearer {secret}"}, pool=pool)
        self.assertEqual(response.code, 403)
        self.assertEqual((await response.json())["error"]["code"], "forbidden")
        # Bad requests are refused with reasons, nothing made.
        for params, code in [({"name": "a b", "role": "viewer"}, "bad_request"),
                             ({"name": "x", "role": "root"}, "bad_request"),
                             ({"name": "x", "role": "viewer", "expires_in_days": 0}, "bad_request"),
                             ({"name": "owner", "role": "viewer"}, "bad_request")]:
            reply = await self.owner.request("tokens.create", **params)
            self.assertEqual(reply["error"]["code"], code, params)
        reply = await self.owner.request("tokens.revoke", token="tk_nope")
        self.assertEqual(reply["error"]["code"], "no_such_token")
        self.assertEqual(len((await self.owner.request("tokens.list"))["tokens"]), 1)

    async def test_revoking_closes_the_token_connections_mid_session(self) -> None:
        _, secret = await self.create("mallory", "editor")
        _, other_secret = await self.create("trent", "viewer")
        sid = (await self.owner.request("session.create", name="shared"))["session"]["id"]
        mallory = await Client.connect(self.url, token=secret)
        mallory_too = await Client.connect(self.url, token=secret)  # a second tab
        trent = await Client.connect(self.url, token=other_secret)
        self.addCleanup(trent.close)
        for client in (mallory, mallory_too, trent):
            self.assertTrue((await client.request("session.attach", session=sid))["ok"])
        reply = await mallory.request("cell.run", session=sid, cell={"id": "loop", "type": "shell",
                                                                   "source": "while true; do echo tick; sleep 0.05; done"})
        self.assertTrue(reply["ok"], reply)
        run = reply["run"]
        await mallory.wait_for(lambda m: m.get("event") == "stream" and m.get("run") == run)
        token_id = next(t["id"] for t in (await self.owner.request("tokens.list"))["tokens"] if t["name"] == "mallory")
        self.assertTrue((await self.owner.request("tokens.revoke", token=token_id))["ok"])
        # Both of mallory's connections close at once; trent's stays.
        self.assertEqual(await mallory.closed, 4401)
        self.assertEqual(await mallory_too.closed, 4401)
        self.assertFalse(trent.closed.called)
        presence = await self.owner.wait_for(lambda m: m.get("event") == "presence" and m["session"] == sid
                                             and [c["name"] for c in m["clients"]] == ["owner", "trent"])
        self.assertEqual(len(presence["clients"]), 2)
        # The run mallory started goes on (runs outlive their client); she cannot come back.
        self.assertTrue((await trent.request("ping"))["ok"])
        with self.assertRaises(ConnectionError):
            await Client.connect(self.url, token=secret)
        self.assertTrue((await self.owner.request("run.cancel", session=sid, run=run))["ok"])
        rows = await self.service.audit.page()
        self.assertIn(("tokens.revoke", "owner", "ok"), [(r["action"], r["identity"], r["outcome"]) for r in rows])
        refused = [r for r in rows if r["action"] == "auth" and r["outcome"] == "revoked_token"]
        self.assertEqual([(r["identity"], r["token"]) for r in refused], [("mallory", token_id)])

    async def test_an_owner_may_revoke_its_own_token_and_gets_the_reply(self) -> None:
        token, secret = await self.create("ops-owner", "owner")
        me = await Client.connect(self.url, token=secret)
        reply = await me.request("tokens.revoke", token=token["id"])
        self.assertTrue(reply["ok"], reply)
        self.assertEqual(await me.closed, 4401)

    async def test_an_expired_token_is_refused_and_its_connection_ends(self) -> None:
        _, secret = await self.create("temp", "viewer", expires_in_days=1.5 / 86400)  # 1.5 s
        started = time.monotonic()
        temp = await Client.connect(self.url, token=secret)
        self.assertEqual(await temp.closed, 4401)
        self.assertLess(time.monotonic() - started, 5)
        with self.assertRaises(ConnectionError):
            await Client.connect(self.url, token=secret)
        await eventually(lambda: True)
        rows = await self.service.audit.page()
        self.assertIn("expired_token", [r["outcome"] for r in rows if r["action"] == "auth"])

    async def test_tokens_survive_a_restart_and_only_digests_are_stored(self) -> None:
        token, secret = await self.create("frank", "runner")
        gone, gone_secret = await self.create("grace", "runner")
        self.assertTrue((await self.owner.request("tokens.revoke", token=gone["id"]))["ok"])
        await self.owner.close()
        await self.service.stopService()
        service = await start_runtime(self, home=self.home)
        url = ws_url(service)
        frank = await Client.connect(url, token=secret)
        self.addCleanup(frank.close)
        welcome = await frank.wait_for(lambda m: m.get("event") == "welcome")
        self.assertEqual(welcome["you"]["name"], "frank")
        with self.assertRaises(ConnectionError):
            await Client.connect(url, token=gone_secret)
        conn = sqlite3.connect(os.path.join(self.home, "var", "spin.sqlite3"))
        rows = conn.execute("SELECT id, name, role, digest, revoked IS NOT NULL FROM tokens ORDER BY created").fetchall()
        conn.close()
        self.assertEqual([(r[0], r[1], r[4]) for r in rows], [(token["id"], "frank", 0), (gone["id"], "grace", 1)])
        self.assertEqual(rows[0][3], hashlib.sha256(secret.encode()).hexdigest())


class TokenCliTests(unittest.TestCase):
    timeout = 90

    async def spin(self, *argv: str, token: str = TOKEN) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = await cli(list(argv), reactor, environ=base_environ(SPIN_TOKEN=token), stdout=out, stderr=err)
        return code, out.getvalue(), err.getvalue()

    async def test_create_list_revoke_against_a_twistd_daemon(self) -> None:
        home = tempfile.mkdtemp(prefix="spin-home-", dir=os.path.abspath("."))
        daemon = DaemonProcess(home)
        self.addCleanup(daemon.stop)
        url = await daemon.ready()
        code, out, err = await self.spin("token", "create", "ivan", "--role", "runner", "--url", url)
        self.assertEqual(code, 0, err)
        secret = out.strip()
        self.assertRegex(secret, r"^spin\.tk[0-9a-f]{16}\.[A-Za-z0-9_-]{43}$")
        self.assertRegex(err, r"created token tk[0-9a-f]{16} for ivan \(runner\), expires never")
        ivan = await Client.connect(url, token=secret)
        welcome = await ivan.wait_for(lambda m: m.get("event") == "welcome")
        self.assertEqual(welcome["you"]["role"], "runner")
        code, out, err = await self.spin("token", "list", "--url", url)
        self.assertEqual(code, 0, err)
        header, line = out.splitlines()
        self.assertEqual(header.split(), ["ID", "NAME", "ROLE", "CREATED", "EXPIRES", "LAST_USED"])
        token_id = line.split()[0]
        self.assertEqual(line.split()[1:3], ["ivan", "runner"])
        self.assertNotIn(secret, out)
        # A runner's token is refused the owner's commands.
        code, out, err = await self.spin("token", "list", "--url", url, token=secret)
        self.assertEqual(code, 1)
        self.assertIn("forbidden", err)
        code, out, err = await self.spin("token", "revoke", token_id, "--url", url)
        self.assertEqual(code, 0, err)
        self.assertEqual(await ivan.closed, 4401)
        code, out, err = await self.spin("token", "revoke", token_id, "--url", url)
        self.assertEqual((code, "no_such_token" in err), (1, True))
        code, out, err = await self.spin("token", "list", "--url", url, "--json")
        self.assertEqual((code, out), (0, "[]\n"))
        code, _, err = await self.spin("token", "list", "--url", url, token="wrong-token")
        self.assertEqual(code, 4)
        self.assertIn("refused the token (HTTP 401)", err)
        code, _, err = await self.spin("token", "create", "x", "--url", url)
        self.assertEqual(code, 2)
        self.assertIn("--role", err)
        await sleep(0.1)
        # Neither the daemon's log nor its store holds the secret.
        await daemon.stop()
        for root, _, files in os.walk(home):
            for name in files:
                with open(os.path.join(root, name), "rb") as f:
                    data = f.read()
                self.assertNotIn(secret.encode(), data, name)
                self.assertNotIn(secret.split(".")[2].encode(), data, name)
                self.assertNotIn(TOKEN.encode(), data, name)
