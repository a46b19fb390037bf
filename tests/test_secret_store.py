"""The runtime secret store: Fernet at rest under a key kept out of the store and of
every cell, owner-managed, names only in lists, resolution session -> store ->
environment with masking, key rotation, restarts; and session-scope list/delete."""

from __future__ import annotations

import os
import sqlite3
import tempfile

import treq
from cryptography.fernet import Fernet
from twisted.internet import reactor
from twisted.trial import unittest
from twisted.web.client import HTTPConnectionPool

from spinrt.config import ConfigError, RuntimeConfig
from spinrt.secret_store import RuntimeSecretStore, SecretStoreError, parse_keys

from .support import TOKEN, Client, start_runtime, ws_url

KEY = Fernet.generate_key().decode()
OTHER_KEY = Fernet.generate_key().decode()
VALUE = "db-pa55word-Kq93vZ"


class FakeStore:
    def __init__(self) -> None:
        self.statements: list[tuple[str, tuple]] = []

    def execute(self, sql: str, params: tuple = ()) -> None:
        self.statements.append((sql, tuple(params)))


class StoreUnitTests(unittest.TestCase):
    def test_values_are_sealed_and_names_checked(self) -> None:
        fake = FakeStore()
        store = RuntimeSecretStore(parse_keys(KEY, "SPIN_SECRET_KEY"), fake)
        store.set({"DB_PASSWORD": VALUE, "api.key-2": "k" * 20})
        self.assertEqual(store["DB_PASSWORD"], VALUE)
        self.assertEqual(store.names(), ["DB_PASSWORD", "api.key-2"])
        self.assertEqual(sorted(store), ["DB_PASSWORD", "api.key-2"])
        for sql, params in fake.statements:
            self.assertNotIn(VALUE.encode(), b"".join(p for p in params if isinstance(p, bytes)))
            self.assertNotIn(VALUE, repr(params))
        sealed = dict((p[0], p[1]) for _, p in fake.statements)
        self.assertEqual(Fernet(KEY.encode()).decrypt(sealed["DB_PASSWORD"]).decode(), VALUE)
        for bad in ("", "1ABC", "with space", "a/b", "x" * 201, "{{x}}"):
            with self.assertRaises(SecretStoreError) as caught:
                store.set({bad: "v"})
            self.assertEqual(caught.exception.code, "bad_request")
        with self.assertRaises(SecretStoreError):
            store.set({"BIG": "x" * (64 * 1024 + 1)})
        self.assertEqual(store.delete(["DB_PASSWORD", "NOPE"]), ["DB_PASSWORD"])
        self.assertNotIn("DB_PASSWORD", store)
        self.assertEqual(fake.statements[-1], ("DELETE FROM runtime_secrets WHERE name = ?", ("DB_PASSWORD",)))

    def test_off_without_a_key(self) -> None:
        store = RuntimeSecretStore(None)
        for call in (store.names, lambda: store.set({"A": "b"}), lambda: store.delete(["A"])):
            with self.assertRaises(SecretStoreError) as caught:
                call()
            self.assertEqual(caught.exception.code, "secret_store_disabled")
            self.assertIn("SPIN_SECRET_KEY", caught.exception.message)
        store.load([("A", b"sealed")])  # rows it cannot open are kept, not read
        self.assertNotIn("A", store)
        self.assertEqual(len(store), 0)

    def test_keys_rotate_and_a_wrong_key_is_caught_at_start(self) -> None:
        fake = FakeStore()
        old = RuntimeSecretStore(parse_keys(KEY, "k"), fake)
        old.set({"S": VALUE})
        rows = [(p[0], p[1]) for _, p in fake.statements]
        rotated = RuntimeSecretStore(parse_keys(f"{OTHER_KEY},{KEY}", "k"), FakeStore())
        rotated.load(rows)
        self.assertEqual(rotated["S"], VALUE)
        rotated.set({"T": "new-value-123"})
        self.assertEqual(Fernet(OTHER_KEY.encode()).decrypt(rotated._sealed["T"]).decode(), "new-value-123")
        with self.assertRaises(ValueError) as caught:
            RuntimeSecretStore(parse_keys(OTHER_KEY, "k")).load(rows)
        self.assertIn("does not open 1 of the 1 stored runtime secrets", str(caught.exception))
        for bad in ("", "not-a-key", KEY[:-2], "é" * 44):
            with self.assertRaises(ValueError):
                parse_keys(bad, "SPIN_SECRET_KEY")

    def test_configuration(self) -> None:
        config = RuntimeConfig.from_options({}, {"SPIN_TOKEN": "t", "SPIN_SECRET_KEY": KEY, "OTHER": "x"})
        self.assertIsNotNone(config.secret_keys)
        self.assertEqual(dict(config.environ), {"SPIN_TOKEN": "t", "OTHER": "x"})  # cells never see the key
        self.assertNotIn(KEY, repr(config))
        self.assertIsNone(RuntimeConfig.from_options({}, {"SPIN_TOKEN": "t"}).secret_keys)
        with self.assertRaises(ConfigError) as caught:
            RuntimeConfig.from_options({}, {"SPIN_TOKEN": "t", "SPIN_SECRET_KEY": "hunter2"})
        self.assertIn("SPIN_SECRET_KEY is not a Fernet key", str(caught.exception))
        self.assertNotIn("hunter2", str(caught.exception))
        path = os.path.join(tempfile.mkdtemp(dir=os.path.abspath(".")), "key")
        with open(path, "w") as f:
            f.write(KEY + "\n" + OTHER_KEY + "\n")
        config = RuntimeConfig.from_options({"secret-key-file": path}, {"SPIN_TOKEN": "t"})
        self.assertIsNotNone(config.secret_keys)
        with self.assertRaises(ConfigError) as caught:
            RuntimeConfig.from_options({"secret-key-file": path + ".missing"}, {"SPIN_TOKEN": "t"})
        self.assertIn("--secret-key-file", str(caught.exception))


class RuntimeStoreTests(unittest.TestCase):
    timeout = 90

    async def start(self, home: str, key: str | None = KEY) -> tuple:
        environ = {"SPIN_SECRET_KEY": key} if key else {"SPIN_SECRET_KEY": ""}
        service = await start_runtime(self, home=home, environ={**environ, "FROM_ENV": "env-value-77"})
        owner = await Client.connect(ws_url(service))
        self.addCleanup(owner.close)
        return service, owner

    async def test_owner_sets_everyone_uses_masked_and_it_survives_a_restart(self) -> None:
        home = tempfile.mkdtemp(prefix="spin-home-", dir=os.path.abspath("."))
        service, owner = await self.start(home)
        reply = await owner.request("secrets.set", scope="runtime", secrets={"DB_PASSWORD": VALUE})
        self.assertTrue(reply["ok"], reply)
        self.assertEqual((await owner.request("secrets.list", scope="runtime"))["secrets"], ["DB_PASSWORD"])
        secret = (await owner.request("tokens.create", name="eve", role="editor"))["secret"]
        eve = await Client.connect(ws_url(service), token=secret)
        self.addCleanup(eve.close)
        reply = await eve.request("secrets.set", scope="runtime", secrets={"X": "y" * 10})
        self.assertEqual(reply["error"]["code"], "forbidden")
        self.assertEqual((await eve.request("secrets.list", scope="runtime"))["secrets"], ["DB_PASSWORD"])
        sid = (await eve.request("session.create", name="uses it"))["session"]["id"]
        finished = await eve.run(sid, {"type": "shell", "source":
                                       "echo pw={{secret:DB_PASSWORD}} env={{secret:FROM_ENV}} key=${SPIN_SECRET_KEY:-none}"})
        self.assertEqual(finished["status"], "ok")
        self.assertEqual(eve.output(finished["run"]), "pw=*** env=*** key=none\n")
        # The session's own secret wins over the store.
        self.assertTrue((await eve.request("secrets.set", session=sid, secrets={"DB_PASSWORD": "session-pw-0001"}))["ok"])
        finished = await eve.run(sid, {"type": "shell", "source": "echo {{secret:DB_PASSWORD}} | tr a-z A-Z"})
        self.assertEqual(eve.output(finished["run"]), "SESSION-PW-0001\n")  # another form: not this value's
        finished = await eve.run(sid, {"type": "shell", "source": "echo {{runtime_env:SPIN_SECRET_KEY}}"})
        self.assertEqual(finished["error"]["code"], "template_error")
        pool = HTTPConnectionPool(reactor, persistent=False)
        base = ws_url(service).replace("ws://", "http://").rsplit("/", 1)[0]
        response = await treq.get(base + "/api/status", headers={"Authorization": f"Bearer {TOKEN}"}, pool=pool)
        self.assertEqual((await response.json())["secret_store"], {"enabled": True, "count": 1})
        rows = await service.audit.page()
        sets = [(r["identity"], r["target"], r["outcome"]) for r in rows if r["action"] == "secrets.set"]
        self.assertEqual(sets[:2], [("owner", {"scope": "runtime", "secrets": ["DB_PASSWORD"]}, "ok"),
                                    ("eve", {"scope": "runtime", "secrets": ["X"]}, "forbidden")])
        await eve.close()
        await owner.close()
        await service.stopService()
        # Nothing on disk holds the value or the key: ciphertext only.
        for root, _, files in os.walk(home):
            for name in files:
                with open(os.path.join(root, name), "rb") as f:
                    data = f.read()
                self.assertNotIn(VALUE.encode(), data, name)
                self.assertNotIn(KEY.encode(), data, name)
        conn = sqlite3.connect(os.path.join(home, "var", "spin.sqlite3"))
        (sealed,) = conn.execute("SELECT value FROM runtime_secrets WHERE name = 'DB_PASSWORD'").fetchone()
        conn.close()
        self.assertEqual(Fernet(KEY.encode()).decrypt(sealed).decode(), VALUE)
        # After a restart with the same key it is there; a wrong key stops the start with a clear reason.
        service, owner = await self.start(home)
        self.assertEqual(service.runtime_secrets["DB_PASSWORD"], VALUE)
        reply = await owner.request("secrets.delete", scope="runtime", names=["DB_PASSWORD", "NOT_THERE"])
        self.assertEqual(reply["deleted"], ["DB_PASSWORD"])
        self.assertEqual((await owner.request("secrets.list", scope="runtime"))["secrets"], [])
        await owner.close()
        await service.stopService()

    async def test_a_wrong_key_refuses_to_start(self) -> None:
        home = tempfile.mkdtemp(prefix="spin-home-", dir=os.path.abspath("."))
        service, owner = await self.start(home)
        self.assertTrue((await owner.request("secrets.set", scope="runtime", secrets={"A": VALUE}))["ok"])
        await owner.close()
        await service.stopService()
        with self.assertRaises(SystemExit) as caught:
            await start_runtime(self, home=home, environ={"SPIN_SECRET_KEY": OTHER_KEY})
        self.assertIn("SPIN_SECRET_KEY does not open 1 of the 1 stored runtime secrets", str(caught.exception))

    async def test_without_a_key_the_store_is_off_and_says_why(self) -> None:
        home = tempfile.mkdtemp(prefix="spin-home-", dir=os.path.abspath("."))
        service, owner = await self.start(home, key=None)
        for op, params in [("secrets.set", {"secrets": {"A": "b"}}), ("secrets.list", {}),
                           ("secrets.delete", {"names": ["A"]})]:
            reply = await owner.request(op, scope="runtime", **params)
            self.assertEqual(reply["error"]["code"], "secret_store_disabled", op)
            self.assertIn("SPIN_SECRET_KEY", reply["error"]["message"])
        self.assertEqual(service.status()["secret_store"], {"enabled": False, "count": 0})
        # Environment secrets still resolve, as before.
        sid = (await owner.request("session.create"))["session"]["id"]
        finished = await owner.run(sid, {"type": "shell", "source": "echo {{secret:FROM_ENV}}"})
        self.assertEqual(owner.output(finished["run"]), "***\n")

    async def test_bad_scopes(self) -> None:
        home = tempfile.mkdtemp(prefix="spin-home-", dir=os.path.abspath("."))
        service, owner = await self.start(home)
        sid = (await owner.request("session.create"))["session"]["id"]
        for params, word in [({"secrets": {"A": "b"}}, "needs 'session'"),
                             ({"scope": "runtime", "session": sid, "secrets": {"A": "b"}}, "not both"),
                             ({"scope": "global", "secrets": {"A": "b"}}, "'scope' must be"),
                             ({"scope": "runtime", "secrets": {"bad name": "b"}}, "must be letters")]:
            reply = await owner.request("secrets.set", **params)
            self.assertEqual(reply["error"]["code"], "bad_request", params)
            self.assertIn(word, reply["error"]["message"])
        self.assertEqual((await owner.request("secrets.list", scope="runtime"))["secrets"], [])


class SessionScopeTests(unittest.TestCase):
    timeout = 90

    async def test_list_and_delete_a_session_secrets_kernel_included(self) -> None:
        service = await start_runtime(self)
        owner = await Client.connect(ws_url(service))
        self.addCleanup(owner.close)
        sid = (await owner.request("session.create"))["session"]["id"]
        self.assertTrue((await owner.request("secrets.set", session=sid,
                                             secrets={"ALPHA": "alpha-value-1", "BETA": "beta-value-22"}))["ok"])
        self.assertEqual((await owner.request("secrets.list", session=sid))["secrets"], ["ALPHA", "BETA"])
        finished = await owner.run(sid, {"type": "python", "source": "print(SpinSecrets.names())"}, timeout=60)
        self.assertEqual(owner.output(finished["run"]), "['ALPHA', 'BETA']\n")
        reply = await owner.request("secrets.delete", session=sid, names=["ALPHA", "GAMMA"])
        self.assertEqual(reply["deleted"], ["ALPHA"])
        self.assertEqual((await owner.request("secrets.list", session=sid))["secrets"], ["BETA"])
        finished = await owner.run(sid, {"type": "python", "source":
                                         "print(SpinSecrets.names(), SpinSecrets.get_secret('ALPHA', None))"})
        self.assertEqual(owner.output(finished["run"]), "['BETA'] None\n")
        finished = await owner.run(sid, {"type": "shell", "source": "echo {{secret:ALPHA}}"})
        self.assertEqual(finished["error"]["code"], "template_error")
        # A value once set stays masked: output that echoes it is still hidden.
        finished = await owner.run(sid, {"type": "shell", "source": "echo alpha-value-1"})
        self.assertEqual(owner.output(finished["run"]), "***\n")
