"""Notebook names: what a client may call a notebook, and the file it maps to.

Pure (no I/O). PROTOCOL.md section 10: a name is a plain file name of at
most 200 bytes of UTF-8 after NFC normalisation, without ``/`` or NUL, not
``.`` or ``..``; the ``.ipynb`` suffix is implied. Our own further rules, so
that every name maps to exactly one file and reads the same everywhere:

- the name is NFC-normalised first (Unicode Standard Annex #15), so names
  that differ only by NFC/NFD composition are one notebook;
- one trailing ``.ipynb`` (lower case, as the file has it) is dropped:
  ``runbook.ipynb`` and ``runbook`` are the same notebook; a name that still
  ends in ``.ipynb`` after that is refused (its file would list as another name);
- no name starts with ``.``: hidden files are the library's temporary files;
- no backslash (a path separator on Windows, where notebooks get downloaded);
- no control characters (Unicode categories Cc, Cs, Zl, Zp) and no
  bidirectional formatting characters, which can make a name look like another;
- no leading or trailing white space.
"""

from __future__ import annotations

import unicodedata
from typing import Any

SUFFIX = ".ipynb"
MAX_BYTES = 200
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_CONTROL = frozenset({"Cc", "Cs", "Zl", "Zp"})


def canonical(value: Any, field: str = "name") -> str:
    """The canonical form of a notebook name (NFC, no ``.ipynb``), or
    ValueError whose message names ``field`` and says what is wrong."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"'{field}' must be a non-empty string")
    name = unicodedata.normalize("NFC", value)
    if name.endswith(SUFFIX):
        name = name[: -len(SUFFIX)]
        if not name:
            raise ValueError(f"'{field}' is empty once the implied {SUFFIX} suffix is removed")
        if name.endswith(SUFFIX):
            raise ValueError(f"'{field}' may end in {SUFFIX} only once (the suffix is implied)")
    if name in (".", ".."):
        raise ValueError(f"'{field}' may not be '.' or '..'")
    if name.startswith("."):
        raise ValueError(f"'{field}' may not start with '.' (hidden files are the library's temporary files)")
    for bad, what in (("/", "'/'"), ("\\", "a backslash"), ("\x00", "NUL")):
        if bad in name:
            raise ValueError(f"'{field}' may not contain {what}: a notebook name is a plain file name")
    for position, ch in enumerate(name):
        if unicodedata.category(ch) in _CONTROL or ch in _BIDI:
            raise ValueError(f"'{field}' may not contain control or bidirectional formatting "
                             f"characters (U+{ord(ch):04X} at position {position})")
    if name != name.strip():
        raise ValueError(f"'{field}' may not start or end with white space")
    size = len(name.encode("utf-8"))
    if size > MAX_BYTES:
        raise ValueError(f"'{field}' is {size} bytes of UTF-8 (after NFC normalisation); "
                         f"the limit is {MAX_BYTES}")
    return name


def check(field: str, value: Any) -> str:
    """The protocol layer's field check (``spinrt.protocol.OPS``)."""
    return canonical(value, field)


def file_name(name: str) -> str:
    """The file of a canonical name."""
    return name + SUFFIX


def name_of_file(filename: str) -> str | None:
    """The canonical name a file in the library answers to, or None when no
    name can reach it (not ``*.ipynb``, hidden, refused by the rules)."""
    if not filename.endswith(SUFFIX):
        return None
    stem = filename[: -len(SUFFIX)]
    try:
        name = canonical(stem)
    except ValueError:
        return None
    # "x.ipynb.ipynb" would canonicalise to "x": that file is not "x".
    return name if name == unicodedata.normalize("NFC", stem) else None
