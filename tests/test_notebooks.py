"""The notebook library (spinrt.notebooks): names, versions, conflicts, atomic writes, concurrency."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile
import threading
import time
import unicodedata
from typing import Any

import nbformat
from twisted.internet import defer, reactor
from twisted.trial import unittest

from spinrt import ipynb
from spinrt.notebooks import NotebookError, NotebookLibrary

CELLS = [
    {"id": "intro", "type": "markdown", "source": "# Restart {{service}}"},
    {"id": "check", "type": "shell", "source": "systemctl status {{service}}", "options": {"target": "host"},
     "output_variable": "status"},
    {"type": "python", "source": "print(status.stdout)"},
]


def library(testcase: unittest.TestCase, sub: str = "notebooks") -> NotebookLibrary:
    home = tempfile.mkdtemp(prefix="spin-nb-", dir=os.path.abspath("."))
    return NotebookLibrary(os.path.join(home, sub), reactor)


def read_valid(path: str) -> nbformat.NotebookNode:
    nb = nbformat.read(path, as_version=nbformat.NO_CONVERT)
    nbformat.validate(nb)
    assert (nb.nbformat, nb.nbformat_minor) == (4, 5)
    return nb


class Failed(Exception):
    pass


async def error_of(pending: Any) -> NotebookError:
    try:
        await pending
    except NotebookError as e:
        return e
    raise Failed("no NotebookError")


class SaveGetTests(unittest.TestCase):
    async def test_save_get_list(self) -> None:
        lib = library(self)
        self.assertEqual(await lib.list(), [])  # the directory does not exist yet
        saved = await lib.save("restart", CELLS)
        self.assertEqual(saved["name"], "restart")
        self.assertEqual(stat.S_IMODE(os.stat(lib.directory).st_mode), 0o700)
        path = os.path.join(lib.directory, "restart.ipynb")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        nb = read_valid(path)
        self.assertEqual([c.id for c in nb.cells], ["intro", "check", "cell-3"])
        self.assertEqual(nb.cells[1].metadata.spin, {"type": "shell", "options": {"target": "host"},
                                                     "output_variable": "status"})
        self.assertNotIn("spin", nb.cells[2].metadata)  # python is the default type
        got = await lib.get("restart")
        self.assertEqual(got["version"], saved["version"])
        self.assertEqual(got["parameters"], [])
        self.assertEqual(got["cells"], [
            {"id": "intro", "type": "markdown", "source": "# Restart {{service}}", "options": {}},
            {"id": "check", "type": "shell", "source": "systemctl status {{service}}",
             "options": {"target": "host"}, "output_variable": "status"},
            {"id": "cell-3", "type": "python", "source": "print(status.stdout)", "options": {}},
        ])
        await lib.save("another", [])
        listed = await lib.list()
        self.assertEqual([n["name"] for n in listed], ["another", "restart"])
        self.assertEqual(listed[1]["version"], saved["version"])
        self.assertEqual(listed[1]["cell_count"], 3)
        self.assertEqual(listed[0]["cell_count"], 0)
        self.assertRegex(listed[1]["modified"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

    async def test_the_suffix_and_nfd_map_to_one_file(self) -> None:
        lib = library(self)
        nfd = unicodedata.normalize("NFD", "café")
        first = await lib.save(nfd + ".ipynb", CELLS)
        self.assertEqual(first["name"], "café")
        self.assertEqual(os.listdir(lib.directory), ["café.ipynb"])
        for name in ("café", nfd, "café.ipynb", nfd + ".ipynb"):
            self.assertEqual((await lib.get(name))["version"], first["version"])
        second = await lib.save("café", CELLS[:1], version=first["version"])
        self.assertEqual(os.listdir(lib.directory), ["café.ipynb"])
        renamed = await lib.rename(nfd, "crème.ipynb", version=second["version"])
        self.assertEqual(renamed, {"name": "crème", "version": second["version"]})
        self.assertEqual(os.listdir(lib.directory), ["crème.ipynb"])

    async def test_a_file_copied_in_with_an_nfd_name_is_found_and_kept_single(self) -> None:
        lib = library(self)
        await lib.save("x", [])
        nfd_file = os.path.join(lib.directory, unicodedata.normalize("NFD", "café.ipynb"))
        os.rename(os.path.join(lib.directory, "x.ipynb"), nfd_file)
        listed = await lib.list()
        self.assertEqual([n["name"] for n in listed], ["café"])
        got = await lib.get("café")
        saved = await lib.save("café", CELLS, version=got["version"])
        self.assertEqual(os.listdir(lib.directory), [os.path.basename(nfd_file)])
        self.assertEqual(len((await lib.get("café"))["cells"]), 3)
        # The NFC file, when both exist, is the one listed (once).
        await lib.save("other", [])
        os.rename(os.path.join(lib.directory, "other.ipynb"), os.path.join(lib.directory, "café.ipynb"))
        listed = await lib.list()
        self.assertEqual([n["name"] for n in listed], ["café"])
        self.assertNotEqual(listed[0]["version"], saved["version"])

    async def test_every_method_refuses_bad_names(self) -> None:
        lib = library(self)
        await lib.save("good", [])
        for bad in ("", "a/b", "..", ".", ".hidden", "a\\b", "a\x00b", "a\nb", " a", "x" * 201,
                    "a.ipynb.ipynb", ".ipynb", "../good", 7, None):
            calls = [lib.get(bad), lib.save(bad, []), lib.save_ipynb(bad, nbformat.v4.new_notebook()),
                     lib.rename(bad, "new"), lib.rename("good", bad), lib.delete(bad)]
            for call in calls:
                e = await error_of(call)
                self.assertEqual(e.code, "bad_request", repr(bad))
        self.assertEqual(sorted(os.listdir(lib.directory)), ["good.ipynb"])

    async def test_files_no_name_reaches_are_not_listed(self) -> None:
        lib = library(self)
        await lib.save("shown", [])
        for filename in (".hidden.ipynb", "a\\b.ipynb", "x.ipynb.ipynb", "notes.txt", " pad.ipynb"):
            with open(os.path.join(lib.directory, filename), "w") as f:
                f.write("{}")
        os.mkdir(os.path.join(lib.directory, "dir.ipynb"))
        self.assertEqual([n["name"] for n in await lib.list()], ["shown"])
        self.assertEqual((await error_of(lib.get("dir"))).code, "no_such_notebook")

    async def test_a_broken_file_is_listed_with_its_error_and_can_be_replaced(self) -> None:
        lib = library(self)
        await lib.save("broken", [])
        path = os.path.join(lib.directory, "broken.ipynb")
        with open(path, "wb") as f:
            f.write(b"{not json")
        (item,) = await lib.list()
        self.assertIsNone(item["cell_count"])
        self.assertIn("not a readable notebook", item["error"])
        e = await error_of(lib.get("broken"))
        self.assertEqual(e.code, "bad_request")
        self.assertIn("'broken' is not a readable notebook", e.message)
        with open(path, "wb") as f:
            f.write(b"\xff\xfe")
        self.assertIn("not UTF-8", (await error_of(lib.get("broken"))).message)
        saved = await lib.save("broken", CELLS)
        self.assertEqual((await lib.get("broken"))["version"], saved["version"])
        read_valid(path)

    async def test_parameters_are_kept_replaced_or_cleared(self) -> None:
        lib = library(self)
        region = [{"name": "region", "kind": "static", "options": ["eu", "us"]}]
        await lib.save("p", CELLS, region)
        self.assertEqual((await lib.get("p"))["parameters"], region)
        await lib.save("p", CELLS)  # None keeps them
        self.assertEqual((await lib.get("p"))["parameters"], region)
        nb = read_valid(os.path.join(lib.directory, "p.ipynb"))
        self.assertEqual(nb.metadata.spin.parameters, region)
        await lib.save("p", CELLS, [])
        self.assertEqual((await lib.get("p"))["parameters"], [])
        e = await error_of(lib.save("p", CELLS, [{"name": "x", "kind": "nope"}]))
        self.assertEqual(e.code, "bad_request")
        self.assertIn("'parameters[0].kind'", e.message)

    async def test_bad_cells_are_refused_and_nothing_written(self) -> None:
        lib = library(self)
        saved = await lib.save("n", CELLS)
        cases = [
            ("x", "'cells' must be a list"),
            ([5], "'cells[0]' must be an object"),
            ([{"source": "x"}], "'cells[0].type' must be a non-empty string"),
            ([{"type": "shell", "source": 5}], "'cells[0].source' must be a string"),
            ([{"type": "shell", "options": []}], "'cells[0].options' must be an object"),
            ([{"type": "shell", "output_variable": "a b"}], "'cells[0].output_variable' must be an identifier"),
            ([{"type": "shell", "output_variable": "end"}], "Go template keywords"),
            ([{"type": "shell", "id": "x" * 257}], "'cells[0].id' must be a string of 1-256 characters"),
            ([{"type": "shell", "id": ""}], "'cells[0].id' must be a string of 1-256"),
            ([{"type": "shell", "id": 1.5}], "'cells[0].id' must be a string or an integer"),
            ([{"type": "shell", "id": True}], "'cells[0].id' must be a string or an integer"),
            ([{"type": "shell", "id": "a"}, {"type": "shell", "id": "a"}], "'cells[1].id' 'a' is the id of cells[0] too"),
            ([{"type": "python", "outputs": [{"output_type": "bogus"}]}], "is not a valid notebook"),
        ]
        for cells, message in cases:
            e = await error_of(lib.save("n", cells))  # type: ignore[arg-type]
            self.assertEqual(e.code, "bad_request")
            self.assertIn(message, e.message)
        self.assertEqual((await lib.get("n"))["version"], saved["version"])
        self.assertEqual(os.listdir(lib.directory), ["n.ipynb"])

    async def test_integer_ids_and_generated_ids(self) -> None:
        lib = library(self)
        await lib.save("n", [{"type": "shell", "id": 7}, {"type": "shell"}, {"type": "shell", "id": "cell-2"}])
        self.assertEqual([c["id"] for c in (await lib.get("n"))["cells"]], ["7", "cell-2-2", "cell-2"])

    async def test_ids_nbformat_does_not_allow_survive_in_spin_metadata(self) -> None:
        lib = library(self)
        ids = ["a b", "é", "x" * 65, "x" * 256, "cell-1", "with.dot", "uuid:1234", "1"]
        await lib.save("n", [{"type": "shell", "id": i} for i in ids])
        self.assertEqual([c["id"] for c in (await lib.get("n"))["cells"]], ids)
        nb = read_valid(os.path.join(lib.directory, "n.ipynb"))
        self.assertEqual(len({c.id for c in nb.cells}), len(ids))
        self.assertEqual(nb.cells[0].metadata.spin.id, "a b")
        self.assertNotIn("id", nb.cells[4].metadata.get("spin", {}))

    async def test_a_hand_edited_file_with_one_id_twice(self) -> None:
        lib = library(self)
        await lib.save("n", [{"type": "shell", "id": "a b"}, {"type": "shell", "id": "c"}])
        path = os.path.join(lib.directory, "n.ipynb")
        nb = read_valid(path)
        nb.cells[1].metadata["spin"] = {"type": "shell", "id": "a b"}
        nbformat.write(nb, path)
        e = await error_of(lib.get("n"))
        self.assertEqual(e.code, "bad_request")
        self.assertIn("cells 1 and 2 have the same id 'a b'", e.message)

    async def test_io_happens_off_the_reactor_thread(self) -> None:
        lib = library(self)
        threads: list[bool] = []
        for method in ("_read", "_entries", "_find"):
            original = getattr(lib, method)

            def spy(*args: Any, _original: Any = original) -> Any:
                threads.append(threading.current_thread() is threading.main_thread())
                return _original(*args)

            setattr(lib, method, spy)
        write = ipynb.write_atomic

        def spy_write(*args: Any, **kw: Any) -> Any:
            threads.append(threading.current_thread() is threading.main_thread())
            return write(*args, **kw)

        self.patch(ipynb, "write_atomic", spy_write)
        saved = await lib.save("a", CELLS)
        await lib.get("a")
        await lib.list()
        renamed = await lib.rename("a", "b", saved["version"])
        await lib.delete("b", renamed["version"])
        self.assertTrue(threads)
        self.assertNotIn(True, threads)


class VersionTests(unittest.TestCase):
    async def test_every_write_changes_the_version(self) -> None:
        lib = library(self)
        versions = [(await lib.save("v", CELLS))["version"] for _ in range(5)]
        self.assertEqual(len(set(versions)), 5)  # the same content, written again: new versions
        imported = await lib.save_ipynb("v", nbformat.v4.new_notebook(), version=versions[-1])
        self.assertNotIn(imported["version"], versions)

    async def test_a_hand_edit_changes_the_version(self) -> None:
        lib = library(self)
        saved = await lib.save("v", CELLS)
        path = os.path.join(lib.directory, "v.ipynb")
        nb = read_valid(path)
        nb.cells[0].source = "edited by hand"
        nbformat.write(nb, path)  # in place: same inode
        got = await lib.get("v")
        self.assertNotEqual(got["version"], saved["version"])
        self.assertEqual(got["cells"][0]["source"], "edited by hand")
        e = await error_of(lib.save("v", [], version=saved["version"]))
        self.assertEqual((e.code, e.current), ("conflict", got["version"]))

    async def test_conflicts_write_nothing(self) -> None:
        lib = library(self)
        first = await lib.save("v", CELLS)
        second = await lib.save("v", CELLS[:1], version=first["version"])
        path = os.path.join(lib.directory, "v.ipynb")
        with open(path, "rb") as f:
            before = f.read()
        for call in (lib.save("v", [], version=first["version"]),
                     lib.save_ipynb("v", nbformat.v4.new_notebook(), version=first["version"]),
                     lib.rename("v", "w", version=first["version"]),
                     lib.delete("v", version=first["version"]),
                     lib.save("v", [], version="made-up")):
            e = await error_of(call)
            self.assertEqual(e.code, "conflict")
            self.assertEqual(e.current, second["version"])
            self.assertIn("has changed since that version; nothing was written", e.message)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), before)
        self.assertEqual(os.listdir(lib.directory), ["v.ipynb"])

    async def test_a_version_for_a_missing_notebook_is_a_conflict(self) -> None:
        lib = library(self)
        saved = await lib.save("gone", [])
        await lib.delete("gone", version=saved["version"])
        e = await error_of(lib.save("gone", CELLS, version=saved["version"]))
        self.assertEqual((e.code, e.current), ("conflict", None))
        self.assertIn("no longer exists", e.message)
        self.assertEqual(os.listdir(lib.directory), [])

    async def test_missing_notebooks(self) -> None:
        lib = library(self)
        for call in (lib.get("nope"), lib.rename("nope", "x"), lib.delete("nope"),
                     lib.rename("nope", "x", version="v"), lib.delete("nope", version="v")):
            e = await error_of(call)
            self.assertEqual(e.code, "no_such_notebook")
            self.assertEqual(e.message, "no notebook 'nope'")

    async def test_rename_never_replaces_another_notebook(self) -> None:
        lib = library(self)
        a = await lib.save("a", CELLS)
        b = await lib.save("b", CELLS[:1])
        e = await error_of(lib.rename("a", "b", version=a["version"]))
        self.assertEqual((e.code, e.current), ("conflict", a["version"]))
        self.assertIn("'b' exists already", e.message)
        self.assertEqual((await lib.get("b"))["version"], b["version"])
        self.assertEqual((await lib.get("a"))["version"], a["version"])
        # To its own name (any spelling of it): nothing to do.
        self.assertEqual(await lib.rename("a", "a.ipynb", version=a["version"]), a)
        renamed = await lib.rename("a", "c")
        self.assertEqual(renamed, {"name": "c", "version": a["version"]})
        self.assertEqual(sorted(os.listdir(lib.directory)), ["b.ipynb", "c.ipynb"])

    async def test_rename_without_hard_links(self) -> None:
        lib = library(self)
        a = await lib.save("a", CELLS)

        def no_links(src: str, dst: str) -> None:
            raise PermissionError(1, "Operation not permitted")

        self.patch(os, "link", no_links)
        self.assertEqual(await lib.rename("a", "z"), {"name": "z", "version": a["version"]})
        self.assertEqual(os.listdir(lib.directory), ["z.ipynb"])

    async def test_concurrent_saves_with_one_version(self) -> None:
        lib = library(self)
        base = await lib.save("c", CELLS)
        results = await defer.DeferredList(
            [defer.Deferred.fromCoroutine(lib.save("c", [{"type": "shell", "source": str(i)}],
                                                   version=base["version"])) for i in range(20)],
            consumeErrors=True)
        won = [r for ok, r in results if ok]
        lost = [r.value for ok, r in results if not ok]
        self.assertEqual(len(won), 1)
        self.assertEqual(len(lost), 19)
        self.assertTrue(all(isinstance(e, NotebookError) and e.code == "conflict" for e in lost))
        self.assertTrue(all(e.current == won[0]["version"] for e in lost))
        self.assertEqual((await lib.get("c"))["version"], won[0]["version"])

    async def test_concurrent_saves_without_versions(self) -> None:
        lib = library(self)
        results = await defer.gatherResults(
            [defer.Deferred.fromCoroutine(lib.save(f"c{i % 3}", [{"type": "shell", "source": str(i)}]))
             for i in range(30)])
        self.assertEqual(len({r["version"] for r in results}), 30)
        self.assertEqual(sorted(os.listdir(lib.directory)), ["c0.ipynb", "c1.ipynb", "c2.ipynb"])
        for name in ("c0", "c1", "c2"):
            read_valid(os.path.join(lib.directory, name + ".ipynb"))
            last = [r for r in results if r["name"] == name][-1]
            self.assertEqual((await lib.get(name))["version"], last["version"])


CRASH = """
import os, signal, sys
from spinrt import ipynb
def crash(src, dst):
    os.kill(os.getpid(), signal.SIGKILL)
os.replace = crash
ipynb.write_atomic(sys.argv[1], b"new content that must never be seen")
"""


class AtomicWriteTests(unittest.TestCase):
    async def test_a_failed_rename_leaves_the_old_file(self) -> None:
        lib = library(self)
        saved = await lib.save("a", CELLS)
        path = os.path.join(lib.directory, "a.ipynb")
        with open(path, "rb") as f:
            before = f.read()
        real = os.replace

        def failing(src: str, dst: str) -> None:
            if dst == path:
                raise OSError(28, "No space left on device")
            real(src, dst)

        self.patch(os, "replace", failing)
        with self.assertRaises(OSError):
            await lib.save("a", [])
        with open(path, "rb") as f:
            self.assertEqual(f.read(), before)
        self.assertEqual(os.listdir(lib.directory), ["a.ipynb"])  # no temporary file left
        self.assertEqual((await lib.get("a"))["version"], saved["version"])

    async def test_a_failed_fsync_leaves_the_old_file(self) -> None:
        lib = library(self)
        saved = await lib.save("a", CELLS)

        def failing(fd: int) -> None:
            raise OSError(5, "Input/output error")

        self.patch(os, "fsync", failing)
        with self.assertRaises(OSError):
            await lib.save("a", [])
        self.assertEqual(os.listdir(lib.directory), ["a.ipynb"])
        self.assertEqual((await lib.get("a"))["version"], saved["version"])

    async def test_a_crash_between_write_and_rename(self) -> None:
        lib = library(self)
        saved = await lib.save("a", CELLS)
        path = os.path.join(lib.directory, "a.ipynb")
        env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        done = subprocess.run([sys.executable, "-c", CRASH, path], env=env, capture_output=True)
        self.assertEqual(done.returncode, -9, done.stderr)
        leftovers = [n for n in os.listdir(lib.directory) if n != "a.ipynb"]
        self.assertEqual(len(leftovers), 1)
        self.assertRegex(leftovers[0], r"^\.spin-.*\.tmp$")
        # The old notebook, whole; the temporary file is never a notebook of the library.
        self.assertEqual((await lib.get("a"))["version"], saved["version"])
        read_valid(path)
        self.assertEqual([n["name"] for n in await lib.list()], ["a"])
        # Once old enough, listing removes it.
        old = time.time() - 7200
        os.utime(os.path.join(lib.directory, leftovers[0]), (old, old))
        await lib.list()
        self.assertEqual(os.listdir(lib.directory), ["a.ipynb"])
