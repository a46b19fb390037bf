"""Shell cells over SSH against a real OpenSSH sshd on 127.0.0.1 (see tests/sshd.py)."""

from __future__ import annotations

import json
import os
import random
import stat
import tempfile
import time

import treq
from twisted.internet import reactor
from twisted.trial import unittest
from twisted.web.client import HTTPConnectionPool

from spinrt.sshkeys import describe_key, fingerprint

from . import sshd as sshd_fixture
from .sshd import TestSSHD, free_port, make_key, processes_with
from .support import TOKEN, Client, eventually, start_runtime, ws_url

KINDS = [("ed25519", None), ("ed25519", "pass phrase 1"), ("ecdsa", None), ("ecdsa", "p2"),
         ("rsa", None), ("rsa", "p3")]


def unique_sleep() -> str:
    """A sleep command to find on the host afterwards."""
    return f"sleep 1234.{random.randrange(10**6):06d}"


class SSHTestCase(unittest.TestCase):
    timeout = 60

    async def setUp(self) -> None:
        sshd_fixture.require(self)
        self.sshd = await TestSSHD().start(self)
        self.key, public = make_key("ed25519")
        self.sshd.authorize(public)

    async def runtime(self, home: str | None = None, environ: dict[str, str] | None = None) -> tuple[Client, str]:
        """A runtime, a client, and a session."""
        self.service = await start_runtime(self, home=home, environ=environ)
        client = await Client.connect(ws_url(self.service))
        self.addCleanup(client.close)
        reply = await client.request("session.create")
        return client, reply["session"]["id"]

    async def configure_host(self, client: Client, **extra) -> dict:
        fields = {"enabled": True, "username": self.sshd.user, "private_key": self.key,
                  "host": "127.0.0.1", "port": self.sshd.port, **extra}
        reply = await client.request("runtime.configure", host_ssh=fields)
        self.assertTrue(reply["ok"], reply)
        return reply

    async def run_cell(self, client: Client, sid: str, source: str, timeout: float = 30, **options) -> dict:
        options.setdefault("target", "host")
        return await client.run(sid, {"type": "shell", "source": source, "options": options}, timeout)

    def home(self) -> str:
        return tempfile.mkdtemp(prefix="spin-home-", dir=os.path.abspath("."))


class KeyTypes(SSHTestCase):
    async def test_ed25519_ecdsa_rsa_with_and_without_passphrase(self) -> None:
        client, sid = await self.runtime()
        for kind, passphrase in KINDS:
            private, public = make_key(kind, passphrase)
            self.sshd.authorize(public)
            name = f"{kind}-{'pass' if passphrase else 'plain'}"
            reply = await client.request(
                "connections.set", name=name, host="127.0.0.1", port=self.sshd.port,
                username=self.sshd.user, private_key=private, **({"passphrase": passphrase} if passphrase else {}))
            self.assertTrue(reply["ok"], reply)
            self.assertTrue(reply["connection"]["key_fingerprint"].startswith("SHA256:"))
        for kind, passphrase in KINDS:
            name = f"{kind}-{'pass' if passphrase else 'plain'}"
            finished = await self.run_cell(client, sid, "whoami; echo $SSH_CONNECTION", target=name)
            self.assertEqual(finished["status"], "ok", (name, finished))
            out = client.output(finished["run"]).splitlines()
            self.assertEqual(out[0], self.sshd.user)
            self.assertTrue(out[1].endswith(f" {self.sshd.port}"), out)
        # Six keys, six connections; OpenSSH 9.2 accepts no SHA-1 RSA signature,
        # so the RSA logins prove the rsa-sha2 path.
        self.assertEqual(self.sshd.accepted(), 6)
        self.assertEqual(bytes(self.sshd.log).count(b"ssh2: RSA SHA256:"), 2)

    async def test_bad_keys_are_refused_at_configure_time(self) -> None:
        client, sid = await self.runtime()
        private, _ = make_key("ed25519", "right")
        cases = [
            ({"private_key": private}, "encrypted"),
            ({"private_key": private, "passphrase": "wrong"}, "wrong passphrase"),
            ({"private_key": make_key("rsa")[1]}, "public key"),
            ({"private_key": "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----"}, "could not be read"),
        ]
        for fields, words in cases:
            reply = await client.request("connections.set", name="x", host="h", username="u", **fields)
            self.assertEqual(reply["error"]["code"], "ssh_key_invalid", reply)
            self.assertIn(words, reply["error"]["message"])
            self.assertNotIn("AAAA", reply["error"]["message"])
            reply = await client.request("runtime.configure", host_ssh={"enabled": True, "username": "u", **fields})
            self.assertEqual(reply["error"]["code"], "ssh_key_invalid", reply)
        reply = await client.request("connections.set", name="host", host="h", username="u", private_key=self.key)
        self.assertEqual(reply["error"]["code"], "bad_request")
        reply = await client.request("connections.set", name="n", host="h", port=70000, username="u", private_key=self.key)
        self.assertEqual(reply["error"]["code"], "bad_request")
        reply = await client.request("connections.delete", name="nope")
        self.assertEqual(reply["error"]["code"], "unknown_connection")
        self.assertEqual((await client.request("connections.list"))["connections"], [])


class Running(SSHTestCase):
    async def test_streams_exit_status_cwd_env_and_result(self) -> None:
        client, sid = await self.runtime()
        reply = await self.configure_host(client)
        self.assertEqual(reply["host_ssh"], {
            "enabled": True, "username": self.sshd.user, "host": "127.0.0.1", "port": self.sshd.port,
            "key_fingerprint": reply["host_ssh"]["key_fingerprint"]})
        # Output arrives while the command still runs, stdout and stderr apart.
        started = time.monotonic()
        ran = await client.request("cell.run", session=sid, cell={
            "type": "shell", "source": "echo first; sleep 1.5; echo second >&2; exit 3",
            "options": {"target": "host"}, "output_variable": "res"})
        run = ran["run"]
        first = await client.wait_for(lambda m: m.get("event") == "stream" and m.get("run") == run and m["name"] == "stdout")
        seen_after = time.monotonic() - started
        self.assertFalse(client.events(run=run, kind="run.finished"))
        finished = await client.wait_for(lambda m: m.get("event") == "run.finished" and m.get("run") == run)
        self.assertLess(seen_after, 1.4)
        self.assertEqual(first["text"], "first\n")
        self.assertEqual((finished["status"], finished["exit_code"]), ("error", 3))
        self.assertEqual(finished["error"]["code"], "exit_status")
        self.assertEqual(client.output(run), "first\n")
        stderr = client.output(run, "stderr")
        # The first connection recorded the host key and said so (not part of the result).
        self.assertIn(f"recorded its host key {describe_key(self.sshd.host_key)}", stderr)
        self.assertTrue(stderr.endswith("second\n"))
        # The CellResult: stdout, stderr (without the notice), exit code.
        finished = await self.run_cell(
            client, sid, "printf '%s|%s|%s' {{res.stdout|shquote}} {{res.stderr|shquote}} {{res.exit_code}}",
            target="local")
        self.assertEqual(client.output(finished["run"]), "first\n|second\n|3")
        # cwd and env reach the remote shell verbatim: nothing in them is interpreted.
        tricky = "it's $(touch /tmp/spin-pwned) `id` \"q\" \\ ;"
        finished = await self.run_cell(client, sid, 'pwd; printf "%s|%s\\n" "$SPIN_A" "$SPIN_B"',
                                  cwd=self.sshd.dir, env={"SPIN_A": tricky, "SPIN_B": ""})
        self.assertEqual(finished["status"], "ok", finished)
        self.assertEqual(client.output(finished["run"]), f"{self.sshd.dir}\n{tricky}|\n")
        self.assertFalse(os.path.exists("/tmp/spin-pwned"))
        finished = await self.run_cell(client, sid, "pwd", cwd="~")
        self.assertEqual(client.output(finished["run"]).strip(), os.path.expanduser("~" + self.sshd.user))
        finished = await self.run_cell(client, sid, "true", cwd="/no/such/dir")
        self.assertEqual(finished["status"], "error")
        self.assertIn("/no/such/dir", client.output(finished["run"], "stderr"))
        finished = await self.run_cell(client, sid, "echo hi", shell="sh", env={"BAD-NAME": "x"})
        self.assertEqual(finished["error"]["code"], "bad_option")
        # One connection for all these cells.
        self.assertEqual(self.sshd.accepted(), 1)

    async def test_reuse_then_reconnect_after_the_connection_drops(self) -> None:
        client, sid = await self.runtime()
        await self.configure_host(client)
        for _ in range(3):
            self.assertEqual((await self.run_cell(client, sid, "echo ok"))["status"], "ok")
        self.assertEqual(self.sshd.accepted(), 1)
        self.assertGreater(self.sshd.kill_connections(), 0)
        await eventually(lambda: not self.sshd.children())
        finished = await self.run_cell(client, sid, "echo again")
        self.assertEqual(finished["status"], "ok", finished)
        self.assertEqual(client.output(finished["run"]), "again\n")
        self.assertEqual(self.sshd.accepted(), 2)
        # A second session gets its own connection.
        other = (await client.request("session.create"))["session"]["id"]
        self.assertEqual((await self.run_cell(client, other, "true"))["status"], "ok")
        self.assertEqual(self.sshd.accepted(), 3)

    async def test_connection_lost_while_running(self) -> None:
        client, sid = await self.runtime()
        await self.configure_host(client)
        sleep = unique_sleep()
        ran = await client.request("cell.run", session=sid, cell={
            "type": "shell", "source": f"echo up; {sleep}", "options": {"target": "host"}})
        await client.wait_for(lambda m: m.get("event") == "stream" and m.get("run") == ran["run"] and m["name"] == "stdout")
        self.sshd.kill_connections()
        finished = await client.wait_for(lambda m: m.get("event") == "run.finished" and m.get("run") == ran["run"])
        self.assertEqual(finished["error"]["code"], "ssh_connection_lost", finished)
        # sshd closed the command's stdin: the guard ended the command.
        await eventually(lambda: not processes_with(sleep), timeout=3)

    async def test_cancel_and_timeout_stop_the_remote_command(self) -> None:
        client, sid = await self.runtime()
        await self.configure_host(client)
        sleep = unique_sleep()
        ran = await client.request("cell.run", session=sid, cell={
            "type": "shell", "source": f"trap 'echo got-int' INT; echo started; {sleep}; echo after",
            "options": {"target": "host"}})
        run = ran["run"]
        await client.wait_for(lambda m: m.get("event") == "stream" and m.get("run") == run and "started" in m["text"])
        self.assertTrue(processes_with(sleep))
        cancelled_at = time.monotonic()
        self.assertTrue((await client.request("run.cancel", session=sid, run=run))["ok"])
        finished = await client.wait_for(lambda m: m.get("event") == "run.finished" and m.get("run") == run)
        self.assertEqual(finished["status"], "cancelled")
        self.assertLess(time.monotonic() - cancelled_at, 2)
        await eventually(lambda: not processes_with(sleep), timeout=3)
        # SIGINT reached the script (its trap ran) and the sleep it waited for.
        self.assertEqual(client.output(run), "started\ngot-int\nafter\n")
        # A script that ignores SIGINT gets SIGTERM next.
        sleep = unique_sleep()
        finished = await self.run_cell(client, sid, f"trap '' INT; echo started; {sleep}", timeout_s=1)
        self.assertEqual(finished["status"], "timeout")
        self.assertLess(finished["duration_ms"], 2500)
        await eventually(lambda: not processes_with(sleep), timeout=3)
        # The connection survives: the next cell uses it.
        self.assertEqual((await self.run_cell(client, sid, "true"))["status"], "ok")
        self.assertEqual(self.sshd.accepted(), 1)


class Failures(SSHTestCase):
    async def test_target_errors(self) -> None:
        client, sid = await self.runtime()
        finished = await self.run_cell(client, sid, "true")
        self.assertEqual(finished["error"]["code"], "host_ssh_disabled")
        self.assertIn("runtime.configure", finished["error"]["evalue"])
        finished = await self.run_cell(client, sid, "true", target="nope")
        self.assertEqual(finished["error"]["code"], "unknown_connection")
        finished = await self.run_cell(client, sid, "true", target=7)
        self.assertEqual(finished["error"]["code"], "bad_option")
        # Wrong key: authentication fails, with the fingerprint and what to check.
        other, _ = make_key("ecdsa", "zz")
        await client.request("connections.set", name="wrongkey", host="127.0.0.1", port=self.sshd.port,
                             username=self.sshd.user, private_key=other, passphrase="zz")
        finished = await self.run_cell(client, sid, "true", target="wrongkey")
        self.assertEqual(finished["error"]["code"], "ssh_auth_failed", finished)
        self.assertIn("authorized_keys", finished["error"]["evalue"])
        # Nothing listening.
        await client.request("connections.set", name="closed", host="127.0.0.1", port=free_port(),
                             username="u", private_key=self.key)
        finished = await self.run_cell(client, sid, "true", target="closed")
        self.assertEqual(finished["error"]["code"], "ssh_refused", finished)
        # A name that does not resolve.
        await client.request("connections.set", name="nowhere", host="no-such-host.invalid",
                             username="u", private_key=self.key)
        finished = await self.run_cell(client, sid, "true", target="nowhere")
        self.assertEqual(finished["error"]["code"], "ssh_unreachable", finished)

    async def test_host_keys_first_use_mismatch_and_strict(self) -> None:
        home = self.home()
        client, sid = await self.runtime(home=home)
        await self.configure_host(client)
        finished = await self.run_cell(client, sid, "true")
        self.assertIn(fingerprint(self.sshd.host_key), client.output(finished["run"], "stderr"))
        known = os.path.join(home, "var", "known_hosts")
        with open(known) as f:
            self.assertEqual(f.read().split()[:2], [f"[127.0.0.1]:{self.sshd.port}", "ssh-ed25519"])
        self.assertEqual(stat.S_IMODE(os.stat(known).st_mode), 0o600)
        second = await self.run_cell(client, sid, "true")
        self.assertNotIn("recorded", client.output(second["run"], "stderr"))
        # The host gets a new key: refused, with both fingerprints and the way out.
        old = self.sshd.host_key
        await self.sshd.stop()
        new = self.sshd.new_host_key()
        await self.sshd.start(self)
        other = (await client.request("session.create"))["session"]["id"]
        finished = await self.run_cell(client, other, "true")
        self.assertEqual(finished["error"]["code"], "ssh_host_key_mismatch", finished)
        message = finished["error"]["evalue"]
        self.assertIn(fingerprint(old), message)
        self.assertIn(fingerprint(new), message)
        self.assertIn(f"ssh-keygen -R '[127.0.0.1]:{self.sshd.port}' -f {known}", message)
        # Strict mode: an unknown host is refused and nothing is recorded.
        client2, sid2 = await self.runtime(environ={"SPIN_SSH_STRICT_HOST_KEYS": "1"})
        await self.configure_host(client2)
        finished = await self.run_cell(client2, sid2, "true")
        self.assertEqual(finished["error"]["code"], "ssh_unknown_host", finished)
        self.assertIn(fingerprint(new), finished["error"]["evalue"])
        self.assertIn("ssh-keyscan", finished["error"]["evalue"])


class Persistence(SSHTestCase):
    async def test_settings_survive_a_restart_without_leaking_keys(self) -> None:
        home = self.home()
        private, public = make_key("rsa", "secret-pass")
        self.sshd.authorize(public)
        client, sid = await self.runtime(home=home)
        replies = [
            await self.configure_host(client),
            await client.request("connections.set", name="box", host="127.0.0.1", port=self.sshd.port,
                                 username=self.sshd.user, private_key=private, passphrase="secret-pass"),
            await client.request("connections.list"),
        ]
        path = os.path.join(home, "var", "ssh.json")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        await client.close()
        await self.service.stopService()

        client, sid = await self.runtime(home=home)
        listed = await client.request("connections.list")
        self.assertEqual([c["name"] for c in listed["connections"]], ["box"])
        self.assertEqual(listed["connections"], replies[2]["connections"])
        for target in ("host", "box"):
            finished = await self.run_cell(client, sid, "whoami", target=target)
            self.assertEqual(finished["status"], "ok", finished)
        # Editing without the key keeps the stored key.
        edited = await client.request("runtime.configure", host_ssh={"enabled": True, "host": "127.0.0.1",
                                                                      "port": self.sshd.port})
        self.assertEqual(edited["host_ssh"]["key_fingerprint"], replies[0]["host_ssh"]["key_fingerprint"])
        replies.append(edited)
        pool = HTTPConnectionPool(reactor, persistent=False)
        base = ws_url(self.service).replace("ws://", "http://").rsplit("/", 1)[0]
        response = await treq.get(base + "/api/status", headers={"Authorization": f"Bearer {TOKEN}"}, pool=pool)
        status_text = await response.text()
        self.assertEqual(response.code, 200)
        for text in [json.dumps(r) for r in replies] + [status_text] + [json.dumps(client.messages)]:
            for secret in ("PRIVATE KEY", "secret-pass", private.splitlines()[1][:20], self.key.splitlines()[1][:20]):
                self.assertNotIn(secret, text)
        # Disabling keeps the key for later, and cells get host_ssh_disabled.
        off = await client.request("runtime.configure", host_ssh={"enabled": False})
        self.assertFalse(off["host_ssh"]["enabled"])
        self.assertEqual((await self.run_cell(client, sid, "true"))["error"]["code"], "host_ssh_disabled")
        deleted = await client.request("connections.delete", name="box")
        self.assertTrue(deleted["ok"])
        self.assertEqual((await self.run_cell(client, sid, "true", target="box"))["error"]["code"], "unknown_connection")

    async def test_host_ssh_from_the_environment(self) -> None:
        key_file = os.path.join(self.sshd.dir, "id_test")
        with open(key_file, "w") as f:
            f.write(self.key)
        client, sid = await self.runtime(environ={
            "SPIN_HOST_SSH_USER": self.sshd.user, "SPIN_HOST_SSH_KEY_FILE": key_file,
            "SPIN_HOST_SSH_HOST": "127.0.0.1", "SPIN_HOST_SSH_PORT": str(self.sshd.port)})
        finished = await self.run_cell(client, sid, "echo from-env")
        self.assertEqual(finished["status"], "ok", finished)
        self.assertEqual(client.output(finished["run"]), "from-env\n")
