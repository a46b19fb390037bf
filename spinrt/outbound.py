"""The outbound HTTP client every cell type shares, and its TLS policy.

``REQUESTS_CA_BUNDLE`` decides, as it does for ``requests`` and ``curl`` in
cells (they see the same variable):

- unset (or empty): peer certificates are NOT verified (as documented for
  users); SNI is still sent. One warning is logged at start.
- a PEM file: the peer chain and host name are verified against the
  certificates in that file, and only those.
- a directory: the same, against its ``<hash>.N`` files as left by
  ``c_rehash`` / ``openssl rehash``.

A path that is missing, unreadable, or holds no certificate is a
ConfigError: the runtime refuses to start rather than silently trusting
nothing (or everything).
"""

from __future__ import annotations

import os
import re
import weakref
from typing import Any, Mapping

import attrs
from OpenSSL import SSL
from service_identity import CertificateError, VerificationError
from service_identity.cryptography import verify_certificate_hostname, verify_certificate_ip_address
from twisted.internet import ssl
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool
from twisted.web.iweb import IAgent, IPolicyForHTTPS
from zope.interface import implementer

from .config import ConfigError

_log = Logger()

ENV = "REQUESTS_CA_BUNDLE"
CONNECT_TIMEOUT = 30.0  # seconds to establish TCP; the rest is the cell's timeout

_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----\r?\n.+?-----END CERTIFICATE-----", re.DOTALL)
_REHASH_NAME = re.compile(r"^[0-9a-f]{8}\.[0-9]+$")  # <hash>.N; CRL links are <hash>.rN


# -- trust material --------------------------------------------------------------


def split_pem(data: bytes) -> list[bytes]:
    """Every certificate block in a PEM file (``Certificate.loadPEM`` reads only one)."""
    return _PEM_CERT.findall(data)


def _load_file(path: str, shown: str) -> list[ssl.Certificate]:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError(f"{ENV}: cannot read {shown} ({e.strerror or e})") from None
    certs = []
    for i, block in enumerate(split_pem(data), 1):
        try:
            certs.append(ssl.Certificate.loadPEM(block))
        except Exception as e:
            raise ConfigError(f"{ENV}: certificate #{i} in {shown} is not a valid PEM certificate ({e})") from None
    return certs


def load_trust(path: str) -> tuple[str, list[ssl.Certificate]]:
    """("file" | "directory", certificates) for a REQUESTS_CA_BUNDLE value, or ConfigError."""
    if not os.path.exists(path):
        raise ConfigError(
            f"{ENV}={path} does not exist: point it at a PEM CA bundle or a c_rehash "
            f"directory, or unset it (outbound TLS is then not verified)"
        )
    if os.path.isdir(path):
        names = sorted(n for n in os.listdir(path) if _REHASH_NAME.match(n))
        if not names:
            raise ConfigError(
                f"{ENV}={path} is a directory without <hash>.0 links: run "
                f"'openssl rehash {path}' (or 'c_rehash {path}') after copying the CA certificates into it"
            )
        certs: list[ssl.Certificate] = []
        for name in names:
            certs += _load_file(os.path.join(path, name), f"{path}/{name}")
        kind = "directory"
    else:
        certs = _load_file(path, path)
        kind = "file"
    if not certs:
        raise ConfigError(
            f"{ENV}={path} holds no PEM certificates (-----BEGIN CERTIFICATE-----): "
            f"give it a CA bundle, e.g. /etc/ssl/certs/ca-certificates.crt"
        )
    return kind, certs


# -- verification failures that say which certificate failed ---------------------

# OpenSSL X509_V_ERR_* codes users meet most, in words that suggest the fix.
_VERIFY_ERRORS = {
    2: "its issuer certificate is not in the trusted set",
    9: "it is not valid yet",
    10: "it has expired",
    18: "it is self-signed and not in the trusted set",
    19: "the chain ends in a self-signed certificate that is not in the trusted set",
    20: "its issuer is not in the trusted set",
    21: "its issuer is not in the trusted set (and the server sent no chain)",
    24: "it is not a valid CA certificate",
    26: "it is not meant for TLS servers",
}


class CertificateRejected(Exception):
    """Outbound TLS verification failed; the message names the certificate."""


def _name(cert: Any) -> tuple[str, str]:
    c = cert.to_cryptography()
    return c.subject.rfc4514_string(), c.issuer.rfc4514_string()


def _verify_callback(tls_protocol: Any, hostname: str, port: int, trust: str, source: str | None = None) -> Any:
    """A per-connection verify callback that explains failures, then fails the
    connection. ``source`` says where the trusted CAs come from when that is
    not REQUESTS_CA_BUNDLE (an integration connection's own CA)."""
    protocol_ref = weakref.ref(tls_protocol)  # no cycle connection -> callback -> protocol
    is_ip = isIPAddress(hostname) or isIPv6Address(hostname)

    def reject(message: str) -> bool:
        protocol = protocol_ref()
        if protocol is not None:
            protocol.failVerification(Failure(CertificateRejected(
                f"TLS verification of {hostname}:{port} failed: {message}; trusted CAs come "
                f"from {source or f'{ENV}={trust}'} (add the issuing CA there, or fix the server's chain)"
            )))
        return False

    def callback(conn: Any, cert: Any, errno: int, depth: int, ok: int) -> bool:
        subject, issuer = _name(cert)
        if not ok:
            why = _VERIFY_ERRORS.get(errno) or f"OpenSSL verify error {errno}"
            return reject(f"certificate '{subject}' (issued by '{issuer}'): {why}")
        if depth == 0:
            try:
                if is_ip:
                    verify_certificate_ip_address(cert.to_cryptography(), hostname)
                else:
                    verify_certificate_hostname(cert.to_cryptography(), hostname)
            except (VerificationError, CertificateError):
                return reject(f"certificate '{subject}' is not valid for the name {hostname}")
        return True

    return callback


@implementer(IOpenSSLClientConnectionCreator)
class _ExplainingCreator:
    def __init__(self, inner: Any, hostname: str, port: int, trust: str, source: str | None = None) -> None:
        self._inner = inner
        self._hostname = hostname
        self._port = port
        self._trust = trust
        self._source = source

    def clientConnectionForTLS(self, tls_protocol: Any) -> SSL.Connection:
        connection = self._inner.clientConnectionForTLS(tls_protocol)
        # Same checks as Twisted's callback (chain by OpenSSL, name by
        # service_identity), but the failure names the certificate.
        connection.set_verify(
            SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT,
            _verify_callback(tls_protocol, self._hostname, self._port, self._trust, self._source),
        )
        return connection


@implementer(IPolicyForHTTPS)
class VerifyingPolicy:
    """BrowserLikePolicyForHTTPS over a fixed trust root, with explicit failures."""

    def __init__(self, certificates: list[ssl.Certificate], trust: str) -> None:
        self._inner = BrowserLikePolicyForHTTPS(trustRoot=ssl.trustRootFromCertificates(certificates))
        self._trust = trust

    def creatorForNetloc(self, hostname: bytes, port: int) -> IOpenSSLClientConnectionCreator:
        creator = self._inner.creatorForNetloc(hostname, port)
        return _ExplainingCreator(creator, hostname.decode("ascii"), port, self._trust)


@implementer(IOpenSSLClientConnectionCreator)
class _UnverifiedCreator:
    def __init__(self, context: SSL.Context, hostname: str) -> None:
        self._context = context
        # SNI for names only (RFC 6066 forbids literal addresses); virtual hosts need it.
        self._sni = None if isIPAddress(hostname) or isIPv6Address(hostname) else hostname.encode("ascii")

    def clientConnectionForTLS(self, tls_protocol: Any) -> SSL.Connection:
        connection = SSL.Connection(self._context, None)
        connection.set_app_data(tls_protocol)
        if self._sni:
            connection.set_tlsext_host_name(self._sni)
        return connection


@implementer(IPolicyForHTTPS)
class UnverifiedPolicy:
    """Encrypts, sends SNI, and accepts any certificate (REQUESTS_CA_BUNDLE unset)."""

    def __init__(self) -> None:
        self._context = ssl.CertificateOptions(verify=False).getContext()

    def creatorForNetloc(self, hostname: bytes, port: int) -> IOpenSSLClientConnectionCreator:
        return _UnverifiedCreator(self._context, hostname.decode("ascii"))


# -- the client ------------------------------------------------------------------


@attrs.frozen
class TlsPolicy:
    verified: bool
    path: str | None = None
    kind: str | None = None  # "file" / "directory"
    certificates: int = 0

    def status(self) -> dict[str, Any]:
        return {"outbound_tls": "verified" if self.verified else "unverified", "outbound_ca_bundle": self.path}


def policy_from_environ(environ: Mapping[str, str]) -> tuple[TlsPolicy, IPolicyForHTTPS]:
    value = environ.get(ENV, "")
    if not value.strip():
        return TlsPolicy(verified=False), UnverifiedPolicy()
    path = os.path.abspath(os.path.expanduser(value))
    kind, certs = load_trust(path)
    return TlsPolicy(True, path, kind, len(certs)), VerifyingPolicy(certs, path)


class Outbound:
    """One connection pool and TLS policy for every outbound HTTP request."""

    def __init__(self, reactor: Any, tls: TlsPolicy, policy: IPolicyForHTTPS,
                 connect_timeout: float = CONNECT_TIMEOUT) -> None:
        self.reactor = reactor
        self.tls = tls
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.agent = Agent(reactor, contextFactory=policy, connectTimeout=connect_timeout, pool=self.pool)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], reactor: Any) -> "Outbound":
        """The runtime's client; ConfigError for a bad REQUESTS_CA_BUNDLE."""
        tls, policy = policy_from_environ(environ)
        return cls(reactor, tls, policy)

    def log_policy(self) -> None:
        if self.tls.verified:
            _log.info("outbound TLS is verified against {path} ({count} CA certificates from a {kind})",
                      path=self.tls.path, count=self.tls.certificates, kind=self.tls.kind)
        else:
            _log.warn("REQUESTS_CA_BUNDLE is not set: outbound HTTPS certificates are NOT verified "
                      "(set it to a CA bundle file or c_rehash directory to verify them)")

    def request(self, method: str, url: str, agent: IAgent | None = None, **kw: Any) -> "Deferred[Any]":
        """treq's ``request`` with an unbuffered body.

        Each call gets its own HTTPClient, hence its own cookie jar: cookies
        from one session's API calls never travel with another's. ``agent``
        wraps ``self.agent`` for this one request (REST cells follow redirects
        through ``cells.redirects.following``)."""
        from treq.client import HTTPClient

        kw.setdefault("unbuffered", True)
        return HTTPClient(agent or self.agent).request(method, url, reactor=self.reactor, **kw)

    def close(self) -> "Deferred[Any]":
        """Close idle pooled connections (safe to call more than once)."""
        return self.pool.closeCachedConnections()
