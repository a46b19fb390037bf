"""Jupyter kernel messages on a WebSocket: the two wire forms, and new messages.

Pure: no I/O, no Twisted.

- The legacy ("default") protocol, used when a client negotiates no
  subprotocol (every jupyter_server ``--gateway-url`` proxy): a text frame
  is one JSON message ``{header, parent_header, metadata, content, buffers,
  channel}`` (server messages also carry top-level ``msg_id`` and
  ``msg_type``). A message with buffers may arrive as a legacy binary frame:
  big-endian uint32 ``n`` (the number of parts), ``n`` big-endian uint32
  offsets from the frame's start, part 0 the JSON message, parts 1.. the
  buffers. We read such frames but never send one: jupyter_server's proxy
  decodes every frame from us as UTF-8 and stops relaying after a binary
  one (research/jupyter-gateway.md 2.4), so a legacy peer gets buffers
  dropped instead (:func:`encode_legacy`).
- ``v1.kernel.websocket.jupyter.org`` (jupyter_server's
  ``docs/source/developers/websocket-protocols.rst``): every frame binary;
  uint64 little-endian ``k`` (the number of offsets), ``k`` uint64 LE
  offsets; the parts between consecutive offsets are the channel name
  (UTF-8), the header, parent header, metadata and content (UTF-8 JSON
  each), then the buffers; the last offset is the frame's length.

Errors: :class:`FrameError` with a message naming what is wrong.
"""

from __future__ import annotations

import datetime
import struct
import uuid
from typing import Any, Iterable

import orjson

V1 = "v1.kernel.websocket.jupyter.org"
PROTOCOL_VERSION = "5.4"  # the kernel message protocol (jupyter_client 8)
CHANNELS = ("shell", "iopub", "stdin", "control")
MAX_PARTS = 1 + 64  # the JSON parts and at most 64 buffers in one frame


class FrameError(ValueError):
    """A frame that is not a Jupyter message."""


def now() -> str:
    """A message date: ISO 8601 UTC with microseconds and ``Z``."""
    return iso(datetime.datetime.now(datetime.timezone.utc))


def iso(when: datetime.datetime) -> str:
    """``%Y-%m-%dT%H:%M:%S.%fZ``: what jupyter_server parses ``last_activity``
    with (``isoformat()`` would drop ``.%f`` at microsecond 0)."""
    return when.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def iso_epoch(epoch: float) -> str:
    return iso(datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc))


def header(msg_type: str, session: str, username: str = "spin", msg_id: str | None = None) -> dict[str, Any]:
    return {
        "msg_id": msg_id or uuid.uuid4().hex,
        "msg_type": msg_type,
        "session": session,
        "username": username,
        "date": now(),
        "version": PROTOCOL_VERSION,
    }


def message(channel: str, msg_type: str, content: dict[str, Any], parent: dict[str, Any] | None, *,
            session: str, username: str = "spin", metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """A new message from the runtime (no buffers)."""
    head = header(msg_type, session, username)
    return {
        "channel": channel,
        "header": head,
        "parent_header": parent or {},
        "metadata": metadata or {},
        "content": content,
        "buffers": [],
        "msg_id": head["msg_id"],
        "msg_type": msg_type,
    }


def _json(value: Any) -> bytes:
    # Kernels' headers carry datetime objects (jupyter_client parses dates).
    return orjson.dumps(value, default=_default, option=orjson.OPT_NON_STR_KEYS)


def _default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return None  # a buffer in a JSON part: dropped, never sent as text
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def encode_legacy(msg: dict[str, Any]) -> tuple[bytes, int]:
    """A legacy text frame, and how many buffers were dropped from it."""
    buffers = msg.get("buffers") or ()
    head = msg.get("header") or {}
    body = {
        "header": head,
        "parent_header": msg.get("parent_header") or {},
        "metadata": msg.get("metadata") or {},
        "content": msg.get("content") or {},
        "buffers": [],
        "channel": msg.get("channel", "iopub"),
        "msg_id": head.get("msg_id", ""),
        "msg_type": head.get("msg_type", ""),
    }
    return _json(body), len(buffers)


def encode_v1(msg: dict[str, Any]) -> bytes:
    """A v1 binary frame."""
    parts = [
        str(msg.get("channel", "iopub")).encode("utf-8"),
        _json(msg.get("header") or {}),
        _json(msg.get("parent_header") or {}),
        _json(msg.get("metadata") or {}),
        _json(msg.get("content") or {}),
        *(bytes(b) for b in msg.get("buffers") or ()),
    ]
    count = len(parts) + 1
    offsets = [8 * (count + 1)]
    for part in parts:
        offsets.append(offsets[-1] + len(part))
    return struct.pack(f"<{count + 1}Q", count, *offsets) + b"".join(parts)


def _loads(data: bytes | str, what: str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise FrameError(f"{what} is not JSON: {e}") from None


def decode_legacy_text(payload: bytes | str) -> dict[str, Any]:
    return _checked(_loads(payload, "the message"), [])


def decode_legacy_binary(payload: bytes) -> dict[str, Any]:
    if len(payload) < 8:
        raise FrameError("a binary frame shorter than its header")
    (count,) = struct.unpack_from(">I", payload, 0)
    if not 1 <= count <= MAX_PARTS or len(payload) < 4 * (count + 1):
        raise FrameError(f"a binary frame with {count} parts (1 to {MAX_PARTS} allowed) or a cut header")
    offsets = list(struct.unpack_from(f">{count}I", payload, 4)) + [len(payload)]
    parts = _slices(payload, offsets, 4 * (count + 1))
    return _checked(_loads(parts[0], "the message part"), parts[1:])


def decode_v1(payload: bytes) -> dict[str, Any]:
    if len(payload) < 8:
        raise FrameError("a v1 frame shorter than its header")
    (count,) = struct.unpack_from("<Q", payload, 0)
    if not 6 <= count <= 5 + MAX_PARTS or len(payload) < 8 * (count + 1):
        raise FrameError(f"a v1 frame with {count} offsets (6 to {5 + MAX_PARTS} allowed) or a cut header")
    offsets = list(struct.unpack_from(f"<{count}Q", payload, 8))
    if offsets[-1] != len(payload):
        raise FrameError("a v1 frame whose last offset is not its length")
    parts = _slices(payload, offsets, 8 * (count + 1))
    try:
        channel = parts[0].decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError("a v1 frame whose channel is not UTF-8") from None
    msg = {
        "channel": channel,
        "header": _loads(parts[1], "the header"),
        "parent_header": _loads(parts[2], "the parent header"),
        "metadata": _loads(parts[3], "the metadata"),
        "content": _loads(parts[4], "the content"),
    }
    return _checked(msg, parts[5:])


def _slices(payload: bytes, offsets: list[int], start: int) -> list[bytes]:
    if offsets[0] < start or any(b < a for a, b in zip(offsets, offsets[1:])) or offsets[-1] > len(payload):
        raise FrameError("a binary frame whose offsets are out of order or out of the frame")
    return [payload[a:b] for a, b in zip(offsets, offsets[1:])]


def _checked(msg: Any, buffers: Iterable[bytes]) -> dict[str, Any]:
    """A client's message with every field a dict of the right kind:
    ``channel`` defaults to shell (as jupyter_server assumes), ``buffers``
    may be missing, ``[]`` or ``{}``; ``header.msg_id`` and ``msg_type``
    must be strings."""
    if not isinstance(msg, dict):
        raise FrameError("a message must be a JSON object")
    channel = msg.get("channel") or "shell"
    if channel not in CHANNELS:
        raise FrameError(f"unknown channel {str(channel)[:32]!r}")
    head = msg.get("header")
    if not isinstance(head, dict):
        raise FrameError("the message has no header object")
    for field in ("msg_id", "msg_type"):
        if not isinstance(head.get(field), str) or not head[field]:
            raise FrameError(f"header.{field} must be a non-empty string")
    for field in ("parent_header", "metadata", "content"):
        value = msg.get(field)
        if value is None:
            msg[field] = {}
        elif not isinstance(value, dict):
            raise FrameError(f"'{field}' must be an object")
    msg["channel"] = channel
    msg["buffers"] = list(buffers)
    return msg
