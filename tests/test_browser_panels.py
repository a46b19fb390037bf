"""The notebook's side panels (variables, secrets, kernel) and the keyboard
help overlay, in a real Chromium against a real runtime (tests/browser.py).

Each test mounts the components itself, on the runtime's page (so under its
CSP): it imports them from the page's static URL, makes a SpinClient of its
own attached to the session, and renders them into a div. Another WebSocket
client plays the teammate who runs cells meanwhile.
"""

from __future__ import annotations

import re
from typing import Any

from twisted.trial import unittest

from . import browser
from .browser import TOKEN, Browser, Runtime, in_browser, on_reactor
from .support import Client

WAIT_MS = 20000

# Runs in the page: mounts the panels for `sid` (or only the help overlay
# when sid is null) with a client of its own; window.harness holds the
# client and the overlay's open signal.
MOUNT = """async ({token, sid, mac, readOnly}) => {
    const base = document.querySelector('link[rel=modulepreload][href$="vendor/preact.js"]').href
        .replace(/vendor\\/preact\\.js$/, '');
    const p = await import(base + 'vendor/preact.js');
    const { SpinClient } = await import(base + 'app/client.js');
    const { VariablesPanel } = await import(base + 'app/views/variables.js');
    const { SecretsPanel } = await import(base + 'app/views/secrets.js');
    const { KernelPanel } = await import(base + 'app/views/kernel.js');
    const { HelpOverlay } = await import(base + 'app/views/help.js');
    const { SHORTCUTS } = await import(base + 'app/shortcuts.js');
    const client = new SpinClient(token);
    const opened = new Promise((resolve) => client.addEventListener('open', resolve, { once: true }));
    client.connect();
    await opened;
    if (sid) await client.attach(sid);
    const open = p.signal(false);
    const closes = p.signal(0);
    const close = () => { open.value = false; closes.value += 1; };
    function Harness() {
        return p.html`<div>
            <button id="open-help" type="button" onClick=${() => (open.value = true)}>?</button>
            ${sid && p.html`<${VariablesPanel} client=${client} session=${sid} readOnly=${readOnly} />
                <${SecretsPanel} client=${client} session=${sid} />
                <${KernelPanel} client=${client} session=${sid} />`}
            <${HelpOverlay} open=${open.value} onClose=${close} mac=${mac === null ? undefined : mac} />
        </div>`;
    }
    const host = document.createElement('div');
    host.id = 'harness';
    document.body.append(host);
    p.render(p.html`<${Harness} />`, host);
    window.harness = { client, open, closes, shortcuts: SHORTCUTS.length };
}"""


def expect_text(page: Any, selector: str, pattern: str) -> None:
    from playwright.sync_api import expect

    expect(page.locator(selector)).to_have_text(re.compile(pattern), timeout=WAIT_MS)


def expect_count(page: Any, selector: str, count: int) -> None:
    from playwright.sync_api import expect

    expect(page.locator(selector)).to_have_count(count, timeout=WAIT_MS)


def expect_attribute(page: Any, selector: str, name: str, value: str) -> None:
    from playwright.sync_api import expect

    expect(page.locator(selector)).to_have_attribute(name, value, timeout=WAIT_MS)


def mounted(b: Browser, rt: Runtime, sid: str | None, mac: bool | None = None, read_only: bool = False,
            **context: Any) -> Any:
    page = b.page(b.context(**context))
    page.on("dialog", lambda dialog: dialog.accept())  # the confirmations
    # Without the token in the address: the app itself shows its form and
    # stays out of the way; the panels get a client of their own.
    page.goto(rt.url)
    page.locator("#login").wait_for(timeout=WAIT_MS)
    page.evaluate(MOUNT, {"token": TOKEN, "sid": sid, "mac": mac, "readOnly": read_only})
    return page


class PanelTest(unittest.TestCase):
    timeout = 240

    async def setUp(self) -> None:
        browser.require(self)
        self.rt = await Runtime(self).start()
        self.client = await Client.connect(self.rt.ws)
        self.addCleanup(self.client.close)

    async def session(self, **params: Any) -> str:
        created = await self.client.request("session.create", **params)
        return str(created["session"]["id"])

    async def run_cell(self, sid: str, cell: dict[str, Any]) -> dict[str, Any]:
        finished = await self.client.run(sid, cell, timeout=90)
        assert finished["status"] == "ok", finished
        return finished

    async def listed(self, sid: str) -> dict[str, Any]:
        return dict((await self.client.request("variables.list", session=sid))["variables"])


class Variables(PanelTest):
    async def test_listed_live_cleared_and_listed_again(self) -> None:
        sid = await self.session(variables={"region": "eu-west-1", "markup": "<b>bold</b><img src=x>"})

        def scenario(b: Browser) -> None:
            page = mounted(b, self.rt, sid)
            # Listed when mounted, previews as text.
            expect_text(page, "#variables [data-variable=region] .variable-preview", "^eu-west-1$")
            expect_text(page, "#variables [data-variable=region] .variable-type", "^str$")
            expect_text(page, "#variables [data-variable=markup] .variable-preview", re.escape("<b>bold</b><img src=x>"))
            assert page.locator("#variables b, #variables img").count() == 0
            # Live: a teammate's cell sets an output variable.
            on_reactor(self.run_cell, sid, {"type": "shell", "source": "echo hi", "output_variable": "r"})
            expect_text(page, "#variables [data-variable=r] .variable-type", "^CellResult$")
            expect_text(page, "#variables [data-variable=r] .variable-preview", '"stdout": "hi')
            # Clear one from the panel: gone here and in the runtime.
            page.click("#variables [data-variable=r] button")
            expect_count(page, "#variables [data-variable=r]", 0)
            assert sorted(on_reactor(self.listed, sid)) == ["markup", "region"]
            # A clear by someone else sends no event: the next connection lists again.
            page.wait_for_timeout(1000)  # the panel's own list after the last variable.set is done
            on_reactor(self.client.request, "variables.clear", session=sid, names=["markup"])
            page.wait_for_timeout(1000)
            assert page.locator("#variables [data-variable=markup]").count() == 1
            page.evaluate("() => window.harness.client.ws.close(4000)")  # a dropped connection
            expect_count(page, "#variables [data-variable=markup]", 0)
            expect_count(page, "#variables [data-variable=region]", 1)
            # After a kernel restart too (restarting -> idle).
            on_reactor(self.client.request, "variables.clear", session=sid, names=["region"])
            on_reactor(self.client.request, "kernel.restart", session=sid, timeout=90)
            expect_count(page, "#variables [data-variable]", 0)
            page.locator("#no-variables").wait_for(timeout=WAIT_MS)
            # Clear all (after the confirmation).
            on_reactor(self.run_cell, sid, {"type": "shell", "source": "echo a", "output_variable": "a"})
            on_reactor(self.run_cell, sid, {"type": "shell", "source": "echo b", "output_variable": "b"})
            expect_count(page, "#variables [data-variable]", 2)
            page.click("#variables-clear-all")
            expect_count(page, "#variables [data-variable]", 0)
            assert on_reactor(self.listed, sid) == {}
            assert b.problems == [], b.problems

        await in_browser(scenario)

    async def test_python_globals_are_not_session_variables(self) -> None:
        """The runtime lists initial and output variables, not Python globals
        (PROTOCOL.md section 3): a cell `x = 1` adds no row. Read only (for
        a role below editor): no clear buttons."""
        sid = await self.session(variables={"region": "eu"})

        def scenario(b: Browser) -> None:
            page = mounted(b, self.rt, sid, read_only=True)
            expect_count(page, "#variables [data-variable]", 1)
            assert page.locator("#variables button").count() == 0
            on_reactor(self.run_cell, sid, {"type": "python", "source": "x = 1"})
            on_reactor(self.run_cell, sid, {"type": "shell", "source": "echo {{x}}", "output_variable": "y"})
            expect_text(page, "#variables [data-variable=y] .variable-preview", '"stdout": "1')
            assert page.locator("#variables [data-variable=x]").count() == 0

        await in_browser(scenario)


class Secrets(PanelTest):
    async def test_set_reaches_the_runtime_and_never_shows(self) -> None:
        sid = await self.session()
        value = "sk-browser-secret-4711"

        def scenario(b: Browser) -> dict[str, Any]:
            page = mounted(b, self.rt, sid)
            # A name the runtime's templates could not reach: refused here, value kept unsent.
            page.fill("#secret-name", "bad name")
            page.fill("#secret-value", value)
            page.click("#secret-set")
            expect_text(page, "#secrets .error", "cannot be a secret's name")
            assert page.locator("#secrets [data-secret]").count() == 0
            page.fill("#secret-name", "API_KEY")
            page.click("#secret-set")
            # The field is empty at once, the name is listed, the value nowhere.
            assert page.input_value("#secret-value") == ""
            expect_text(page, "#secrets [data-secret=API_KEY]", "API_KEY")
            expect_text(page, "#secrets [role=status]", re.escape("{{secret:API_KEY}}"))
            assert page.locator("#secrets .error").count() == 0
            finished = on_reactor(self.run_cell, sid, {"type": "shell", "source": "echo {{secret:API_KEY}}"})
            html_now = page.content()
            inputs = page.evaluate("() => [...document.querySelectorAll('input')].map(i => i.value)")
            storage = page.evaluate("() => JSON.stringify([{...sessionStorage}, {...localStorage}])")
            return {"run": finished["run"], "html": html_now, "inputs": inputs, "storage": storage}

        out = await in_browser(scenario)
        self.assertEqual(self.client.output(out["run"]), "***\n")
        self.assertNotIn(value, out["html"])
        self.assertNotIn(value, out["inputs"])
        self.assertNotIn(value, out["storage"])
        self.assertNotIn(value, repr(self.client.messages))

    async def test_runtime_error_shown(self) -> None:
        def scenario(b: Browser) -> None:
            page = mounted(b, self.rt, None)
            page.evaluate("""async () => {
                const base = document.querySelector('link[rel=modulepreload][href$="vendor/preact.js"]').href
                    .replace(/vendor\\/preact\\.js$/, '');
                const p = await import(base + 'vendor/preact.js');
                const { SecretsPanel } = await import(base + 'app/views/secrets.js');
                const host = document.createElement('div');
                document.body.append(host);
                p.render(p.html`<${SecretsPanel} client=${window.harness.client} session="ss_0000000000000000" />`, host);
            }""")
            page.fill("#secret-name", "TOKEN_X")
            page.fill("#secret-value", "value-never-set")
            page.click("#secret-set")
            expect_text(page, "#secrets .error", "ss_0000000000000000")
            assert page.input_value("#secret-value") == ""
            assert page.locator("#secrets [data-secret]").count() == 0

        await in_browser(scenario)


class Kernel(PanelTest):
    async def test_state_follows_events_and_restart(self) -> None:
        sid = await self.session()

        def scenario(b: Browser) -> None:
            page = mounted(b, self.rt, sid)
            expect_attribute(page, "#kernel", "data-state", "unknown")
            on_reactor(self.run_cell, sid, {"type": "python", "source": "x = 1"})
            expect_attribute(page, "#kernel", "data-state", "idle")
            expect_text(page, "#kernel [role=status]", "Idle")
            states: list[str] = []
            page.expose_function("kernelState", lambda state: states.append(state))
            page.evaluate("""() => new MutationObserver(() => window.kernelState(
                document.querySelector('#kernel').dataset.state)).observe(
                document.querySelector('#kernel'), { attributes: true })""")
            page.click("#kernel-restart")
            expect_attribute(page, "#kernel", "data-state", "idle")
            page.locator("#kernel-restart:enabled").wait_for(timeout=WAIT_MS)
            assert "restarting" in states, states
            assert page.locator("#kernel .error").count() == 0
            finished = on_reactor(self.run_cell, sid, {"type": "python", "source": "print('x' in globals())"})
            assert self.client.output(finished["run"]) == "False\n"
            # A closed session stops the kernel for good.
            on_reactor(self.client.request, "session.close", session=sid)
            expect_attribute(page, "#kernel", "data-state", "closed")
            assert page.locator("#kernel-restart").is_disabled()
            assert b.problems == [], b.problems

        await in_browser(scenario)


class Help(PanelTest):
    async def test_overlay_lists_every_shortcut_traps_focus_and_closes(self) -> None:
        def scenario(b: Browser) -> None:
            page = mounted(b, self.rt, None)
            assert page.locator("#help").count() == 0
            page.click("#open-help")
            dialog = page.locator("#help")
            dialog.wait_for(timeout=WAIT_MS)
            assert dialog.get_attribute("role") == "dialog"
            assert dialog.get_attribute("aria-modal") == "true"
            assert page.evaluate("() => document.querySelector('#help').open") is True
            count = page.evaluate("() => window.harness.shortcuts")
            expect_count(page, "#help [data-shortcut]", count)
            assert count >= 12, count
            expect_text(page, "#help [data-shortcut=run] .keys", "^Ctrl\\+Enter$")
            expect_text(page, "#help [data-shortcut=run-and-next] .keys", "^Shift\\+Enter$")
            expect_text(page, "#help [data-shortcut=delete] .keys", "^D D$")
            expect_text(page, "#help [data-shortcut=select-previous] .keys", "^↑ or K$")
            expect_text(page, "#help [data-shortcut=help] .keys", "^\\?$")
            # Focus starts inside and stays inside, both ways round.
            inside = "() => document.querySelector('#help').contains(document.activeElement)"
            assert page.evaluate(inside)
            for key in ["Tab"] * 5 + ["Shift+Tab"] * 5:
                page.keyboard.press(key)
                assert page.evaluate(inside), key
            # Keys pressed in it go no further.
            page.evaluate("""() => { window.leaked = 0;
                document.addEventListener('keydown', () => { window.leaked += 1; }); }""")
            page.keyboard.press("a")
            assert page.evaluate("() => window.leaked") == 0
            # Esc closes it, and focus goes back to what opened it.
            page.keyboard.press("Escape")
            expect_count(page, "#help", 0)
            assert page.evaluate("() => window.harness.closes.value") == 1
            assert page.evaluate("() => document.activeElement.id") == "open-help"
            # The close button and a click on the backdrop close it too.
            page.click("#open-help")
            page.click("#help-close")
            expect_count(page, "#help", 0)
            page.click("#open-help")
            page.mouse.click(5, 5)
            expect_count(page, "#help", 0)
            assert page.evaluate("() => window.harness.closes.value") == 3
            assert b.problems == [], b.problems

        await in_browser(scenario)

    async def test_cmd_on_macos_and_dark(self) -> None:
        def scenario(b: Browser) -> dict[str, str]:
            page = mounted(b, self.rt, None, mac=True, color_scheme="dark")
            page.click("#open-help")
            expect_text(page, "#help [data-shortcut=run] .keys", "^Cmd\\+Enter$")
            dark = page.evaluate("() => getComputedStyle(document.querySelector('#help')).backgroundColor")
            light_page = mounted(b, self.rt, None, mac=False, color_scheme="light")
            light_page.click("#open-help")
            expect_text(light_page, "#help [data-shortcut=run] .keys", "^Ctrl\\+Enter$")
            light = light_page.evaluate("() => getComputedStyle(document.querySelector('#help')).backgroundColor")
            return {"dark": dark, "light": light}

        colours = await in_browser(scenario)
        self.assertEqual(colours, {"dark": "rgb(31, 36, 44)", "light": "rgb(255, 255, 255)"})  # style.css --card
