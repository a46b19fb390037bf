"""Strict JSON in and out (RFC 8259, PROTOCOL.md section 15). Pure.

In: what a client sends must be strict JSON whose every string is valid
Unicode (no lone UTF-16 surrogates), because it may be stored and sent on as
UTF-8. Out: whatever the outside world gave the runtime (process and kernel
output, HTTP bodies) is mended so that it encodes as strict JSON in UTF-8.
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping

class NotStrictJSON(ValueError):
    """JSON that RFC 8259 does not allow, or that no JSON peer can read back."""


def refuse_constant(name: str) -> Any:
    raise NotStrictJSON(f"{name} is not JSON (RFC 8259 has no NaN or Infinity)")


def finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise NotStrictJSON(f"the number {text[:32]} is out of range")
    return value


# A lone surrogate can only arrive as a \uD800-\uDFFF escape: the frame itself
# decoded as strict UTF-8. Frames without such an escape skip the walk.
SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
SURROGATE = re.compile("[\ud800-\udfff]")


def _shown(key: str) -> str:
    """A key as an error message may show it: bounded, and always encodable."""
    return key[:64].encode("utf-8", "backslashreplace").decode("utf-8")


def unencodable_path(value: Any, path: str = "") -> str | None:
    """The path (``cell.options.env.X``, ``cells[2].source``) of the first
    string, key or value, that is not valid Unicode (it holds a lone UTF-16
    surrogate, so it cannot be encoded as UTF-8); None when there is none."""
    if isinstance(value, str):
        return path if SURROGATE.search(value) else None
    if isinstance(value, dict):
        for k, v in value.items():
            here = f"{path}.{_shown(k)}" if path else _shown(k)
            if isinstance(k, str) and SURROGATE.search(k):
                return here
            found = unencodable_path(v, here)
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found = unencodable_path(v, f"{path}[{i}]")
            if found is not None:
                return found
    return None


def scrub(value: Any) -> Any:
    """``value`` with every lone surrogate replaced by U+FFFD and every
    non-finite float by the string ``"NaN"``, ``"Infinity"`` or
    ``"-Infinity"``, so that it encodes as strict JSON in UTF-8 (RFC 8259).
    Used for what the runtime did not get from a client (process and kernel
    output, HTTP bodies); requests with such values are refused instead."""
    if isinstance(value, str):
        return SURROGATE.sub("\ufffd", value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if isinstance(value, dict):
        return {scrub(k): scrub(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(v) for v in value]
    return value


def plain(value: Any) -> Any:
    """Objects orjson's ``default=str`` would turn into text, as that text,
    so :func:`scrub` sees (and mends) it too."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Mapping):
        return {(k if isinstance(k, str) else str(k)): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return str(value)
