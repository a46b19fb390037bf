"""Notebooks in and out of the library: imports (garbage, old formats, ``spin run`` output) and round trips."""

from __future__ import annotations

import copy
import io
import json
import os
from typing import Any

import nbformat
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.trial import unittest

from spinrt import ipynb
from spinrt.cli.main import cli
from spinrt.templates import reserved_name

from .test_notebooks import CELLS, error_of, library, read_valid

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "notebooks")


def fixture(name: str) -> str:
    return os.path.join(FIXTURES, name + ".ipynb")

V3 = {
    "nbformat": 3, "nbformat_minor": 0, "metadata": {"name": "old"},
    "worksheets": [{"metadata": {}, "cells": [
        {"cell_type": "heading", "level": 1, "source": "Old runbook", "metadata": {}},
        {"cell_type": "code", "language": "python", "input": "print(1)", "prompt_number": 1, "metadata": {},
         "outputs": [{"output_type": "stream", "stream": "stdout", "text": "1\n"}]},
        {"cell_type": "code", "language": "python", "input": "ls", "prompt_number": None, "outputs": [],
         "metadata": {"spin": {"type": "shell", "output_variable": "files"}}},
    ]}],
}


def v4(cells: list[dict[str, Any]], minor: int = 5, **metadata: Any) -> dict[str, Any]:
    return {"nbformat": 4, "nbformat_minor": minor, "metadata": metadata, "cells": cells}


def deep(levels: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(levels):
        value = [value]
    return value


def code(source: str = "x", **extra: Any) -> dict[str, Any]:
    return {"cell_type": "code", "source": source, "metadata": {}, "outputs": [], "execution_count": None, **extra}


class ImportTests(unittest.TestCase):
    timeout = 60

    async def test_garbage_is_refused_saying_what_is_wrong(self) -> None:
        lib = library(self)
        saved = await lib.save("kept", CELLS)
        with_id = code(id="a")
        cases: list[tuple[Any, str]] = [
            ([], "'ipynb' must be a notebook (a JSON object)"),
            ("notebook", "'ipynb' must be a notebook"),
            (None, "'ipynb' must be a notebook"),
            ({}, "'ipynb' is not a readable notebook"),
            ({"cells": []}, "'ipynb' is not a readable notebook"),
            ({"nbformat": 5, "nbformat_minor": 0, "cells": [], "metadata": {}}, "not a readable notebook"),
            ({"nbformat": "4", "nbformat_minor": 5, "cells": [], "metadata": {}}, "not a readable notebook"),
            ({"nbformat": 4, "nbformat_minor": 5, "metadata": {}}, "(at top level): 'cells' is a required property"),
            ({"nbformat": 4, "nbformat_minor": 5, "cells": []}, "(at top level): 'metadata' is a required property"),
            ({"nbformat": 3, "nbformat_minor": 0, "metadata": {}}, "'worksheets'"),
            ({"nbformat": 1}, "is not a readable notebook"),
            ({"nbformat": 4, "nbformat_minor": "5", "cells": [], "metadata": {}}, "nbformat_minor must be a whole number"),
            ({"nbformat": 4, "nbformat_minor": -1, "cells": [], "metadata": {}}, "nbformat_minor must be a whole number"),
            ({"nbformat": [4], "cells": [], "metadata": {}}, "unsupported nbformat version [4]"),
            ({"nbformat": True, "cells": [], "metadata": {}}, "unsupported nbformat version true"),
            (v4("cells"), "is not a valid notebook (at cells)"),  # type: ignore[arg-type]
            (v4([5]), "is not a valid notebook (at cells/0)"),  # type: ignore[list-item]
            (v4([{**with_id, "cell_type": "widget"}]), "is not a valid notebook (at cells/0)"),
            (v4([{k: v for k, v in with_id.items() if k != "outputs"}]), "(at cells/0)"),
            (v4([{**with_id, "outputs": [{"output_type": "nope"}]}]), "(at cells/0/outputs/0)"),
            (v4([{**with_id, "outputs": [{"output_type": "stream", "name": "stdout"}]}]), "(at cells/0/outputs/0)"),
            (v4([{**with_id, "execution_count": "one"}]), "(at cells/0/execution_count)"),
            (v4([{**with_id, "source": 5}]), "(at cells/0/source)"),
            (v4([{**with_id, "metadata": {"spin": []}}]), "'ipynb': cell 1: metadata.spin must be an object"),
            (v4([{**with_id, "metadata": {"spin": {"type": 5}}}]), "cell 1: metadata.spin.type must be a cell type name"),
            (v4([{**with_id, "metadata": {"spin": {"type": " "}}}]), "metadata.spin.type must be a cell type name"),
            (v4([{**with_id, "metadata": {"spin": {"options": "x"}}}]), "cell 1: metadata.spin.options must be an object"),
            (v4([{**with_id, "metadata": {"spin": {"output_variable": "a-b"}}}]), "metadata.spin.output_variable must be an identifier"),
            (v4([{**with_id, "metadata": {"spin": {"output_variable": "range"}}}]), "metadata.spin.output_variable must be an identifier"),
            (v4([{**with_id, "metadata": {"spin": {"id": 5}}}]), "metadata.spin.id must be a string"),
            (v4([with_id, {**with_id, "id": "b", "metadata": {"spin": {"id": "a"}}}]), "cells 1 and 2 have the same id 'a'"),
            (v4([], spin=[]), "'ipynb': metadata.spin must be an object"),
            (v4([], spin={"parameters": {}}), "'ipynb': 'metadata.spin.parameters' must be a list"),
            (v4([], spin={"parameters": [{"name": "a", "kind": "x"}]}), "'metadata.spin.parameters[0].kind' must be one of"),
            (v4([], spin={"parameters": [{"name": "a", "kind": "static"}]}), "'metadata.spin.parameters[0].options' is required"),
            (v4([code(float("nan"))]), "'ipynb' is not JSON"),  # type: ignore[arg-type]
            (v4([code({1, 2})]), "'ipynb' is not JSON"),  # type: ignore[arg-type]
            (v4([], deep=deep(100_000)), "'ipynb' is not JSON"),
        ]
        for notebook, message in cases:
            for name in ("kept", "new"):
                try:
                    e = await error_of(lib.save_ipynb(name, notebook))
                except Exception:
                    raise AssertionError(f"accepted: {message}") from None
                self.assertEqual(e.code, "bad_request", message)
                self.assertIn(message, e.message)
        self.assertEqual(os.listdir(lib.directory), ["kept.ipynb"])
        self.assertEqual((await lib.get("kept"))["version"], saved["version"])

    async def test_nbformat_3_is_upgraded_with_its_outputs(self) -> None:
        lib = library(self)
        await lib.save_ipynb("old", copy.deepcopy(V3))
        nb = read_valid(os.path.join(lib.directory, "old.ipynb"))
        self.assertEqual([c.id for c in nb.cells], ["cell-1", "cell-2", "cell-3"])
        self.assertEqual(nb.cells[1].outputs, [{"output_type": "stream", "name": "stdout", "text": "1\n"}])
        self.assertEqual(nb.cells[1].execution_count, 1)
        got = await lib.get("old")
        self.assertEqual(got["cells"], [
            {"id": "cell-1", "type": "markdown", "source": "# Old runbook", "options": {}},
            {"id": "cell-2", "type": "python", "source": "print(1)", "options": {}},
            {"id": "cell-3", "type": "shell", "source": "ls", "options": {}, "output_variable": "files"},
        ])

    async def test_older_and_broken_v4_ids_are_given_ids(self) -> None:
        lib = library(self)
        await lib.save_ipynb("v42", v4([code("a"), code("b")], minor=2))
        nb = read_valid(os.path.join(lib.directory, "v42.ipynb"))
        self.assertEqual([c.id for c in nb.cells], ["cell-1", "cell-2"])
        cells = [code("a", id="x"), code("b", id="x"), code("c"), code("d", id="a b"), code("e", id="cell-3")]
        await lib.save_ipynb("v45", v4(cells))
        nb = read_valid(os.path.join(lib.directory, "v45.ipynb"))
        self.assertEqual([c.id for c in nb.cells], ["x", "cell-2", "cell-3-2", "cell-4", "cell-3"])
        self.assertEqual([c["source"] for c in (await lib.get("v45"))["cells"]], ["a", "b", "c", "d", "e"])

    async def test_raw_cells_metadata_and_outputs_are_kept(self) -> None:
        lib = library(self)
        notebook = v4([
            {"cell_type": "raw", "id": "r", "source": "raw text", "metadata": {"format": "text/x-rst"}},
            code("display('x')", id="c", metadata={"tags": ["setup"], "spin": {"options": {"timeout_s": 5}}},
                 execution_count=3, outputs=[{"output_type": "display_data", "data": {"text/plain": "'x'"},
                                              "metadata": {}}]),
        ], kernelspec={"name": "python3", "display_name": "Python 3", "language": "python"})
        await lib.save_ipynb("k", copy.deepcopy(notebook))
        nb = read_valid(os.path.join(lib.directory, "k.ipynb"))
        self.assertEqual(nb, nbformat.from_dict(notebook))
        got = await lib.get("k")
        self.assertEqual(got["cells"][0], {"id": "r", "type": "raw", "source": "raw text", "options": {}})
        self.assertEqual(got["cells"][1]["options"], {"timeout_s": 5})

    async def test_spin_run_output_imports(self) -> None:
        out = os.path.abspath(self.mktemp()) + ".ipynb"
        environ = {k: v for k, v in os.environ.items() if k not in ("SPIN_TOKEN", "SPIN_HOME")}
        stderr = io.StringIO()
        code_ = await cli(["run", fixture("mixed"), "-p", "service=api", "-p", "region=eu-1", "-o", out],
                          reactor, environ=environ, stdout=io.StringIO(), stderr=stderr)
        self.assertEqual(code_, 0, stderr.getvalue())
        with open(out) as f:
            executed = json.load(f)
        lib = library(self)
        saved = await lib.save_ipynb("ran", executed)
        nb = read_valid(os.path.join(lib.directory, "ran.ipynb"))
        self.assertEqual([o.output_type for o in nb.cells[2].outputs], ["stream", "display_data", "execute_result"])
        self.assertEqual(nb.cells[0].source, "# Runbook for api\nChecking **api** in eu-1.")
        got = await lib.get("ran")
        self.assertEqual(got["version"], saved["version"])
        # The templates, not what one run rendered: the notebook runs again as written.
        self.assertEqual(got["cells"][0]["source"], "# Runbook for {{service}}\nChecking **{{service}}** in {{region}}.")
        original = [ipynb.spin_cell(c, i, raw=True) for i, c in enumerate(nbformat.read(fixture("mixed"), 4).cells)]
        self.assertEqual(got["cells"], original)
        # Saving the cells back keeps the outputs of the cells that did not change.
        cells = got["cells"]
        cells[1] = {**cells[1], "source": "echo changed"}
        await lib.save("ran", cells, version=saved["version"])
        nb = read_valid(os.path.join(lib.directory, "ran.ipynb"))
        self.assertEqual(len(nb.cells[2].outputs), 3)
        self.assertEqual(nb.cells[2].execution_count, 2)
        self.assertEqual(nb.cells[1].outputs, [])  # changed: its old output is gone
        self.assertIn("run", nb.cells[2].metadata.spin)  # spin run's record of the cell stays


ids = st.one_of(
    st.none(),
    st.from_regex(r"\A[a-zA-Z0-9_-]{1,64}\Z"),
    st.text(min_size=1, max_size=20).filter(lambda t: "\x00" not in t),
    st.integers(min_value=-10**6, max_value=10**6),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-2**53, max_value=2**53) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
cells_strategy = st.lists(st.fixed_dictionaries(
    {"type": st.sampled_from(["python", "shell", "rest", "llm", "markdown", "raw", "prometheus"]),
     "source": st.text(max_size=40)},
    optional={"id": ids,
              "options": st.dictionaries(st.text(max_size=8), json_values, max_size=3),
              "output_variable": st.from_regex(r"\A[a-z_][a-z0-9_]{0,10}\Z").filter(lambda n: not reserved_name(n))},
), max_size=8).filter(lambda cells: len({str(c["id"]) for c in cells if c.get("id") is not None})
                      == len([c for c in cells if c.get("id") is not None]))


def expected(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for cell in cells:
        want = {"type": cell["type"], "source": cell["source"], "options": cell.get("options", {})}
        if "output_variable" in cell:
            want["output_variable"] = cell["output_variable"]
        if cell.get("id") is not None:
            want["id"] = str(cell["id"])
        out.append(want)
    return out


class RoundTripTests(unittest.TestCase):
    @settings(max_examples=200, deadline=None)
    @given(cells_strategy)
    def test_cells_to_ipynb_to_cells_is_lossless(self, cells: list[dict[str, Any]]) -> None:
        nb = ipynb.notebook_of(cells, None)
        text = ipynb.dumps(nb).decode("utf-8")
        back = ipynb.spin_cells(ipynb.parse(text, "round trip", upgrade=True), "round trip")
        got = [{k: v for k, v in c.items() if k != "id" or cells[i].get("id") is not None}
               for i, c in enumerate(back)]
        self.assertEqual(got, expected(cells))
        self.assertEqual(len({c["id"] for c in back}), len(back))
        nbformat.validate(nbformat.reads(text, as_version=nbformat.NO_CONVERT))
        # Twice over, nothing moves: the ids given the first time stay.
        again = ipynb.spin_cells(ipynb.notebook_of(back, None), "again")
        self.assertEqual(again, back)

    async def test_through_the_library(self) -> None:
        lib = library(self)
        cells = [{"id": "a b", "type": "rest", "source": "{}", "options": {"method": "POST", "json": {"x": [1, None]}}},
                 {"id": 5, "type": "prometheus", "source": "up", "output_variable": "up"},
                 {"type": "markdown", "source": "*{{up}}*\r\n"}]
        await lib.save("rt", cells)
        got = (await lib.get("rt"))["cells"]
        self.assertEqual(got, [{**e, "id": e.get("id", "cell-3")} for e in expected(cells)])
        read_valid(os.path.join(lib.directory, "rt.ipynb"))
