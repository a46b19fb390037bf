"""SSH settings, private keys, known_hosts and the remote command line (no network)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import shutil
import stat
import tempfile
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ed25519, rsa
from twisted.conch.ssh.keys import Key
from twisted.internet import defer, reactor
from twisted.internet.error import DNSLookupError
from twisted.internet.testing import MemoryReactorClock
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial import unittest

from spinrt.cells.ssh import remote_command
from spinrt.knownhosts import HostKeyMismatch, KnownHosts, UnknownHost, host_token
from spinrt.sshconfig import SSHSettings, default_gateway
from spinrt.sshkeys import SSHError, fingerprint, load_private_key

from .sshd import make_key


def tmpdir() -> str:
    return tempfile.mkdtemp(prefix="ssh-settings-", dir=os.path.abspath("."))


def pem(private: Any, password: bytes | None = None, fmt: Any = serialization.PrivateFormat.PKCS8) -> str:
    encryption: Any = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    return private.private_bytes(serialization.Encoding.PEM, fmt, encryption).decode()


class PrivateKeys(unittest.TestCase):
    def test_formats_and_passphrases(self) -> None:
        for kind in ("ed25519", "ecdsa", "rsa"):
            text, public = make_key(kind, "pw")
            key = load_private_key(text, "pw")
            self.assertEqual(key.public().toString("openssh").decode(), public.rsplit(" ", 1)[0])
        # PKCS#8 with a passphrase (Conch alone cannot read it), CRLF, one-line "\n" escapes.
        r = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.assertEqual(load_private_key(pem(r, b"pw").replace("\n", "\r\n"), "pw").type(), "RSA")
        one_line = make_key("ed25519")[0].strip().replace("\n", "\\n")
        self.assertEqual(load_private_key(one_line).type(), "Ed25519")
        # A passphrase for an unencrypted key does no harm.
        self.assertEqual(load_private_key(make_key("ecdsa")[0], "unneeded").type(), "EC")

    def test_refusals(self) -> None:
        enc = make_key("ed25519", "right")[0]
        cases = [
            ("", None, "empty"),
            (enc, None, "encrypted: give its passphrase"),
            (enc, "wrong", "wrong passphrase"),
            (make_key("rsa")[1], None, "public key"),
            ("hello", None, "not a private key"),
            (enc.replace("b3BlbnNzaC1rZXkt", "AAAA"), "right", "wrong passphrase, or the key is damaged"),
            (pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)), None, "2048"),
            (pem(dsa.generate_private_key(key_size=1024)), None, "DSA keys are not supported"),
        ]
        for text, passphrase, words in cases:
            with self.assertRaises(SSHError) as caught:
                load_private_key(text, passphrase, what="K")
            self.assertEqual(caught.exception.code, "ssh_key_invalid")
            self.assertIn(words, caught.exception.message)
            self.assertTrue(caught.exception.message.startswith("K: "))
            body = [line for line in text.splitlines() if line and not line.startswith("-----")]
            if body:
                self.assertNotIn(body[0][:16], caught.exception.message)


class KnownHostsFile(unittest.TestCase):
    def setUp(self) -> None:
        self.path = os.path.join(tmpdir(), "known_hosts")
        self.key = Key(ed25519.Ed25519PrivateKey.generate()).public()
        self.other = Key(ed25519.Ed25519PrivateKey.generate()).public()

    def line(self, hosts: str, key: Key) -> str:
        return f"{hosts} {key.toString('openssh').decode()}\n"

    def test_tokens(self) -> None:
        self.assertEqual(host_token("Box.Example", 22), "box.example")
        self.assertEqual(host_token("::1", 2222), "[::1]:2222")

    def test_hashed_wildcard_negated_and_junk_lines(self) -> None:
        salt = os.urandom(20)
        digest = hmac.new(salt, b"[h1]:2200", hashlib.sha1).digest()
        hashed = f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"
        with open(self.path, "w") as f:
            f.write("# comment\n\n@cert-authority * " + self.other.toString("openssh").decode() + "\n")
            f.write("garbage\nbad ssh-ed25519 !!!notbase64\n")
            f.write(self.line(hashed, self.key))
            f.write(self.line("*.lab,!secret.lab", self.key))
        known = KnownHosts(self.path, strict=True)
        self.assertIsNone(known.check("h1", 2200, self.key))
        self.assertIsNone(known.check("a.lab", 22, self.key))
        with self.assertRaises(HostKeyMismatch):
            known.check("a.lab", 22, self.other)
        with self.assertRaises(UnknownHost):
            known.check("secret.lab", 22, self.key)  # negated: not known

    def test_record_appends_to_a_file_without_final_newline(self) -> None:
        with open(self.path, "w") as f:
            f.write(self.line("a", self.key).rstrip("\n"))
        known = KnownHosts(self.path)
        notice = known.check("b", 2022, self.other)
        self.assertIn(fingerprint(self.other), notice or "")
        with open(self.path) as f:
            self.assertEqual([line.split()[0] for line in f], ["a", "[b]:2022"])
        self.assertIsNone(known.check("b", 2022, self.other))
        with self.assertRaises(HostKeyMismatch) as caught:
            known.check("b", 2022, self.key)
        for fp in (fingerprint(self.key), fingerprint(self.other)):
            self.assertIn(fp, caught.exception.message)


class Settings(unittest.TestCase):
    def setUp(self) -> None:
        self.var = tmpdir()
        self.clock = MemoryReactorClock()
        self.key_text = make_key("ed25519", "pp")[0]

    def settings(self, env: dict[str, str] | None = None, **kw: Any) -> SSHSettings:
        return SSHSettings(self.var, env or {}, self.clock, **kw)

    def test_environment(self) -> None:
        key_file = os.path.join(self.var, "id")
        with open(key_file, "w") as f:
            f.write(self.key_text)
        env = {"SPIN_HOST_SSH_USER": "deploy", "SPIN_HOST_SSH_KEY_FILE": key_file,
               "SPIN_HOST_SSH_PASSPHRASE": "pp", "SPIN_HOST_SSH_PORT": "2200"}
        target = self.settings(env).target("host")
        self.assertEqual((target.username, target.host, target.port), ("deploy", None, 2200))
        inline = {"SPIN_HOST_SSH_USER": "u", "SPIN_HOST_SSH_KEY": make_key("ecdsa")[0].replace("\n", "\\n"),
                  "SPIN_HOST_SSH_HOST": "10.0.0.5"}
        self.assertEqual(self.settings(inline).target("host").host, "10.0.0.5")
        as_path = {"SPIN_HOST_SSH_USER": "u", "SPIN_HOST_SSH_KEY": key_file, "SPIN_HOST_SSH_PASSPHRASE": "pp"}
        self.assertEqual(self.settings(as_path).target("host").username, "u")
        cases = [
            ({}, "host_ssh_disabled", "not enabled"),
            ({"SPIN_HOST_SSH_KEY_FILE": key_file}, "host_ssh_disabled", "SPIN_HOST_SSH_USER"),
            ({"SPIN_HOST_SSH_USER": "u"}, "host_ssh_disabled", "SPIN_HOST_SSH_KEY"),
            ({**env, "SPIN_HOST_SSH_PORT": "ssh"}, "bad_request", "SPIN_HOST_SSH_PORT"),
            ({**env, "SPIN_HOST_SSH_PASSPHRASE": ""}, "ssh_key_invalid", key_file),
            ({**env, "SPIN_HOST_SSH_KEY_FILE": "/nonexistent/id"}, "ssh_key_invalid", "/nonexistent/id"),
        ]
        for environ, code, words in cases:
            with self.assertRaises(SSHError) as caught:
                self.settings(environ).target("host")
            self.assertEqual(caught.exception.code, code, environ)
            self.assertIn(words, caught.exception.message)

    def test_connect_timeout_and_strict_from_the_environment(self) -> None:
        self.assertEqual(self.settings().connect_timeout, 10.0)
        self.assertEqual(self.settings({"SPIN_SSH_CONNECT_TIMEOUT": "2.5"}).connect_timeout, 2.5)
        self.assertEqual(self.settings({"SPIN_SSH_CONNECT_TIMEOUT": "-1"}).connect_timeout, 10.0)
        self.assertFalse(self.settings().known_hosts.strict)
        self.assertTrue(self.settings({"SPIN_SSH_STRICT_HOST_KEYS": "1"}).known_hosts.strict)

    def test_persisted_0600_and_configure_wins_over_the_environment(self) -> None:
        env = {"SPIN_HOST_SSH_USER": "from-env", "SPIN_HOST_SSH_KEY": make_key("rsa")[0]}
        settings = self.settings(env)
        self.assertEqual(settings.target("host").username, "from-env")
        settings.configure_host({"enabled": True, "username": "ui", "private_key": self.key_text,
                                 "passphrase": "pp", "host": "h", "port": 22})
        settings.set_connection({"name": "db-1", "host": "db", "username": "x", "private_key": self.key_text,
                                 "passphrase": "pp"})
        path = os.path.join(self.var, "ssh.json")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        with open(path) as f:
            self.assertEqual(json.load(f)["connections"]["db-1"]["private_key"], self.key_text)
        again = self.settings(env)
        self.assertEqual(again.target("host").username, "ui")
        self.assertEqual(again.target("db-1").port, 22)
        shown = json.dumps([again.status(), again.list_connections()])
        self.assertNotIn("PRIVATE", shown)
        self.assertNotIn('"pp"', shown)
        self.assertIn(fingerprint(again.target("db-1").key), shown)
        self.assertNotIn("PRIVATE", repr(again.target("db-1")))
        # Disabled stays disabled after a restart, and keeps the key for later.
        again.configure_host({"enabled": False})
        third = self.settings(env)
        with self.assertRaises(SSHError):
            third.target("host")
        third.configure_host({"enabled": True})
        self.assertEqual(third.target("host").username, "ui")

    def test_an_unreadable_file_is_kept_aside(self) -> None:
        path = os.path.join(self.var, "ssh.json")
        with open(path, "w") as f:
            f.write("[1, 2")
        settings = self.settings()
        self.assertEqual(settings.list_connections(), [])
        with open(path + ".unreadable") as f:
            self.assertEqual(f.read(), "[1, 2")
        settings.configure_host({"enabled": False})
        self.assertTrue(os.path.exists(path))

    def test_names_and_fields(self) -> None:
        settings = self.settings()
        bad = [
            {"name": "host", "host": "h", "username": "u", "private_key": self.key_text, "passphrase": "pp"},
            {"name": "local", "host": "h", "username": "u", "private_key": self.key_text, "passphrase": "pp"},
            {"name": "-x", "host": "h", "username": "u", "private_key": self.key_text, "passphrase": "pp"},
            {"name": "ok", "host": "-oProxyCommand=x", "username": "u", "private_key": self.key_text, "passphrase": "pp"},
            {"name": "ok", "host": "h", "username": "a b", "private_key": self.key_text, "passphrase": "pp"},
            {"name": "ok", "host": "h", "username": "u"},
            {"name": "ok", "host": "h", "port": 0, "username": "u", "private_key": self.key_text, "passphrase": "pp"},
        ]
        for fields in bad:
            with self.assertRaises(SSHError) as caught:
                settings.set_connection(fields)
            self.assertEqual(caught.exception.code, "bad_request", fields)
        self.assertEqual(settings.list_connections(), [])
        with self.assertRaises(SSHError) as caught:
            settings.configure_host({"enabled": "yes"})
        self.assertEqual(caught.exception.code, "bad_request")

    def test_changes_are_announced(self) -> None:
        settings = self.settings()
        heard: list[str] = []
        settings.listeners.append(heard.append)
        settings.set_connection({"name": "a", "host": "h", "username": "u", "private_key": self.key_text,
                                 "passphrase": "pp"})
        settings.delete_connection("a")
        settings.configure_host({"enabled": False})
        self.assertEqual(heard, ["a", "a", "host"])


class DefaultHost(unittest.TestCase):
    def route_file(self, text: str) -> str:
        path = os.path.join(tmpdir(), "route")
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_gateway_parsing(self) -> None:
        table = ("Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n"
                 "eth0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\n"
                 "eth0\t00000000\t010011AC\t0003\t0\t0\t0\t00000000\n")
        self.assertEqual(default_gateway(self.route_file(table)), "172.17.0.1")
        self.assertIsNone(default_gateway(self.route_file(table.splitlines()[0])))
        self.assertIsNone(default_gateway("/nonexistent"))

    async def test_resolution_order(self) -> None:
        clock = MemoryReactorClock()
        answers: list[Any] = [defer.succeed("192.168.65.2"), defer.fail(DNSLookupError("x")), defer.fail(DNSLookupError("x"))]
        clock.resolve = lambda name, timeout=None: answers.pop(0)  # type: ignore[attr-defined]
        table = "Iface\tDestination\tGateway\tFlags\neth0\t00000000\t0101A8C0\t0003\n"
        settings = SSHSettings(tmpdir(), {}, clock, route_file=self.route_file(table))
        self.assertEqual(await settings.default_host(), "host.docker.internal")
        clock.advance(61)
        self.assertEqual(await settings.default_host(), "192.168.1.1")
        clock.advance(61)
        settings.route_file = "/nonexistent"
        self.assertEqual(await settings.default_host(), "127.0.0.1")


class RemoteCommand(unittest.TestCase):
    """The command line, run by a real local sh (the login shell's role): values stay inert.

    Under setsid, as sshd runs it: the guard signals its whole process group."""

    async def test_values_are_not_interpreted(self) -> None:
        marker = os.path.join(tmpdir(), "pwned")
        tricky = f"$(touch {marker}) `touch {marker}` ; touch {marker} ' \" \\ *"
        cwd = tmpdir() + "/dir with 'quote' $(x)"
        os.makedirs(cwd)
        source = 'printf "%s\\n" "$PWD" "$X" "$0"; printf "%s\\n" "$1"; exit 7'
        command = remote_command("sh", cwd, {"X": tricky}, source).decode()
        out, err, code = await getProcessOutputAndValue(
            shutil.which("setsid") or "setsid", ["-w", "/bin/sh", "-c", command], env={"PATH": os.environ["PATH"]}, reactor=reactor)
        self.assertEqual((code, err), (7, b""))
        self.assertEqual(out.decode().splitlines(), [cwd, tricky, "sh", ""])
        self.assertFalse(os.path.exists(marker))
        # stdin is /dev/null for the command, as for local cells.
        out, _, code = await getProcessOutputAndValue(
            shutil.which("setsid") or "setsid", ["-w", "/bin/sh", "-c", remote_command("bash", None, {}, "cat; echo done").decode()],
            env={"PATH": os.environ["PATH"]}, reactor=reactor)
        self.assertEqual((out, code), (b"done\n", 0))
