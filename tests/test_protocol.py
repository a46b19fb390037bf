"""The pure protocol module: request parsing (with arbitrary frames), replies, events."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from spinrt import protocol as proto
from spinrt.web.ops import HANDLERS

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


class ParseTests(unittest.TestCase):
    def test_every_op_has_a_handler(self) -> None:
        self.assertEqual(set(proto.OPS), set(HANDLERS))

    def test_valid_requests(self) -> None:
        r = proto.parse_request(b'{"id": "a", "op": "ping"}')
        self.assertEqual((r.id, r.op, dict(r.params)), ("a", "ping", {}))
        r = proto.parse_request('{"id": 3, "op": "session.attach", "session": "ss_1", "since": 7, "extra": 1}')
        self.assertEqual(dict(r.params), {"session": "ss_1", "since": 7})
        r = proto.parse_request('{"id": 4, "op": "session.create", "name": null}')
        self.assertEqual(dict(r.params), {})
        r = proto.parse_request(json.dumps({"id": 5, "op": "cells.run", "session": "s", "cells": [
            {"type": "shell", "source": "ls", "output_variable": "files", "options": {"cwd": "/"}},
            {"type": "markdown"},
        ], "stop_on_error": False}))
        cells = r.params["cells"]
        self.assertEqual(cells[0], proto.Cell(id=None, type="shell", source="ls", options={"cwd": "/"}, output_variable="files"))
        self.assertEqual(cells[1].source, "")
        self.assertFalse(r.params["stop_on_error"])

    def test_errors_carry_the_id_when_readable(self) -> None:
        cases = {
            b"{": (proto.BAD_JSON, None),
            b"\xff": (proto.BAD_JSON, None),
            b"null": (proto.BAD_REQUEST, None),
            b'"x"': (proto.BAD_REQUEST, None),
            b'{"op": "ping"}': (proto.BAD_REQUEST, None),
            b'{"id": [1], "op": "ping"}': (proto.BAD_REQUEST, None),
            b'{"id": 1}': (proto.BAD_REQUEST, 1),
            b'{"id": 1, "op": 5}': (proto.BAD_REQUEST, 1),
            b'{"id": 1, "op": "x"}': (proto.UNKNOWN_OP, 1),
            b'{"id": 1, "op": "session.attach", "session": ""}': (proto.BAD_REQUEST, 1),
            b'{"id": 1, "op": "session.attach", "session": "s", "since": true}': (proto.BAD_REQUEST, 1),
            b'{"id": 1, "op": "session.attach", "session": "s", "since": 1.5}': (proto.BAD_REQUEST, 1),
            b'{"id": 1, "op": "cells.run", "session": "s", "cells": []}': (proto.BAD_REQUEST, 1),
            b'{"id": 1, "op": "cell.run", "session": "s", "cell": {"type": "shell", "output_variable": "a b"}}': (proto.BAD_REQUEST, 1),
            b'{"id": 1, "op": "cell.run", "session": "s", "cell": {"type": "shell", "options": []}}': (proto.BAD_REQUEST, 1),
            b'{"id": 1, "op": "secrets.set", "session": "s", "secrets": {"A": 1}}': (proto.BAD_REQUEST, 1),
            ("[" * 100_000).encode(): (proto.BAD_JSON, None),
        }
        for frame, (code, re) in cases.items():
            with self.assertRaises(proto.ProtocolError) as caught:
                proto.parse_request(frame)
            self.assertEqual((caught.exception.code, caught.exception.re), (code, re), frame[:80])
            self.assertTrue(caught.exception.message)

    def test_go_keywords_are_never_variable_names(self) -> None:
        from spinrt.templates import RESERVED_NAMES

        self.assertEqual(len(RESERVED_NAMES), 11)
        for name in sorted(RESERVED_NAMES):
            frames = [
                {"id": 1, "op": "session.create", "variables": {"ok": 1, name: "x"}},
                {"id": 1, "op": "cell.run", "session": "s", "cell": {"type": "shell", "output_variable": name}},
                {"id": 1, "op": "cells.run", "session": "s",
                 "cells": [{"type": "shell"}, {"type": "shell", "output_variable": name}]},
            ]
            for message in frames:
                with self.assertRaises(proto.ProtocolError) as caught:
                    proto.parse_request(json.dumps(message))
                self.assertEqual(caught.exception.code, proto.BAD_REQUEST)
                self.assertIn("Go template keyword", caught.exception.message)
        for fine in ("End", "ending", "if_", "nil2", "_range"):
            proto.parse_request(json.dumps({"id": 1, "op": "session.create", "variables": {fine: 1}}))
            proto.parse_request(json.dumps({"id": 1, "op": "cell.run", "session": "s",
                                            "cell": {"type": "shell", "output_variable": fine}}))
        with self.assertRaises(proto.ProtocolError):
            proto.parse_request('{"id": 1, "op": "session.create", "variables": {"not an identifier": 1}}')

    def test_too_many_cells(self) -> None:
        frame = json.dumps({"id": 1, "op": "cells.run", "session": "s",
                            "cells": [{"type": "shell"}] * (proto.MAX_CELLS_PER_REQUEST + 1)})
        with self.assertRaises(proto.ProtocolError):
            proto.parse_request(frame)

    @settings(max_examples=500, deadline=None)
    @given(st.binary(max_size=200))
    def test_arbitrary_bytes_never_crash(self, frame: bytes) -> None:
        try:
            proto.parse_request(frame)
        except proto.ProtocolError as e:
            self.assertIn(e.code, {proto.BAD_JSON, proto.BAD_REQUEST, proto.UNKNOWN_OP})

    @settings(max_examples=500, deadline=None)
    @given(st.dictionaries(st.sampled_from(["id", "op", "session", "since", "cell", "cells", "name",
                                            "variables", "run", "names", "secrets", "stop_on_error",
                                            "cell_id", "cell_ids", "after", "base_version"]),
                           json_values | st.sampled_from(sorted(proto.OPS)), max_size=6))
    def test_arbitrary_objects_parse_or_fail_cleanly(self, message: dict) -> None:
        frame = json.dumps(message)
        try:
            request = proto.parse_request(frame)
        except proto.ProtocolError as e:
            if e.code == proto.BAD_JSON:  # strict JSON: only NaN / Infinity make it not JSON
                self.assertRegex(frame, r"NaN|Infinity")
            else:
                self.assertIn(e.code, {proto.BAD_REQUEST, proto.UNKNOWN_OP})
            # A failure reply is always encodable.
            json.loads(proto.encode(proto.failure(e.re, e.code, e.message)))
        else:
            self.assertIn(request.op, proto.OPS)
            self.assertEqual(request.id, message["id"])


class BuildTests(unittest.TestCase):
    def test_replies_and_events(self) -> None:
        self.assertEqual(proto.ok(1, run="r"), {"re": 1, "ok": True, "run": "r"})
        self.assertEqual(proto.failure(None, "x", "y"), {"re": None, "ok": False, "error": {"code": "x", "message": "y"}})
        self.assertEqual(proto.timestamp(0), "1970-01-01T00:00:00.000Z")
        event = proto.event("stream", "ss_1", 3, "T", run="r", text="\u00e9\n")
        self.assertEqual(json.loads(proto.encode(event)), event)
        self.assertIn("\u00e9".encode(), proto.encode(event))  # UTF-8, not \\u escapes
        self.assertEqual(proto.welcome("1.0"), {"event": "welcome", "runtime": {"version": "1.0", "protocol": 1}})


class EncodeTests(unittest.TestCase):
    def test_fast_path_and_fallbacks_give_the_same_json(self) -> None:
        cases = [
            {"text": "caf\u00e9 \u2603 \n\t\"\\", "n": 1, "f": 1.5, "none": None, "nested": [{"a": True}]},
            {"big": 2**70},  # beyond orjson: falls back
            {"surrogate": "bad \udcff byte"},  # lone surrogate from a broken decoder: falls back
            {1: "non-string key"},
            {"obj": object.__new__(type("Thing", (), {"__str__": lambda self: "thing"}))},
        ]
        for message in cases:
            decoded = json.loads(proto.encode(message))
            self.assertEqual(len(decoded), len(message))
        self.assertEqual(json.loads(proto.encode(cases[0])), cases[0])
        self.assertEqual(json.loads(proto.encode(cases[1])), {"big": 2**70})
        self.assertEqual(json.loads(proto.encode(cases[3])), {"1": "non-string key"})
        self.assertEqual(json.loads(proto.encode(cases[4])), {"obj": "thing"})

    def test_small_frames_do_not_keep_a_large_buffer(self) -> None:
        import tracemalloc

        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            frames = [proto.encode({"event": "stream", "seq": i, "text": "x" * 100}) for i in range(2000)]
            held = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        self.assertEqual(len(frames), 2000)
        self.assertLess(held / len(frames), 400, "bytes held per ~140-byte frame")


class DocumentParamsTests(unittest.TestCase):
    """Parameters of the session document ops (PROTOCOL.md section 10)."""

    def parse(self, op: str, **params: object) -> dict:
        return dict(proto.parse_request(json.dumps({"id": 1, "op": op, "session": "s", **params})).params)

    def refused(self, op: str, **params: object) -> str:
        with self.assertRaises(proto.ProtocolError) as caught:
            self.parse(op, **params)
        self.assertEqual(caught.exception.code, proto.BAD_REQUEST)
        self.assertEqual(caught.exception.re, 1)
        return caught.exception.message

    def test_after_null_is_not_absent(self) -> None:
        cell = {"id": "a", "type": "shell"}
        self.assertIsNone(self.parse("cell.set", cell=cell, after=None)["after"])
        self.assertNotIn("after", self.parse("cell.set", cell=cell))
        self.assertEqual(self.parse("cell.set", cell=cell, after="b")["after"], "b")
        self.assertIsNone(self.parse("cell.move", cell_id="a", after=None)["after"])
        self.assertIn("needs 'after'", self.refused("cell.move", cell_id="a"))
        # Elsewhere null still means absent.
        self.assertNotIn("base_version", self.parse("cell.set", cell=cell, base_version=None))

    def test_cell_ids(self) -> None:
        for good in ("a", "x" * proto.MAX_ID_LENGTH, "\u00e9t\u00e9 \U0001f600", "with space", "-_.:/"):
            self.assertEqual(self.parse("cell.delete", cell_id=good)["cell_id"], good)
            self.assertIsNone(proto.cell_id_problem(good))
        for bad in ("", "x" * (proto.MAX_ID_LENGTH + 1), "a\nb", "\x00", "\x1b[31m", "\x7f", "\x9b", 5, 5.5,
                    True, [], {}, None):
            self.assertIsNotNone(proto.cell_id_problem(bad), bad)
            if bad is not None:
                self.assertIn("cell_id", self.refused("cell.delete", cell_id=bad))
            self.assertIn("cell.id", self.refused("cell.set", cell={"id": bad, "type": "shell"}))
            self.assertIn("cell_ids[1]", self.refused("cells.run", cell_ids=["ok", bad]))
        self.assertIsNotNone(proto.cell_id_problem("\ud800"))
        # A lone surrogate arrives as an escape and is refused naming the field.
        with self.assertRaises(proto.ProtocolError) as caught:
            proto.parse_request('{"id": 1, "op": "cell.delete", "session": "s", "cell_id": "\\udfff"}')
        self.assertIn("cell_id", caught.exception.message)

    def test_run_forms(self) -> None:
        self.assertEqual(self.parse("cell.run", cell_id="a"), {"session": "s", "cell_id": "a"})
        self.assertEqual(self.parse("cells.run", cell_ids=["a", "a"])["cell_ids"], ["a", "a"])
        for op, params in (("cell.run", {}), ("cell.run", {"cell": {"type": "shell"}, "cell_id": "a"}),
                           ("cells.run", {}), ("cells.run", {"cells": [{"type": "shell"}], "cell_ids": ["a"]}),
                           ("cell.run", {"cell": None, "cell_id": None})):
            self.assertIn("exactly one of", self.refused(op, **params))
        self.refused("cells.run", cell_ids=[])
        self.refused("cells.run", cell_ids="a")
        self.refused("cells.run", cell_ids=["a"] * (proto.MAX_CELLS_PER_REQUEST + 1))

    def test_base_version(self) -> None:
        cell = {"id": "a", "type": "shell"}
        self.assertEqual(self.parse("cell.set", cell=cell, base_version=0)["base_version"], 0)
        for bad in (-1, 1.5, "3", True):
            self.refused("cell.set", cell=cell, base_version=bad)
