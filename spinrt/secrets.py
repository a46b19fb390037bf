"""Secret resolution and masking. Pure.

Every known secret value is replaced by ``***`` in everything a session
emits (and so in everything it stores). Values shorter than ``MIN_LENGTH``
are not masked: replacing every ``"ab"`` in the output would destroy it and
hide nothing worth hiding.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

MASK = "***"
MIN_LENGTH = 4


class Masker:
    def __init__(self, values: Iterable[str] = ()) -> None:
        self.values = frozenset(v for v in values if isinstance(v, str) and len(v) >= MIN_LENGTH)
        if self.values:
            # Longest first, so a secret containing another is masked whole.
            ordered = sorted(self.values, key=len, reverse=True)
            self._pattern: re.Pattern[str] | None = re.compile("|".join(map(re.escape, ordered)))
            self.holdback = max(map(len, ordered)) - 1
        else:
            self._pattern = None
            self.holdback = 0

    def __bool__(self) -> bool:
        return self._pattern is not None

    def with_values(self, values: Iterable[str]) -> "Masker":
        new = set(self.values)
        new.update(v for v in values if isinstance(v, str))
        return self if new == self.values else Masker(new)

    def mask(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub(MASK, text)

    def mask_tree(self, value: Any) -> Any:
        """Mask every string inside dicts and lists (keys too)."""
        if self._pattern is None:
            return value
        if isinstance(value, str):
            return self.mask(value)
        if isinstance(value, dict):
            return {self.mask_tree(k): self.mask_tree(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.mask_tree(v) for v in value]
        return value


class StreamMasker:
    """Masks a stream that arrives in pieces: a secret split across two
    pieces is still caught, by holding back the last few characters."""

    def __init__(self) -> None:
        self._carry: dict[str, str] = {}

    def feed(self, masker: Masker, name: str, text: str) -> str:
        combined = self._carry.pop(name, "") + text
        if not masker:
            return combined
        masked = masker.mask(combined)
        keep = masker.holdback
        if keep and len(masked) > keep:
            self._carry[name] = masked[-keep:]
            return masked[:-keep]
        self._carry[name] = masked
        return ""

    def flush(self, masker: Masker) -> list[tuple[str, str]]:
        out = [(name, masker.mask(text)) for name, text in self._carry.items() if text]
        self._carry.clear()
        return out


def lookup_secret(name: str, session_secrets: Mapping[str, str], environ: Mapping[str, str]) -> str:
    """A secret set for the session, else the runtime's environment variable
    of that name (the product's ``runtime_env`` store). KeyError if neither."""
    if name in session_secrets:
        return session_secrets[name]
    if name in environ and name != "SPIN_TOKEN":
        return environ[name]
    raise KeyError(name)
