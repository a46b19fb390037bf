"""How a kubernetes connection reaches its cluster: kubeconfig, direct, in-cluster.

A connection gives one of (first that applies):

1. ``kubeconfig_content``: a kubeconfig's text (a secret: give it as
   ``{{secret:KUBECONFIG}}``);
2. ``kubeconfig``: the path of a kubeconfig file on the runtime's machine;
3. ``url`` (the API server), with ``token`` and ``ca``;
4. nothing of these: the pod's service account (in-cluster), as client-go's
   ``InClusterConfig`` does: ``KUBERNETES_SERVICE_HOST`` / ``_PORT`` and
   ``/var/run/secrets/kubernetes.io/serviceaccount/{token,ca.crt,namespace}``.

A kubeconfig's ``context`` (default: its ``current-context``) picks the
cluster (``server``, ``certificate-authority[-data]``,
``insecure-skip-tls-verify``) and the user: ``token`` / ``tokenFile``,
``client-certificate[-data]`` + ``client-key[-data]``, or ``username`` +
``password``. Exec credential plugins (``exec``) and ``auth-provider`` are
refused with a clear message: they would run a program on the runtime for
every request. Reference: https://kubernetes.io/docs/concepts/configuration/organize-cluster-access-kubeconfig/
and https://kubernetes.io/docs/reference/config-api/kubeconfig.v1/.

Files are read off the reactor thread. Every credential found is in
``ClusterAccess.secrets``, for the run to mask before it shows anything.
"""

from __future__ import annotations

import base64
import os
from typing import Any, Mapping

import attrs
from twisted.internet.threads import deferToThreadPool

from .base import IntegrationError
from .connections import Connection

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
SERVICE_ACCOUNT_ENV = "SPIN_KUBERNETES_SERVICE_ACCOUNT_DIR"  # another mount point (tests, sidecars)


@attrs.frozen
class ClusterAccess:
    server: str
    namespace: str
    source: str  # for messages: "kubeconfig /path, context prod"
    ca: bytes | None = attrs.field(default=None, repr=False)
    insecure: bool = False
    token: str | None = attrs.field(default=None, repr=False)
    client: tuple[bytes, bytes] | None = attrs.field(default=None, repr=False)  # (cert PEM, key PEM)
    basic: tuple[str, str] | None = attrs.field(default=None, repr=False)
    secrets: frozenset[str] = attrs.field(default=frozenset(), repr=False)


def _bad(message: str) -> IntegrationError:
    return IntegrationError("bad_connection", message)


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def _named(entries: Any, name: str, what: str, source: str) -> dict[str, Any]:
    for entry in entries or []:
        if isinstance(entry, dict) and entry.get("name") == name and isinstance(entry.get(what), dict):
            return entry[what]
    raise _bad(f"{source}: no {what} named {name!r}")


def _data_or_file(section: Mapping[str, Any], key: str, base: str, source: str) -> bytes | None:
    """``key-data`` (base64) or ``key`` (a path, relative to the kubeconfig's directory)."""
    data = section.get(f"{key}-data")
    if data:
        try:
            return base64.b64decode(data, validate=False)
        except Exception:
            raise _bad(f"{source}: {key}-data is not base64") from None
    path = section.get(key)
    if path:
        full = os.path.join(base, os.path.expanduser(path))
        try:
            with open(full, "rb") as f:
                return f.read()
        except OSError as e:
            raise _bad(f"{source}: cannot read {key} {full} ({e.strerror or e})") from None
    return None


def parse_kubeconfig(text: str, context: str | None, base: str, source: str) -> ClusterAccess:
    """A kubeconfig's access for ``context`` (blocking: reads referenced files)."""
    import yaml

    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise _bad(f"{source} is not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(config, dict):
        raise _bad(f"{source} is not a kubeconfig (expected a mapping with clusters, users, contexts)")
    name = context or config.get("current-context")
    if not name:
        raise _bad(f"{source} has no current-context: set 'context' on the connection")
    where = f"{source}, context {name!r}"
    ctx = _named(config.get("contexts"), name, "context", source)
    cluster = _named(config.get("clusters"), ctx.get("cluster"), "cluster", where)
    user = _named(config.get("users"), ctx.get("user"), "user", where) if ctx.get("user") else {}
    if "exec" in user:
        command = (user.get("exec") or {}).get("command", "?")
        raise _bad(f"{where}: the user authenticates with an exec credential plugin ({command!r}), which the "
                   "runtime does not run; give the connection a token (kubectl create token ...) or a client "
                   "certificate instead")
    if "auth-provider" in user:
        raise _bad(f"{where}: auth-provider ({(user.get('auth-provider') or {}).get('name')!r}) is not supported; "
                   "use a token or a client certificate")
    server = cluster.get("server")
    if not isinstance(server, str) or not server.startswith(("https://", "http://")):
        raise _bad(f"{where}: the cluster has no server URL")
    secrets: set[str] = set()
    token = user.get("token")
    if not token and user.get("tokenFile"):
        try:
            token = _read_text(os.path.join(base, user["tokenFile"])).strip()
        except OSError as e:
            raise _bad(f"{where}: cannot read tokenFile ({e.strerror or e})") from None
    cert = _data_or_file(user, "client-certificate", base, where)
    key = _data_or_file(user, "client-key", base, where)
    if bool(cert) != bool(key):
        raise _bad(f"{where}: a client certificate needs both client-certificate and client-key")
    basic = (str(user["username"]), str(user.get("password") or "")) if user.get("username") else None
    for value in (token, key.decode("utf-8", "replace") if key else None, basic[1] if basic else None):
        if value:
            secrets.add(value)
    return ClusterAccess(
        server=server.rstrip("/"), namespace=ctx.get("namespace") or "default", source=where,
        ca=_data_or_file(cluster, "certificate-authority", base, where),
        insecure=bool(cluster.get("insecure-skip-tls-verify")), token=token or None,
        client=(cert, key) if cert and key else None, basic=basic, secrets=frozenset(secrets))


def in_cluster(environ: Mapping[str, str]) -> ClusterAccess:
    """The pod's service account (blocking: reads its files)."""
    host, port = environ.get("KUBERNETES_SERVICE_HOST"), environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        raise IntegrationError(
            "no_connection", "no kubernetes connection is set (options.connection, or one with default: true) "
                             "and the runtime does not run in a Kubernetes pod (KUBERNETES_SERVICE_HOST is unset)")
    directory = environ.get(SERVICE_ACCOUNT_ENV) or SERVICE_ACCOUNT_DIR
    try:
        token = _read_text(os.path.join(directory, "token")).strip()
        with open(os.path.join(directory, "ca.crt"), "rb") as f:
            ca = f.read()
    except OSError as e:
        raise _bad(f"the pod's service account cannot be read from {directory} ({e.strerror or e}); is "
                   "automountServiceAccountToken off?") from None
    try:
        namespace = _read_text(os.path.join(directory, "namespace")).strip() or "default"
    except OSError:
        namespace = "default"
    shown = f"[{host}]" if ":" in host else host
    return ClusterAccess(server=f"https://{shown}:{port}", namespace=namespace,
                         source=f"the pod's service account ({directory})", ca=ca, token=token,
                         secrets=frozenset({token}))


def _access(connection: Connection, environ: Mapping[str, str]) -> ClusterAccess:
    context = connection.get("context")
    what = f"connection {connection.name!r}"
    if connection.get("kubeconfig_content"):
        return parse_kubeconfig(connection.get("kubeconfig_content"), context, os.getcwd(),
                                f"{what} (kubeconfig_content)")
    if connection.get("kubeconfig"):
        path = os.path.expanduser(connection.get("kubeconfig"))
        try:
            text = _read_text(path)
        except OSError as e:
            raise _bad(f"{what}: cannot read the kubeconfig {path} ({e.strerror or e})") from None
        return parse_kubeconfig(text, context, os.path.dirname(os.path.abspath(path)), f"kubeconfig {path}")
    if connection.get("url"):
        ca = connection.get("ca")
        pem = None
        if ca:
            pem = ca.encode("utf-8") if "-----BEGIN" in ca else _read_bytes(ca, what)
        token = connection.get("token")
        return ClusterAccess(server=connection.get("url").rstrip("/"),
                             namespace=connection.get("namespace") or "default", source=what, ca=pem, token=token,
                             secrets=frozenset({token} if token else ()))
    return in_cluster(environ)


def _read_bytes(path: str, what: str) -> bytes:
    try:
        with open(os.path.expanduser(path), "rb") as f:
            return f.read()
    except OSError as e:
        raise _bad(f"{what}: cannot read 'ca' {path} ({e.strerror or e})") from None


async def access_for(services: Any, connection: Connection | None) -> ClusterAccess:
    """The connection's cluster access (None: in-cluster), read in a thread.
    A connection's ``namespace`` field overrides the kubeconfig's."""
    reactor = services.reactor
    if connection is None:
        return await deferToThreadPool(reactor, reactor.getThreadPool(), in_cluster, services.environ)
    access = await deferToThreadPool(reactor, reactor.getThreadPool(), _access, connection, services.environ)
    if connection.get("namespace"):
        access = attrs.evolve(access, namespace=connection.get("namespace"))
    return access
