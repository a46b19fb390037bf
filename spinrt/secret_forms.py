r"""The ways a secret value shows up in output, as regular expressions. Pure.

A program rarely prints a secret only as it is: ``print(json.dumps(s))``
escapes quotes and backslashes, ``printf %q`` and ``shlex.quote`` quote it
for a shell, ``urllib.parse.quote`` percent-encodes it, ``base64`` encodes it
(76 characters a line by default), and ``cat -n`` or ``sed 's/^/> /'``
prefixes each line of a multi-line one. :func:`forms` turns one value into
the patterns that catch these:

- the value itself, with outer line breaks removed and each inner line break
  matching ``\n``, ``\r\n``, ``\r\r\n`` or ``\r`` (CRLF files, terminals);
- each line of a multi-line value, without its surrounding whitespace, once
  it has :data:`LINE_MIN_LENGTH` characters (shorter lines, such as
  ``apiVersion: v1`` in a kubeconfig, would mask ordinary output);
- as a string literal: JSON (RFC 8259 section 7, ``json.dumps`` with and
  without ``ensure_ascii``, ``\/``, ``\uXXXX`` in either case, Go's
  ``\u003c``), Python ``repr`` and JavaScript;
- shell-quoted: ``shlex.quote`` (``'"'"'``), bash ``${s@Q}`` (``'\''``),
  ``printf %q`` (backslashes, ``$'...'`` with ``\n`` and octal escapes),
  double quotes with backslashes;
- URL-encoded (RFC 3986 section 2.1, either hex case, ``+`` or ``%20`` for a
  space, whichever characters the encoder left as they are): ``quote``,
  ``quote_plus``, ``encodeURIComponent``;
- base64, standard and URL-safe alphabets (RFC 4648 sections 4 and 5), at any
  of the three byte alignments the value can have inside a larger encoded
  text, with a ``\n`` allowed between any two 4-character groups (encoders
  wrap at a multiple of 4: ``base64`` at 76, ``openssl`` and PEM at 64;
  ``base64 -w0`` not at all). Only the complete 3-byte groups of
  the value are matched: one or two characters at each end of its encoding
  also depend on the bytes around it, and stay visible. Values too short to
  give :data:`BASE64_MIN_LENGTH` characters at an alignment get no pattern
  for it.

Every pattern starts with a literal character (``re`` then tries it only
where that character is), and comes with anchors: texts every match contains,
which ``Masker`` looks for with ``in`` before running any expression.
"""

from __future__ import annotations

import base64
import re
from typing import NamedTuple

MIN_LENGTH = 4  # shorter values are not masked at all
LINE_MIN_LENGTH = 16  # a line of a multi-line value is masked on its own from this length
BASE64_MIN_LENGTH = 8  # base64 characters (6 bytes): fewer would mask random base64 text

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_BREAK_FORMS = ("\r\r\n", "\r\n", "\n", "\r")
_WRAP = r"\n?"  # (not CRLF: a pattern node per group is what compiling costs)
_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_SHELL_PLAIN = frozenset(_ALNUM + "%+-./:=@_")  # never escaped by printf %q or shlex.quote
_URL_PLAIN = frozenset(_ALNUM + "-._~")  # RFC 3986 unreserved: encoders leave them
_ALNUM = frozenset(_ALNUM)

Token = tuple[str, ...]  # the literal texts one character of the value may take


class Form(NamedTuple):
    """One pattern: ``regex`` (text for ``re``); the shortest and longest text
    it can match, in characters; and ``anchors``, texts that every match
    contains (quick ``in`` tests rule the pattern out; none: it always runs)."""

    regex: str
    shortest: int
    longest: int
    anchors: tuple[str, ...]


def forms(value: str) -> list[Form]:
    """Every pattern for ``value``, without duplicates; empty when it is
    shorter than :data:`MIN_LENGTH` once its outer line breaks are removed."""
    whole = value.strip("\r\n")
    if len(whole) < MIN_LENGTH:
        return []
    raw = [_BREAK_FORMS if c == "\n" else (c,) for c in _LINE_BREAK.sub("\n", whole)]
    out = [_form(raw)]
    for spell in (_escaped, _shell, _url):
        tokens = [spell(c) for c in whole]
        if any(len(t) > 1 or t[0] != c for t, c in zip(tokens, whole)):
            out.append(_form(tokens))
    data = whole.encode("utf-8", "surrogatepass")
    for shift in range(3):
        part = data[shift:]
        part = part[: len(part) // 3 * 3]
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            text = encode(part).decode("ascii")
            if len(text) >= BASE64_MIN_LENGTH:
                # Encoders wrap at a multiple of 4 characters from the start of
                # their text, so a line break can only fall between groups.
                out.append(_form([(text[i:i + 4],) for i in range(0, len(text), 4)], wrapped=True))
    if "\n" in whole or "\r" in whole:
        for line in _LINE_BREAK.split(whole):
            line = line.strip()
            if len(line) >= LINE_MIN_LENGTH:
                out.append(Form(re.escape(line), len(line), len(line), (line,)))
    return list(dict.fromkeys(out))


def _form(tokens: list[Token], wrapped: bool = False) -> Form:
    def group(token: Token) -> str:
        if len(token) == 1:
            return re.escape(token[0])
        return "(?:" + "|".join(map(re.escape, sorted(token, key=len, reverse=True))) + ")"

    sep = _WRAP if wrapped else ""
    # Each spelling of the first character becomes its own alternative, so the
    # expression starts with a literal whatever the first character is.
    rest = "".join(sep + group(t) for t in tokens[1:])
    regex = "|".join(re.escape(first) + rest for first in sorted(tokens[0], key=len, reverse=True))
    shortest = sum(min(map(len, t)) for t in tokens)
    longest = sum(max(map(len, t)) for t in tokens) + (len(tokens) - 1 if wrapped else 0)
    return Form(regex, shortest, longest, _anchors(tokens, wrapped))


def _anchors(tokens: list[Token], wrapped: bool) -> tuple[str, ...]:
    """Up to three texts every match contains, the most telling first: the
    longest runs of characters that have one spelling, or base64 groups when
    line breaks may come between them."""
    if wrapped:
        runs = [tokens[len(tokens) // 2][0], tokens[0][0], tokens[-1][0]]
    else:
        runs, run = [], ""
        for token in tokens:
            if len(token) == 1:
                run += token[0]
            elif run:
                runs.append(run)
                run = ""
        runs.append(run)
        runs.sort(key=len, reverse=True)
    return tuple(dict.fromkeys(r for r in runs[:3] if r))


_JSON_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}


def _escaped(c: str) -> Token:
    """One character inside a JSON, Python or JavaScript string literal."""
    if c in _ALNUM:
        return (c,)
    if c == "\\":
        return ("\\\\",)
    if c in "\"'/":
        return (c, "\\" + c)
    n = ord(c)
    if n < 0x20 or n == 0x7F:
        # JSON's \b, Python's \x08, \u0008; json.dumps leaves DEL as it is.
        short = (_JSON_SHORT[c],) if c in _JSON_SHORT else (c,)
        return (*short, f"\\x{n:02x}", f"\\u{n:04x}", f"\\u{n:04X}")
    if c in "<>&":  # Go's encoding/json escapes these for HTML safety
        return (c, f"\\u{n:04x}", f"\\u{n:04X}")
    if n < 0x80:
        return (c,)
    if n > 0xFFFF:
        hi, lo = 0xD800 + ((n - 0x10000) >> 10), 0xDC00 + ((n - 0x10000) & 0x3FF)
        return (c, f"\\u{hi:04x}\\u{lo:04x}", f"\\u{hi:04X}\\u{lo:04X}", f"\\U{n:08x}")
    extra = (f"\\x{n:02x}",) if n <= 0xFF else ()
    return (c, f"\\u{n:04x}", f"\\u{n:04X}", *extra)


_SHELL_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\a": "\\a", "\b": "\\b", "\f": "\\f", "\v": "\\v", "\x1b": "\\E"}


def _shell(c: str) -> Token:
    """One character of a shell word, however quoted (bash 5 ``printf %q``)."""
    if c in _SHELL_PLAIN:
        return (c,)
    if c == "'":
        return ("'\"'\"'", "'\\''", "\\'", "'")
    if c == "\\":
        return ("\\\\", "\\")
    n = ord(c)
    if c in _SHELL_SHORT:
        return (c, _SHELL_SHORT[c], f"\\{n:03o}")
    if n < 0x20 or n == 0x7F:
        return (c, f"\\{n:03o}")
    if n < 0x80:
        return (c, "\\" + c)
    octal = "".join(f"\\{b:03o}" for b in c.encode("utf-8", "surrogatepass"))
    return (c, octal)


def _url(c: str) -> Token:
    """One character, percent-encoded or not."""
    if c in _URL_PLAIN:
        return (c,)
    data = c.encode("utf-8", "surrogatepass")
    upper = "".join(f"%{b:02X}" for b in data)
    lower = upper.lower()
    spellings = (c, upper) if upper == lower else (c, upper, lower)
    return (*spellings, "+") if c == " " else spellings
