"""The ``spin.v1`` wire protocol: parse requests, build replies and events.

Pure: no I/O, no Twisted, no clock. Everything here is a function of its
arguments, so the parser can be fed arbitrary frames by property tests.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

import attrs
import orjson

PROTOCOL_VERSION = 1
SUBPROTOCOL = "spin.v1"
TOKEN_SUBPROTOCOL_PREFIX = "spin.token."

# Error codes a client can rely on (PROTOCOL.md section 3 and ours).
BAD_JSON = "bad_json"
BAD_REQUEST = "bad_request"
BAD_FRAME = "bad_frame"
UNKNOWN_OP = "unknown_op"
NO_SUCH_SESSION = "no_such_session"
NO_SUCH_RUN = "no_such_run"
SESSION_CLOSED = "session_closed"
QUEUE_FULL = "queue_full"
INTERNAL = "internal_error"

RUN_STATUSES = frozenset({"ok", "error", "cancelled", "timeout", "skipped"})

# Bounds that keep one request from costing unbounded work.
MAX_CELLS_PER_REQUEST = 1000
MAX_ID_LENGTH = 256


class ProtocolError(Exception):
    """A request that cannot be served; becomes a failure reply."""

    def __init__(self, code: str, message: str, re: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.re = re


@attrs.frozen
class Request:
    id: str | int | float
    op: str
    params: Mapping[str, Any]


@attrs.frozen
class Cell:
    id: Any
    type: str
    source: str
    options: Mapping[str, Any]
    output_variable: str | None = None


# -- field checks -------------------------------------------------------------

_Check = Callable[[str, Any], Any]


def _string(field: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"'{field}' must be a non-empty string")
    if len(value) > MAX_ID_LENGTH:
        raise ValueError(f"'{field}' is longer than {MAX_ID_LENGTH} characters")
    return value


def _text(field: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"'{field}' must be a string")
    return value


def _nonneg_int(field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"'{field}' must be a non-negative integer")
    return value


def _port(field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ValueError(f"'{field}' must be a port number (1-65535)")
    return value


def _boolean(field: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"'{field}' must be true or false")
    return value


def _object(field: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"'{field}' must be an object")
    return value


def _string_list(field: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"'{field}' must be a list of strings")
    return value


def _string_map(field: str, value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(v, str) for v in value.values()
    ):
        raise ValueError(f"'{field}' must be an object of string values")
    return value


def _cell(field: str, value: Any) -> Cell:
    return parse_cell(value, field)


def _cells(field: str, value: Any) -> list[Cell]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"'{field}' must be a non-empty list of cells")
    if len(value) > MAX_CELLS_PER_REQUEST:
        raise ValueError(f"'{field}' holds more than {MAX_CELLS_PER_REQUEST} cells")
    return [parse_cell(c, f"{field}[{i}]") for i, c in enumerate(value)]


# op -> {param: (check, required)}
OPS: dict[str, dict[str, tuple[_Check, bool]]] = {
    "hello": {},
    "ping": {},
    "session.create": {"name": (_text, False), "variables": (_object, False)},
    "session.list": {},
    "session.attach": {"session": (_string, True), "since": (_nonneg_int, False)},
    "session.detach": {"session": (_string, True)},
    "session.close": {"session": (_string, True)},
    "cell.run": {"session": (_string, True), "cell": (_cell, True)},
    "cells.run": {
        "session": (_string, True),
        "cells": (_cells, True),
        "stop_on_error": (_boolean, False),
    },
    "run.cancel": {"session": (_string, True), "run": (_string, True)},
    "kernel.restart": {"session": (_string, True)},
    "variables.list": {"session": (_string, True)},
    "variables.clear": {"session": (_string, True), "names": (_string_list, False)},
    "secrets.set": {"session": (_string, True), "secrets": (_string_map, True)},
    "runtime.configure": {"host_ssh": (_object, True)},
    "connections.set": {
        "name": (_string, True),
        "host": (_string, True),
        "port": (_port, False),
        "username": (_string, True),
        "private_key": (_text, False),  # optional when the connection exists: keeps its key
        "passphrase": (_text, False),
    },
    "connections.list": {},
    "connections.delete": {"name": (_string, True)},
}


def parse_cell(value: Any, field: str = "cell") -> Cell:
    if not isinstance(value, dict):
        raise ValueError(f"'{field}' must be an object")
    ctype = value.get("type")
    if not isinstance(ctype, str) or not ctype:
        raise ValueError(f"'{field}.type' must be a non-empty string")
    source = value.get("source", "")
    if not isinstance(source, str):
        raise ValueError(f"'{field}.source' must be a string")
    options = value.get("options", {})
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise ValueError(f"'{field}.options' must be an object")
    cell_id = value.get("id")
    if cell_id is not None and (
        isinstance(cell_id, bool) or not isinstance(cell_id, (str, int))
    ):
        raise ValueError(f"'{field}.id' must be a string or an integer")
    output_variable = value.get("output_variable")
    if output_variable is not None and (
        not isinstance(output_variable, str) or not output_variable.isidentifier()
    ):
        raise ValueError(f"'{field}.output_variable' must be an identifier")
    return Cell(
        id=cell_id,
        type=ctype,
        source=source,
        options=options,
        output_variable=output_variable,
    )


def _valid_id(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, str):
        return len(value) <= MAX_ID_LENGTH
    if isinstance(value, int):
        return True
    return isinstance(value, float) and value == value and abs(value) != float("inf")


def parse_request(frame: str | bytes, ops: Mapping[str, Any] = OPS) -> Request:
    """Turn one text frame into a Request, or raise ProtocolError."""
    if isinstance(frame, bytes):
        try:
            frame = frame.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError(BAD_JSON, "frame is not valid UTF-8") from None
    try:
        message = json.loads(frame)
    except (ValueError, RecursionError):
        raise ProtocolError(BAD_JSON, "frame is not valid JSON") from None
    if not isinstance(message, dict):
        raise ProtocolError(BAD_REQUEST, "a request must be a JSON object")
    rid = message.get("id")
    if not _valid_id(rid):
        raise ProtocolError(
            BAD_REQUEST, "a request needs an 'id' (string or number)", None
        )
    op = message.get("op")
    if not isinstance(op, str) or not op:
        raise ProtocolError(BAD_REQUEST, "a request needs an 'op' (string)", rid)
    spec = ops.get(op)
    if spec is None:
        raise ProtocolError(UNKNOWN_OP, f"unknown op {op[:64]!r}", rid)
    params: dict[str, Any] = {}
    for name, (check, required) in spec.items():
        if name not in message or (message[name] is None and not required):
            if required:
                raise ProtocolError(BAD_REQUEST, f"'{op}' needs '{name}'", rid)
            continue
        try:
            params[name] = check(name, message[name])
        except ValueError as e:
            raise ProtocolError(BAD_REQUEST, str(e), rid) from None
    return Request(id=rid, op=op, params=params)


# -- replies and events ---------------------------------------------------------


def ok(re: Any, **result: Any) -> dict[str, Any]:
    return {"re": re, "ok": True, **result}


def failure(re: Any, code: str, message: str) -> dict[str, Any]:
    return {"re": re, "ok": False, "error": {"code": code, "message": message}}


def timestamp(epoch: float) -> str:
    """ISO 8601 UTC with milliseconds, e.g. 2026-11-25T18:26:43.123Z."""
    when = datetime.fromtimestamp(epoch, timezone.utc)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event(kind: str, session: str, seq: int, ts: str, **fields: Any) -> dict[str, Any]:
    return {"event": kind, "session": session, "seq": seq, "ts": ts, **fields}


def welcome(version: str) -> dict[str, Any]:
    return {"event": "welcome", "runtime": {"version": version, "protocol": PROTOCOL_VERSION}}


_ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS
SMALL_FRAME = 16 * 1024


def encode(message: Mapping[str, Any]) -> bytes:
    """Serialize once; the same bytes go to every subscriber and the store.

    orjson encodes large output events an order of magnitude faster than the
    standard library; what it refuses (integers beyond 64 bits, lone
    surrogates) goes through ``json`` instead."""
    try:
        data = orjson.dumps(message, default=str, option=_ORJSON_OPTIONS)
    except (orjson.JSONEncodeError, TypeError):
        return json.dumps(message, separators=(",", ":"), ensure_ascii=True, default=str).encode("ascii")
    # orjson's result keeps its whole initial buffer (about 4 KiB) however small
    # the JSON: an exact copy keeps the in-memory tail of small events small.
    return bytes(memoryview(data)) if len(data) < SMALL_FRAME else data


def run_error(code: str, ename: str, evalue: str, traceback: list[str] | None = None) -> dict[str, Any]:
    return {"code": code, "ename": ename, "evalue": evalue, "traceback": traceback or []}
