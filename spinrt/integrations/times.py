"""Times and durations as integration cells accept them. Pure.

A time is one of:

- ``now``, or ``now`` plus or minus durations: ``now-1h``, ``now-1h30m``,
  ``now+5m`` (Grafana's relative form);
- an RFC 3339 / ISO 8601 time: ``2026-11-30T10:00:00Z``, with an offset, or
  naive (UTC);
- Unix seconds, as a number or a numeric string (``1764496800.5``).

A duration is Prometheus' form: one or more ``<number><unit>`` with units
``ms``, ``s``, ``m``, ``h``, ``d``, ``w``, ``y`` (``1h30m``, ``90s``,
``1.5h``), or a plain number of seconds. Every bad value raises ValueError
with a message naming the option.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from typing import Any

from ..audit import parse_time as iso_time  # ISO 8601, naive times UTC

UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, "y": 31536000.0}
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d|w|y)")
_DURATION = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?(?:ms|s|m|h|d|w|y))+\Z")
_RELATIVE = re.compile(r"now(?:\s*([+-])\s*(.+))?\Z")
_NUMBER = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?\Z")


def parse_duration(value: Any, field: str) -> float:
    """Seconds; ValueError naming ``field``."""
    if isinstance(value, bool):
        raise ValueError(f"options.{field} must be a duration such as 30s, 5m or 1h30m")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and _NUMBER.match(value.strip()):
        seconds = float(value.strip())
    elif isinstance(value, str) and _DURATION.match(value.strip()):
        seconds = sum(float(n) * UNITS[u] for n, u in _PART.findall(value.strip()))
    else:
        raise ValueError(f"options.{field} must be a duration such as 30s, 5m or 1h30m, not {str(value)[:40]!r}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"options.{field} must be a duration above zero")
    return seconds


def parse_time(value: Any, field: str, now: float) -> float:
    """Unix seconds for ``value`` (see the module doc); ValueError naming ``field``."""
    hint = "a time such as now-1h, 2026-11-30T10:00:00Z or Unix seconds"
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"options.{field} must be {hint}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValueError(f"options.{field} must be {hint}")
        return float(value)
    text = value.strip()
    relative = _RELATIVE.match(text)
    if relative:
        sign, rest = relative.groups()
        if sign is None:
            return now
        try:
            offset = parse_duration(rest.strip(), field)
        except ValueError:
            raise ValueError(f"options.{field}: {rest.strip()[:40]!r} after now{sign} is not a duration "
                             f"such as 30s, 5m or 1h30m") from None
        return now - offset if sign == "-" else now + offset
    if _NUMBER.match(text):
        return float(text)
    try:
        return iso_time(field, text)
    except ValueError:
        raise ValueError(f"options.{field} must be {hint}, not {text[:40]!r}") from None


def auto_step(start: float, end: float, points: int = 250) -> float:
    """A step (seconds) giving about ``points`` points between ``start`` and
    ``end``: whole seconds from 1 s up, milliseconds below."""
    raw = (end - start) / points
    if raw >= 1:
        return float(round(raw))
    return max(round(raw, 3), 0.001)


def rfc3339(epoch: float) -> str:
    """``2026-11-30T10:00:00.123Z`` (UTC, milliseconds)."""
    when = datetime.fromtimestamp(epoch, timezone.utc)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
