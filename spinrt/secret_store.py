"""The runtime secret store (PROTOCOL.md sections 6 and 9): secrets that outlive a session.

Owner-managed (``secrets.set/delete`` with ``scope: "runtime"``; any role
may list the names). Values are encrypted at rest with ``cryptography``'s
Fernet (AES-128-CBC with HMAC-SHA256, a random IV per value) under a key
from ``SPIN_SECRET_KEY`` or ``--secret-key-file``, never from the store: a
copy of the store (``spin backup``) holds ciphertext only. Several keys,
comma- or newline-separated, rotate the key: the first encrypts, any
decrypts (``MultiFernet``). Without a key the store is off and every use
says why (``secret_store_disabled``).

``{{secret:NAME}}`` resolves from the session's secrets, then this store,
then the runtime's environment (spinrt.secrets.lookup_secret); the values a
run uses are masked in its session like any secret. Ciphertexts live in the
``runtime_secrets`` table (schema 7) and in memory; a value is decrypted
when a template asks for it (~10 us).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any, Callable, Iterable, Iterator

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,199}")  # what {{secret:NAME}} can name
MAX_VALUE = 64 * 1024
MAX_SECRETS = 1000
DISABLED = "secret_store_disabled"
NO_KEY = ("the runtime secret store is off: start the runtime with SPIN_SECRET_KEY (a Fernet key: "
          "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())') "
          "or --secret-key-file")


class SecretStoreError(Exception):
    """A request the store refuses: ``code`` (``bad_request``, ``secret_store_disabled``) and a message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def parse_keys(text: str, source: str) -> MultiFernet:
    """Fernet keys, comma- or newline-separated (the first encrypts) -> MultiFernet; ValueError naming ``source``."""
    keys = [k.strip() for k in re.split(r"[,\n]", text) if k.strip()]
    if not keys:
        raise ValueError(f"{source} holds no key")
    try:
        return MultiFernet([Fernet(k.encode("ascii")) for k in keys])
    except (ValueError, UnicodeEncodeError):
        raise ValueError(f"{source} is not a Fernet key (32 bytes in URL-safe base64, 44 characters; make one with "
                         "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')"
                         ) from None


class RuntimeSecretStore(Mapping):  # type: ignore[type-arg]
    """Name -> value (decrypted on access). ``keys`` None: the store is off."""

    def __init__(self, keys: MultiFernet | None, store: Any = None, wallclock: Callable[[], float] = time.time) -> None:
        self._keys = keys
        self._store = store
        self._wallclock = wallclock
        self._sealed: dict[str, bytes] = {}

    @property
    def enabled(self) -> bool:
        return self._keys is not None

    def load(self, rows: Iterable[tuple[str, bytes]]) -> None:
        """Rows of ``SELECT name, value FROM runtime_secrets``; ValueError when the key opens none of them."""
        self._sealed = {name: bytes(value) for name, value in rows}
        if not self._sealed or self._keys is None:
            return
        failed = 0
        for sealed in self._sealed.values():
            try:
                self._keys.decrypt(sealed)
            except InvalidToken:
                failed += 1
        if failed:
            raise ValueError(f"SPIN_SECRET_KEY does not open {failed} of the {len(self._sealed)} stored runtime "
                             "secrets: was the key changed? Give the new key first and the old one after it "
                             "(comma-separated) to rotate")

    def _check_enabled(self) -> MultiFernet:
        if self._keys is None:
            raise SecretStoreError(DISABLED, NO_KEY)
        return self._keys

    # -- Mapping: what templates read ----------------------------------------------------

    def __getitem__(self, name: str) -> str:
        sealed = self._sealed.get(name) if self._keys is not None else None
        if sealed is None:
            raise KeyError(name)
        return self._keys.decrypt(sealed).decode("utf-8")  # type: ignore[union-attr]

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._sealed) if self._keys is not None else ())

    def __len__(self) -> int:
        return len(self._sealed) if self._keys is not None else 0

    # -- the owner's ops -------------------------------------------------------------------

    def names(self) -> list[str]:
        self._check_enabled()
        return sorted(self._sealed)

    def set(self, secrets: Mapping[str, str]) -> None:
        keys = self._check_enabled()
        for name, value in secrets.items():
            if not NAME.fullmatch(name):
                raise SecretStoreError("bad_request", f"runtime secret name {name[:64]!r} must be letters, digits, "
                                                      "_ . - (not starting with a digit), as {{secret:NAME}} names it")
            if len(value.encode("utf-8", "surrogatepass")) > MAX_VALUE:
                raise SecretStoreError("bad_request", f"runtime secret {name!r} is over {MAX_VALUE} bytes")
        if len(set(self._sealed) | set(secrets)) > MAX_SECRETS:
            raise SecretStoreError("bad_request", f"the runtime secret store holds at most {MAX_SECRETS} secrets")
        now = self._wallclock()
        for name, value in secrets.items():
            sealed = keys.encrypt(value.encode("utf-8"))
            self._sealed[name] = sealed
            if self._store is not None:
                self._store.execute("INSERT OR REPLACE INTO runtime_secrets(name, value, updated) VALUES (?, ?, ?)",
                                    (name, sealed, now))

    def delete(self, names: Iterable[str]) -> list[str]:
        """Remove these names (absent ones are ignored); the ones removed."""
        self._check_enabled()
        removed = []
        for name in names:
            if self._sealed.pop(name, None) is not None:
                removed.append(name)
                if self._store is not None:
                    self._store.execute("DELETE FROM runtime_secrets WHERE name = ?", (name,))
        return removed

    def status(self) -> dict[str, Any]:
        """``/api/status``'s part: whether it is on, and how many secrets it holds."""
        return {"enabled": self.enabled, "count": len(self._sealed)}
