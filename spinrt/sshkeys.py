"""Private keys for SSH: parsing with clear refusals, and fingerprints.

Keys are parsed with ``cryptography`` (OpenSSH format, PKCS#1, PKCS#8 and
SEC1 PEM, encrypted or not) and handed to Conch as ``Key`` objects. Error
messages name the problem, never the key's content.
"""

from __future__ import annotations

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from twisted.conch.ssh.keys import FingerprintFormats, Key


class SSHError(Exception):
    """A target or key that cannot be used; ``code`` becomes the error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def fingerprint(key: Key) -> str:
    """OpenSSH's notation: ``SHA256:`` and unpadded base64."""
    return "SHA256:" + key.fingerprint(FingerprintFormats.SHA256_BASE64).rstrip("=")


def describe_key(key: Key) -> str:
    return f"{key.sshType().decode('ascii')} {fingerprint(key)}"


def load_private_key(text: str, passphrase: str | None = None, what: str = "the private key") -> Key:
    """Parse an OpenSSH or PEM private key, or raise SSHError(ssh_key_invalid)."""

    def bad(message: str) -> SSHError:
        return SSHError("ssh_key_invalid", f"{what}: {message}")

    data = text.strip().replace("\r\n", "\n")
    if "\\n" in data and "\n" not in data:
        data = data.replace("\\n", "\n")  # one-line values from env files
    if not data:
        raise bad("it is empty")
    if "PRIVATE KEY-----" not in data:
        if data.startswith(("ssh-", "ecdsa-", "sk-")):
            raise bad("this is a public key; give the private key (the file without .pub)")
        raise bad("not a private key: expected text starting with -----BEGIN OPENSSH PRIVATE KEY-----")
    raw = (data + "\n").encode("utf-8")
    password = passphrase.encode("utf-8") if passphrase else None
    load = (
        serialization.load_ssh_private_key
        if "BEGIN OPENSSH PRIVATE KEY" in data
        else serialization.load_pem_private_key
    )
    try:
        try:
            obj = load(raw, password)
        except TypeError:
            if password is None:
                raise bad("the key is encrypted: give its passphrase") from None
            obj = load(raw, None)  # a passphrase for an unencrypted key is harmless
    except UnsupportedAlgorithm:
        raise bad("unsupported key type; use ed25519, ECDSA or RSA") from None
    except ValueError:
        if password is not None:
            raise bad("wrong passphrase, or the key is damaged") from None
        raise bad("the key could not be read (damaged, or a format other than OpenSSH/PEM)") from None
    if isinstance(obj, rsa.RSAPrivateKey):
        if obj.key_size < 2048:
            raise bad(f"RSA keys shorter than 2048 bits are refused by OpenSSH ({obj.key_size} bits)")
    elif isinstance(obj, ec.EllipticCurvePrivateKey):
        if obj.curve.name not in ("secp256r1", "secp384r1", "secp521r1"):
            raise bad(f"ECDSA curve {obj.curve.name} is not supported by SSH")
    elif not isinstance(obj, ed25519.Ed25519PrivateKey):
        raise bad(f"{type(obj).__name__.replace('PrivateKey', '')} keys are not supported; use ed25519, ECDSA or RSA")
    return Key(obj)
