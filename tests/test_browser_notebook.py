"""The notebook view in a real Chromium against a real runtime (issue 13:
"Cells", "Editing", "Running", "Together", "Keyboard").

Text goes into editors with ``keyboard.insert_text`` (one input event, as a
paste): typed key by key, CodeMirror would close brackets and indent as a
person expects, which is right for people and noise for a test.
"""

from __future__ import annotations

import os
import re
from typing import Any

from . import browser
from .browser import TOKEN, Browser, Runtime, in_browser, on_reactor
from .sshd import make_key
from .support import Client
from .test_browser_ui import WAIT_MS, BrowserTest, expect_text, ready

CELLS = "#cells > [data-cell-id]"


def open_session(b: Browser, url: str, sid: str, context: Any = None) -> Any:
    page = b.page(context)
    page.goto(f"{url}#session={sid}&token={TOKEN}")
    ready(page)
    page.locator(f"#notebook[data-session-id='{sid}']").wait_for(timeout=WAIT_MS)
    page.locator("#cells[aria-busy=false]").wait_for(timeout=WAIT_MS)
    return page


def nth(page: Any, n: int) -> Any:
    return page.locator(CELLS).nth(n)


def add(page: Any, kind: str) -> Any:
    """Adds a cell of this type at the end; returns its locator (in edit mode)."""
    before = page.locator(CELLS).count()
    page.click(f"[data-add-type={kind}]")
    page.locator(CELLS).nth(before).wait_for(timeout=WAIT_MS)
    cell = nth(page, before)
    cell.locator(".cm-content").wait_for(timeout=WAIT_MS)
    return cell


def write(page: Any, cell: Any, text: str) -> None:
    cell.locator(".cm-content").click()
    page.keyboard.press("Control+a")
    page.keyboard.insert_text(text)


def status(cell: Any, value: str, timeout: int = WAIT_MS) -> None:
    from playwright.sync_api import expect

    expect(cell).to_have_attribute("data-run-status", value, timeout=timeout)


def editor_focused(page: Any) -> None:
    """Waits until an editor has the keyboard (a new cell opens in edit mode)."""
    page.wait_for_function("() => !!(document.activeElement && document.activeElement.closest('.cm-editor'))",
                           timeout=WAIT_MS)


def ids(page: Any) -> list[str]:
    return page.locator(CELLS).evaluate_all("els => els.map(e => e.dataset.cellId)")


class Runbook(BrowserTest):
    async def test_three_cells_and_a_colleague_in_a_second_browser(self) -> None:
        """Issue 13's "done when": write and run a three-cell runbook, and
        watch a colleague in a second browser run the next cell."""
        rt = await self.runtime()
        client = await self.other_client(rt)

        def scenario(b: Browser) -> str:
            page = b.page()
            page.goto(rt.url + "#token=" + TOKEN)
            ready(page)
            page.fill("#new-session-name", "runbook")
            page.click("#new-session")
            page.locator("#notebook #no-cells").wait_for(timeout=WAIT_MS)
            sid = page.url.split("#session=", 1)[1]

            md = add(page, "markdown")
            write(page, md, "# Disk check\nFor *on-call*.")
            page.keyboard.press("Control+Enter")
            status(md, "ok")
            page.keyboard.press("Escape")  # leave the editor: the markdown shows rendered
            expect_text(page, f"{CELLS}:nth-child(1) [data-output] h1", "Disk check")

            sh = add(page, "shell")
            write(page, sh, "echo disk-$((6 * 7))")
            page.keyboard.press("Shift+Enter")  # runs, and (last cell) adds one below
            status(sh, "ok")
            expect_text(page, f"{CELLS}:nth-child(2) [data-output]", "disk-42")
            expect_text(page, f"{CELLS}:nth-child(2) .run-state", r"Done .*ms|Done .*s")

            py = nth(page, 2)  # the cell Shift+Enter added, in edit mode
            py.locator(".cm-content").wait_for(timeout=WAIT_MS)
            py.locator("select[data-field=type]").select_option("python")
            expect_text(page, f"{CELLS}:nth-child(3) select[data-field=type] option:checked", "python")
            write(page, py, "answer = 6 * 7\nprint('py', answer)")
            page.keyboard.press("Control+Enter")
            status(py, "ok", timeout=60000)  # a kernel starts (no warm pool in tests)
            expect_text(page, f"{CELLS}:nth-child(3) [data-output]", "py 42")

            # A colleague opens the same session: the cells, their sources and outputs are there.
            other = open_session(b, rt.url, sid, b.context())
            expect_text(other, f"{CELLS}:nth-child(2) [data-output]", "disk-42")
            expect_text(other, f"{CELLS}:nth-child(3) .cm-content", re.escape("answer = 6 * 7"))
            assert other.locator(CELLS).count() == 3
            expect_text(page, "#presence", "owner.*owner")  # both attached (one token: one name)

            # The colleague adds and runs the next cell; the first browser sees the edit and the run.
            nxt = add(other, "shell")
            write(other, nxt, "echo from-the-colleague")
            other.keyboard.press("Control+Enter")
            status(nxt, "ok")
            fourth = nth(page, 3)
            expect_text(page, f"{CELLS}:nth-child(4) .cm-content", "from-the-colleague")
            status(fourth, "ok")
            expect_text(page, f"{CELLS}:nth-child(4) [data-output]", "from-the-colleague")
            expect_text(page, f"{CELLS}:nth-child(4) .run-state", "by owner")

            # An edit alone (no run) reaches the other browser after the pause.
            md.locator("[data-output]").dblclick()  # a rendered markdown cell opens for editing
            write(page, md, "# Disk check, edited")
            # The teammate's markdown cell shows the new text (its run's output was of the old one).
            expect_text(other, f"{CELLS}:nth-child(1) [data-markdown] h1", "Disk check, edited")
            assert b.problems == [], b.problems
            return sid

        sid = await in_browser(scenario)
        document = (await client.request("session.document", session=sid))["document"]
        self.assertEqual([c["type"] for c in document["cells"]], ["markdown", "shell", "python", "shell"])
        self.assertEqual(document["cells"][0]["source"], "# Disk check, edited")

    async def test_a_reload_in_the_middle_of_a_run_loses_nothing(self) -> None:
        rt = await self.runtime()
        client = await self.other_client(rt)
        sid = (await client.request("session.create", name="slow"))["session"]["id"]
        script = "for i in 1 2 3 4 5 6; do echo line-$i; sleep 0.4; done"
        await client.request("cell.set", session=sid, cell={"id": "slow", "type": "shell", "source": script})

        def scenario(b: Browser) -> None:
            page = open_session(b, rt.url, sid)
            cell = page.locator("[data-cell-id=slow]")
            cell.locator("[data-action=run]").click()
            expect_text(page, "[data-cell-id=slow] [data-output]", "line-2")
            status(cell, "running")
            page.reload()
            ready(page)
            cell = page.locator("[data-cell-id=slow]")
            status(cell, "ok")
            text = cell.locator("[data-output]").inner_text()
            assert [line for line in text.splitlines() if line.startswith("line-")] == [
                f"line-{i}" for i in range(1, 7)], text
            expect_text(page, "[data-cell-id=slow] .run-state", r"Done \d")
            assert b.problems == [], b.problems

        await in_browser(scenario)


class LongNotebook(BrowserTest):
    async def test_editors_come_with_the_first_screen_and_on_demand(self) -> None:
        """A long notebook opens at the cost of its first screen: the first
        cell has its editor at once, the cells near the screen get theirs one
        per task, and a cell far below shows its source as text until it
        comes near or is clicked, which makes its editor there and then."""
        rt = await self.runtime()
        client = await self.other_client(rt)
        sid = (await client.request("session.create", name="long"))["session"]["id"]
        after = None
        for i in range(40):
            cell = {"id": f"c{i:02d}", "type": "shell", "source": f"echo step-{i}"}
            await client.request("cell.set", session=sid, cell=cell, after=after)
            after = cell["id"]

        def scenario(b: Browser) -> None:
            page = open_session(b, rt.url, sid)
            page.locator("[data-cell-id=c00] .cm-content").wait_for(timeout=WAIT_MS)
            # Every cell in view gets its editor; the ones far below do not.
            page.wait_for_function("""() => [...document.querySelectorAll('#cells > [data-cell-id]')]
                .filter((c) => c.getBoundingClientRect().top < innerHeight)
                .every((c) => c.querySelector('.cm-content'))""", timeout=WAIT_MS)
            last = page.locator("[data-cell-id=c39]")
            assert last.locator(".cm-content").count() == 0
            expect_text(page, "[data-cell-id=c39] [data-static-source]", "echo step-39")
            # A click on the text makes the editor, with the keyboard in it.
            last.locator("[data-static-source]").click()
            last.locator(".cm-content").wait_for(timeout=WAIT_MS)
            editor_focused(page)
            page.keyboard.press("End")
            page.keyboard.insert_text(" done")
            page.keyboard.press("Control+Enter")
            status(last, "ok")
            expect_text(page, "[data-cell-id=c39] [data-output]", "step-39 done")
            # Scrolling brings the editors of the cells that come into view.
            page.locator("[data-cell-id=c20]").scroll_into_view_if_needed()
            page.locator("[data-cell-id=c20] .cm-content").wait_for(timeout=WAIT_MS)
            assert b.problems == [], b.problems

        await in_browser(scenario)
        document = (await client.request("session.document", session=sid))["document"]
        self.assertEqual(document["cells"][-1]["source"], "echo step-39 done")


class Collaboration(BrowserTest):
    async def test_the_loser_of_an_edit_race_sees_both_texts_and_chooses(self) -> None:
        rt = await self.runtime()
        client = await self.other_client(rt)
        sid = (await client.request("session.create", name="race"))["session"]["id"]
        await client.request("cell.set", session=sid, cell={"id": "c1", "type": "shell", "source": "echo base"})

        async def teammate_edits(source: str) -> None:
            await client.request("cell.set", session=sid, cell={"id": "c1", "type": "shell", "source": source})

        def scenario(b: Browser) -> None:
            page = open_session(b, rt.url, sid)
            cell = page.locator("[data-cell-id=c1]")
            # Typing here; the teammate's edit lands before ours leaves (the pause is 600 ms).
            write(page, cell, "echo mine")
            on_reactor(teammate_edits, "echo theirs")
            conflict = cell.locator("[data-conflict]")
            conflict.wait_for(timeout=WAIT_MS)
            expect_text(page, "[data-cell-id=c1] [data-theirs]", "^echo theirs$")
            expect_text(page, "[data-cell-id=c1] [data-mine]", "^echo mine$")
            # Nothing was dropped: the editor still holds what was typed.
            expect_text(page, "[data-cell-id=c1] .cm-content", "^echo mine$")
            conflict.locator("[data-action=keep-mine]").click()
            conflict.wait_for(state="detached", timeout=WAIT_MS)

            # Again, and this time take theirs.
            write(page, cell, "echo mine again")
            on_reactor(teammate_edits, "echo theirs again")
            cell.locator("[data-conflict] [data-action=take-theirs]").click(timeout=WAIT_MS)
            expect_text(page, "[data-cell-id=c1] .cm-content", "^echo theirs again$")
            assert b.problems == [], b.problems

        await in_browser(scenario)
        document = (await client.request("session.document", session=sid))["document"]
        self.assertEqual(document["cells"][0]["source"], "echo theirs again")
        written = [e["cell"]["source"] for e in client.events(sid, kind="cell.set")]
        self.assertIn("echo mine", written)  # kept over theirs
        self.assertNotIn("echo mine again", written)  # dropped by choice, never written


class Keyboard(BrowserTest):
    async def test_command_mode_keys_and_the_help_overlay(self) -> None:
        rt = await self.runtime()
        client = await self.other_client(rt)
        sid = (await client.request("session.create", name="keys"))["session"]["id"]
        for n in (1, 2):
            await client.request("cell.set", session=sid, cell={"id": f"k{n}", "type": "shell", "source": f"echo k{n}"})

        def scenario(b: Browser) -> None:
            page = open_session(b, rt.url, sid)
            page.locator("[data-cell-id=k1] .cm-content").click()
            page.keyboard.press("Escape")  # command mode on k1
            page.keyboard.press("b")  # a new cell below k1, in edit mode
            page.wait_for_function("() => document.querySelectorAll('#cells > [data-cell-id]').length === 3")
            editor_focused(page)
            new = ids(page)[1]
            assert new not in ("k1", "k2"), ids(page)
            page.keyboard.insert_text("print('typed')")  # a new cell is python, as in Jupyter
            page.keyboard.press("Escape")
            page.keyboard.press("ArrowDown")  # to k2
            assert page.locator("[data-cell-id=k2]").get_attribute("aria-current") == "true"
            page.keyboard.press("a")  # above k2
            page.wait_for_function("() => document.querySelectorAll('#cells > [data-cell-id]').length === 4")
            editor_focused(page)
            above = ids(page)[2]
            page.keyboard.press("Escape")
            page.keyboard.press("d")
            page.keyboard.press("d")  # D D deletes it
            page.wait_for_function("() => document.querySelectorAll('#cells > [data-cell-id]').length === 3")
            assert above not in ids(page)
            # Shift+Enter in command mode runs the selected cell and moves on.
            page.locator(f"[data-cell-id='{new}']").click(position={"x": 5, "y": 5})
            page.keyboard.press("Shift+Enter")
            status(page.locator(f"[data-cell-id='{new}']"), "ok", timeout=60000)
            expect_text(page, f"[data-cell-id='{new}'] [data-output]", "typed")
            assert page.locator("[data-cell-id=k2]").get_attribute("aria-current") == "true"
            page.keyboard.press("m")  # k2 becomes markdown
            expect_text(page, "[data-cell-id=k2] select[data-field=type] option:checked", "markdown")
            page.keyboard.press("?")
            page.locator("#help").wait_for(timeout=WAIT_MS)
            for words in ("Shift", "Enter", "Esc", "D"):
                assert words in page.locator("#help").inner_text()
            page.keyboard.press("Escape")
            page.locator("#help").wait_for(state="hidden", timeout=WAIT_MS)
            assert b.problems == [], b.problems

        await in_browser(scenario)
        cells = (await client.request("session.document", session=sid))["document"]["cells"]
        self.assertEqual([c["type"] for c in cells], ["shell", "python", "markdown"])
        self.assertEqual(cells[1]["source"], "print('typed')")


class CellActions(BrowserTest):
    async def test_types_options_moves_chains_and_cancel(self) -> None:
        rt = await self.runtime()
        client = await self.other_client(rt)
        sid = (await client.request("session.create", name="actions"))["session"]["id"]
        cells = [
            {"id": "a", "type": "shell", "source": "echo first"},
            {"id": "b", "type": "shell", "source": "exit 3"},
            {"id": "c", "type": "shell", "source": "echo never"},
            {"id": "r", "type": "rest", "source": ""},
        ]
        for cell in cells:
            await client.request("cell.set", session=sid, cell=cell)
        # A shell cell's target lists the SSH connections, not the integrations' typed ones.
        private, _ = make_key("ed25519")
        reply = await client.request("connections.set", name="jump", host="127.0.0.1", username="ops", private_key=private)
        assert reply["ok"], reply
        reply = await client.request("connections.set", name="prom", type="prometheus", url="http://127.0.0.1:9")
        assert reply["ok"], reply

        def scenario(b: Browser) -> None:
            page = open_session(b, rt.url, sid)
            targets = page.locator("[data-cell-id=a] select[data-option=target] option").evaluate_all(
                "els => els.map(e => e.value)")
            assert targets == ["local", "host", "jump"], targets
            # Run all from the first: it stops at the failure, the rest are skipped.
            page.locator("[data-cell-id=a] [data-action=run-from]").click()
            status(page.locator("[data-cell-id=a]"), "ok")
            status(page.locator("[data-cell-id=b]"), "error")
            status(page.locator("[data-cell-id=c]"), "skipped")
            status(page.locator("[data-cell-id=r]"), "skipped")
            # REST options as a form.
            rest = page.locator("[data-cell-id=r]")
            rest.locator("select[data-option=method]").select_option("POST")
            rest.locator("input[data-option=url]").fill("http://127.0.0.1:9/nothing")
            rest.locator("input[data-option=url]").press("Enter")
            rest.locator("textarea[data-option=headers]").fill("X-Trace: on")
            rest.locator("input[data-field=output-variable]").click()  # blur commits the headers
            rest.locator("input[data-field=output-variable]").fill("reply")
            rest.locator("input[data-field=output-variable]").press("Enter")
            # Moves.
            page.locator("[data-cell-id=c] [data-action=move-up]").click()
            page.wait_for_function("() => [...document.querySelectorAll('#cells > [data-cell-id]')].map(e => e.dataset.cellId).join() === 'a,c,b,r'")
            # Cancel a long run.
            page.locator("[data-cell-id=c] .cm-content").click()
            page.keyboard.press("Control+a")
            page.keyboard.insert_text("sleep 30")
            page.keyboard.press("Control+Enter")
            status(page.locator("[data-cell-id=c]"), "running")
            page.locator("[data-cell-id=c] [data-action=cancel]").click()
            status(page.locator("[data-cell-id=c]"), "cancelled")
            # Delete.
            page.locator("[data-cell-id=a] [data-action=delete]").click()
            page.locator("[data-cell-id=a]").wait_for(state="detached", timeout=WAIT_MS)
            assert b.problems == [], b.problems

        await in_browser(scenario)
        document = (await client.request("session.document", session=sid))["document"]
        by_id = {c["id"]: c for c in document["cells"]}
        self.assertEqual([c["id"] for c in document["cells"]], ["c", "b", "r"])
        self.assertEqual(by_id["r"]["options"], {"method": "POST", "url": "http://127.0.0.1:9/nothing",
                                                 "headers": {"X-Trace": "on"}})
        self.assertEqual(by_id["r"]["output_variable"], "reply")
        self.assertEqual(by_id["c"]["source"], "sleep 30")


class ClosedSession(BrowserTest):
    async def test_a_closed_session_opens_read_only_with_its_history(self) -> None:
        rt = await self.runtime()
        client = await self.other_client(rt)
        sid = (await client.request("session.create", name="postmortem"))["session"]["id"]
        cell = {"id": "c1", "type": "shell", "source": "echo what-happened"}
        await client.request("cell.set", session=sid, cell=cell)
        await client.run(sid, cell)
        await client.request("session.close", session=sid)

        def scenario(b: Browser) -> None:
            page = open_session(b, rt.url, sid)
            page.locator("#notebook[data-closed=true]").wait_for(timeout=WAIT_MS)
            expect_text(page, "[data-cell-id=c1][data-run-status=ok] [data-output]", "what-happened")
            assert page.locator("[data-cell-id=c1] [data-action=run]").is_disabled()
            assert page.locator("[data-add-type]").count() == 0
            assert page.locator("#close-session").count() == 0
            # Keys do nothing to a closed session's document.
            page.locator("[data-cell-id=c1]").click(position={"x": 5, "y": 5})
            page.keyboard.press("b")
            page.keyboard.press("d")
            page.keyboard.press("d")
            assert page.locator("#cells > [data-cell-id]").count() == 1
            assert b.problems == [], b.problems

        await in_browser(scenario)
        self.assertEqual(len((await client.request("session.document", session=sid))["document"]["cells"]), 1)


ADDON = os.path.join(os.path.dirname(os.path.abspath(__file__)), "addon")


class AddOnType(BrowserTest):
    async def test_an_add_on_cell_type_is_offered_and_edited_as_source_and_json(self) -> None:
        browser.require(self)
        rt = await Runtime(self, env={"PYTHONPATH": ADDON}).start()
        client = await self.other_client(rt)
        sid = (await client.request("session.create", name="add-on"))["session"]["id"]

        def scenario(b: Browser) -> None:
            page = open_session(b, rt.url, sid)
            cell = add(page, "shout")
            # No form of its own: its options are JSON, open.
            options = cell.locator("textarea[data-option=json]")
            options.wait_for(timeout=WAIT_MS)
            options.fill('{"times": 2}')
            cell.locator("input[data-field=output-variable]").click()  # blur commits
            write(page, cell, "hello")
            page.keyboard.press("Control+Enter")
            status(cell, "ok")
            expect_text(page, f"{CELLS}:nth-child(1) [data-output]", "^HELLO\\s*HELLO\\s*$")
            # Bad JSON is refused where it is typed, and changes nothing.
            options.fill('{"times": ')
            cell.locator("input[data-field=output-variable]").click()
            expect_text(page, f"{CELLS}:nth-child(1) .json-options .error", "Not JSON")
            assert b.problems == [], b.problems

        await in_browser(scenario)
        cells = (await client.request("session.document", session=sid))["document"]["cells"]
        self.assertEqual([(c["type"], c["source"], c["options"]) for c in cells], [("shout", "hello", {"times": 2})])


class Roles(BrowserTest):
    async def test_the_page_offers_what_the_role_may_do(self) -> None:
        """PROTOCOL.md 9: a viewer watches, a runner runs the cells as they
        are; neither edits. The runtime refuses anyway; the page does not
        offer what would be refused."""
        rt = await self.runtime()
        client = await self.other_client(rt)
        sid = (await client.request("session.create", name="roles"))["session"]["id"]
        await client.request("cell.set", session=sid, cell={"id": "c1", "type": "shell", "source": "echo as-written"})
        secrets = {}
        for role in ("viewer", "runner"):
            reply = await client.request("tokens.create", name=f"a-{role}", role=role)
            secrets[role] = reply["secret"]

        def scenario(b: Browser) -> None:
            for role in ("viewer", "runner"):
                page = b.page(b.context())
                page.goto(f"{rt.url}#session={sid}&token={secrets[role]}")
                ready(page)
                page.locator("#cells[aria-busy=false] [data-cell-id=c1]").wait_for(timeout=WAIT_MS)
                expect_text(page, "[data-field=role]", role)
                assert page.locator("[data-add-type]").count() == 0
                assert page.locator("#close-session").count() == 0
                assert page.locator("[data-cell-id=c1] [data-action=delete]").is_disabled()
                assert page.locator("[data-cell-id=c1] select[data-field=type]").is_disabled()
                assert page.locator("[data-cell-id=c1] .cm-content").get_attribute("contenteditable") == "false"
                run = page.locator("[data-cell-id=c1] [data-action=run]")
                if role == "viewer":
                    assert run.is_disabled()
                else:
                    run.click()
                    status(page.locator("[data-cell-id=c1]"), "ok")
                    expect_text(page, "[data-cell-id=c1] [data-output]", "as-written")
                    expect_text(page, "[data-cell-id=c1] .run-state", "by a-runner")
            assert b.problems == [], b.problems

        await in_browser(scenario)
