"""The ``spin.v1`` wire protocol: parse requests, build replies and events.

Pure: no I/O, no Twisted, no clock. Everything here is a function of its
arguments, so the parser can be fed arbitrary frames by property tests.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

import attrs
import orjson

from .notebook_names import check as _notebook_name
from .parameters import parse_parameters as _parameters
from .strictjson import (  # noqa: F401  (scrub and unencodable_path: part of this module's API)
    SURROGATE, SURROGATE_ESCAPE, NotStrictJSON, finite_float, plain, refuse_constant, scrub, unencodable_path,
)
from .templates import reserved_name

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
NO_SUCH_NOTEBOOK = "no_such_notebook"  # wave 2 (PROTOCOL.md section 7 intro)
CONFLICT = "conflict"
NO_SUCH_CELL = "no_such_cell"  # session documents (PROTOCOL.md section 10)
DOCUMENT_FULL = "document_full"
FORBIDDEN = "forbidden"  # the connection's role may not (PROTOCOL.md section 9; spinrt.roles)
NO_SUCH_TOKEN = "no_such_token"

RUN_STATUSES = frozenset({"ok", "error", "cancelled", "timeout", "skipped"})

# Bounds that keep one request from costing unbounded work.
MAX_CELLS_PER_REQUEST = 1000
MAX_NOTEBOOK_CELLS = 10_000
MAX_ID_LENGTH = 256


class ProtocolError(Exception):
    """A request that cannot be served; becomes a failure reply."""

    def __init__(self, code: str, message: str, re: Any = None,
                 details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.re = re
        # More fields of the reply's error object, e.g. a conflict's "current".
        self.details = dict(details or {})


@attrs.frozen
class Request:
    id: str | int | float
    op: str
    params: Mapping[str, Any]
    # The fields an op of OPEN_OPS does not declare (a typed connection's own
    # fields, PROTOCOL.md section 13), as sent; checked by the op's handler.
    extra: Mapping[str, Any] = attrs.field(factory=dict)


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


# session.snapshot's max_output_bytes (bytes per run): small enough that a
# snapshot stays a message a browser can take, large enough to be useful.
SNAPSHOT_OUTPUT_BYTES = (1024, 8 * 1024 * 1024)


def _snapshot_bytes(field: str, value: Any) -> int:
    low, high = SNAPSHOT_OUTPUT_BYTES
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"'{field}' must be an integer from {low} to {high} (bytes per run)")
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


def _reserved(field: str, name: str) -> str:
    return (f"'{field}' may not be {name!r}: Go template keywords are never variables "
            "(PROTOCOL.md section 14), so {{" + name + "}} could not reach it")


def _variables(field: str, value: Any) -> dict[str, Any]:
    """Initial session variables: names are identifiers and not Go keywords."""
    value = _object(field, value)
    for name in value:
        if not name.isidentifier():
            raise ValueError(f"'{field}' names must be identifiers: {name[:64]!r}")
        if reserved_name(name):
            raise ValueError(_reserved(f"{field}.{name}", name))
    return value


def _cell(field: str, value: Any) -> Cell:
    return parse_cell(value, field)


def _cells(field: str, value: Any) -> list[Cell]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"'{field}' must be a non-empty list of cells")
    if len(value) > MAX_CELLS_PER_REQUEST:
        raise ValueError(f"'{field}' holds more than {MAX_CELLS_PER_REQUEST} cells")
    return [parse_cell(c, f"{field}[{i}]") for i, c in enumerate(value)]


# Control characters (C0, DEL, C1) make an id unreadable in a UI or a log line.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def cell_id_problem(value: Any) -> str | None:
    """Why ``value`` cannot be the id of a cell in a session document, or
    None: an id is a non-empty string of at most MAX_ID_LENGTH characters,
    valid Unicode (no lone surrogate), without control characters. Ids are
    compared exactly, code point by code point (no normalisation)."""
    if not isinstance(value, str) or not value:
        return "must be a non-empty string"
    if len(value) > MAX_ID_LENGTH:
        return f"is longer than {MAX_ID_LENGTH} characters"
    if SURROGATE.search(value):
        return "is not valid Unicode (a lone UTF-16 surrogate)"
    if _CONTROL.search(value):
        return "holds a control character"
    return None


def _cell_id(field: str, value: Any) -> str:
    problem = cell_id_problem(value)
    if problem is not None:
        raise ValueError(f"'{field}' {problem}")
    return value


def _cell_ids(field: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"'{field}' must be a non-empty list of cell ids")
    if len(value) > MAX_CELLS_PER_REQUEST:
        raise ValueError(f"'{field}' holds more than {MAX_CELLS_PER_REQUEST} cell ids")
    return [_cell_id(f"{field}[{i}]", v) for i, v in enumerate(value)]


def _document_cell(field: str, value: Any) -> Cell:
    """A cell for a session document: a cell whose ``id`` is a cell id."""
    cell = parse_cell(value, field)
    _cell_id(f"{field}.id", cell.id)
    return cell


def _scope(field: str, value: Any) -> str:
    if value not in ("session", "runtime"):
        raise ValueError(f"'{field}' must be \"session\" or \"runtime\"")
    return value


def _days(field: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 3650:
        raise ValueError(f"'{field}' must be a number of days above 0, at most 3650")
    return value


def _nullable(check: _Check) -> _Check:
    """``check``, and null passes as None: for a parameter where null means
    something (``after``: the top), unlike absent."""
    def nullable(field: str, value: Any) -> Any:
        return None if value is None else check(field, value)

    nullable.nullable = True  # type: ignore[attr-defined]
    return nullable


def _notebook_cells(field: str, value: Any) -> list[dict[str, Any]]:
    """A notebook's cells (maybe none), each checked as a cell; kept as given."""
    if not isinstance(value, list):
        raise ValueError(f"'{field}' must be a list of cells")
    if len(value) > MAX_NOTEBOOK_CELLS:
        raise ValueError(f"'{field}' holds more than {MAX_NOTEBOOK_CELLS} cells")
    for i, c in enumerate(value):
        parse_cell(c, f"{field}[{i}]")
    return value


# op -> {param: (check, required)}. Who may send each op: spinrt.roles.OP_ROLES
# (every op here needs an entry there; tests/test_roles.py checks).
OPS: dict[str, dict[str, tuple[_Check, bool]]] = {
    "hello": {},
    "ping": {},
    "session.create": {
        "name": (_text, False),
        "variables": (_variables, False),
        "notebook": (_notebook_name, False),
    },
    "session.list": {},
    "session.attach": {"session": (_string, True), "since": (_nonneg_int, False)},
    "session.detach": {"session": (_string, True)},
    "session.close": {"session": (_string, True)},
    "session.delete": {"session": (_string, True)},
    "session.snapshot": {"session": (_string, True), "max_output_bytes": (_snapshot_bytes, False)},
    # One of cell / cell_id and of cells / cell_ids: see ALTERNATIVES.
    "cell.run": {"session": (_string, True), "cell": (_cell, False), "cell_id": (_cell_id, False)},
    "cells.run": {
        "session": (_string, True),
        "cells": (_cells, False),
        "cell_ids": (_cell_ids, False),
        "stop_on_error": (_boolean, False),
    },
    "run.cancel": {"session": (_string, True), "run": (_string, True)},
    "kernel.restart": {"session": (_string, True)},
    "variables.list": {"session": (_string, True)},
    "variables.clear": {"session": (_string, True), "names": (_string_list, False)},
    # secrets.*: 'session', or scope "runtime" (spinrt.web.ops_secrets checks which).
    "secrets.set": {"session": (_string, False), "scope": (_scope, False), "secrets": (_string_map, True)},
    "secrets.list": {"session": (_string, False), "scope": (_scope, False)},
    "secrets.delete": {"session": (_string, False), "scope": (_scope, False), "names": (_string_list, True)},
    "runtime.configure": {"host_ssh": (_object, True)},
    # Flat fields (PROTOCOL.md section 13): the type's own fields arrive in
    # Request.extra and are checked against its schema (spinrt.integrations.connections);
    # an ssh connection (the default type) needs host and username.
    "connections.set": {
        "name": (_string, True),
        "type": (_string, False),
        "default": (_boolean, False),
        "host": (_string, False),
        "port": (_port, False),
        "username": (_string, False),
        "private_key": (_text, False),  # optional when the connection exists: keeps its key
        "passphrase": (_text, False),
    },
    "connections.list": {},
    "connections.delete": {"name": (_string, True)},
    "connections.types": {},
    "connections.test": {"name": (_string, True)},
    "notebook.list": {},
    "notebook.get": {"name": (_notebook_name, True)},
    "notebook.save": {
        "name": (_notebook_name, True),
        "cells": (_notebook_cells, False),
        "parameters": (_parameters, False),
        "ipynb": (_object, False),
        "session": (_string, False),
        "version": (_string, False),
    },
    "notebook.rename": {
        "name": (_notebook_name, True),
        "new_name": (_notebook_name, True),
        "version": (_string, False),
    },
    "notebook.delete": {"name": (_notebook_name, True), "version": (_string, False)},
    "notebook.parameters": {"name": (_notebook_name, True)},
    "session.document": {"session": (_string, True)},
    "cell.set": {
        "session": (_string, True),
        "cell": (_document_cell, True),
        "after": (_nullable(_cell_id), False),  # null: the top; absent: keep the place or append
        "base_version": (_nonneg_int, False),
    },
    "cell.delete": {"session": (_string, True), "cell_id": (_cell_id, True)},
    "cell.move": {"session": (_string, True), "cell_id": (_cell_id, True), "after": (_nullable(_cell_id), True)},
    # Named tokens (PROTOCOL.md section 9): names and roles are checked by spinrt.tokens.
    "tokens.create": {"name": (_string, True), "role": (_string, True), "expires_in_days": (_days, False)},
    "tokens.list": {},
    # The token's id: the request's own "id" is the request id (PROTOCOL.md 3).
    "tokens.revoke": {"token": (_string, True)},
}

# Ops whose undeclared fields are kept in Request.extra instead of ignored.
OPEN_OPS: frozenset[str] = frozenset({"connections.set"})

# op -> parameters of which a request gives exactly one.
ALTERNATIVES: dict[str, tuple[str, ...]] = {
    "cell.run": ("cell", "cell_id"),
    "cells.run": ("cells", "cell_ids"),
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
    if output_variable is not None and reserved_name(output_variable):
        raise ValueError(_reserved(f"{field}.output_variable", output_variable))
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


# One strict decoder for every request: json.loads with hooks builds a new
# decoder (and its scanner) at every call.
_STRICT = json.JSONDecoder(parse_constant=refuse_constant, parse_float=finite_float)


def parse_request(frame: str | bytes, ops: Mapping[str, Any] = OPS,
                  authorize: Callable[[str, Mapping[str, Any], Any], None] | None = None) -> Request:
    """Turn one text frame into a Request, or raise ProtocolError.

    ``authorize(op, message, id)``, when given, is called once the op is
    known and before its parameters are checked (PROTOCOL.md section 9: the
    role first); it raises ProtocolError (``forbidden``) to refuse.

    Strict JSON (RFC 8259, PROTOCOL.md section 15): ``NaN``, ``Infinity`` and
    numbers beyond a double's range are ``bad_json``; a string anywhere in
    the request that holds a lone surrogate is ``bad_request`` naming its
    field, because it could be neither stored nor sent on as UTF-8."""
    if isinstance(frame, bytes):
        try:
            frame = frame.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError(BAD_JSON, "frame is not valid UTF-8") from None
    try:
        message = _STRICT.decode(frame)
    except NotStrictJSON as e:
        raise ProtocolError(BAD_JSON, f"frame is not strict JSON: {e}") from None
    except (ValueError, RecursionError):
        raise ProtocolError(BAD_JSON, "frame is not valid JSON") from None
    if not isinstance(message, dict):
        raise ProtocolError(BAD_REQUEST, "a request must be a JSON object")
    rid = message.get("id")
    if not _valid_id(rid):
        raise ProtocolError(
            BAD_REQUEST, "a request needs an 'id' (string or number)", None
        )
    if SURROGATE_ESCAPE.search(frame):
        where = unencodable_path(message)
        if where is not None:
            if where == "id":
                rid = None
            raise ProtocolError(
                BAD_REQUEST,
                f"'{where}' is not valid Unicode (a lone UTF-16 surrogate): "
                "send text that can be encoded as UTF-8",
                rid,
            )
    op = message.get("op")
    if not isinstance(op, str) or not op:
        raise ProtocolError(BAD_REQUEST, "a request needs an 'op' (string)", rid)
    spec = ops.get(op)
    if spec is None:
        raise ProtocolError(UNKNOWN_OP, f"unknown op {op[:64]!r}", rid)
    if authorize is not None:
        authorize(op, message, rid)
    params: dict[str, Any] = {}
    for name, (check, required) in spec.items():
        if name not in message or (
            message[name] is None and not required and not getattr(check, "nullable", False)
        ):
            if required:
                raise ProtocolError(BAD_REQUEST, f"'{op}' needs '{name}'", rid)
            continue
        try:
            params[name] = check(name, message[name])
        except ValueError as e:
            raise ProtocolError(BAD_REQUEST, str(e), rid) from None
    alternatives = ALTERNATIVES.get(op)
    if alternatives is not None and sum(name in params for name in alternatives) != 1:
        raise ProtocolError(BAD_REQUEST, f"'{op}' needs exactly one of "
                            + " or ".join(f"'{name}'" for name in alternatives), rid)
    # Undeclared fields, and declared ones sent as null (which the handler
    # may read as "clear this field").
    extra = ({k: v for k, v in message.items() if k not in ("id", "op") and (k not in spec or k not in params)}
             if op in OPEN_OPS else {})
    return Request(id=rid, op=op, params=params, extra=extra)


# -- replies and events ---------------------------------------------------------


def ok(re: Any, **result: Any) -> dict[str, Any]:
    return {"re": re, "ok": True, **result}


def failure(re: Any, code: str, message: str, **details: Any) -> dict[str, Any]:
    return {"re": re, "ok": False, "error": {"code": code, "message": message, **details}}


def timestamp(epoch: float) -> str:
    """ISO 8601 UTC with milliseconds, e.g. 2026-11-25T18:26:43.123Z."""
    when = datetime.fromtimestamp(epoch, timezone.utc)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event(kind: str, session: str, seq: int, ts: str, **fields: Any) -> dict[str, Any]:
    return {"event": kind, "session": session, "seq": seq, "ts": ts, **fields}


def welcome(version: str, you: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The connection's first frame; ``you``: who it is, ``{client, name,
    role}`` (PROTOCOL.md section 9)."""
    message: dict[str, Any] = {"event": "welcome", "runtime": {"version": version, "protocol": PROTOCOL_VERSION}}
    if you is not None:
        message["you"] = dict(you)
    return message


_ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS


def encode(message: Mapping[str, Any]) -> bytes:
    """Serialize once; the same bytes go to every subscriber and the store.

    The result is always strict JSON in valid UTF-8 (RFC 8259, PROTOCOL.md
    section 15), whatever the message holds: lone surrogates (from kernel
    messages or HTTP bodies) become U+FFFD and non-finite floats strings (see
    :func:`scrub`), so no event can ever be refused by the store or a client.
    orjson encodes large output events an order of magnitude faster than the
    standard library; what it still refuses (integers beyond 64 bits) goes
    through ``json``."""
    try:
        data = orjson.dumps(message, default=str, option=_ORJSON_OPTIONS)
    except (orjson.JSONEncodeError, TypeError):
        clean = scrub(plain(message))
        try:
            data = orjson.dumps(clean, default=str, option=_ORJSON_OPTIONS)
        except (orjson.JSONEncodeError, TypeError):
            text = json.dumps(clean, separators=(",", ":"), ensure_ascii=False, allow_nan=False,
                              default=lambda v: scrub(str(v)))
            return text.encode("utf-8")
    # orjson's result keeps its whole buffer, never shrunk: about 4 KiB however
    # small the JSON, and up to the next power of two for large ones (a 50 KB
    # event held 512 KiB). Sessions' tails hold events for long, so the
    # budgets counted in len() would hide up to 10x that: an exact copy
    # (~2.6 us per 64 KiB event) is what they count. 1,000 sessions with
    # 200 KB of output each: 214 MB -> 149 MB of RSS (bench/scale_bench.py).
    return bytes(memoryview(data))


def run_error(code: str, ename: str, evalue: str, traceback: list[str] | None = None) -> dict[str, Any]:
    return {"code": code, "ename": ename, "evalue": evalue, "traceback": traceback or []}
