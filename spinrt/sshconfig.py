"""Where shell cells may SSH to: the runtime host ("host") and named connections.

Settings come from ``runtime.configure`` / ``connections.set`` (persisted in
SPIN_HOME/var/ssh.json, mode 0600) or, for the host, from the environment
(``SPIN_HOST_SSH_USER``, ``SPIN_HOST_SSH_KEY`` (the key, or a path) or ``SPIN_HOST_SSH_KEY_FILE``,
``SPIN_HOST_SSH_PASSPHRASE``, ``SPIN_HOST_SSH_HOST``, ``SPIN_HOST_SSH_PORT``).
Once ``runtime.configure`` has been used, its stored settings win over the
environment. Private keys and passphrases never leave this module except to
sign: replies, logs and /api/status carry fingerprints only.
"""

from __future__ import annotations

import json
import os
import re
import socket
import struct
from typing import Any, Callable, Mapping

import attrs
from twisted.conch.ssh.keys import Key
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from .knownhosts import KnownHosts
from .sshkeys import SSHError, fingerprint, load_private_key

_log = Logger()

HOST = "host"  # the target name of the runtime host
RESERVED_NAMES = frozenset({"local", HOST})
DEFAULT_PORT = 22
DEFAULT_HOST_NAME = "host.docker.internal"
DEFAULT_CONNECT_TIMEOUT = 10.0
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")


@attrs.frozen
class Credentials:
    username: str
    private_key: str = attrs.field(repr=False)
    passphrase: str | None = attrs.field(repr=False)
    key: Key = attrs.field(repr=False, eq=False)

    @property
    def key_fingerprint(self) -> str:
        return fingerprint(self.key)


@attrs.frozen
class Target:
    """Everything needed to open one SSH connection."""

    name: str
    host: str | None  # None: the runtime host's default address
    port: int
    credentials: Credentials

    @property
    def username(self) -> str:
        return self.credentials.username

    @property
    def key(self) -> Key:
        return self.credentials.key

    def identity(self, host: str) -> tuple[Any, ...]:
        """Changes whenever a live connection for this target must be replaced."""
        return (host, self.port, self.username, self.credentials.key_fingerprint)

    def describe(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "username": self.username,
            "key_fingerprint": self.credentials.key_fingerprint,
        }


# -- field checks (runtime.configure / connections.set) ---------------------------------


def _bad(message: str) -> SSHError:
    return SSHError("bad_request", message)


def check_username(value: Any, field: str = "username") -> str:
    if not isinstance(value, str) or not value or len(value) > 256 or not value.isprintable() or " " in value:
        raise _bad(f"'{field}' must be a user name (no spaces)")
    return value


def check_host(value: Any, field: str = "host") -> str | None:
    if value is None or value == "":
        return None
    if (not isinstance(value, str) or len(value) > 253 or value.startswith("-")
            or not value.isprintable() or any(c.isspace() for c in value)):
        raise _bad(f"'{field}' must be a host name or an IP address")
    return value


def check_port(value: Any, field: str = "port") -> int:
    if value is None:
        return DEFAULT_PORT
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise _bad(f"'{field}' must be a port number (1-65535)")
    return value


def check_name(value: Any) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise _bad("'name' must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    if value in RESERVED_NAMES:
        raise _bad(f"'{value}' is reserved (target 'local' runs on the runtime, 'host' on its host)")
    return value


def _credentials(fields: Mapping[str, Any], previous: Credentials | None, what: str,
                 parsed: dict[tuple[str, str | None], Key] | None = None) -> Credentials:
    username = fields.get("username")
    username = previous.username if username is None and previous else check_username(username)
    key_text = fields.get("private_key")
    passphrase = fields.get("passphrase")
    if passphrase is not None and not isinstance(passphrase, str):
        raise _bad("'passphrase' must be a string")
    if key_text is None or key_text == "":
        # Keeping the stored key lets a client edit other fields: keys are never sent back.
        if previous is None:
            raise _bad(f"{what} needs 'private_key'")
        return attrs.evolve(previous, username=username)
    if not isinstance(key_text, str) or len(key_text) > 64 * 1024:
        raise _bad("'private_key' must be the text of a private key")
    key = (parsed or {}).pop((key_text, passphrase or None), None) or load_private_key(key_text, passphrase or None)
    return Credentials(username, key_text, passphrase or None, key)


# -- the settings object ------------------------------------------------------------------


def default_gateway(route_file: str = "/proc/net/route") -> str | None:
    """The IPv4 default gateway from the kernel's routing table (Linux)."""
    try:
        with open(route_file) as f:
            next(f)
            for line in f:
                fields = line.split()
                if len(fields) > 3 and fields[1] == "00000000" and int(fields[3], 16) & 0x2:
                    return socket.inet_ntoa(struct.pack("<L", int(fields[2], 16)))
    except (OSError, ValueError, StopIteration):
        pass
    return None


class SSHSettings:
    def __init__(
        self,
        var_dir: str,
        environ: Mapping[str, str],
        reactor: Any,
        route_file: str = "/proc/net/route",
    ) -> None:
        self.path = os.path.join(var_dir, "ssh.json")
        self.environ = environ
        self.reactor = reactor
        self.route_file = route_file
        self.known_hosts = KnownHosts(
            os.path.join(var_dir, "known_hosts"),
            strict=environ.get("SPIN_SSH_STRICT_HOST_KEYS", "").strip().lower() in ("1", "true", "yes", "on"),
        )
        self.connections: dict[str, Target] = {}
        self.host_enabled = False
        self.host_target: Target | None = None
        self.host_problem: SSHError | None = None  # why "host" cannot be used
        self.configured = False  # runtime.configure was used: the environment is ignored
        self.listeners: list[Callable[[str], None]] = []  # told the name of a changed target
        self._default_host: tuple[float, str] | None = None
        self._parsed: dict[tuple[str, str | None], Key] = {}  # keys preload_key parsed
        self.connect_timeout = self._env_timeout()
        self._load()

    # -- loading -------------------------------------------------------------------

    def _env_timeout(self) -> float:
        raw = self.environ.get("SPIN_SSH_CONNECT_TIMEOUT", "").strip()
        try:
            value = float(raw) if raw else DEFAULT_CONNECT_TIMEOUT
        except ValueError:
            value = 0.0
        if not 0 < value <= 600:
            _log.warn("SPIN_SSH_CONNECT_TIMEOUT must be 1-600 seconds; using {d:g}", d=DEFAULT_CONNECT_TIMEOUT)
            return DEFAULT_CONNECT_TIMEOUT
        return value

    def _load(self) -> None:
        stored: dict[str, Any] = {}
        try:
            with open(self.path) as f:
                stored = json.load(f)
            if not isinstance(stored, dict):
                raise ValueError("not a JSON object")
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as e:
            # Keep the unreadable file for a human: the next save would overwrite it.
            kept = f"{self.path}.unreadable"
            try:
                os.replace(self.path, kept)
            except OSError:
                kept = "(could not be moved)"
            _log.error("cannot read {path} ({why}); SSH settings start empty, the file is kept as {kept}",
                       path=self.path, why=type(e).__name__, kept=kept)
        for name, entry in (stored.get("connections") or {}).items():
            try:
                self.connections[name] = Target(
                    name, check_host(entry["host"]), check_port(entry.get("port")),
                    _credentials(entry, None, f"connection {name!r}"))
            except (SSHError, KeyError, TypeError) as e:
                _log.error("stored connection {name} is unusable: {why}", name=name, why=getattr(e, "message", type(e).__name__))
        host = stored.get("host_ssh")
        if isinstance(host, dict):
            self.configured = True
            try:
                self._apply_host(host, None)
            except SSHError as e:
                self.host_problem = e
        else:
            self._from_environment()

    def _from_environment(self) -> None:
        env = self.environ
        user = env.get("SPIN_HOST_SSH_USER", "").strip()
        key_text = env.get("SPIN_HOST_SSH_KEY", "")
        key_file = env.get("SPIN_HOST_SSH_KEY_FILE", "").strip()
        if not user:
            if key_text or key_file:
                self.host_problem = SSHError("host_ssh_disabled", "SPIN_HOST_SSH_USER is not set (the user to log in as on the host)")
            return
        what = "SPIN_HOST_SSH_KEY"
        if key_text.strip().startswith(("/", "~")) and "\n" not in key_text.strip():
            key_file, key_text = os.path.expanduser(key_text.strip()), ""  # a path, as compose files use it
        if not key_text and key_file:
            what = f"SPIN_HOST_SSH_KEY_FILE ({key_file})"
            try:
                with open(key_file, encoding="utf-8", errors="replace") as f:
                    key_text = f.read()
            except OSError as e:
                self.host_problem = SSHError("ssh_key_invalid", f"cannot read {what}: {e.strerror or e}")
                _log.error("host SSH: {why}", why=self.host_problem.message)
                return
        if not key_text:
            self.host_problem = SSHError(
                "host_ssh_disabled", "SPIN_HOST_SSH_USER is set but neither SPIN_HOST_SSH_KEY nor SPIN_HOST_SSH_KEY_FILE")
            return
        try:
            port_text = env.get("SPIN_HOST_SSH_PORT", "").strip()
            try:
                port = check_port(int(port_text) if port_text else None, "SPIN_HOST_SSH_PORT")
            except ValueError:
                raise _bad("'SPIN_HOST_SSH_PORT' must be a port number (1-65535)") from None
            key = load_private_key(key_text, env.get("SPIN_HOST_SSH_PASSPHRASE") or None, what)
            creds = Credentials(check_username(user, "SPIN_HOST_SSH_USER"), key_text,
                                env.get("SPIN_HOST_SSH_PASSPHRASE") or None, key)
            host = check_host(env.get("SPIN_HOST_SSH_HOST", "").strip(), "SPIN_HOST_SSH_HOST")
        except SSHError as e:
            self.host_problem = e
            _log.error("host SSH from the environment is unusable: {why}", why=e.message)
            return
        self.host_target = Target(HOST, host, port, creds)
        self.host_enabled = True
        _log.info("host SSH from the environment: {user}@{host}:{port}, key {fp}",
                  user=user, host=host or "(default)", port=port, fp=creds.key_fingerprint)

    def _apply_host(self, fields: Mapping[str, Any], previous: Target | None) -> None:
        enabled = fields.get("enabled")
        if not isinstance(enabled, bool):
            raise _bad("'host_ssh.enabled' must be true or false")
        has_key = fields.get("private_key") not in (None, "")
        if not enabled and previous is None and not has_key:
            self.host_enabled, self.host_target, self.host_problem = False, None, None
            return
        creds = _credentials(fields, previous.credentials if previous else None, "host_ssh", self._parsed)
        target = Target(HOST, check_host(fields.get("host")), check_port(fields.get("port")), creds)
        self.host_enabled, self.host_target, self.host_problem = enabled, target, None

    # -- operations ----------------------------------------------------------------------

    async def preload_key(self, fields: Mapping[str, Any]) -> None:
        """Parse the request's key in a thread: an encrypted key's bcrypt KDF
        takes ~0.1 s, too long for the reactor thread. Raises SSHError."""
        text, passphrase = fields.get("private_key"), fields.get("passphrase")
        if not isinstance(text, str) or not text or len(text) > 64 * 1024:
            return
        if passphrase is not None and not isinstance(passphrase, str):
            return
        self._parsed.clear()
        key = await deferToThreadPool(
            self.reactor, self.reactor.getThreadPool(), load_private_key, text, passphrase or None)
        self._parsed[(text, passphrase or None)] = key

    def configure_host(self, fields: Mapping[str, Any]) -> None:
        previous = self.host_target if self.configured else None
        self._apply_host(fields, previous)
        self.configured = True
        self._save()
        self._changed(HOST)

    def set_connection(self, fields: Mapping[str, Any]) -> Target:
        name = check_name(fields.get("name"))
        host = check_host(fields.get("host"))
        if host is None:
            raise _bad("'host' must be a host name or an IP address")
        previous = self.connections.get(name)
        target = Target(name, host, check_port(fields.get("port")),
                        _credentials(fields, previous.credentials if previous else None, f"connection {name!r}",
                                     self._parsed))
        self.connections[name] = target
        self._save()
        self._changed(name)
        return target

    def delete_connection(self, name: str) -> None:
        if self.connections.pop(name, None) is None:
            raise SSHError("unknown_connection", f"there is no SSH connection named {name[:64]!r}")
        self._save()
        self._changed(name)

    def _changed(self, name: str) -> None:
        for listener in list(self.listeners):
            listener(name)

    def target(self, name: str) -> Target:
        """The target a cell's ``options.target`` names, or SSHError."""
        if name == HOST:
            if self.host_problem is not None:
                raise SSHError(self.host_problem.code, f"Host SSH is not usable: {self.host_problem.message}")
            if not self.host_enabled or self.host_target is None:
                raise SSHError(
                    "host_ssh_disabled",
                    "Host SSH is not enabled on this runtime: enable it in the runtime's settings "
                    "(runtime.configure) or set SPIN_HOST_SSH_USER and SPIN_HOST_SSH_KEY_FILE, then run the cell again")
            return self.host_target
        target = self.connections.get(name)
        if target is None:
            known = ", ".join(sorted(self.connections)) or "none yet"
            raise SSHError(
                "unknown_connection",
                f"no SSH connection named {name[:64]!r} (configured: {known}); add it with connections.set, "
                "or use target 'local' or 'host'")
        return target

    async def default_host(self) -> str:
        """host.docker.internal if it resolves, else the default gateway, else 127.0.0.1."""
        now = self.reactor.seconds()
        if self._default_host is not None and now - self._default_host[0] < 60:
            return self._default_host[1]
        try:
            await self.reactor.resolve(DEFAULT_HOST_NAME, timeout=(2,))
            host = DEFAULT_HOST_NAME
        except Exception:
            host = default_gateway(self.route_file) or "127.0.0.1"
        self._default_host = (now, host)
        return host

    async def describe_host(self) -> dict[str, Any]:
        target = self.host_target
        if target is None:
            return {"enabled": False, "username": None, "host": None, "port": None, "key_fingerprint": None}
        described = target.describe()
        if described["host"] is None:
            described["host"] = await self.default_host()
        return {"enabled": self.host_enabled, **described}

    def list_connections(self) -> list[dict[str, Any]]:
        return [{"name": name, **t.describe()} for name, t in sorted(self.connections.items())]

    def status(self) -> dict[str, Any]:
        """For /api/status: fingerprints, never keys."""
        host = self.host_target
        return {
            "host_ssh": {
                "enabled": self.host_enabled and self.host_problem is None,
                "source": "runtime.configure" if self.configured else "environment",
                **({"username": host.username, "host": host.host, "port": host.port,
                    "key_fingerprint": host.credentials.key_fingerprint} if host else {}),
                **({"problem": self.host_problem.code} if self.host_problem else {}),
            },
            "connections": self.list_connections(),
            "strict_host_keys": self.known_hosts.strict,
        }

    # -- persistence -------------------------------------------------------------------------

    def _save(self) -> None:
        def entry(target: Target) -> dict[str, Any]:
            c = target.credentials
            return {"host": target.host, "port": target.port, "username": c.username,
                    "private_key": c.private_key, "passphrase": c.passphrase}

        data: dict[str, Any] = {"version": 1, "connections": {n: entry(t) for n, t in self.connections.items()}}
        if self.configured:
            host = self.host_target
            data["host_ssh"] = {"enabled": self.host_enabled, **(entry(host) if host else {})}
        tmp = self.path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)  # an old tmp file may have other bits
            os.write(fd, json.dumps(data, indent=1).encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)


def settings_of(services: Any) -> SSHSettings:
    """The runtime's SSHSettings (tap.py puts it in services.settings["ssh"])."""
    settings = services.settings.get("ssh")
    if settings is None:
        settings = SSHSettings(os.path.join(services.home, "var"), services.environ, services.reactor)
        try:
            services.settings["ssh"] = settings
        except TypeError:
            pass
    return settings
