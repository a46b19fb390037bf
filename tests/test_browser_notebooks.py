"""The notebook library and the session list in a real Chromium against a real
runtime (tests/browser.py): create, rename, delete and import notebooks and
see SPIN_HOME/notebooks change; open one with parameters; join an open
session; close a session; download a session's .ipynb and validate it.
"""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path
from typing import Any

import nbformat
from twisted.trial import unittest

from spinrt.cli import notebook as cli_notebook

from . import browser
from .browser import TOKEN, Browser, Runtime, in_browser, on_reactor, ready
from .support import Client

WAIT_MS = 15000
SAMPLES = Path(__file__).resolve().parent / "notebooks"


def expect(locator: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def home(b: Browser, rt: Runtime) -> Any:
    page = b.page()
    page.goto(rt.url + "#token=" + TOKEN)
    ready(page)
    page.locator("#notebooks").wait_for(timeout=WAIT_MS)
    return page


def notebook(page: Any, name: str) -> Any:
    return page.locator(f"li[data-notebook={json.dumps(name, ensure_ascii=False)}]")


def file_payload(name: str, content: str | bytes) -> dict[str, Any]:
    data = content.encode("utf-8") if isinstance(content, str) else content
    return {"name": name, "mimeType": "application/x-ipynb+json", "buffer": data}


def spin_run_output() -> str:
    """mixed.ipynb as `spin run` writes it after a run: outputs, the markdown
    rendered with its template in metadata.spin.source, metadata.spin.run."""
    nb = cli_notebook.load(str(SAMPLES / "mixed.ipynb"))
    runs = cli_notebook.plan(nb)
    builder = cli_notebook.OutputBuilder()
    events = {
        "markdown": [{"event": "display", "data": {"text/markdown": "# Runbook for db\nChecking **db** in eu."}}],
        "shell": [{"event": "stream", "name": "stdout", "text": "hello from db\n"},
                  {"event": "stream", "name": "stderr", "text": "to-stderr\n"}],
        "python": [{"event": "stream", "name": "stdout", "text": "python sees db eu\n"},
                   {"event": "display", "data": {"text/html": "<b>bold</b>", "text/plain": "<HTML>"}},
                   {"event": "result", "data": {"text/plain": "42"}}],
    }
    for run in runs:
        builder.started(run)
        for event in events.get(run.type, []):
            builder.event(run, copy.deepcopy(event))
        builder.finished(run, {"status": "ok", "duration_ms": 12})
    return nbformat.writes(cli_notebook.executed(nb, runs))


class NotebookBrowserTest(unittest.TestCase):
    timeout = 240

    async def setUp(self) -> None:
        browser.require(self)
        self.rt = await Runtime(self).start()
        self.client = await Client.connect(self.rt.ws)
        self.addCleanup(self.client.close)
        self.library = Path(self.rt.home) / "notebooks"

    async def ok(self, op: str, **params: Any) -> dict[str, Any]:
        reply = await self.client.request(op, **params)
        assert reply["ok"], reply
        return reply

    def files(self) -> set[str]:
        return {p.name for p in self.library.glob("*.ipynb")}

    def cells_on_disk(self, name: str) -> list[Any]:
        nb = nbformat.read(str(self.library / f"{name}.ipynb"), as_version=4)
        nbformat.validate(nb)
        return list(nb.cells)


class Library(NotebookBrowserTest):
    async def test_create_rename_delete(self) -> None:
        def scenario(b: Browser) -> None:
            page = home(b, self.rt)
            expect(page.locator("#no-notebooks")).to_be_visible(timeout=WAIT_MS)
            page.fill("#new-notebook-name", "  disk full  ")
            page.click("#create-notebook")
            item = notebook(page, "disk full")
            expect(item.locator("[data-field=cells]")).to_have_text("0 cells", timeout=WAIT_MS)
            assert self.files() == {"disk full.ipynb"}, self.files()
            assert self.cells_on_disk("disk full") == []
            assert page.input_value("#new-notebook-name") == ""
            before = (self.library / "disk full.ipynb").read_bytes()

            # The same name again: refused here, the file untouched, another name offered.
            page.fill("#new-notebook-name", "disk full")
            page.click("#create-notebook")
            expect(page.locator("#new-notebook-error")).to_contain_text("exists already", timeout=WAIT_MS)
            expect(page.locator("#new-notebook-error")).to_contain_text("disk full (2)")
            assert (self.library / "disk full.ipynb").read_bytes() == before
            # A name the runtime refuses: its own words.
            page.fill("#new-notebook-name", "a/b")
            page.click("#create-notebook")
            expect(page.locator("#new-notebook-error")).to_contain_text("may not contain '/'", timeout=WAIT_MS)
            assert self.files() == {"disk full.ipynb"}

            # Rename (Esc cancels first).
            item.locator("[data-action=rename]").click()
            item.locator(".rename-field").press("Escape")
            expect(item.locator(".rename-field")).to_have_count(0)
            item.locator("[data-action=rename]").click()
            item.locator(".rename-field").fill("disk full — eu")
            item.locator("[data-action=rename-save]").click()
            renamed = notebook(page, "disk full — eu")
            expect(renamed).to_have_count(1, timeout=WAIT_MS)
            expect(item).to_have_count(0)
            assert self.files() == {"disk full — eu.ipynb"}, self.files()
            assert (self.library / "disk full — eu.ipynb").read_bytes() == before

            # Renaming onto a taken name: the runtime's conflict, nothing renamed.
            on_reactor(self.ok, "notebook.save", name="other", cells=[])
            expect(notebook(page, "other")).to_have_count(1, timeout=WAIT_MS)  # the list follows the library
            renamed.locator("[data-action=rename]").click()
            renamed.locator(".rename-field").fill("other")
            renamed.locator("[data-action=rename-save]").click()
            expect(renamed.locator("[data-error]")).to_contain_text("exists already", timeout=WAIT_MS)
            assert self.files() == {"disk full — eu.ipynb", "other.ipynb"}, self.files()
            renamed.locator("[data-action=cancel]").click()

            # Delete: asked first; "Keep it" keeps it.
            renamed.locator("[data-action=delete]").click()
            renamed.locator("[data-action=cancel]").click()
            assert self.files() == {"disk full — eu.ipynb", "other.ipynb"}
            renamed.locator("[data-action=delete]").click()
            renamed.locator("[data-action=confirm-delete]").click()
            expect(renamed).to_have_count(0, timeout=WAIT_MS)
            assert self.files() == {"other.ipynb"}, self.files()
            assert b.problems == [], b.problems

        await in_browser(scenario)

    async def test_a_notebook_changed_meanwhile_is_not_lost(self) -> None:
        """Delete sends the version the list showed: a notebook someone saved
        since is not deleted (conflict), and the list catches up."""
        await self.ok("notebook.save", name="shared", cells=[])

        def scenario(b: Browser) -> None:
            page = home(b, self.rt)
            item = notebook(page, "shared")
            expect(item).to_have_count(1, timeout=WAIT_MS)
            # The page stops polling (a hidden tab does), so it still holds
            # the version it showed when someone saves the notebook.
            page.evaluate("() => Object.defineProperty(document, 'visibilityState', { value: 'hidden' })")
            shown = item.get_attribute("data-version")
            item.locator("[data-action=delete]").click()
            on_reactor(self.ok, "notebook.save", name="shared",
                       cells=[{"id": "c", "type": "shell", "source": "echo kept"}])
            assert item.get_attribute("data-version") == shown
            item.locator("[data-action=confirm-delete]").click()
            expect(item.locator("[data-error]")).to_contain_text("has changed since that version", timeout=WAIT_MS)
            expect(item.locator("[data-field=cells]")).to_have_text("1 cell", timeout=WAIT_MS)  # the list caught up
            assert item.get_attribute("data-version") != shown
            assert self.files() == {"shared.ipynb"}
            assert len(self.cells_on_disk("shared")) == 1
            # Asked again, with the version it shows now: deleted.
            item.locator("[data-action=confirm-delete]").click()
            expect(item).to_have_count(0, timeout=WAIT_MS)
            assert self.files() == set()
            assert b.problems == [], b.problems

        await in_browser(scenario)


class Import(NotebookBrowserTest):
    async def test_import_files(self) -> None:
        mixed = (SAMPLES / "mixed.ipynb").read_bytes()
        executed = spin_run_output()

        def scenario(b: Browser) -> None:
            page = home(b, self.rt)
            page.set_input_files("#import-notebook", files=[file_payload("mixed.ipynb", mixed)])
            expect(page.locator("#import-done")).to_have_text("Imported mixed.ipynb as “mixed”.", timeout=WAIT_MS)
            expect(notebook(page, "mixed").locator("[data-field=cells]")).to_have_text("5 cells")
            assert self.files() == {"mixed.ipynb"}

            # The name is taken: another name is offered, or replacing it.
            page.set_input_files("#import-notebook", files=[file_payload("mixed.ipynb", executed)])
            expect(page.locator("#import-conflict")).to_be_visible(timeout=WAIT_MS)
            assert page.input_value("#import-name") == "mixed (2)"
            page.click("#import-as")
            expect(page.locator("#import-done")).to_have_text("Imported mixed.ipynb as “mixed (2)”.", timeout=WAIT_MS)
            expect(page.locator("#import-conflict")).to_have_count(0)
            assert self.files() == {"mixed.ipynb", "mixed (2).ipynb"}
            page.set_input_files("#import-notebook", files=[file_payload("mixed.ipynb", executed)])
            page.click("#import-replace")
            expect(page.locator("#import-done")).to_have_text("Imported mixed.ipynb as “mixed”.", timeout=WAIT_MS)
            assert self.files() == {"mixed.ipynb", "mixed (2).ipynb"}

            # Files that are not notebooks: a clear error, nothing written.
            for name, content, says in [
                ("notes.ipynb", "this is not JSON", "notes.ipynb is not a notebook: it is not JSON"),
                ("list.ipynb", "[1, 2]", "list.ipynb is not a notebook: a notebook is a JSON object"),
                ("bad.ipynb", json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": "x"}),
                 "Cannot import bad.ipynb: 'ipynb' is not a valid notebook (at cells)"),
                ("old.ipynb", json.dumps({"cells": []}), "Cannot import old.ipynb: 'ipynb' is not a readable notebook"),
                ("types.ipynb", json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [
                    {"cell_type": "code", "id": "a", "source": "", "metadata": {"spin": {"type": 3}},
                     "outputs": [], "execution_count": None}]}),
                 "Cannot import types.ipynb: 'ipynb': cell 1: metadata.spin.type must be a cell type name"),
            ]:
                page.set_input_files("#import-notebook", files=[file_payload(name, content)])
                expect(page.locator("#import-error")).to_contain_text(says, timeout=WAIT_MS)
                expect(page.locator("#import-done")).to_have_count(0)
            assert self.files() == {"mixed.ipynb", "mixed (2).ipynb"}, self.files()
            assert b.problems == [], b.problems

        await in_browser(scenario)
        # What spin run wrote comes in with its outputs, and reads back as the same cells.
        imported = (await self.ok("notebook.get", name="mixed"))["notebook"]
        original = [c for c in cli_notebook.plan(cli_notebook.load(str(SAMPLES / "mixed.ipynb")))]
        self.assertEqual([c["source"] for c in imported["cells"] if c["type"] != "raw"],
                         [r.cell["source"] for r in original])
        on_disk = self.cells_on_disk("mixed")
        self.assertEqual(on_disk[1].outputs[0].text, "hello from db\n")
        self.assertEqual(on_disk[0].source, "# Runbook for db\nChecking **db** in eu.")
        self.assertEqual(on_disk[0].metadata.spin.source, imported["cells"][0]["source"])


PARAMETERS = [
    {"name": "ticket", "kind": "input", "label": "Ticket", "default": "T-1"},
    {"name": "region", "kind": "static", "options": ["eu", "us"], "default": "us"},
    {"name": "host", "kind": "code_python", "code": "['alpha', 'beta']"},
]


class Sessions(NotebookBrowserTest):
    async def variables(self, sid: str) -> dict[str, str]:
        listed = (await self.ok("variables.list", session=sid))["variables"]
        return {name: v["preview"] for name, v in listed.items()}

    async def test_open_a_notebook_with_parameters(self) -> None:
        cells = [{"id": "a", "type": "shell", "source": "echo {{ticket}} {{region}} {{host}}"}]
        await self.ok("notebook.save", name="deploy", parameters=PARAMETERS, cells=cells)

        def scenario(b: Browser) -> str:
            page = home(b, self.rt)
            notebook(page, "deploy").locator("[data-action=open]").click()
            dialog = page.locator("#open-notebook[data-step=parameters]")
            expect(dialog).to_be_visible(timeout=30000)  # code_python options come from a kernel
            assert page.input_value("#param-ticket") == "T-1"
            assert page.input_value("#param-region") == "us"
            assert page.locator("#param-region option").all_inner_texts() == ["eu", "us"]
            assert page.locator("#param-host option").all_inner_texts() == ["alpha", "beta"]
            expect(page.locator("[data-parameter=ticket] label")).to_have_text("Ticket")
            # Someone narrows the region's options meanwhile: the runtime's
            # refusal shows on that field, and nothing is created.
            on_reactor(self.ok, "notebook.save", name="deploy", cells=cells, parameters=[
                PARAMETERS[0], {**PARAMETERS[1], "options": ["us"], "default": "us"}, PARAMETERS[2]])
            page.fill("#param-ticket", "INC-9")
            page.select_option("#param-region", "eu")
            page.select_option("#param-host", "beta")
            page.fill("#session-name", "INC-9 deploy")
            page.click("#start-session")
            expect(page.locator("#param-region-error")).to_contain_text("must be one of 'us'", timeout=WAIT_MS)
            assert page.locator("#param-region").get_attribute("aria-invalid") == "true"
            assert "#session=" not in page.url, page.url
            page.select_option("#param-region", "us")
            page.click("#start-session")
            page.wait_for_url(re.compile(r"#session=.+"), timeout=WAIT_MS)
            expect(page.locator("#open-notebook")).to_have_count(0)
            assert b.problems == [], b.problems
            return page.url.split("#session=", 1)[1]

        sid = await in_browser(scenario)
        listed = {s["id"]: s for s in (await self.ok("session.list"))["sessions"]}
        self.assertEqual(list(listed), [sid])  # the refused try created nothing
        self.assertEqual((listed[sid]["notebook"], listed[sid]["name"]), ("deploy", "INC-9 deploy"))
        self.assertEqual(await self.variables(sid), {"ticket": "INC-9", "region": "us", "host": "beta"})

    async def test_join_an_open_session_or_start_another(self) -> None:
        await self.ok("notebook.save", name="triage", cells=[{"id": "a", "type": "shell", "source": "echo hi"}])
        sid = (await self.ok("session.create", notebook="triage", name="morning triage"))["session"]["id"]
        closed = (await self.ok("session.create", notebook="triage", name="yesterday"))["session"]["id"]
        await self.ok("session.close", session=closed)

        def scenario(b: Browser) -> str:
            page = home(b, self.rt)
            notebook(page, "triage").locator("[data-action=open]").click()
            expect(page.locator("#open-notebook[data-step=join]")).to_be_visible(timeout=WAIT_MS)
            choice = page.locator(f"#open-notebook li[data-session-id='{sid}']")
            expect(choice.locator("[data-client]")).to_have_text("owner")  # the test's client is attached
            expect(page.locator(f"#open-notebook li[data-session-id='{closed}']")).to_have_count(0)
            choice.locator("[data-action=join]").click()
            page.wait_for_url(f"{self.rt.url}#session={sid}", timeout=WAIT_MS)
            # Back home, the other way: a new session of it.
            page.goto(self.rt.url + "#")
            notebook(page, "triage").locator("[data-action=open]").click()
            page.click("#start-new-session")
            page.wait_for_url(re.compile(r"#session=(?!" + re.escape(sid) + ").+"), timeout=WAIT_MS)
            assert b.problems == [], b.problems
            return page.url.split("#session=", 1)[1]

        new = await in_browser(scenario)
        listed = {s["id"]: s for s in (await self.ok("session.list"))["sessions"]}
        self.assertEqual(set(listed), {sid, closed, new})
        self.assertEqual((listed[new]["notebook"], listed[new]["state"]), ("triage", "open"))

    async def test_the_session_list_close_and_download(self) -> None:
        await self.ok("notebook.save", name="checks", cells=[
            {"id": "sh", "type": "shell", "source": "echo from shell; echo oops >&2"},
            {"id": "py", "type": "python", "source": "print('from python')\n6 * 7"},
        ])
        sid = (await self.ok("session.create", notebook="checks", name="café check"))["session"]["id"]
        runs = (await self.ok("cells.run", session=sid, cell_ids=["sh", "py"]))["runs"]
        await self.client.wait_for(lambda m: m.get("event") == "run.finished" and m.get("run") == runs[-1], 60)
        other = (await self.ok("session.create", name="plain"))["session"]["id"]

        def scenario(b: Browser) -> tuple[str, str]:
            page = home(b, self.rt)
            row = page.locator(f"li[data-session-id='{sid}']")
            expect(row.locator("[data-field=notebook]")).to_have_text("checks", timeout=WAIT_MS)
            expect(row.locator("[data-field=clients] [data-client]")).to_have_text("owner")
            expect(page.locator(f"li[data-session-id='{other}'] [data-field=notebook]")).to_have_count(0)
            with page.expect_download(timeout=WAIT_MS) as info:
                row.locator("[data-action=download]").click()
            download = info.value
            body = Path(download.path()).read_text(encoding="utf-8")
            # Close it: asked first, then closed, and still listed and openable.
            row.locator("[data-action=close]").click()
            row.locator("[data-action=cancel]").click()
            row.locator("[data-action=close]").click()
            row.locator("[data-action=confirm-close]").click()
            expect(row).to_have_attribute("data-state", "closed", timeout=WAIT_MS)
            expect(row.locator("[data-action=close]")).to_have_count(0)
            expect(row.locator("[data-action=download]")).to_have_count(1)
            expect(page.locator(f"li[data-session-id='{other}'] [data-action=close]")).to_have_count(1)
            row.locator("a").click()
            page.wait_for_url(f"{self.rt.url}#session={sid}", timeout=WAIT_MS)
            assert b.problems == [], b.problems
            return download.suggested_filename, body

        filename, body = await in_browser(scenario)
        self.assertEqual(filename, "café check.ipynb")
        nb = nbformat.reads(body, as_version=nbformat.NO_CONVERT)
        nbformat.validate(nb)
        sh, py = nb.cells
        self.assertEqual([(o.name, o.text) for o in sh.outputs], [("stdout", "from shell\n"), ("stderr", "oops\n")])
        self.assertEqual({o.output_type for o in py.outputs}, {"stream", "execute_result"})
        states = {s["id"]: s["state"] for s in (await self.ok("session.list"))["sessions"]}
        self.assertEqual(states, {sid: "closed", other: "open"})


class Actions(NotebookBrowserTest):
    """notebook_actions.js's saveSessionToNotebook and downloadSessionNotebook,
    as the notebook view's toolbar calls them (a store built in the page)."""

    async def test_save_to_notebook_and_download(self) -> None:
        sid = (await self.ok("session.create", name="saved"))["session"]["id"]
        await self.ok("cell.set", session=sid, cell={"id": "a", "type": "shell", "source": "echo one"})

        def scenario(b: Browser) -> dict[str, Any]:
            page = home(b, self.rt)
            base = page.evaluate("() => document.querySelector('script[type=module]').src.replace(/app\\/main\\.js$/, '')")
            script = """async ([base, token, sid]) => {
                const { SpinClient } = await import(base + 'app/client.js');
                const actions = await import(base + 'app/notebook_actions.js');
                const client = new SpinClient(token);
                const opened = new Promise((resolve) => client.addEventListener('open', resolve, { once: true }));
                client.connect();
                await opened;
                const store = { client, sessions: { value: [] } };
                const first = await actions.saveSessionToNotebook(store, sid, 'from session');
                const again = await actions.saveSessionToNotebook(store, sid, 'from session', first);
                let conflict = null;
                try {
                    await actions.saveSessionToNotebook(store, sid, 'from session', first);
                } catch (e) {
                    conflict = { code: e.code, current: e.details.current, message: e.message };
                }
                const name = await actions.downloadSessionNotebook(store, sid, 'mine.ipynb');
                let missing = null;
                try {
                    await actions.downloadSessionNotebook(store, 'ss_nope');
                } catch (e) {
                    missing = { code: e.code, message: e.message };
                }
                client.close();
                return { first, again, conflict, name, missing };
            }"""
            with page.expect_download(timeout=WAIT_MS) as info:
                result = page.evaluate(script, [base, TOKEN, sid])
            result["file"] = info.value.suggested_filename
            result["body"] = Path(info.value.path()).read_text(encoding="utf-8")
            # The one download that fails (ss_nope) is the only problem.
            assert b.problems == ["console: Failed to load resource: the server responded with a status of 404 (Not Found)"], \
                b.problems
            return result

        result = await in_browser(scenario)
        self.assertNotEqual(result["first"], result["again"])
        self.assertEqual(result["conflict"]["code"], "conflict")
        self.assertEqual(result["conflict"]["current"], result["again"])
        self.assertEqual((result["name"], result["file"]), ("mine.ipynb", "mine.ipynb"))
        nbformat.validate(nbformat.reads(result["body"], as_version=4))
        self.assertEqual(result["missing"]["code"], "not_found")
        self.assertIn("ss_nope", result["missing"]["message"])
        self.assertEqual([c["source"] for c in (await self.ok("notebook.get", name="from session"))["notebook"]["cells"]],
                         ["echo one"])
        self.assertTrue(os.path.exists(self.library / "from session.ipynb"))
