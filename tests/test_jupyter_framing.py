"""Jupyter WebSocket framing (spinrt.web.jupyter.framing), checked against
jupyter_server's own serializers: what we send, jupyter_server reads, and
what jupyter_server (or JupyterLab, which frames the same way) sends, we read."""

from __future__ import annotations

import json
import re
import struct

from jupyter_server.services.kernels.connection.base import (
    deserialize_binary_message,
    deserialize_msg_from_ws_v1,
    serialize_binary_message,
    serialize_msg_to_ws_v1,
)
from twisted.trial import unittest

from spinrt.web.jupyter import framing


def sample(buffers: list[bytes] | None = None) -> dict:
    head = framing.header("comm_msg", "s1", "ann")
    return {"channel": "shell", "header": head, "parent_header": {"msg_id": "p1"},
            "metadata": {"m": 1}, "content": {"data": {"x": "é ✓"}}, "buffers": buffers or []}


class V1(unittest.TestCase):
    def test_ours_read_by_jupyter_server(self) -> None:
        msg = sample([b"\xff\x00\x01", b""])
        channel, parts = deserialize_msg_from_ws_v1(framing.encode_v1(msg))
        self.assertEqual(channel, "shell")
        self.assertEqual(json.loads(parts[0]), msg["header"])
        self.assertEqual(json.loads(parts[1]), {"msg_id": "p1"})
        self.assertEqual(json.loads(parts[3]), {"data": {"x": "é ✓"}})
        self.assertEqual([bytes(b) for b in parts[4:]], [b"\xff\x00\x01", b""])

    def test_theirs_read_by_us(self) -> None:
        msg = sample([b"\x00\x01binary"])
        parts = [json.dumps(msg[k]).encode() for k in ("header", "parent_header", "metadata", "content")]
        frame = serialize_msg_to_ws_v1([*parts, b"\x00\x01binary"], "control")
        ours = framing.decode_v1(frame)
        self.assertEqual(ours["channel"], "control")
        self.assertEqual(ours["header"]["msg_type"], "comm_msg")
        self.assertEqual(ours["buffers"], [b"\x00\x01binary"])

    def test_little_endian_offsets(self) -> None:
        frame = framing.encode_v1(sample())
        count = struct.unpack_from("<Q", frame)[0]
        self.assertEqual(count, 6)  # 5 parts + the end
        offsets = struct.unpack_from("<6Q", frame, 8)
        self.assertEqual(offsets[0], 8 * 7)
        self.assertEqual(offsets[-1], len(frame))
        self.assertEqual(frame[offsets[0]:offsets[1]], b"shell")

    def test_bad_frames(self) -> None:
        good = framing.encode_v1(sample())
        for bad, why in [
            (b"", "shorter"),
            (struct.pack("<Q", 2) + b"\0" * 16, "offsets"),
            (good[:-1], "last offset"),
            (good[:8] + struct.pack("<Q", 9999) + good[16:], "out of order"),
        ]:
            with self.assertRaises(framing.FrameError) as caught:
                framing.decode_v1(bad)
            self.assertIn(why, str(caught.exception))
        channel_bad = framing.encode_v1({**sample(), "channel": "nope"})
        with self.assertRaisesRegex(framing.FrameError, "unknown channel"):
            framing.decode_v1(channel_bad)


class Legacy(unittest.TestCase):
    def test_text_frame_fields(self) -> None:
        frame, dropped = framing.encode_legacy(sample())
        self.assertEqual(dropped, 0)
        decoded = json.loads(frame)
        # Top-level msg_id and msg_type: jupyter_client's clients read them there.
        self.assertEqual(decoded["msg_type"], "comm_msg")
        self.assertEqual(decoded["msg_id"], decoded["header"]["msg_id"])
        self.assertEqual(decoded["channel"], "shell")
        self.assertEqual(decoded["buffers"], [])

    def test_buffers_dropped_never_binary(self) -> None:
        frame, dropped = framing.encode_legacy(sample([b"\xff\xfe"]))
        self.assertEqual(dropped, 1)
        frame.decode("utf-8")  # what jupyter_server's gateway proxy does to every frame
        self.assertNotIn(b"\xff", frame)

    def test_binary_from_jupyter_server(self) -> None:
        msg = sample([b"\xff\x00"])
        frame = serialize_binary_message({**msg, "buffers": [memoryview(b"\xff\x00")]})
        ours = framing.decode_legacy_binary(frame)
        self.assertEqual(ours["buffers"], [b"\xff\x00"])
        self.assertEqual(ours["content"], msg["content"])
        # And the big-endian layout is theirs.
        self.assertEqual(struct.unpack_from(">I", frame)[0], 2)
        self.assertEqual(deserialize_binary_message(frame)["content"], msg["content"])

    def test_client_variants(self) -> None:
        # Kernel Gateway's tests send buffers {}, no channel (shell is assumed), empty dates.
        msg = framing.decode_legacy_text(json.dumps({
            "header": {"msg_id": "a", "msg_type": "kernel_info_request", "date": "", "session": ""},
            "parent_header": {}, "metadata": {}, "content": {}, "buffers": {}}))
        self.assertEqual((msg["channel"], msg["buffers"]), ("shell", []))
        for bad, why in [("[1]", "object"), ("{", "not JSON"), ('{"header": {"msg_id": "a"}}', "msg_type"),
                         ('{"header": {"msg_id": "a", "msg_type": "x"}, "content": []}', "content"),
                         ('{"header": {"msg_id": "a", "msg_type": "x"}, "channel": "bogus"}', "channel")]:
            with self.assertRaisesRegex(framing.FrameError, why):
                framing.decode_legacy_text(bad)
        with self.assertRaisesRegex(framing.FrameError, "parts"):
            framing.decode_legacy_binary(struct.pack(">I", 0) + b"\0" * 8)


class Dates(unittest.TestCase):
    def test_microseconds_and_z_always(self) -> None:
        # jupyter_server parses last_activity with %Y-%m-%dT%H:%M:%S.%fZ
        for epoch in (0.0, 1764500000.0, 1764500000.5):
            self.assertRegex(framing.iso_epoch(epoch), r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
        self.assertTrue(re.fullmatch(r"[0-9a-f]{32}", framing.header("status", "s")["msg_id"]))
