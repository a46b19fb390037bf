"""Session document ops (PROTOCOL.md section 10) through ClientConnection, with in-memory fakes."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.task import Clock
from twisted.trial import unittest

from spinrt import protocol as proto
from spinrt.notebooks import NotebookError
from spinrt.sessions import document as document_module
from spinrt.sessions import session as session_module
from spinrt.sessions.document import fold
from spinrt.sessions.manager import SessionManager
from spinrt.sessions.masking import build_inline
from spinrt.web.ops import ClientConnection

from .test_session_unit import FakeStore, ScriptedExecutor


class Store(FakeStore):
    def on_flush(self, listener: Any) -> None:
        pass


class Library:
    """NotebookLibrary.get, from a dict."""

    def __init__(self, notebooks: dict[str, dict[str, Any]]) -> None:
        self.notebooks = notebooks

    async def get(self, name: str) -> dict[str, Any]:
        if name not in self.notebooks:
            raise NotebookError("no_such_notebook", f"no notebook {name!r}")
        return {"name": name, "version": "v1", **self.notebooks[name]}


def cell(cell_id: Any, source: str = "echo", ctype: str = "shell", **extra: Any) -> dict[str, Any]:
    return {"id": cell_id, "type": ctype, "source": source, "options": {}, **extra}


class Peer:
    """One client connection and everything it was sent."""

    def __init__(self, manager: SessionManager) -> None:
        self.sent: list[dict[str, Any]] = []
        self.conn = ClientConnection(manager, lambda f: self.sent.append(json.loads(f)), {"version": "t"})
        self._next = 0

    def request(self, op: str, **params: Any) -> dict[str, Any]:
        self._next += 1
        self.conn.handle(json.dumps({"id": self._next, "op": op, **params}).encode())
        return next(m for m in self.sent if m.get("re") == self._next)

    def ok(self, op: str, **params: Any) -> dict[str, Any]:
        reply = self.request(op, **params)
        assert reply["ok"], reply
        return reply

    def error(self, op: str, **params: Any) -> dict[str, Any]:
        reply = self.request(op, **params)
        assert not reply["ok"], reply
        return reply["error"]

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [m for m in self.sent if "seq" in m and (kind is None or m["event"] == kind)]


class DocumentOpsTests(unittest.TestCase):
    def setUp(self) -> None:
        self.store = Store()
        self.executor = ScriptedExecutor()
        self.manager = SessionManager(self.store, self.executor, {}, Clock(), wallclock=lambda: 0.0,
                                      build_masker=build_inline)
        self.manager.notebooks = Library({})  # type: ignore[attr-defined]
        self.alice = Peer(self.manager)
        self.sid = self.alice.ok("session.create")["session"]["id"]
        self.session = self.manager.get(self.sid)

    def set(self, peer: Peer | None = None, **params: Any) -> dict[str, Any]:
        return (peer or self.alice).ok("cell.set", session=self.sid, **params)

    def ids(self) -> list[str]:
        return [c["id"] for c in self.session.document.cells()]

    def logged(self) -> list[dict[str, Any]]:
        return [json.loads(b) for _, b in sorted(self.store.events[self.sid].items())]

    def assertUnchanged(self, before: int) -> None:
        self.assertEqual(self.session.last_seq, before)

    # -- edits -------------------------------------------------------------------------

    def test_set_appends_and_every_attached_client_sees_the_event(self) -> None:
        bob = Peer(self.manager)
        bob.ok("session.attach", session=self.sid)
        reply = self.set(cell=cell("a", "ls"))
        (event,) = self.alice.events("cell.set")
        self.assertEqual(reply["version"], event["seq"])
        self.assertEqual({k: event[k] for k in ("cell", "after", "version", "by")},
                         {"cell": cell("a", "ls"), "after": None, "version": event["seq"], "by": "owner"})
        self.assertEqual(bob.events("cell.set"), [event])
        self.assertEqual(self.alice.ok("session.document", session=self.sid)["document"],
                         {"notebook": None, "cells": [{**cell("a", "ls"), "version": event["seq"]}]})

    def test_after_null_absent_and_an_id(self) -> None:
        self.set(cell=cell("a"))
        self.set(cell=cell("b"))
        self.set(cell=cell("top"), after=None)
        self.assertEqual(self.ids(), ["top", "a", "b"])
        self.set(cell=cell("top", "changed"))  # absent: keeps its place
        self.assertEqual(self.ids(), ["top", "a", "b"])
        self.set(cell=cell("top"), after="b")
        self.assertEqual(self.ids(), ["a", "b", "top"])
        self.assertEqual(self.alice.events("cell.set")[-1]["after"], "b")
        self.set(cell=cell("mid"), after="a")
        self.assertEqual(self.ids(), ["a", "mid", "b", "top"])

    def test_refused_edits_change_nothing(self) -> None:
        self.set(cell=cell("a"))
        self.set(cell=cell("b"))
        before = self.session.last_seq
        cases = [
            ("cell.set", {"cell": cell("c"), "after": "ghost"}, "no_such_cell"),
            ("cell.set", {"cell": cell("a"), "after": "a"}, "bad_request"),
            ("cell.delete", {"cell_id": "ghost"}, "no_such_cell"),
            ("cell.move", {"cell_id": "ghost", "after": None}, "no_such_cell"),
            ("cell.move", {"cell_id": "a", "after": "ghost"}, "no_such_cell"),
            ("cell.move", {"cell_id": "a", "after": "a"}, "bad_request"),
            ("cell.move", {"cell_id": "a"}, "bad_request"),  # after is required for a move (null: the top)
            ("cell.set", {"cell": cell("a"), "base_version": 99}, "conflict"),
            ("cell.set", {"cell": {"type": "shell", "source": "no id"}}, "bad_request"),
            ("cell.delete", {"cell_id": "a", "session": "ss_nope"}, "no_such_session"),
        ]
        for op, params, code in cases:
            error = self.alice.error(op, **{"session": self.sid, **params})
            self.assertEqual(error["code"], code, (op, params))
            self.assertTrue(error["message"])
        self.assertUnchanged(before)
        self.assertEqual(self.ids(), ["a", "b"])

    def test_bad_cell_ids(self) -> None:
        before = self.session.last_seq
        for bad in ("", "x" * 257, "line\nbreak", "tab\there", "\x00", "\u0085", 7, 1.5, True, None, ["a"], {"a": 1}):
            for op, params in (("cell.set", {"cell": cell(bad)}), ("cell.delete", {"cell_id": bad}),
                               ("cell.move", {"cell_id": bad, "after": None}),
                               ("cell.move", {"cell_id": "x", "after": bad if bad is not None else 5}),
                               ("cell.set", {"cell": cell("x"), "after": bad if bad is not None else 5}),
                               ("cell.run", {"cell_id": bad}), ("cells.run", {"cell_ids": [bad]})):
                error = self.alice.error(op, session=self.sid, **params)
                self.assertEqual(error["code"], "bad_request", (op, bad))
        # A lone surrogate can only be sent as an escape: refused naming the field.
        self.alice.conn.handle(b'{"id": "s", "op": "cell.set", "session": "%s", '
                               b'"cell": {"id": "\\ud800", "type": "shell"}}' % self.sid.encode())
        reply = next(m for m in self.alice.sent if m.get("re") == "s")
        self.assertEqual(reply["error"]["code"], "bad_request")
        self.assertIn("cell.id", reply["error"]["message"])
        self.assertUnchanged(before)
        longest = "\u00e9" * 256  # 256 characters, 512 bytes: allowed
        self.set(cell=cell(longest))
        self.assertEqual(self.ids(), [longest])

    def test_delete_and_move(self) -> None:
        for cell_id in "abc":
            self.set(cell=cell(cell_id))
        version = self.session.document.get("c")["version"]
        self.alice.ok("cell.move", session=self.sid, cell_id="c", after=None)
        self.assertEqual(self.ids(), ["c", "a", "b"])
        self.assertEqual(self.session.document.get("c")["version"], version)
        self.alice.ok("cell.move", session=self.sid, cell_id="c", after="b")
        self.alice.ok("cell.delete", session=self.sid, cell_id="a")
        self.assertEqual(self.ids(), ["b", "c"])
        moved, deleted = self.alice.events("cell.moved")[-1], self.alice.events("cell.deleted")[-1]
        self.assertEqual((moved["cell_id"], moved["after"], moved["by"]), ("c", "b", "owner"))
        self.assertEqual((deleted["cell_id"], deleted["by"]), ("a", "owner"))
        self.assertEqual(self.alice.error("cell.delete", session=self.sid, cell_id="a")["code"], "no_such_cell")

    def test_the_log_folds_to_the_document(self) -> None:
        for cell_id in "abcd":
            self.set(cell=cell(cell_id))
        self.alice.ok("cell.move", session=self.sid, cell_id="d", after=None)
        self.alice.ok("cell.delete", session=self.sid, cell_id="b")
        self.set(cell=cell("a", "new"), after="c")
        self.assertEqual(fold(self.store.events[self.sid][s] for s in sorted(self.store.events[self.sid])).cells(),
                         self.session.document.cells())
        late = Peer(self.manager)
        late.ok("session.attach", session=self.sid)
        self.assertEqual(fold(late.events()).cells(), self.session.document.cells())

    # -- conflicts -------------------------------------------------------------------------

    def test_two_clients_without_base_version_last_writer_wins(self) -> None:
        bob = Peer(self.manager)
        self.set(cell=cell("a", "alice"))
        self.set(bob, cell=cell("a", "bob"))
        self.assertEqual(self.session.document.get("a")["source"], "bob")
        self.assertEqual([e["by"] for e in self.alice.events("cell.set")], ["owner", "owner"])

    def test_two_clients_with_base_version_the_second_gets_the_current_cell(self) -> None:
        bob = Peer(self.manager)
        base = self.set(cell=cell("a", "start"))["version"]
        mine = self.set(cell=cell("a", "alice"), base_version=base)["version"]
        before = self.session.last_seq
        error = bob.error("cell.set", session=self.sid, cell=cell("a", "bob"), base_version=base)
        self.assertEqual(error["code"], "conflict")
        self.assertEqual(error["current"], {**cell("a", "alice"), "version": mine})
        self.assertUnchanged(before)
        # Bob resolves against what he was shown.
        self.set(bob, cell=cell("a", "alice+bob"), base_version=error["current"]["version"])
        self.assertEqual(self.session.document.get("a")["source"], "alice+bob")

    def test_base_version_of_a_deleted_or_new_cell(self) -> None:
        base = self.set(cell=cell("a"))["version"]
        self.alice.ok("cell.delete", session=self.sid, cell_id="a")
        error = self.alice.error("cell.set", session=self.sid, cell=cell("a", "edit"), base_version=base)
        self.assertEqual((error["code"], error["current"]), ("conflict", None))
        self.set(cell=cell("a", "again"), base_version=0)  # 0: create only
        error = self.alice.error("cell.set", session=self.sid, cell=cell("a", "twice"), base_version=0)
        self.assertEqual(error["code"], "conflict")
        self.assertEqual(error["current"]["source"], "again")
        error = self.alice.error("cell.set", session=self.sid, cell=cell("a"), base_version=-1)
        self.assertEqual(error["code"], "bad_request")

    # -- limits and state -------------------------------------------------------------------

    def test_document_full(self) -> None:
        self.patch(document_module, "MAX_CELLS", 2)
        self.set(cell=cell("a"))
        self.set(cell=cell("b"))
        before = self.session.last_seq
        error = self.alice.error("cell.set", session=self.sid, cell=cell("c"))
        self.assertEqual(error["code"], "document_full")
        self.assertIn("2 cells", error["message"])
        self.assertUnchanged(before)
        self.set(cell=cell("a", "editing an existing cell still works"))
        self.patch(document_module, "MAX_BYTES", 300)
        error = self.alice.error("cell.set", session=self.sid, cell=cell("a", "x" * 400))
        self.assertEqual(error["code"], "document_full")
        error = self.alice.error("cell.run", session=self.sid, cell=cell("a", "x" * 400))
        self.assertEqual(error["code"], "document_full")
        self.assertEqual(self.session.runs, {})

    def test_a_closed_session_refuses_edits_and_keeps_its_document(self) -> None:
        self.set(cell=cell("a", "kept"))
        self.alice.ok("session.close", session=self.sid)
        before = self.session.last_seq
        for op, params in (("cell.set", {"cell": cell("b")}), ("cell.delete", {"cell_id": "a"}),
                           ("cell.move", {"cell_id": "a", "after": None}), ("cell.run", {"cell_id": "a"}),
                           ("cell.run", {"cell": cell("a", "new")}), ("cells.run", {"cell_ids": ["a"]})):
            self.assertEqual(self.alice.error(op, session=self.sid, **params)["code"], "session_closed", op)
        self.assertUnchanged(before)
        cells = self.alice.ok("session.document", session=self.sid)["document"]["cells"]
        self.assertEqual([c["source"] for c in cells], ["kept"])
        self.assertEqual(self.session.document_cells(), [cell("a", "kept")])

    def test_secrets_are_masked_in_the_document_and_its_events(self) -> None:
        self.alice.ok("secrets.set", session=self.sid, secrets={"TOKEN": "hunter2-very-secret"})
        self.set(cell=cell("a", "curl -H 'X: hunter2-very-secret'", options={"env": {"T": "hunter2-very-secret"}}))
        self.alice.ok("cell.run", session=self.sid, cell=cell("b", "echo hunter2-very-secret"))
        for frame in self.store.events[self.sid].values():
            self.assertNotIn(b"hunter2-very-secret", frame)
        self.assertNotIn("hunter2-very-secret", json.dumps(self.session.document.cells()))
        self.assertIn("***", self.session.document.get("a")["source"])

    # -- runs -------------------------------------------------------------------------------

    def test_run_by_cell_id_runs_the_document_cell_as_it_is_now(self) -> None:
        self.set(cell=cell("a", "echo one", options={"timeout_s": 5}, output_variable="out"))
        self.set(cell=cell("a", "echo two", options={"timeout_s": 5}, output_variable="out"))
        run = self.alice.ok("cell.run", session=self.sid, cell_id="a")["run"]
        (queued,) = self.alice.events("run.queued")
        self.assertEqual({k: queued[k] for k in ("run", "cell_id", "type", "source", "options", "by")},
                         {"run": run, "cell_id": "a", "type": "shell", "source": "echo two",
                          "options": {"timeout_s": 5}, "by": "owner"})
        self.assertEqual(self.session.current.cell, proto.Cell(
            id="a", type="shell", source="echo two", options={"timeout_s": 5}, output_variable="out"))

    def test_run_of_a_whole_cell_in_the_document_applies_it_first(self) -> None:
        self.set(cell=cell("a", "old"))
        self.set(cell=cell("b"))
        self.alice.ok("cell.run", session=self.sid, cell=cell("a", "new"))
        kinds = [e["event"] for e in self.logged()][-3:]
        self.assertEqual(kinds, ["cell.set", "run.queued", "run.started"])
        self.assertEqual(self.session.document.get("a")["source"], "new")
        self.assertEqual(self.ids(), ["a", "b"])  # kept its place
        # Unchanged: no new cell.set.
        before = len(self.alice.events("cell.set"))
        self.alice.ok("cell.run", session=self.sid, cell=cell("a", "new"))
        self.assertEqual(len(self.alice.events("cell.set")), before)

    def test_run_of_a_cell_not_in_the_document_is_ad_hoc(self) -> None:
        self.set(cell=cell("a"))
        for adhoc in (cell("elsewhere", "ls"), cell(None, "ls"), cell(42, "ls"), cell("x" * 300, "ls")):
            self.alice.ok("cell.run", session=self.sid, cell=adhoc)
        self.assertEqual(self.ids(), ["a"])
        self.assertEqual(len(self.alice.events("cell.set")), 1)
        self.assertEqual(len(self.alice.events("run.queued")), 4)

    def test_cells_run_by_ids_is_a_chain_and_unknown_ids_queue_nothing(self) -> None:
        for cell_id in "abc":
            self.set(cell=cell(cell_id, f"echo {cell_id}"))
        before = self.session.last_seq
        error = self.alice.error("cells.run", session=self.sid, cell_ids=["a", "ghost", "c"])
        self.assertEqual(error["code"], "no_such_cell")
        self.assertIn("ghost", error["message"])
        self.assertUnchanged(before)
        runs = self.alice.ok("cells.run", session=self.sid, cell_ids=["c", "a"], stop_on_error=True)["runs"]
        self.assertEqual([e["source"] for e in self.alice.events("run.queued")], ["echo c", "echo a"])
        self.executor.pending[runs[0]].callback("error")
        finished = {e["run"]: e["status"] for e in self.alice.events("run.finished")}
        self.assertEqual(finished, {runs[0]: "error", runs[1]: "skipped"})

    def test_cells_run_with_whole_cells_applies_those_in_the_document(self) -> None:
        self.set(cell=cell("a", "one"))
        self.alice.ok("cells.run", session=self.sid, cells=[cell("a", "uno"), cell("z", "adhoc")])
        self.assertEqual(self.session.document_cells(), [cell("a", "uno")])

    def test_run_forms_are_exclusive(self) -> None:
        self.set(cell=cell("a"))
        for op, params in (("cell.run", {}), ("cell.run", {"cell": cell("a"), "cell_id": "a"}),
                           ("cells.run", {}), ("cells.run", {"cells": [cell("a")], "cell_ids": ["a"]}),
                           ("cells.run", {"cell_ids": []}), ("cell.run", {"cell_id": None})):
            error = self.alice.error(op, session=self.sid, **params)
            self.assertEqual(error["code"], "bad_request", (op, params))
        self.assertEqual(self.alice.error("cell.run", session=self.sid, cell_id="ghost")["code"], "no_such_cell")
        self.assertEqual(self.alice.events("run.queued"), [])

    def test_a_full_queue_applies_no_edit(self) -> None:
        self.patch(session_module, "MAX_QUEUED_RUNS", 1)
        self.set(cell=cell("a", "old"))
        self.alice.ok("cell.run", session=self.sid, cell_id="a")
        before = self.session.last_seq
        error = self.alice.error("cell.run", session=self.sid, cell=cell("a", "new"))
        self.assertEqual(error["code"], "queue_full")
        self.assertUnchanged(before)
        self.assertEqual(self.session.document.get("a")["source"], "old")

    def test_deleting_a_cell_a_queued_run_uses_keeps_the_run(self) -> None:
        self.set(cell=cell("a", "first"))
        self.set(cell=cell("b", "second"))
        first = self.alice.ok("cell.run", session=self.sid, cell_id="a")["run"]
        second = self.alice.ok("cell.run", session=self.sid, cell_id="b")["run"]
        self.alice.ok("cell.delete", session=self.sid, cell_id="b")
        self.set(cell=cell("a", "edited after queueing"))
        self.executor.pending[first].callback("ok")
        self.assertEqual(self.session.current.id, second)
        self.assertEqual(self.session.current.cell.source, "second")  # what was queued, though deleted
        self.executor.pending[second].callback("ok")
        self.assertEqual({e["run"]: e["status"] for e in self.alice.events("run.finished")},
                         {first: "ok", second: "ok"})


class SessionFromNotebookTests(unittest.TestCase):
    def setUp(self) -> None:
        self.store = Store()
        self.manager = SessionManager(self.store, ScriptedExecutor(), {}, Clock(), wallclock=lambda: 0.0,
                                      build_masker=build_inline)
        self.manager.notebooks = Library({  # type: ignore[attr-defined]
            "deploy": {
                "cells": [cell("c1", "echo {{region}}"), cell("c2", "# Title", "markdown"), cell("c1", "dup")],
                "parameters": [
                    {"name": "region", "kind": "static", "options": ["eu", "us"], "default": "eu"},
                    {"name": "who", "kind": "input"},
                ],
            },
        })
        self.peer = Peer(self.manager)

    def test_document_starts_as_the_notebooks_cells(self) -> None:
        reply = self.peer.ok("session.create", notebook="deploy", variables={"who": "me"})
        described = reply["session"]
        self.assertEqual(described["notebook"], "deploy")
        self.assertEqual(described["name"], "deploy")
        self.assertIn("clients", reply)
        session = self.manager.get(described["id"])
        self.assertEqual(session.notebook, "deploy")
        cells = session.document_cells()
        self.assertEqual([c["source"] for c in cells], ["echo {{region}}", "# Title", "dup"])
        self.assertEqual(cells[0]["id"], "c1")
        self.assertNotEqual(cells[2]["id"], "c1")  # a repeated id gets a fresh one
        self.assertEqual(session.variables, {"who": "me", "region": "eu"})  # the default filled in
        # The attached creator replays every cell.set, and the document folds from them.
        sets = self.peer.events("cell.set")
        self.assertEqual(len(sets), 3)
        self.assertEqual(fold(self.peer.events()).cells(), session.document.cells())
        document = self.peer.ok("session.document", session=session.id)["document"]
        self.assertEqual(document["notebook"], "deploy")
        self.assertEqual([c["id"] for c in document["cells"]], [c["id"] for c in cells])
        listed = self.peer.ok("session.list")["sessions"]
        self.assertEqual([s["notebook"] for s in listed], ["deploy"])

    def test_variables_are_checked_against_the_parameters(self) -> None:
        for variables, needle in (({"region": "mars"}, "region"), ({"region": 5}, "region"),
                                  ({"who": ["x"]}, "who")):
            error = self.peer.error("session.create", notebook="deploy", variables=variables)
            self.assertEqual(error["code"], "bad_request")
            self.assertIn(needle, error["message"])
        self.assertEqual(self.manager.sessions, {})
        session = self.manager.get(self.peer.ok("session.create", notebook="deploy",
                                                variables={"region": "us", "extra": 1})["session"]["id"])
        self.assertEqual(session.variables, {"region": "us", "extra": 1})

    def test_unknown_notebooks_and_bad_names(self) -> None:
        self.assertEqual(self.peer.error("session.create", notebook="nope")["code"], "no_such_notebook")
        for bad in ("", "a/b", "..", 5):
            self.assertEqual(self.peer.error("session.create", notebook=bad)["code"], "bad_request", bad)
        self.assertEqual(self.manager.sessions, {})
        del self.manager.notebooks  # type: ignore[attr-defined]
        self.assertEqual(self.peer.error("session.create", notebook="deploy")["code"], "internal_error")

    def test_a_notebook_too_large_creates_nothing(self) -> None:
        self.patch(document_module, "MAX_CELLS", 2)
        error = self.peer.error("session.create", notebook="deploy")
        self.assertEqual(error["code"], "document_full")
        self.assertEqual(self.manager.sessions, {})
        self.assertEqual(self.store.statements, [])

    def test_without_a_notebook_the_document_is_empty(self) -> None:
        described = self.peer.ok("session.create", name="plain")["session"]
        self.assertIsNone(described["notebook"])
        self.assertEqual(self.manager.get(described["id"]).document_cells(), [])

    def test_a_library_that_answers_later(self) -> None:
        from twisted.internet.defer import Deferred

        waiting: Deferred[dict[str, Any]] = Deferred()

        class Slow:
            async def get(self, name: str) -> dict[str, Any]:
                return await waiting

        self.manager.notebooks = Slow()  # type: ignore[attr-defined]
        other = self.manager.create("other", {"x": 1})
        self.peer.conn.handle(b'{"id": "slow", "op": "session.create", "notebook": "x"}')
        self.peer.ok("ping")  # requests meanwhile, the last one attaching
        self.peer.ok("session.attach", session=other.id)
        self.assertFalse([m for m in self.peer.sent if m.get("re") == "slow"])
        waiting.callback({"name": "x", "version": "v", "cells": [cell("k")], "parameters": []})
        reply = next(m for m in self.peer.sent if m.get("re") == "slow")
        self.assertTrue(reply["ok"])
        # Subscribed after the reply: the replay of the new session follows it, once,
        # and nothing of the earlier attach is done again.
        after = self.peer.sent[self.peer.sent.index(reply) + 1:]
        self.assertEqual([(m["session"], m["event"]) for m in after if "seq" in m],
                         [(reply["session"]["id"], "cell.set")])
        self.assertEqual([m["seq"] for m in self.peer.sent if m.get("session") == other.id and "seq" in m], [1])
