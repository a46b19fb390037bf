"""The session document fold (spinrt.sessions.document): pure, against a reference model."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from spinrt import protocol as proto
from spinrt.sessions import document as document_module
from spinrt.sessions.document import ABSENT, Document, DocumentError, fold, initial_cells

IDS = ["a", "b", "c", "d", "e"]


def cell(cell_id: str, source: str = "", ctype: str = "shell", **extra: Any) -> dict[str, Any]:
    return {"id": cell_id, "type": ctype, "source": source, "options": {}, **extra}


class Model:
    """The document as the protocol describes it, as plainly as possible: a list."""

    def __init__(self) -> None:
        self.cells: list[dict[str, Any]] = []  # cell + version

    def ids(self) -> list[str]:
        return [c["id"] for c in self.cells]

    def find(self, cell_id: str) -> int | None:
        ids = self.ids()
        return ids.index(cell_id) if cell_id in ids else None

    def _place(self, entry: dict[str, Any], after: str | None) -> None:
        index = 0 if after is None else self.ids().index(after) + 1
        self.cells.insert(index, entry)

    def set(self, new: dict[str, Any], after: Any, base_version: int | None, seq: int) -> str | None:
        at = self.find(new["id"])
        if base_version is not None and base_version != (self.cells[at]["version"] if at is not None else 0):
            return "conflict"
        if after is not ABSENT and after is not None:
            if after == new["id"]:
                return "bad_request"
            if after not in self.ids():
                return "no_such_cell"
        entry = {**new, "version": seq}
        if after is ABSENT:
            if at is None:
                self.cells.append(entry)
            else:
                self.cells[at] = entry
            return None
        if at is not None:
            del self.cells[at]
        self._place(entry, after)
        return None

    def delete(self, cell_id: str) -> str | None:
        at = self.find(cell_id)
        if at is None:
            return "no_such_cell"
        del self.cells[at]
        return None

    def move(self, cell_id: str, after: str | None) -> str | None:
        at = self.find(cell_id)
        if at is None:
            return "no_such_cell"
        if after == cell_id:
            return "bad_request"
        if after is not None and after not in self.ids():
            return "no_such_cell"
        entry = self.cells.pop(at)
        self._place(entry, after)
        return None


# Weighted towards ops that succeed, so documents grow and change shape;
# "current" as base_version stands for the cell's version as the model has it.
afters = st.sampled_from([ABSENT, ABSENT, ABSENT, None, None, *IDS, "zz"])
bases = st.sampled_from([None] * 6 + ["current"] * 2 + [0, 1, 5])
set_op = st.tuples(st.just("set"), st.sampled_from(IDS), st.text(max_size=3), afters, bases)
ops = st.one_of(
    set_op, set_op, set_op,
    st.tuples(st.just("delete"), st.sampled_from([*IDS, "zz"])),
    st.tuples(st.just("move"), st.sampled_from([*IDS, "zz"]), st.sampled_from([None, None, *IDS, "zz"])),
    st.tuples(st.just("move"), st.sampled_from(IDS), st.sampled_from([None, *IDS])),
)
# A few cells first, then anything.
programs = st.tuples(st.lists(st.sampled_from(IDS), max_size=5), st.lists(ops, max_size=60)).map(
    lambda p: [("set", cell_id, "", ABSENT, None) for cell_id in p[0]] + p[1])


def play(steps: list[tuple]) -> tuple[Document, Model, list[bytes]]:
    """Apply the ops to a Document (planning, then folding the event) and to
    the model; both must refuse the same ops with the same codes."""
    doc, model, log = Document(), Model(), []
    seq = 0
    for step in steps:
        kind = step[0]
        try:
            if kind == "set":
                _, cell_id, source, after, base = step
                if base == "current":
                    at = model.find(cell_id)
                    base = model.cells[at]["version"] if at is not None else 0
                    step = (*step[:4], base)
                fields = doc.plan_set(cell(cell_id, source), after, base)
                event_kind = "cell.set"
            elif kind == "delete":
                fields = doc.plan_delete(step[1])
                event_kind = "cell.deleted"
            else:
                fields = doc.plan_move(step[1], step[2])
                event_kind = "cell.moved"
            code = None
        except DocumentError as e:
            code = e.code
        expected = (model.set(cell(step[1], step[2]), step[3], step[4], seq + 1) if kind == "set"
                    else model.delete(step[1]) if kind == "delete" else model.move(step[1], step[2]))
        assert code == expected, (step, code, expected)
        if code is None:
            seq += 1
            event = proto.event(event_kind, "ss", seq, "t", **fields, by="owner")
            if event_kind == "cell.set":
                event["version"] = seq
            log.append(proto.encode(event))
            doc.apply(json.loads(log[-1]))
    return doc, model, log


class FoldPropertyTests(unittest.TestCase):
    @settings(max_examples=400, deadline=None)
    @given(programs)
    def test_any_sequence_folds_like_the_model(self, steps: list[tuple]) -> None:
        doc, model, log = play(steps)
        self.assertEqual(doc.cells(), model.cells)
        # A late joiner's replay of the log, and a restart's snapshot, give the same document.
        self.assertEqual(fold(log).cells(), model.cells)
        self.assertEqual(Document.from_snapshot(doc.snapshot()).cells(), model.cells)
        half = len(log) // 2
        resumed = fold(log[half:], Document.from_snapshot(fold(log[:half]).snapshot()))
        self.assertEqual(resumed.cells(), model.cells)
        self.assertEqual(doc.bytes, sum(len(proto.encode({k: v for k, v in c.items() if k != "version"}))
                                        for c in model.cells))

    @settings(max_examples=200, deadline=None)
    @given(programs)
    def test_every_event_names_its_place(self, steps: list[tuple]) -> None:
        _, _, log = play(steps)
        for frame in log:
            event = json.loads(frame)
            if event["event"] in ("cell.set", "cell.moved"):
                self.assertIn("after", event)  # resolved: a client folds without knowing the op


class PlanTests(unittest.TestCase):
    def setUp(self) -> None:
        self.doc = Document()
        self.seq = 0
        for cell_id in ("a", "b", "c"):
            self.set(cell(cell_id, cell_id))

    def set(self, new: dict[str, Any], after: Any = ABSENT, base: int | None = None) -> dict[str, Any]:
        fields = self.doc.plan_set(new, after, base)
        self.seq += 1
        self.doc.apply({"event": "cell.set", "seq": self.seq, **fields})
        return fields

    def ids(self) -> list[str]:
        return [c["id"] for c in self.doc.cells()]

    def code(self, f: Any, *args: Any) -> DocumentError:
        with self.assertRaises(DocumentError) as caught:
            f(*args)
        return caught.exception

    def test_after_absent_keeps_the_place_or_appends(self) -> None:
        self.assertEqual(self.set(cell("b", "B"))["after"], "a")
        self.assertEqual(self.ids(), ["a", "b", "c"])
        self.assertEqual(self.doc.get("b")["source"], "B")
        self.assertEqual(self.set(cell("d"))["after"], "c")
        self.assertEqual(self.ids(), ["a", "b", "c", "d"])

    def test_after_null_is_the_top_and_an_id_moves_the_cell(self) -> None:
        self.assertIsNone(self.set(cell("c"), None)["after"])
        self.assertEqual(self.ids(), ["c", "a", "b"])
        self.set(cell("c"), "b")
        self.assertEqual(self.ids(), ["a", "b", "c"])
        self.set(cell("new"), None)
        self.assertEqual(self.ids(), ["new", "a", "b", "c"])

    def test_first_cell_of_an_empty_document(self) -> None:
        doc = Document()
        self.assertEqual(doc.plan_set(cell("x"))["after"], None)
        self.assertEqual(doc.plan_set(cell("x"), None)["after"], None)
        self.assertEqual(self.code(doc.plan_set, cell("x"), "a").code, "no_such_cell")

    def test_version_is_the_seq_of_the_last_set_and_a_move_keeps_it(self) -> None:
        self.assertEqual([c["version"] for c in self.doc.cells()], [1, 2, 3])
        self.set(cell("a", "A"))
        self.assertEqual(self.doc.get("a")["version"], 4)
        self.doc.apply({"event": "cell.moved", "seq": 5, **self.doc.plan_move("a", "c")})
        self.assertEqual(self.ids(), ["b", "c", "a"])
        self.assertEqual(self.doc.get("a")["version"], 4)

    def test_base_version(self) -> None:
        self.set(cell("a", "mine"), base=1)
        error = self.code(self.doc.plan_set, cell("a", "theirs"), ABSENT, 1)
        self.assertEqual(error.code, "conflict")
        self.assertEqual(error.details(), {"current": {**cell("a", "mine"), "version": 4}})
        self.assertEqual(self.doc.get("a")["source"], "mine")
        # 0: "the cell must not exist yet": creating twice conflicts, creating once works.
        self.assertEqual(self.code(self.doc.plan_set, cell("b"), ABSENT, 0).code, "conflict")
        self.set(cell("fresh"), base=0)
        # A cell deleted meanwhile: conflict, current null.
        self.doc.apply({"event": "cell.deleted", "seq": 9, **self.doc.plan_delete("b")})
        error = self.code(self.doc.plan_set, cell("b", "edit"), ABSENT, 2)
        self.assertEqual((error.code, error.details()), ("conflict", {"current": None}))

    def test_unknown_cells_and_moves_after_themselves(self) -> None:
        self.assertEqual(self.code(self.doc.plan_delete, "zz").code, "no_such_cell")
        self.assertEqual(self.code(self.doc.plan_move, "zz", None).code, "no_such_cell")
        self.assertEqual(self.code(self.doc.plan_move, "a", "zz").code, "no_such_cell")
        self.assertEqual(self.code(self.doc.plan_move, "a", "a").code, "bad_request")
        self.assertEqual(self.code(self.doc.plan_set, cell("a"), "a").code, "bad_request")
        self.assertEqual(self.code(self.doc.plan_set, cell("new"), "zz").code, "no_such_cell")
        for error in (self.code(self.doc.plan_delete, "zz"), self.code(self.doc.plan_move, "a", "a")):
            self.assertEqual(error.details(), {})
        self.assertEqual(self.ids(), ["a", "b", "c"])

    def test_bad_ids_are_refused(self) -> None:
        for bad in ("", "x" * 257, "a\nb", "nul\x00", "\x7f", "\ud800", 5, None, ["a"]):
            self.assertEqual(self.code(self.doc.plan_set, {"id": bad, "type": "shell"}).code, "bad_request", bad)
        self.set(cell("x" * 256))  # the longest allowed
        self.set(cell("\u00e9\u0301 \U0001f600"))  # any other Unicode, kept exactly
        self.assertNotIn("e\u0301\u0301 \U0001f600", self.doc)

    def test_cell_count_cap(self) -> None:
        self.patch(document_module, "MAX_CELLS", 4)
        self.set(cell("d"))
        error = self.code(self.doc.plan_set, cell("e"))
        self.assertEqual(error.code, "document_full")
        self.assertIn("4 cells", error.message)
        self.set(cell("d", "an edit of an existing cell is fine"))
        self.doc.apply({"event": "cell.deleted", "seq": 99, **self.doc.plan_delete("d")})
        self.set(cell("e"))

    def test_byte_cap(self) -> None:
        self.patch(document_module, "MAX_BYTES", 1000)
        self.set(cell("a", "x" * 500))
        error = self.code(self.doc.plan_set, cell("b", "y" * 500))
        self.assertEqual(error.code, "document_full")
        self.assertEqual(self.doc.get("b")["source"], "b")
        self.set(cell("a", ""))  # shrinking one makes room
        self.set(cell("b", "y" * 500))

    def test_cells_without_versions_are_protocol_cells(self) -> None:
        self.set(cell("a", "v", output_variable="out", options={"x": 1}))
        self.assertEqual(self.doc.cells(versions=False)[0],
                         {"id": "a", "type": "shell", "source": "v", "options": {"x": 1}, "output_variable": "out"})
        parsed = proto.parse_cell(self.doc.cells(versions=False)[0])
        self.assertEqual(self.doc.plan_set(parsed)["cell"], self.doc.cells(versions=False)[0])


class FoldTests(unittest.TestCase):
    def test_other_events_and_garbage_are_skipped(self) -> None:
        log = [
            b'{"event":"stream","seq":1,"text":"x"}',
            b"not json",
            b"[1]",
            json.dumps({"event": "cell.set", "seq": 4, "cell": cell("a"), "after": None}).encode(),
            json.dumps({"event": "cell.set", "seq": 5, "cell": {"id": 7, "type": "x"}, "after": None}),
            {"event": "cell.set", "seq": 6, "cell": "nope"},
        ]
        doc = fold(log)
        self.assertEqual(doc.cells(), [{**cell("a"), "version": 4}])

    def test_a_damaged_log_still_folds(self) -> None:
        events = [
            {"event": "cell.set", "seq": 1, "cell": cell("a"), "after": None},
            {"event": "cell.set", "seq": 2, "cell": cell("b"), "after": "missing"},  # goes to the end
            {"event": "cell.set", "seq": 3, "cell": cell("c"), "after": "c"},
            {"event": "cell.moved", "seq": 4, "cell_id": "ghost", "after": None},
            {"event": "cell.moved", "seq": 5, "cell_id": "a", "after": "a"},
            {"event": "cell.deleted", "seq": 6, "cell_id": "ghost"},
            {"event": "cell.moved", "seq": 7, "cell_id": "a", "after": "nowhere"},
        ]
        self.assertEqual([c["id"] for c in fold(events).cells()], ["b", "c", "a"])

    def test_snapshot_errors(self) -> None:
        for body in (b"{}", b"[]", b'{"cells": [1]}', b"nope"):
            with self.assertRaises(ValueError):
                Document.from_snapshot(body)
        self.assertEqual(Document.from_snapshot(Document().snapshot()).cells(), [])


class InitialCellsTests(unittest.TestCase):
    def test_ids_are_kept_when_usable_and_unique(self) -> None:
        cells = [cell("a"), cell("a"), cell(""), cell("cell-1"), cell("x\ny"), cell("b")]
        ids = [c["id"] for c in initial_cells(cells)]
        self.assertEqual(ids[0], "a")
        self.assertEqual(ids[3], "cell-1")
        self.assertEqual(ids[5], "b")
        self.assertEqual(len(set(ids)), len(ids))
        for i in (1, 2, 4):
            self.assertIsNone(proto.cell_id_problem(ids[i]))

    def test_caps(self) -> None:
        self.patch(document_module, "MAX_CELLS", 2)
        with self.assertRaises(DocumentError) as caught:
            initial_cells([cell("a"), cell("b"), cell("c")])
        self.assertEqual(caught.exception.code, "document_full")
        self.patch(document_module, "MAX_BYTES", 100)
        with self.assertRaises(DocumentError) as caught:
            initial_cells([cell("a", "x" * 200)])
        self.assertEqual(caught.exception.code, "document_full")
