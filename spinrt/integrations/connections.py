"""Typed connections (PROTOCOL.md section 13): stored settings of one type each.

A connection is ``{name, type, default, fields}``. Its fields follow its
type's schema (:class:`spinrt.integrations.base.Field`). Any string field may
hold references, ``{{secret:NAME}}`` or ``{{runtime_env:NAME}}``, kept as
written and resolved at each use (:meth:`ConnectionRegistry.resolve`): a
cell resolves ``{{secret:NAME}}`` like a template in its session (session
secrets, then the runtime secret store, then the environment);
``connections.test`` without a session (store, then environment). A literal
secret is stored as given in ``SPIN_HOME/var/connections.json`` (mode 0600,
as SSH keys are); the docs recommend references.

Editing a connection (``connections.set`` with a name that exists, same
type): a field left out keeps its value; ``null`` clears it; an empty string
clears a plain field and keeps a secret one (a form never shows secrets, so
an empty secret box means "unchanged").

SSH connections keep living in :mod:`spinrt.sshconfig`; the ops layer
(:mod:`spinrt.web.ops_connections`) puts both in one name space.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Iterable, Mapping

import attrs
from twisted.internet.defer import DeferredLock
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.plugin import getPlugins

from .. import templates
from ..ipynb import write_atomic
from ..secrets import Masker, lookup_secret
from ..sshconfig import check_name
from ..sshkeys import SSHError
from .base import Field, IConnectionType, IntegrationError

_log = Logger()

FILE = "connections.json"
MAX_STRING = 4096  # characters of a one-line field
MAX_TEXT = 256 * 1024  # characters of a text field (a kubeconfig, a CA bundle)

SSH = "ssh"
# The schema of ssh connections (spinrt.sshconfig checks and stores them).
SSH_FIELDS = (
    Field("host", "Host name or IP address of the SSH server", required=True),
    Field("port", "SSH port (default 22)", kind="integer"),
    Field("username", "User to log in as", required=True),
    Field("private_key", "Private key (OpenSSH or PEM); kept when left out on an edit", secret=True, kind="text"),
    Field("passphrase", "Passphrase of an encrypted private key", secret=True),
)
SSH_DESCRIPTION = "A machine that shell cells reach over SSH (options.target)"


def _bad(message: str) -> IntegrationError:
    return IntegrationError("bad_request", message)


@attrs.frozen
class Stored:
    """A connection as stored: references kept as written."""

    name: str
    type: str
    default: bool
    fields: Mapping[str, Any]


@attrs.frozen
class Connection:
    """A connection resolved for one use: ``fields`` hold the values to use
    (references replaced); ``secrets`` the values every output must mask."""

    name: str
    type: str
    fields: Mapping[str, Any] = attrs.field(repr=False)
    secrets: frozenset[str] = attrs.field(repr=False, default=frozenset())

    def get(self, name: str, default: Any = None) -> Any:
        value = self.fields.get(name)
        return default if value in (None, "") else value


def check_references(field: str, value: str) -> None:
    """Only ``{{secret:NAME}}`` and ``{{runtime_env:NAME}}`` may stand in a
    connection's field: a session variable has no meaning outside a run."""
    for p in templates.find_placeholders(value):
        if p.kind not in ("secret", "env"):
            raise _bad(f"'{field}' may reference only {{{{secret:NAME}}}} or {{{{runtime_env:NAME}}}}, "
                       f"not {p.text}")


def _check_value(spec: Field, value: Any) -> Any:
    if spec.kind == "boolean":
        if not isinstance(value, bool):
            raise _bad(f"'{spec.name}' must be true or false")
        return value
    if spec.kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            raise _bad(f"'{spec.name}' must be a whole number")
        return value
    if not isinstance(value, str):
        raise _bad(f"'{spec.name}' must be a string")
    limit = MAX_TEXT if spec.kind == "text" else MAX_STRING
    if len(value) > limit:
        raise _bad(f"'{spec.name}' is longer than {limit} characters")
    if spec.kind == "string" and ("\n" in value or "\r" in value):
        raise _bad(f"'{spec.name}' must be one line")
    check_references(spec.name, value)
    return value


class _NoVariables:
    """A template resolver for connection fields: references only."""

    def __init__(self, environ: Mapping[str, str], secret: Callable[[str], str]) -> None:
        self._environ = environ
        self.secret = secret

    def variable(self, name: str) -> object:
        raise KeyError(name)

    def env(self, name: str) -> str:
        if name == "SPIN_TOKEN":
            raise KeyError(name)
        return self._environ[name]


class ConnectionRegistry:
    """The typed connections of a runtime, persisted in ``var/connections.json``."""

    def __init__(self, services: Any, types: Iterable[Any], path: str | None = None) -> None:
        self.services = services
        self.types: dict[str, Any] = {t.name: t for t in sorted(types, key=lambda t: t.name) if t.name != SSH}
        self.path = path or os.path.join(services.home, "var", FILE)
        self.connections: dict[str, Stored] = {}
        self._lock = DeferredLock()
        self._load()

    @classmethod
    def discover(cls, services: Any) -> "ConnectionRegistry":
        """Every IConnectionType plugin of ``spinrt.plugins`` (built in or add-on)."""
        from .. import plugins

        return cls(services, getPlugins(IConnectionType, plugins))

    # -- schema ------------------------------------------------------------------------

    def types_reply(self) -> dict[str, Any]:
        """``connections.types``: ``{TYPE: {description, fields: [...]}}``, ssh included."""
        types = {SSH: {"description": SSH_DESCRIPTION, "fields": [f.describe() for f in SSH_FIELDS]}}
        for name, kind in self.types.items():
            types[name] = {"description": kind.description, "fields": [f.describe() for f in kind.fields]}
        return types

    def kind(self, type_name: str) -> Any:
        kind = self.types.get(type_name)
        if kind is None:
            known = ", ".join([SSH, *self.types])
            raise _bad(f"unknown connection type {type_name[:64]!r} (this runtime has: {known})")
        return kind

    # -- changes -----------------------------------------------------------------------

    async def set(self, name: str, type_name: str, default: bool | None, given: Mapping[str, Any]) -> Stored:
        """Create or edit a connection; IntegrationError (bad_request) for any bad field."""
        try:
            check_name(name)
        except SSHError as e:
            raise _bad(e.message) from None
        kind = self.kind(type_name)
        schema = {f.name: f for f in kind.fields}
        unknown = sorted(set(given) - set(schema))
        if unknown:
            raise _bad(f"a {type_name} connection has no field {', '.join(repr(u) for u in unknown)[:200]} "
                       f"(its fields: {', '.join(schema)})")
        previous = self.connections.get(name)
        fields: dict[str, Any] = dict(previous.fields) if previous is not None and previous.type == type_name else {}
        for key, value in given.items():
            spec = schema[key]
            if value is None or (value == "" and not spec.secret):
                fields.pop(key, None)
            elif value == "" and spec.secret:
                continue  # an empty secret box: unchanged
            else:
                fields[key] = _check_value(spec, value)
        missing = [f.name for f in kind.fields if f.required and f.name not in fields]
        if missing:
            raise _bad(f"a {type_name} connection needs {', '.join(repr(m) for m in missing)}")
        kind.check(fields)
        if default is None:
            # The first connection of a type is its default; an edit keeps its mark.
            same_type = [c for c in self.connections.values() if c.type == type_name and c.name != name]
            default = previous.default if previous is not None and previous.type == type_name else not same_type
        stored = Stored(name, type_name, default, fields)
        await self._change(name, stored)
        return stored

    async def delete(self, name: str) -> bool:
        if name not in self.connections:
            return False
        await self._change(name, None)
        return True

    async def _change(self, name: str, stored: Stored | None) -> None:
        """Write the connections with ``name`` set to ``stored`` (None:
        removed), then use them: a failed write changes nothing. One change
        at a time, so none is lost."""
        await self._lock.acquire()
        try:
            updated = dict(self.connections)
            if stored is None:
                updated.pop(name, None)
            else:
                updated[name] = stored
                if stored.default:
                    for other in list(updated.values()):
                        if other.type == stored.type and other.name != name and other.default:
                            updated[other.name] = attrs.evolve(other, default=False)
            await self._save(updated)
            self.connections = updated
        finally:
            self._lock.release()

    # -- reading -----------------------------------------------------------------------

    def describe(self, stored: Stored) -> dict[str, Any]:
        """As ``connections.list`` shows it: secret fields as ``{"set": true}``
        (plus the reference, when the field holds one, which names a secret
        and is not one)."""
        kind = self.types.get(stored.type)
        secret = {f.name for f in kind.fields if f.secret} if kind is not None else set(stored.fields)
        shown: dict[str, Any] = {"name": stored.name, "type": stored.type, "default": stored.default}
        for key, value in stored.fields.items():
            if key in secret:
                is_ref = isinstance(value, str) and templates.find_placeholders(value) \
                    and all(p.text == value for p in templates.find_placeholders(value))
                shown[key] = {"set": True, **({"reference": value} if is_ref else {})}
            else:
                shown[key] = value
        return shown

    def list(self) -> list[dict[str, Any]]:
        return [self.describe(c) for _, c in sorted(self.connections.items())]

    def names(self, type_name: str) -> list[str]:
        return sorted(n for n, c in self.connections.items() if c.type == type_name)

    def choose(self, type_name: str, name: Any) -> Stored:
        """The connection a cell of ``type_name`` uses: ``options.connection``,
        else the type's default. IntegrationError: ``bad_option``,
        ``unknown_connection``, ``no_connection``."""
        known = ", ".join(self.names(type_name)) or "none yet"
        if name is not None:
            if not isinstance(name, str) or not name:
                raise IntegrationError("bad_option", "options.connection must be the name of a connection")
            stored = self.connections.get(name)
            if stored is None:
                raise IntegrationError(
                    "unknown_connection",
                    f"no connection named {name[:64]!r} ({type_name} connections: {known}); "
                    f"add it with connections.set {{name, type: \"{type_name}\", ...}}")
            if stored.type != type_name:
                raise IntegrationError(
                    "bad_option", f"connection {name[:64]!r} is a {stored.type} connection, not {type_name} "
                    f"({type_name} connections: {known})")
            return stored
        for stored in self.connections.values():
            if stored.type == type_name and stored.default:
                return stored
        raise IntegrationError(
            "no_connection",
            f"the cell names no connection (options.connection) and no {type_name} connection is the "
            f"default ({type_name} connections: {known}); add one with connections.set "
            f"{{name, type: \"{type_name}\", default: true, ...}}")

    def resolve(self, stored: Stored, secret: Callable[[str], str] | None = None) -> Connection:
        """The connection with its references filled in; IntegrationError
        (``template_error``) naming the first that cannot be. ``secret``: how
        ``{{secret:NAME}}`` resolves (a run's session); default: the runtime
        secret store, then the environment."""
        environ = self.services.environ
        if secret is None:
            runtime = self.services.settings.get("runtime_secrets")
            secret = lambda name: lookup_secret(name, {}, environ, runtime)  # noqa: E731
        resolver = _NoVariables(environ, secret)
        kind = self.types.get(stored.type)
        secret_fields = {f.name for f in kind.fields if f.secret} if kind is not None else set()
        values: dict[str, Any] = {}
        secrets: set[str] = set()
        for key, value in stored.fields.items():
            if isinstance(value, str) and "{{" in value:
                try:
                    value, used = templates.expand_with_secrets(value, resolver)
                except templates.TemplateError as e:
                    raise IntegrationError(
                        "template_error", f"connection {stored.name!r}, field '{key}': {e}") from None
                secrets |= used
            if key in secret_fields and isinstance(value, str) and value:
                secrets.add(value)
            values[key] = value
        return Connection(stored.name, stored.type, values, frozenset(secrets))

    # -- persistence ----------------------------------------------------------------------

    def _load(self) -> None:
        try:
            with open(self.path) as f:
                data = json.load(f)
            entries = data["connections"]
            if not isinstance(entries, dict):
                raise ValueError("'connections' is not an object")
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as e:
            kept = f"{self.path}.unreadable"
            try:
                os.replace(self.path, kept)
            except OSError:
                kept = "(could not be moved)"
            _log.error("cannot read {path} ({why}); typed connections start empty, the file is kept as {kept}",
                       path=self.path, why=type(e).__name__, kept=kept)
            return
        for name, entry in entries.items():
            try:
                stored = Stored(name, entry["type"], bool(entry.get("default")), dict(entry["fields"]))
            except (KeyError, TypeError, ValueError):
                _log.error("stored connection {name} is unusable; it is ignored", name=name)
                continue
            if stored.type not in self.types:
                # Kept (an add-on may be missing today): saved back as it was.
                _log.warn("connection {name} has the type {type}, which no installed plugin provides",
                          name=name, type=stored.type)
            self.connections[name] = stored

    async def _save(self, connections: Mapping[str, Stored]) -> None:
        data = {"version": 1, "connections": {
            n: {"type": c.type, "default": c.default, "fields": dict(c.fields)} for n, c in connections.items()}}
        payload = json.dumps(data, indent=1).encode("utf-8")
        reactor = self.services.reactor
        await deferToThreadPool(reactor, reactor.getThreadPool(), _write_private, self.path, payload)


def _write_private(path: str, payload: bytes) -> None:
    """Atomically replace ``path`` with ``payload``, mode 0600 from the start."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    write_atomic(path, payload, mode=0o600)


async def masked(services: Any, values: Iterable[str], text: str) -> str:
    """``text`` with every form of ``values`` as ``***``: for a reply outside
    any session (connections.test's error, where a server echoed a token).
    The masker is built off the reactor thread (a PEM key takes ~50 ms)."""
    wanted = [v for v in values if v]
    if not wanted:
        return text
    reactor = services.reactor
    masker = await deferToThreadPool(reactor, reactor.getThreadPool(), Masker, wanted)
    return masker.mask(text)


def registry_of(services: Any) -> ConnectionRegistry:
    """The runtime's registry (tap.py puts it in ``services.settings["connections"]``)."""
    registry = services.settings.get("connections")
    if registry is None:
        registry = ConnectionRegistry.discover(services)
        try:
            services.settings["connections"] = registry
        except TypeError:
            pass
    return registry
