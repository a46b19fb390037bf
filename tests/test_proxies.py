"""--trusted-proxy: parsing ranges, X-Forwarded-For and Forwarded (RFC 7239), and
which address the runtime believes. Unit tests; the real upgrades through a
"proxy" are in test_throttle.py and test_origins.py."""

from __future__ import annotations

import ipaddress
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.trial import unittest
from twisted.web.test.requesthelper import DummyChannel

from spinrt.web.proxies import TrustedProxies, parse_forwarded, parse_network, parse_node

PROXY = "127.0.0.1"


def proxies(*cidrs: str) -> TrustedProxies:
    return TrustedProxies([parse_network(c) for c in cidrs])


class ParseNetworkTests(unittest.TestCase):
    def test_valid(self) -> None:
        self.assertEqual(str(parse_network("127.0.0.1")), "127.0.0.1/32")
        self.assertEqual(str(parse_network(" 10.0.0.0/8 ")), "10.0.0.0/8")
        self.assertEqual(str(parse_network("::1")), "::1/128")
        self.assertEqual(str(parse_network("2001:db8::/32")), "2001:db8::/32")
        self.assertEqual(str(parse_network("0.0.0.0/0")), "0.0.0.0/0")

    def test_invalid(self) -> None:
        for value in ["", " ", "localhost", "300.0.0.0/8", "10.0.0.0/33", "1.2.3.4/abc", "10.0.0.0/8,",
                      "10.0.0.0/8 192.168.0.0/16", "[::1]", "::1/129", "-1"]:
            with self.assertRaises(ValueError, msg=value) as caught:
                parse_network(value)
            self.assertIn("not an IP address or CIDR range", str(caught.exception))
            self.assertNotIn("\n", str(caught.exception))

    def test_host_bits_are_a_typo(self) -> None:
        with self.assertRaises(ValueError) as caught:
            parse_network("10.0.0.1/8")
        self.assertIn("did you mean 10.0.0.0/8", str(caught.exception))


class ParseNodeTests(unittest.TestCase):
    def test_addresses(self) -> None:
        cases = {
            "192.0.2.1": "192.0.2.1",
            " 192.0.2.1 ": "192.0.2.1",
            "192.0.2.1:4711": "192.0.2.1",
            '"192.0.2.1:4711"': "192.0.2.1",
            "2001:db8::1": "2001:db8::1",
            "[2001:db8::1]": "2001:db8::1",
            "[2001:db8::1]:4711": "2001:db8::1",
            '"[2001:db8:cafe::17]:4711"': "2001:db8:cafe::17",
            "::ffff:192.0.2.1": "192.0.2.1",
            "[::ffff:192.0.2.1]:80": "192.0.2.1",
        }
        for text, expected in cases.items():
            self.assertEqual(str(parse_node(text)), expected, text)

    def test_not_addresses(self) -> None:
        for text in ["", "unknown", "_hidden", '"_gazonk"', "_SEVKISEK", "example.com", "192.0.2.1:port",
                     "192.0.2.1:_obf", "[2001:db8::1]:x", "[2001:db8::1", "2001:db8::1]:80", "999.1.1.1",
                     "192.0.2.1:123456", '"', "[]", "1.2.3.4 5.6.7.8"]:
            self.assertIsNone(parse_node(text), text)


class ParseForwardedTests(unittest.TestCase):
    def test_rfc_7239_examples(self) -> None:
        self.assertEqual(parse_forwarded('for="_gazonk"'), [{"for": "_gazonk"}])
        self.assertEqual(parse_forwarded('For="[2001:db8:cafe::17]:4711"'), [{"for": "[2001:db8:cafe::17]:4711"}])
        self.assertEqual(parse_forwarded("for=192.0.2.60;proto=http;by=203.0.113.43"),
                         [{"for": "192.0.2.60", "proto": "http", "by": "203.0.113.43"}])
        self.assertEqual(parse_forwarded("for=192.0.2.43, for=198.51.100.17"),
                         [{"for": "192.0.2.43"}, {"for": "198.51.100.17"}])

    def test_lenient_and_odd(self) -> None:
        self.assertEqual(parse_forwarded('for="a,b;c";proto=https'), [{"for": "a,b;c", "proto": "https"}])
        self.assertEqual(parse_forwarded('for="\\"x\\""'), [{"for": '"x"'}])
        self.assertEqual(parse_forwarded(" for=192.0.2.1 ;; , ,for=192.0.2.2"), [{"for": "192.0.2.1"}, {"for": "192.0.2.2"}])
        self.assertEqual(parse_forwarded("for=192.0.2.1:80"), [{"for": "192.0.2.1:80"}])
        self.assertEqual(parse_forwarded(""), [])

    def test_garbage(self) -> None:
        for text in ["192.0.2.1", "for", "for=\"unterminated", "=x", "for=a b", "for==x", "for=x;=y"]:
            self.assertIsNone(parse_forwarded(text), text)

    @given(st.text(max_size=80))
    @settings(max_examples=300, deadline=None)
    def test_never_raises(self, text: str) -> None:
        result = parse_forwarded(text)
        self.assertTrue(result is None or isinstance(result, list))


class ClientAddressTests(unittest.TestCase):
    def test_untrusted_peer_headers_ignored(self) -> None:
        for p in (TrustedProxies(), proxies("10.0.0.0/8")):
            self.assertEqual(p.client(PROXY, "203.0.113.9", None), PROXY)
            self.assertEqual(p.client(PROXY, None, "for=203.0.113.9"), PROXY)

    def test_single_proxy(self) -> None:
        p = proxies("127.0.0.1/32")
        self.assertEqual(p.client(PROXY, "203.0.113.9", None), "203.0.113.9")
        self.assertEqual(p.client(PROXY, None, "for=203.0.113.9;proto=https"), "203.0.113.9")
        self.assertEqual(p.client(PROXY, None, 'for="[2001:db8::1]:4711"'), "2001:db8::1")
        self.assertEqual(p.client(PROXY, "[2001:db8::1]:4711", None), "2001:db8::1")
        self.assertEqual(p.client(PROXY, "203.0.113.9:5555", None), "203.0.113.9")
        self.assertEqual(p.client(PROXY, None, None), PROXY)

    def test_right_most_untrusted_hop(self) -> None:
        p = proxies("127.0.0.1/32", "10.0.0.0/8")
        # A client's own X-Forwarded-For sits left of what the proxy appended.
        self.assertEqual(p.client(PROXY, "198.51.100.1, 203.0.113.9", None), "203.0.113.9")
        self.assertEqual(p.client(PROXY, "garbage, 203.0.113.9", None), "203.0.113.9")
        self.assertEqual(p.client(PROXY, "198.51.100.1, 203.0.113.9, 10.1.2.3", None), "203.0.113.9")
        self.assertEqual(p.client(PROXY, ", 203.0.113.9", None), "203.0.113.9")  # appended to an empty header
        self.assertEqual(p.client(PROXY, None, "for=198.51.100.1, for=203.0.113.9, for=10.1.2.3"), "203.0.113.9")
        # Every hop trusted: the client is itself in a trusted range.
        self.assertEqual(p.client(PROXY, "10.9.9.9, 10.1.2.3", None), "10.9.9.9")

    def test_garbage_falls_back_to_the_peer(self) -> None:
        p = proxies("127.0.0.1/32", "10.0.0.0/8")
        for xff in ["unknown", "_hidden", "not-an-ip", "203.0.113.9, unknown", "203.0.113.9, 10.1.2.3, junk",
                    "203.0.113.9:port", "[2001:db8::1", ",", " ", "203.0.113.9 198.51.100.1"]:
            self.assertEqual(p.client(PROXY, xff, None), PROXY, xff)
        for forwarded in ["for=unknown", "for=_hidden", 'for="_gazonk"', "proto=https", "for=203.0.113.9, by=10.1.2.3",
                          "garbage", 'for="[2001:db8::1"', "for=203.0.113.9;for"]:
            self.assertEqual(p.client(PROXY, None, forwarded), PROXY, forwarded)

    def test_x_forwarded_for_wins_over_forwarded(self) -> None:
        # Proxies in the documented recipes set X-Forwarded-For; a Forwarded
        # header next to it may come from the client, so it is not read.
        p = proxies("127.0.0.1/32")
        self.assertEqual(p.client(PROXY, "203.0.113.9", "for=198.51.100.66"), "203.0.113.9")

    def test_ipv6_proxy_and_mapped_addresses(self) -> None:
        p = proxies("::1/128", "127.0.0.1/32")
        self.assertEqual(p.client("::1", "203.0.113.9", None), "203.0.113.9")
        self.assertEqual(p.client("::ffff:127.0.0.1", "203.0.113.9", None), "203.0.113.9")
        self.assertTrue(p.trusts("::ffff:127.0.0.1"))
        self.assertFalse(p.trusts("unix:/run/spin.sock"))
        self.assertFalse(p.trusts(None))

    @given(peer=st.sampled_from(["127.0.0.1", "192.0.2.7", "::1"]),
           xff=st.none() | st.text(max_size=60), forwarded=st.none() | st.text(max_size=60))
    @settings(max_examples=300, deadline=None)
    def test_always_an_address(self, peer: str, xff: str | None, forwarded: str | None) -> None:
        p = proxies("127.0.0.1/32", "::1/128")
        result = p.client(peer, xff, forwarded)
        if not p.trusts(peer):
            self.assertEqual(result, peer)
        else:
            ipaddress.ip_address(result)  # raises if not an address


class ProxiedRequestTests(unittest.TestCase):
    """The twisted.web request the runtime's Site builds (DummyChannel fakes the socket)."""

    def request(self, peer: Any, *headers: tuple[bytes, bytes], cidrs: tuple[str, ...] = ("127.0.0.1", "::1"),
                secure: bool = False) -> Any:
        channel = DummyChannel(peer)
        if secure:
            channel.transport = DummyChannel.SSL(peer)
        request = proxies(*cidrs).request_class(channel)
        for name, value in headers:
            request.requestHeaders.addRawHeader(name, value)
        return request

    def test_client_address(self) -> None:
        v4 = IPv4Address("TCP", "127.0.0.1", 4000)
        v6 = IPv6Address("TCP", "::1", 4000)
        address = self.request(v4, (b"x-forwarded-for", b"203.0.113.9")).getClientAddress()
        self.assertEqual((type(address), address.host), (IPv4Address, "203.0.113.9"))
        address = self.request(v6, (b"x-forwarded-for", b"2001:db8::5")).getClientAddress()
        self.assertEqual((type(address), address.host), (IPv6Address, "2001:db8::5"))
        address = self.request(v6, (b"forwarded", b'for="[2001:db8::6]:99"')).getClientAddress()
        self.assertEqual(address.host, "2001:db8::6")
        # Two header lines are one list.
        address = self.request(v4, (b"x-forwarded-for", b"198.51.100.1"), (b"x-forwarded-for", b"203.0.113.9")).getClientAddress()
        self.assertEqual(address.host, "203.0.113.9")
        # No header, garbage, an untrusted peer, a UNIX socket: the peer itself.
        self.assertIs(self.request(v4).getClientAddress(), v4)
        self.assertIs(self.request(v4, (b"x-forwarded-for", b"unknown")).getClientAddress(), v4)
        other = IPv4Address("TCP", "192.0.2.50", 4000)
        self.assertIs(self.request(other, (b"x-forwarded-for", b"203.0.113.9")).getClientAddress(), other)
        unix = UNIXAddress(b"/run/spin.sock")
        self.assertIs(self.request(unix, (b"x-forwarded-for", b"203.0.113.9")).getClientAddress(), unix)

    def test_own_origins(self) -> None:
        v4 = IPv4Address("TCP", "127.0.0.1", 4000)
        plain = self.request(v4, (b"host", b"Spin.Example:8888"))
        self.assertEqual(plain.proxies.own_origins(plain), {("http", "spin.example", 8888)})
        secure = self.request(v4, (b"host", b"spin.example"), secure=True)
        self.assertEqual(secure.proxies.own_origins(secure), {("https", "spin.example", 443)})
        proxied = self.request(v4, (b"host", b"127.0.0.1:8888"), (b"x-forwarded-proto", b"https"),
                               (b"x-forwarded-host", b"spin.example"))
        self.assertEqual(proxied.proxies.own_origins(proxied), {
            ("http", "127.0.0.1", 8888), ("https", "127.0.0.1", 8888), ("http", "spin.example", 80),
            ("https", "spin.example", 443)})
        untrusted = self.request(IPv4Address("TCP", "192.0.2.50", 1), (b"host", b"127.0.0.1:8888"),
                                 (b"x-forwarded-proto", b"https"), (b"x-forwarded-host", b"spin.example"))
        self.assertEqual(untrusted.proxies.own_origins(untrusted), {("http", "127.0.0.1", 8888)})
        # Two Host headers, or none: no own origin to compare with.
        twice = self.request(v4, (b"host", b"a.example"), (b"host", b"b.example"))
        self.assertEqual(twice.proxies.own_origins(twice), frozenset())
        garbage = self.request(v4, (b"host", b"not a host"), (b"x-forwarded-proto", b"gopher"))
        self.assertEqual(garbage.proxies.own_origins(garbage), frozenset())
