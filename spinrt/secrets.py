"""Secret resolution and masking. Pure.

Every known secret value is replaced by ``***`` in everything a session
emits (and so in everything it stores), in each of the forms
:mod:`spinrt.secret_forms` lists: as it is, line by line when it has several
lines, and JSON-escaped, shell-quoted, URL-encoded and base64-encoded. Values
shorter than ``MIN_LENGTH`` are not masked: replacing every ``"ab"`` in the
output would destroy it and hide nothing worth hiding.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

from .secret_forms import MIN_LENGTH, Form, forms

__all__ = ["MASK", "MIN_LENGTH", "Masker", "StreamMasker", "lookup_secret"]

MASK = "***"


class Masker:
    """Masks a fixed set of secret values. Immutable: :meth:`with_values`
    returns a new one.

    All forms of all values are one compiled expression, built once. Before
    running it, each form's anchors (texts all its matches contain) are looked
    for with ``in``, many times faster than the expression over text that
    holds no secret; when no form has all its anchors there, the text is
    returned as it is.
    """

    def __init__(self, values: Iterable[str] = (), *, _known: Mapping[str, tuple[Form, ...]] | None = None) -> None:
        self.values = frozenset(v for v in values if _maskable(v))
        known = _known or {}
        # Each value's forms, kept so that adding one value to a masker (see
        # with_values) does not work out the forms of every other value again.
        self._forms: dict[str, tuple[Form, ...]] = {v: known[v] if v in known else tuple(forms(v)) for v in self.values}
        found = dict.fromkeys(f for v in sorted(self.values) for f in self._forms[v])
        # Longest first: alternatives are tried in order, so a value containing
        # another (or a whole value and its first line) is masked whole.
        ordered = sorted(found, key=lambda f: (-f.shortest, -f.longest, f.regex))
        self._pattern: re.Pattern[str] | None = re.compile("|".join(f.regex for f in ordered)) if ordered else None
        # A form without anchors (a value of only quoted characters) means the
        # expression always runs.
        groups = tuple(dict.fromkeys(f.anchors for f in ordered))
        self._anchors: tuple[tuple[str, ...], ...] | None = None if () in groups else groups
        # A match is decided by at most this many characters after its start.
        self.holdback = max((f.longest for f in ordered), default=1) - 1

    def __bool__(self) -> bool:
        return self._pattern is not None

    def missing(self, values: Iterable[Any]) -> frozenset[str]:
        """The ones of ``values`` this masker would mask but does not know:
        empty when it already masks all of them (values that are not strings
        or are shorter than ``MIN_LENGTH`` are never masked, so never missing)."""
        return frozenset(v for v in values if _maskable(v) and v not in self.values)

    def with_values(self, values: Iterable[str]) -> "Masker":
        """A masker for this one's values and ``values``; this one when that
        adds nothing. Takes time (50-80 ms for a 2048-bit PEM key): the
        expression for all values is compiled again, only the forms of this
        one's values are reused (a quarter to a third of the work). Callers on
        an event loop run it in a thread; maskers never change, so that is safe."""
        new = self.missing(values)
        return Masker(self.values | new, _known=self._forms) if new else self

    def _maybe(self, text: str) -> bool:
        """False when ``text`` certainly holds no form of any value."""
        if self._pattern is None:
            return False
        if self._anchors is None:
            return True
        for group in self._anchors:
            if all(a in text for a in group):
                return True
        return False

    def mask(self, text: str) -> str:
        """``text`` with every form of every value replaced by ``***``."""
        if not self._maybe(text):
            return text
        assert self._pattern is not None
        return self._pattern.sub(MASK, text)

    def spans(self, text: str) -> list[tuple[int, int]]:
        """The ``[start, end)`` character ranges of ``text`` that :meth:`mask`
        replaces, in order, not overlapping."""
        if not self._maybe(text):
            return []
        assert self._pattern is not None
        return [m.span() for m in self._pattern.finditer(text)]

    def mask_head(self, text: str, end: int) -> tuple[str, str]:
        """Mask the matches that start before ``end``; return the masked text
        up to ``end`` (or to the end of a match that goes past it) and the
        rest, unmasked. With ``end <= len(text) - holdback`` the result is what
        :meth:`mask` gives for any text that starts with ``text``."""
        end = max(end, 0)
        out: list[str] = []
        done = 0
        for start, stop in self.spans(text):
            if start >= end:
                break
            out += [text[done:start], MASK]
            done = stop
        end = max(end, done)
        out.append(text[done:end])
        return "".join(out), text[end:]

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
    pieces is still caught, by holding back the last ``masker.holdback``
    characters (unmasked, in memory only) until more text or :meth:`flush`.
    What comes out is what masking the whole stream at once would give."""

    def __init__(self) -> None:
        self._carry: dict[str, str] = {}

    def feed(self, masker: Masker, name: str, text: str) -> str:
        combined = self._carry.pop(name, "") + text
        if not masker:
            return combined
        head, rest = masker.mask_head(combined, len(combined) - masker.holdback)
        if rest:
            self._carry[name] = rest
        return head

    def flush(self, masker: Masker) -> list[tuple[str, str]]:
        out = [(name, masker.mask(text)) for name, text in self._carry.items() if text]
        self._carry.clear()
        return out


def _maskable(value: Any) -> bool:
    return isinstance(value, str) and len(value) >= MIN_LENGTH


def lookup_secret(name: str, session_secrets: Mapping[str, str], environ: Mapping[str, str],
                  runtime: Mapping[str, str] | None = None) -> str:
    """A secret set for the session, else one in the runtime secret store
    (``runtime``, when it is on), else the runtime's environment variable of
    that name (PROTOCOL.md section 6). KeyError if none."""
    if name in session_secrets:
        return session_secrets[name]
    if runtime is not None and name in runtime:
        return runtime[name]
    if name in environ and name != "SPIN_TOKEN":
        return environ[name]
    raise KeyError(name)


# Option fields that carry credentials (REST ``auth``, ``headers``; LLM
# ``api_key``; any key named like a credential). RFC 9110 11.6 / 11.7 for the
# Authorization headers; the rest are the names APIs commonly use.
_CREDENTIAL_KEYS = re.compile(
    r"^(api[-_]?key|access[-_]?key|secret|token|password|passphrase|private[-_]?key|bearer"
    r"|authorization|proxy-authorization|cookie|x-[a-z0-9-]*(key|token|secret|auth)[a-z0-9-]*)$",
    re.IGNORECASE,
)


def redact_credentials(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` as ``run.queued`` may show them: every credential written
    literally into a cell (``auth.bearer``, the password of ``auth.basic``,
    an ``Authorization`` or ``Cookie`` header, ``api_key``...) becomes
    ``***``. A value that is a template (``{{secret:TOKEN}}``) is shown as
    written: it names the secret, it is not the secret."""

    def hidden(value: Any) -> Any:
        if isinstance(value, str) and "{{" in value:
            return value
        return MASK if value not in (None, "") else value

    def walk(value: Any, key: str | None = None) -> Any:
        if key is not None and _CREDENTIAL_KEYS.match(key):
            return hidden(value) if not isinstance(value, (dict, list)) else walk_plain(value)
        if key == "basic" and isinstance(value, list) and len(value) == 2:
            return [value[0], hidden(value[1])]
        return walk_plain(value)

    def walk_plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: walk(v, k if isinstance(k, str) else None) for k, v in value.items()}
        if isinstance(value, list):
            return [walk_plain(v) for v in value]
        return value

    return walk_plain(dict(options))
