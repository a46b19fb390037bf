"""Test PKI and HTTPS servers: CAs, leaf certificates, rehashed directories.

Everything is generated with ``cryptography`` at test time (no openssl CLI),
and servers are twisted.web on 127.0.0.1:0, so the tests run the same on a
fresh CI machine as here.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import tempfile
import time
from typing import Any

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import crypto
from twisted.internet import reactor, ssl
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, Protocol
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

_ONE_DAY = datetime.timedelta(days=1)


@attrs.define
class Issued:
    """A certificate, its key, and the PEM files written for it."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cert_path: str = ""
    key_path: str = ""

    @property
    def subject(self) -> str:
        return self.cert.subject.rfc4514_string()

    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def twisted_cert(self) -> ssl.Certificate:
        return ssl.Certificate.loadPEM(self.pem())


def _name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "spinrt tests"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def make_ca(common_name: str, issuer: Issued | None = None) -> Issued:
    """A root CA (self-signed), or an intermediate CA signed by ``issuer``."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(issuer.cert.subject if issuer else _name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _ONE_DAY)
        .not_valid_after(now + 30 * _ONE_DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True,
            crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    signer = issuer.key if issuer else key
    return Issued(builder.sign(signer, hashes.SHA256()), key)


def issue_server(ca: Issued, common_name: str = "localhost",
                 dns: tuple[str, ...] = ("localhost",), ips: tuple[str, ...] = ("127.0.0.1",),
                 expired: bool = False) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = (now - 10 * _ONE_DAY, now - _ONE_DAY) if expired else (now - _ONE_DAY, now + 30 * _ONE_DAY)
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return Issued(builder.sign(ca.key, hashes.SHA256()), key)


def write(directory: str, name: str, *items: Issued, with_key: bool = False) -> str:
    """Write the certificates of ``items`` (in order) to ``directory/name``."""
    path = os.path.join(directory, name)
    with open(path, "wb") as f:
        for item in items:
            f.write(item.pem())
    if with_key:
        key_path = path + ".key"
        with open(key_path, "wb") as f:
            f.write(items[0].key_pem())
        os.chmod(key_path, 0o600)
        items[0].key_path = key_path
    items[0].cert_path = path
    return path


def subject_hash(item: Issued) -> str:
    """OpenSSL's X509_NAME_hash, as ``c_rehash`` / ``openssl rehash`` name links."""
    return "%08x" % crypto.X509.from_cryptography(item.cert).subject_name_hash()


def rehashed_dir(parent: str, *cas: Issued) -> str:
    """A directory laid out like ``openssl rehash`` leaves it: ``<hash>.N`` symlinks."""
    directory = tempfile.mkdtemp(prefix="ca-dir-", dir=parent)
    used: dict[str, int] = {}
    for i, ca in enumerate(cas):
        filename = f"ca{i}.pem"
        write(directory, filename, ca)
        h = subject_hash(ca)
        n = used.get(h, 0)
        used[h] = n + 1
        os.symlink(filename, os.path.join(directory, f"{h}.{n}"))  # relative, as rehash does
    return directory


@attrs.define
class Pki:
    """A root CA, an intermediate, a server cert issued by the intermediate."""

    root: Issued
    intermediate: Issued
    server: Issued
    directory: str

    @property
    def bundle(self) -> str:
        return self.root.cert_path


def make_pki(directory: str, name: str = "Test Root CA") -> Pki:
    root = make_ca(name)
    intermediate = make_ca(name + " Intermediate", issuer=root)
    server = issue_server(intermediate)
    write(directory, f"{_slug(name)}-root.pem", root)
    write(directory, f"{_slug(name)}-chain.pem", intermediate)
    write(directory, f"{_slug(name)}-server.pem", server, with_key=True)
    return Pki(root, intermediate, server, directory)


def _slug(name: str) -> str:
    return name.lower().replace(" ", "-")


def server_options(server: Issued, *chain: Issued, **kw: Any) -> ssl.CertificateOptions:
    return ssl.CertificateOptions(
        privateKey=crypto.PKey.from_cryptography_key(server.key),
        certificate=crypto.X509.from_cryptography(server.cert),
        extraCertChain=[crypto.X509.from_cryptography(c.cert) for c in chain],
        **kw,
    )


def listen_https(testcase: Any, resource: Resource, server: Issued, *chain: Issued,
                 **kw: Any) -> tuple[IListeningPort, int]:
    """A twisted.web HTTPS server on 127.0.0.1:<random>, stopped at cleanup."""
    site = Site(resource)
    site.displayTracebacks = False
    port = reactor.listenSSL(0, site, server_options(server, *chain, **kw), interface="127.0.0.1")
    testcase.addCleanup(port.stopListening)
    return port, port.getHost().port


def listen_http(testcase: Any, resource: Resource) -> tuple[IListeningPort, int]:
    site = Site(resource)
    site.displayTracebacks = False
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    testcase.addCleanup(port.stopListening)
    return port, port.getHost().port


async def http_get(url: str, headers: dict[str, str] | None = None,
                   trust: list[Issued] | None = None) -> tuple[Any, bytes]:
    """GET with a fresh, non-persistent client (nothing left open for trial to find)."""
    import treq
    from treq.client import HTTPClient
    from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool

    root = ssl.trustRootFromCertificates([c.twisted_cert() for c in trust]) if trust else None
    agent = Agent(reactor, contextFactory=BrowserLikePolicyForHTTPS(trustRoot=root),
                  pool=HTTPConnectionPool(reactor, persistent=False))
    response = await HTTPClient(agent).get(url, headers=headers)
    return response, await treq.content(response)


class _Rude(Protocol):
    """Answers anything with a plain-HTTP 400 and hangs up (an HTTP port hit with TLS)."""

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        self.transport.loseConnection()


def listen_plain_http_answering_400(testcase: Any) -> int:
    port = reactor.listenTCP(0, Factory.forProtocol(_Rude), interface="127.0.0.1")
    testcase.addCleanup(port.stopListening)
    return port.getHost().port


# -- a small httpbin for REST cells ------------------------------------------------------------------------


class Api(Resource):
    """A small httpbin: /echo, /json, /text, /bytes, /status/N, /redirect, /big, /drip, /hang."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[dict[str, Any]] = []
        self.lost: list[tuple[str, float]] = []  # (path, when) for connections that went away early
        self.redirect_to = ""
        self._next: Any = None

    def _watch(self, request: Request, path: str) -> None:
        def gone(_: Any) -> None:
            self.lost.append((path, time.monotonic()))
            if self._next is not None and self._next.active():
                self._next.cancel()  # nothing left scheduled for trial to find

        request.notifyFinish().addErrback(gone)

    def render(self, request: Request) -> Any:
        path = request.path.decode()
        body = request.content.read()
        self.requests.append({
            "method": request.method.decode(), "path": path,
            "args": {k.decode(): [v.decode() for v in vs] for k, vs in request.args.items()},
            "headers": {k.decode().lower(): v[0].decode() for k, v in request.requestHeaders.getAllRawHeaders()},
            "body": body.decode("utf-8", "replace"),
        })
        parts = path.strip("/").split("/")
        if parts[0] == "echo":
            request.setHeader(b"content-type", b"application/json")
            return json.dumps(self.requests[-1]).encode()
        if parts[0] == "json":
            request.setHeader(b"content-type", b"application/json; charset=utf-8")
            request.setHeader(b"x-multi", b"a")
            request.responseHeaders.addRawHeader(b"x-multi", b"b")
            return json.dumps({"items": [1, 2, 3], "name": "caf\u00e9"}).encode()
        if parts[0] == "text":
            request.setHeader(b"content-type", b"text/plain; charset=iso-8859-1")
            return "caf\u00e9 ol\u00e9".encode("latin-1")
        if parts[0] == "bytes":
            request.setHeader(b"content-type", b"image/png")
            return b"\x89PNG\r\n\x1a\n" + bytes(range(256))
        if parts[0] == "status":
            request.setResponseCode(int(parts[1]))
            request.setHeader(b"content-type", b"application/json")
            return json.dumps({"error": {"message": "no such item"}}).encode()
        if parts[0] == "empty":
            request.setResponseCode(204)
            return b""
        if parts[0] == "redirect":
            request.redirect(self.redirect_to.encode() or b"/json")
            return b""
        if parts[0] == "big":  # known length
            return b"x" * int(parts[1])
        if parts[0] == "drip":  # chunked, 64 KiB every 10 ms, forever
            self._watch(request, path)
            self._drip(request)
            return NOT_DONE_YET
        if parts[0] == "hang":  # never answers
            self._watch(request, path)
            return NOT_DONE_YET
        request.setResponseCode(404)
        return b"not found"

    def _drip(self, request: Request) -> None:
        if request.finished or getattr(request, "_disconnected", False) or request.channel is None:
            return
        request.write(b"y" * 65536)
        self._next = reactor.callLater(0.01, self._drip, request)
