"""The notebook ops (PROTOCOL.md sections 10 and 12): the protocol checks, then every op over a real WebSocket."""

from __future__ import annotations

import copy
import json
import os
import shutil
import stat
import tempfile
import unicodedata
from typing import Any

import nbformat
from twisted.trial import unittest

from spinrt import protocol as proto

from .support import Client, start_runtime, ws_url
from .test_notebook_import import V3, code, v4

CELLS = [
    {"id": "intro", "type": "markdown", "source": "# Restart {{service}}", "options": {}},
    {"id": "check", "type": "shell", "source": "echo {{service}}", "options": {}, "output_variable": "status"},
]
REGION = {"name": "region", "kind": "static", "options": ["eu", "us"]}


class ProtocolTests(unittest.TestCase):
    def test_names_are_checked_and_canonical(self) -> None:
        r = proto.parse_request('{"id": 1, "op": "notebook.get", "name": "cafe\\u0301.ipynb"}')
        self.assertEqual(r.params["name"], "café")
        for op, extra in (("notebook.get", ""), ("notebook.delete", ""), ("notebook.parameters", ""),
                          ("notebook.save", ', "cells": []'), ("notebook.rename", ', "new_name": "ok"')):
            for bad in ("../x", "", ".x", "a\\\\b", "a\\u0000b", "a\\nb", "x" * 201):
                with self.assertRaises(proto.ProtocolError, msg=bad) as caught:
                    proto.parse_request('{"id": 1, "op": "%s", "name": "%s"%s}' % (op, bad, extra))
                self.assertEqual(caught.exception.code, proto.BAD_REQUEST)
                self.assertIn("'name'", caught.exception.message)
            with self.assertRaises(proto.ProtocolError) as caught:
                proto.parse_request('{"id": 1, "op": "%s"%s}' % (op, extra))
            self.assertEqual(caught.exception.message, f"'{op}' needs 'name'")
        with self.assertRaises(proto.ProtocolError) as caught:
            proto.parse_request('{"id": 1, "op": "notebook.rename", "name": "a", "new_name": ".x"}')
        self.assertIn("'new_name'", caught.exception.message)

    def test_save_parameters_are_checked(self) -> None:
        cases = {
            '"cells": {}': "'cells' must be a list of cells",
            '"cells": [{"type": ""}]': "'cells[0].type' must be a non-empty string",
            '"cells": [], "parameters": [{"name": "a", "kind": "nope"}]': "'parameters[0].kind'",
            '"cells": [], "parameters": {}': "'parameters' must be a list",
            '"ipynb": []': "'ipynb' must be an object",
            '"session": 5': "'session' must be a non-empty string",
            '"cells": [], "version": ""': "'version' must be a non-empty string",
        }
        for params, message in cases.items():
            with self.assertRaises(proto.ProtocolError, msg=params) as caught:
                proto.parse_request('{"id": 1, "op": "notebook.save", "name": "a", %s}' % params)
            self.assertEqual(caught.exception.code, proto.BAD_REQUEST)
            self.assertIn(message, caught.exception.message)
        too_many = json.dumps({"id": 1, "op": "notebook.save", "name": "a", "cells": [{"type": "shell"}] * 10_001})
        with self.assertRaises(proto.ProtocolError) as caught:
            proto.parse_request(too_many)
        self.assertIn("more than 10000 cells", caught.exception.message)

    def test_a_failure_carries_details(self) -> None:
        self.assertEqual(proto.failure(1, "conflict", "m", current="v1"),
                         {"re": 1, "ok": False, "error": {"code": "conflict", "message": "m", "current": "v1"}})


class NotebookOpsTests(unittest.TestCase):
    timeout = 120

    async def setUp(self) -> None:
        self.home = tempfile.mkdtemp(prefix="spin-home-", dir=os.path.abspath("."))
        self.service = await start_runtime(self, home=self.home)
        self.client = await Client.connect(ws_url(self.service))
        self.addCleanup(self.client.close)

    async def ok(self, op: str, **params: Any) -> dict[str, Any]:
        reply = await self.client.request(op, **params)
        self.assertTrue(reply["ok"], reply)
        return reply

    async def error(self, op: str, code: str, **params: Any) -> dict[str, Any]:
        reply = await self.client.request(op, **params)
        self.assertFalse(reply["ok"], reply)
        self.assertEqual(reply["error"]["code"], code, reply)
        return dict(reply["error"])

    def files(self) -> list[str]:
        return sorted(os.listdir(os.path.join(self.home, "notebooks")))

    async def test_the_library_is_there(self) -> None:
        self.assertIn("notebooks", (await self.ok("hello"))["runtime"]["features"])
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(self.home, "notebooks")).st_mode), 0o700)
        self.assertEqual((await self.ok("notebook.list"))["notebooks"], [])

    async def test_save_get_list_rename_delete(self) -> None:
        saved = (await self.ok("notebook.save", name="restart.ipynb", cells=CELLS, parameters=[REGION]))["notebook"]
        self.assertEqual(saved["name"], "restart")
        got = (await self.ok("notebook.get", name="restart"))["notebook"]
        self.assertEqual(got, {"name": "restart", "version": saved["version"], "cells": CELLS, "parameters": [REGION]})
        (listed,) = (await self.ok("notebook.list"))["notebooks"]
        self.assertEqual((listed["name"], listed["version"], listed["cell_count"]), ("restart", saved["version"], 2))
        self.assertTrue(listed["modified"].endswith("Z"))
        again = (await self.ok("notebook.save", name="restart", cells=CELLS[:1], version=saved["version"]))["notebook"]
        self.assertNotEqual(again["version"], saved["version"])
        # parameters absent: kept.
        self.assertEqual((await self.ok("notebook.get", name="restart"))["notebook"]["parameters"], [REGION])
        renamed = (await self.ok("notebook.rename", name="restart", new_name="Neustart ü", version=again["version"]))
        self.assertEqual(renamed["notebook"], {"name": "Neustart ü", "version": again["version"]})
        self.assertEqual(self.files(), ["Neustart ü.ipynb"])
        nfd = unicodedata.normalize("NFD", "Neustart ü")
        self.assertEqual(await self.ok("notebook.delete", name=nfd, version=again["version"]),
                         {"re": self.client.messages[-1]["re"], "ok": True})
        self.assertEqual(self.files(), [])

    async def test_errors(self) -> None:
        saved = (await self.ok("notebook.save", name="a", cells=CELLS))["notebook"]
        await self.ok("notebook.save", name="b", cells=[])
        for op, params in (("notebook.get", {}), ("notebook.rename", {"new_name": "x"}), ("notebook.delete", {}),
                           ("notebook.parameters", {})):
            error = await self.error(op, "no_such_notebook", name="missing", **params)
            self.assertEqual(error["message"], "no notebook 'missing'")
        stale = "0000-0-0"
        for op, params in (("notebook.save", {"cells": []}), ("notebook.save", {"ipynb": v4([])}),
                           ("notebook.rename", {"new_name": "c"}), ("notebook.delete", {})):
            error = await self.error(op, "conflict", name="a", version=stale, **params)
            self.assertEqual(error["current"], saved["version"])
            self.assertIn("nothing was written", error["message"])
        error = await self.error("notebook.save", "conflict", name="new", cells=[], version=stale)
        self.assertIsNone(error["current"])
        error = await self.error("notebook.rename", "conflict", name="a", new_name="b.ipynb")
        self.assertIn("'b' exists already", error["message"])
        self.assertEqual(error["current"], saved["version"])
        for params, message in (({}, "needs exactly one of 'cells', 'ipynb' or 'session'"),
                                ({"cells": [], "ipynb": v4([])}, "needs exactly one of"),
                                ({"cells": [], "session": "s"}, "needs exactly one of"),
                                ({"parameters": [REGION]}, "needs exactly one of"),
                                ({"ipynb": v4([]), "parameters": [REGION]}, "'parameters' goes with 'cells'"),
                                ({"cells": [{"type": "shell", "id": "a"}, {"type": "shell", "id": "a"}]},
                                 "'cells[1].id' 'a' is the id of cells[0] too"),
                                ({"name": "a/b", "cells": []}, "'name' may not contain '/'")):
            error = await self.error("notebook.save", "bad_request", **{"name": "a", **params})
            self.assertIn(message, error["message"])
        self.assertEqual(self.files(), ["a.ipynb", "b.ipynb"])
        self.assertEqual((await self.ok("notebook.get", name="a"))["notebook"]["version"], saved["version"])

    async def test_import(self) -> None:
        saved = (await self.ok("notebook.save", name="old", ipynb=copy.deepcopy(V3)))["notebook"]
        got = (await self.ok("notebook.get", name="old"))["notebook"]
        self.assertEqual([c["type"] for c in got["cells"]], ["markdown", "python", "shell"])
        self.assertEqual(got["version"], saved["version"])
        nb = nbformat.read(os.path.join(self.home, "notebooks", "old.ipynb"), as_version=nbformat.NO_CONVERT)
        nbformat.validate(nb)
        self.assertEqual(nb.cells[1].outputs[0].text, "1\n")
        for garbage, message in ((v4("x"), "(at cells)"), ({"cells": []}, "has no 'nbformat' version"),  # type: ignore[arg-type]
                                 (v4([code(id="a", metadata={"spin": {"type": 1}})]), "metadata.spin.type")):
            error = await self.error("notebook.save", "bad_request", name="old", ipynb=garbage)
            self.assertIn(message, error["message"])
        self.assertEqual((await self.ok("notebook.get", name="old"))["notebook"]["version"], saved["version"])

    async def test_save_a_sessions_document(self) -> None:
        sid = (await self.ok("session.create"))["session"]["id"]
        saved = (await self.ok("notebook.save", name="empty", session=sid))["notebook"]
        self.assertEqual((await self.ok("notebook.get", name="empty"))["notebook"]["cells"], [])
        # What the session's document holds is what is saved (cells as Session.document_cells gives them).
        session = self.service.manager.get(sid)
        self.patch(session, "document_cells", lambda: [
            {"id": "one", "type": "shell", "source": "echo 1", "options": {}},
            {"id": "two two", "type": "markdown", "source": "*two*", "options": {}}])
        saved = (await self.ok("notebook.save", name="empty", session=sid, version=saved["version"]))["notebook"]
        got = (await self.ok("notebook.get", name="empty"))["notebook"]
        self.assertEqual(got["version"], saved["version"])
        self.assertEqual([(c["id"], c["type"], c["source"]) for c in got["cells"]],
                         [("one", "shell", "echo 1"), ("two two", "markdown", "*two*")])
        await self.error("notebook.save", "no_such_session", name="x", session="ss_missing")
        self.patch(session, "document_cells", None)
        error = await self.error("notebook.save", "bad_request", name="x", session=sid)
        self.assertEqual(error["message"], "saving a session's document is not available yet")

    async def test_a_notebook_through_a_session_and_back(self) -> None:
        cells = [*CELLS, {"id": "py", "type": "python", "source": "x = 1", "options": {"timeout_s": 5}}]
        await self.ok("notebook.save", name="loop", cells=cells, parameters=[REGION])
        sid = (await self.ok("session.create", notebook="loop", variables={"region": "eu"}))["session"]["id"]
        document = (await self.ok("session.document", session=sid))["document"]
        self.assertEqual([{k: v for k, v in c.items() if k != "version"} for c in document["cells"]], cells)
        await self.ok("cell.set", session=sid, cell={"id": "new cell", "type": "shell", "source": "date"})
        await self.ok("cell.delete", session=sid, cell_id="intro")
        version = (await self.ok("notebook.get", name="loop"))["notebook"]["version"]
        await self.ok("notebook.save", name="loop", session=sid, version=version)
        got = (await self.ok("notebook.get", name="loop"))["notebook"]
        self.assertEqual([c["id"] for c in got["cells"]], ["check", "py", "new cell"])
        self.assertEqual(got["parameters"], [REGION])  # the session form keeps them
        error = await self.error("session.create", "bad_request", notebook="loop", variables={"region": "mars"})
        self.assertIn("'variables.region' must be one of 'eu', 'us'", error["message"])

    async def test_parameters(self) -> None:
        parameters = [REGION, {"name": "pod", "kind": "code_python", "code": "['api-' + str(i) for i in range(2)]"},
                      {"name": "bad", "kind": "code_python", "code": "1/0"}, {"name": "host", "kind": "input"}]
        await self.ok("notebook.save", name="p", cells=CELLS, parameters=parameters)
        reply = await self.ok("notebook.parameters", name="p.ipynb", timeout=60)
        self.assertEqual(reply["parameters"], [
            {"name": "region", "kind": "static", "label": "region", "default": None, "options": ["eu", "us"]},
            {"name": "pod", "kind": "code_python", "label": "pod", "default": None, "options": ["api-0", "api-1"]},
            {"name": "bad", "kind": "code_python", "label": "bad", "default": None, "options": None,
             "error": "ZeroDivisionError: division by zero"},
            {"name": "host", "kind": "input", "label": "host", "default": None, "options": None},
        ])
        self.assertEqual(self.service.processors["python"].launcher.live, set())  # the kernel is gone

    async def test_a_broken_library_directory(self) -> None:
        await self.ok("notebook.save", name="a", cells=[])
        directory = os.path.join(self.home, "notebooks")
        shutil.rmtree(directory)
        with open(directory, "w") as f:
            f.write("not a directory")
        for op, params in (("notebook.list", {}), ("notebook.save", {"name": "a", "cells": []}),
                           ("notebook.get", {"name": "a"})):
            error = await self.error(op, "internal_error", **params)
            self.assertEqual(error["message"], "the notebook library cannot do that: Not a directory")
        self.assertTrue((await self.ok("ping"))["ok"])  # the runtime carries on
