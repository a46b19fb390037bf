"""The TLS the runtime serves: Mozilla's "intermediate" profile, whatever
the endpoint string says.

Twisted's ``ssl:`` endpoint defaults to TLS 1.2 and later but still offers,
on TLS 1.2, suites without forward secrecy (static RSA key exchange) and CBC
suites with SHA-1 MACs. The intermediate profile
(https://wiki.mozilla.org/Security/Server_Side_TLS, guideline 5.7) allows
only ECDHE or DHE key exchange with AES-GCM or ChaCha20-Poly1305 on TLS 1.2,
and TLS 1.3 with its own (all forward-secret, all AEAD) suites.
"""

from __future__ import annotations

from typing import Any

from OpenSSL import SSL

# Mozilla's intermediate list for TLS 1.2, in its order. DHE suites apply only
# when the endpoint string gives ``dhParameters``.
INTERMEDIATE_CIPHERS = ":".join([
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
    "DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384", "DHE-RSA-CHACHA20-POLY1305",
]).encode("ascii")


class TLSPolicyError(Exception):
    """A TLS endpoint whose settings cannot be brought to the profile."""


def apply_intermediate_profile(endpoint: Any) -> bool:
    """Restrict a TLS server endpoint to the intermediate profile; True if it
    serves TLS. Raises :class:`TLSPolicyError` for a TLS endpoint whose
    context cannot be reached, rather than serving weaker TLS than documented.

    Twisted's ``CertificateOptions`` builds one OpenSSL context and hands it
    to every connection, so settings made on it here hold for all of them."""
    from twisted.internet.endpoints import SSL4ServerEndpoint

    if not isinstance(endpoint, SSL4ServerEndpoint):
        return False
    options = getattr(endpoint, "_sslContextFactory", None)
    if options is None or not hasattr(options, "getContext"):
        raise TLSPolicyError("cannot apply the TLS policy to this endpoint (unknown Twisted version?)")
    context = options.getContext()
    if context is not options.getContext():
        raise TLSPolicyError("the endpoint's TLS context is not shared by its connections")
    context.set_min_proto_version(SSL.TLS1_2_VERSION)
    context.set_cipher_list(INTERMEDIATE_CIPHERS)
    return True
