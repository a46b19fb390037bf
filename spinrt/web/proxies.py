"""Who the client is behind a reverse proxy: ``--trusted-proxy`` (PROTOCOL.md section 9).

Only when the TCP peer is inside a trusted range does the runtime read
``X-Forwarded-For`` or, when that header is absent, ``Forwarded`` (RFC 7239).
It walks the list from the right (the hop nearest to the runtime) past the
trusted proxies and takes the first address that is not one of them, as
nginx's ``real_ip_recursive on`` does, so a client cannot choose its
identity by sending its own header: whatever it sends sits to the left of
the address the proxy appended. A value that is not an IP address
(``unknown``, ``_hidden``, garbage) stops the walk and the TCP peer is used.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Iterable, Sequence, Union

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.web import server

from .auth import OriginKey, origin_of

IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


def parse_network(value: str) -> IPNetwork:
    """``"10.0.0.0/8"``, ``"127.0.0.1"`` (one address), ``"::1/128"`` -> a network.

    Raises ValueError with a one-line reason, also for host bits set
    (``10.0.0.1/8``: a typo more often than not)."""
    text = value.strip()
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(
            f"{value!r} is not an IP address or CIDR range (e.g. 127.0.0.1/32, 10.0.0.0/8, ::1)"
        ) from None
    raise ValueError(f"{value!r} has host bits set: did you mean {loose}?")


def parse_node(text: str) -> IPAddress | None:
    """One hop of ``X-Forwarded-For`` or a ``for=`` node of ``Forwarded``
    (RFC 7239 section 6): ``192.0.2.1``, ``192.0.2.1:4711``, ``2001:db8::1``,
    ``[2001:db8::1]:4711``, optionally quoted. ``unknown``, obfuscated
    identifiers (``_hidden``) and anything else -> None. IPv4-mapped IPv6
    addresses become IPv4."""
    value = text.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1].replace('\\"', '"').strip()
    if value.startswith("["):
        host, bracket, rest = value[1:].partition("]")
        if not bracket or (rest and not re.fullmatch(r":[0-9]{1,5}", rest)):
            return None
    elif value.count(":") == 1:
        host, _, port = value.partition(":")
        if not re.fullmatch(r"[0-9]{1,5}", port):
            return None
    else:
        host = value
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


# forwarded-pair = token "=" ( token / quoted-string ), RFC 7239 section 4;
# unquoted values may also hold ":" "[" "]" as some proxies write them.
_PAIR = re.compile(
    r"""\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,;"=]*)\s*([,;]|$)"""
)


def parse_forwarded(value: str) -> list[dict[str, str]] | None:
    """A ``Forwarded`` value -> its elements, each ``{parameter: value}`` with
    lower-case parameter names and quotes removed; None when it does not parse."""
    elements: list[dict[str, str]] = []
    current: dict[str, str] = {}
    position = 0
    text = value.strip()
    while position < len(text):
        if text[position] in ",; \t":  # empty elements and pairs are allowed
            if text[position] == ",":
                elements.append(current)
                current = {}
            position += 1
            continue
        match = _PAIR.match(text, position)
        if match is None:
            return None
        raw = match[2]
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        current[match[1].lower()] = raw
        position = match.end()
        if match[3] == ",":
            elements.append(current)
            current = {}
    elements.append(current)
    return [element for element in elements if element]


def _joined(values: Sequence[bytes] | None) -> str | None:
    if not values:
        return None
    text = ",".join(v.decode("latin-1") for v in values)
    return text if text.strip(" \t,") else None


class TrustedProxies:
    """The ``--trusted-proxy`` ranges and what they let the runtime believe."""

    def __init__(self, networks: Iterable[IPNetwork] = ()) -> None:
        self.networks = tuple(networks)
        # A twisted.web request class that sees clients through these proxies.
        self.request_class: type[server.Request] = type(
            "ProxiedRequest", (ProxiedRequest,), {"proxies": self}
        )

    def trusts(self, host: str | IPAddress | None) -> bool:
        if not self.networks or host is None:
            return False
        address = parse_node(host) if isinstance(host, str) else host
        return address is not None and any(address in network for network in self.networks)

    def client(self, peer: str, forwarded_for: str | None, forwarded: str | None) -> str:
        """The client's address as text: ``peer`` (the TCP peer's host) unless
        it is trusted and the joined ``X-Forwarded-For`` (else ``Forwarded``)
        values name another one."""
        if not self.trusts(peer):
            return peer
        if forwarded_for is not None:
            # Blank entries (", 192.0.2.1" from a proxy that appended to an
            # empty header) are no hop at all.
            hops: list[str | None] = [hop for hop in forwarded_for.split(",") if hop.strip()]
        elif forwarded is not None:
            elements = parse_forwarded(forwarded)
            if elements is None:
                return peer
            hops = [element.get("for") for element in elements]
        else:
            return peer
        chosen: IPAddress | None = None
        for hop in reversed(hops):
            address = parse_node(hop) if hop is not None else None
            if address is None:
                return peer
            chosen = address
            if not self.trusts(address):
                break
        # Every hop trusted: the client itself is inside a trusted range.
        return str(chosen) if chosen is not None else peer

    def own_origins(self, request: server.Request) -> frozenset[OriginKey]:
        """The runtime's own origin as this request reached it: its scheme
        and ``Host``, and behind a trusted proxy also the scheme and host the
        proxy says it was asked for (``X-Forwarded-Proto``/``-Host``,
        ``Forwarded: proto=;host=``), so a UI served through the proxy counts."""
        headers = request.requestHeaders
        schemes = {"https" if request.isSecure() else "http"}
        hosts = set()
        host_values = headers.getRawHeaders(b"host") or []
        if len(host_values) == 1:
            hosts.add(host_values[0].decode("latin-1"))
        peer = getattr(request.client, "host", None)
        if self.trusts(peer):
            proto = _joined(headers.getRawHeaders(b"x-forwarded-proto"))
            schemes.update(p.strip().lower() for p in (proto or "").split(","))
            forwarded_host = _joined(headers.getRawHeaders(b"x-forwarded-host"))
            hosts.update(h.strip() for h in (forwarded_host or "").split(","))
            for element in parse_forwarded(_joined(headers.getRawHeaders(b"forwarded")) or "") or []:
                schemes.add(element.get("proto", "").lower())
                hosts.add(element.get("host", ""))
        own = set()
        for scheme in schemes & {"http", "https"}:
            for host in hosts:
                key = origin_of(scheme, host) if host else None
                if key is not None:
                    own.add(key)
        return frozenset(own)


class ProxiedRequest(server.Request):
    """A request whose ``getClientAddress()`` is the client behind a trusted
    proxy; the access log, the failure throttle and the WebSocket log lines
    all read it from here. ``request.client`` stays the TCP peer."""

    proxies: TrustedProxies

    def getClientAddress(self):  # type: ignore[no-untyped-def]
        peer = super().getClientAddress()
        if not isinstance(peer, (IPv4Address, IPv6Address)) or not self.proxies.trusts(peer.host):
            return peer
        cached = getattr(self, "_spin_client", None)
        if cached is None:
            headers = self.requestHeaders
            host = self.proxies.client(
                peer.host,
                _joined(headers.getRawHeaders(b"x-forwarded-for")),
                _joined(headers.getRawHeaders(b"forwarded")),
            )
            kind = IPv6Address if ":" in host else IPv4Address
            cached = peer if host == peer.host else kind("TCP", host, 0)
            self._spin_client = cached
        return cached


NO_PROXIES = TrustedProxies()
