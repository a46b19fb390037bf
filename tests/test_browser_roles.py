"""Roles in the browser UI (issue 14, "In the UI"): who you are in the
header, each role's home view offering only what the role may do, the
owner's audit view ("who ran this cell last night, from where") and tokens
view, in a real Chromium against a real runtime (tests/browser.py).

Named tokens are made with ``tokens.create`` from a protocol client holding
``SPIN_TOKEN`` (the identity ``owner``).
"""

from __future__ import annotations

import json
import re
import urllib.request
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from twisted.internet import reactor, task
from twisted.trial import unittest

from spinrt import roles
from spinrt.web.ui import STATIC_DIR

from . import browser
from .browser import TOKEN, Browser, Runtime, in_browser, session_storage
from .support import Client
from .test_browser_ui import WAIT_MS, BrowserTest, expect_text, ready

APP = STATIC_DIR / "app"
# A zone far from UTC, with minutes in its offset: the audit view's local times must be converted.
ZONE = "Asia/Kolkata"


async def sleep(seconds: float) -> None:
    await task.deferLater(reactor, max(0.0, seconds), lambda: None)


def expect_count(page: Any, selector: str, count: int) -> None:
    from playwright.sync_api import expect

    expect(page.locator(selector)).to_have_count(count, timeout=WAIT_MS)


def local_field(when: datetime) -> str:
    """A datetime-local field's value for this instant in ZONE."""
    return when.astimezone(ZoneInfo(ZONE)).strftime("%Y-%m-%dT%H:%M:%S")


def audit_rows(rt: Runtime, token: str = TOKEN, **query: str) -> list[dict[str, Any]]:
    """GET /api/audit from a worker thread (blocking is fine off the reactor)."""
    url = rt.url + "api/audit?" + "&".join(f"{k}={v}" for k, v in query.items())
    with urllib.request.urlopen(urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})) as r:
        return [json.loads(line) for line in r.read().decode().splitlines() if line.strip()]


async def make_tokens(client: Client, **named: str) -> dict[str, str]:
    """{name: role} -> {name: secret}."""
    secrets = {}
    for name, role in named.items():
        reply = await client.request("tokens.create", name=name, role=role)
        assert reply["ok"], reply
        secrets[name] = reply["secret"]
    return secrets


def open_page(b: Browser, rt: Runtime, secret: str, fragment: str = "", **context: Any) -> Any:
    page = b.page(b.context(**context))
    page.goto(f"{rt.url}#{fragment + '&' if fragment else ''}token={secret}")
    ready(page)
    return page


class Table(unittest.TestCase):
    def test_every_op_the_page_sends_is_in_its_table(self) -> None:
        """app/roles.js decides what a view offers: an op the page sends that
        is not in its table would be offered to nobody but the owner."""
        table = (APP / "roles.js").read_text()
        js_ops = set(re.findall(r'^\s+"?([a-z]+(?:\.[a-z]+)?)"?: ', table.split("OP_ROLES")[1].split("});")[0], re.M))
        self.assertEqual(js_ops, set(roles.OP_ROLES))
        sent = set()
        for path in APP.rglob("*.js"):
            sent |= set(re.findall(r'request\(\s*"([a-z.]+)"', path.read_text()))
        self.assertGreater(len(sent), 15, sent)
        self.assertEqual(sent - js_ops, set())


class RolesTable(BrowserTest):
    async def test_the_pages_table_says_what_the_runtimes_says(self) -> None:
        """For every op and every form that changes its role, app/roles.js
        gives the role spinrt/roles.py gives."""
        rt = await self.runtime()
        forms: list[dict[str, Any]] = [{}, {"cell": {"type": "shell"}}, {"cell_id": "c1"}, {"cells": []},
                                       {"cell_ids": ["c1"]}, {"cell": None, "cell_id": "c1"}, {"notebook": "nb"},
                                       {"notebook": None}, {"scope": "runtime"}, {"scope": "session", "session": "s"}]
        cases = [(op, form) for op in sorted(roles.OP_ROLES) for form in forms] + [("no.such.op", {})]
        expected = [roles.required(op, form) for op, form in cases]

        def scenario(b: Browser) -> list[str]:
            page = open_page(b, rt, TOKEN)
            base = page.evaluate("() => document.querySelector('link[href$=\"app/roles.js\"]').href")
            return page.evaluate("""async ([url, cases]) => {
                const roles = await import(url);
                return cases.map(([op, form]) => roles.needed(op, form));
            }""", [base, cases])

        self.assertEqual(await in_browser(scenario), expected)


class HomeByRole(BrowserTest):
    async def test_each_role_sees_who_it_is_and_what_it_may_do(self) -> None:
        rt = await self.runtime()
        client = await self.other_client(rt)
        assert (await client.request("notebook.save", name="runbook", cells=[
            {"id": "c1", "type": "shell", "source": "echo hi"}]))["ok"]
        open_sid = (await client.request("session.create", notebook="runbook", name="live"))["session"]["id"]
        closed_sid = (await client.request("session.create", name="old"))["session"]["id"]
        assert (await client.request("session.close", session=closed_sid))["ok"]
        secrets = await make_tokens(client, vera="viewer", rudi="runner", edna="editor")
        secrets["owner"] = TOKEN
        names = {"vera": "viewer", "rudi": "runner", "edna": "editor", "owner": "owner"}

        def scenario(b: Browser) -> None:
            for name, role in names.items():
                page = open_page(b, rt, secrets[name])
                rank = roles.RANK[role]
                expect_text(page, "#you-name", f"^{name}$")
                expect_text(page, "#you-role", f"^{role}$")
                assert page.locator("#you").get_attribute("data-role") == role
                # the owner's views, offered to the owner only
                assert page.locator("#audit-link").count() == (role == "owner"), role
                assert page.locator("#tokens-link").count() == (role == "owner"), role
                page.locator("#notebooks li[data-notebook=runbook]").wait_for(timeout=WAIT_MS)
                page.locator(f"li[data-session-id='{closed_sid}']").wait_for(timeout=WAIT_MS)
                editor = rank >= roles.RANK["editor"]
                # notebooks: create, import, rename, delete are an editor's
                assert page.locator("#new-notebook-name").count() == editor, role
                assert page.locator("#import-notebook").count() == editor, role
                assert page.locator("#notebooks li[data-notebook=runbook] [data-action=rename]").count() == editor, role
                assert page.locator("#notebooks li[data-notebook=runbook] [data-action=delete]").count() == editor, role
                assert page.locator("#notebooks-role").count() == (not editor), role
                # sessions: new and close are an editor's, delete (of a closed one) the owner's
                assert page.locator("#new-session").count() == editor, role
                assert page.locator(f"li[data-session-id='{open_sid}'] [data-action=close]").count() == editor, role
                assert page.locator(f"li[data-session-id='{closed_sid}'] [data-action=close]").count() == 0
                assert page.locator(f"li[data-session-id='{closed_sid}'] [data-action=delete]").count() == (role == "owner")
                assert page.locator(f"li[data-session-id='{open_sid}'] [data-action=delete]").count() == 0
                assert page.locator(f"li[data-session-id='{open_sid}'] [data-action=download]").count() == 1
                # opening the notebook: joining for all, a new session from a runner up
                page.click("#notebooks li[data-notebook=runbook] [data-action=open]")
                dialog = page.locator("#open-notebook[data-step=join]")
                dialog.wait_for(timeout=WAIT_MS)
                dialog.locator(f"li[data-session-id='{open_sid}'] [data-action=join]").wait_for(timeout=WAIT_MS)
                assert page.locator("#start-new-session").count() == (rank >= roles.RANK["runner"]), role
                page.keyboard.press("Escape")
                expect_count(page, "#open-notebook", 0)
                if role == "viewer":
                    expect_text(page, "#notebooks-role", "viewer")
                if role == "runner":
                    expect_text(page, "#notebooks-role", "starts and joins")
                if role == "owner":
                    item = page.locator(f"li[data-session-id='{closed_sid}']")
                    item.locator("[data-action=delete]").click()
                    item.locator("[data-action=confirm-delete]").click()
                    expect_count(page, f"li[data-session-id='{closed_sid}']", 0)
                page.context.close()
            assert b.problems == [], b.problems

        await in_browser(scenario)
        listed = (await client.request("session.list"))["sessions"]
        self.assertEqual(sorted(s["id"] for s in listed), [open_sid])

    async def test_a_viewer_is_not_offered_a_session_it_cannot_start(self) -> None:
        rt = await self.runtime()
        client = await self.other_client(rt)
        assert (await client.request("notebook.save", name="quiet", cells=[]))["ok"]
        secrets = await make_tokens(client, vera="viewer")

        def scenario(b: Browser) -> None:
            page = open_page(b, rt, secrets["vera"])
            page.click("#notebooks li[data-notebook=quiet] [data-action=open]")
            page.locator("#open-notebook[data-step=error]").wait_for(timeout=WAIT_MS)
            expect_text(page, "#open-notebook-error", r"No session of “quiet” is open, and your role \(viewer\) may not start one")
            assert b.problems == [], b.problems

        await in_browser(scenario)
        self.assertEqual((await client.request("session.list"))["sessions"], [])


class AuditView(BrowserTest):
    async def test_who_ran_this_cell_from_where(self) -> None:
        """A runner token's run, from behind a trusted proxy: the owner's
        audit view names it, its address, the cell and the outcome; the
        period, identity and action filters and paging work."""
        browser.require(self)
        rt = await Runtime(self, TOKEN, "--trusted-proxy", "127.0.0.1").start()
        client = await self.other_client(rt)
        secrets = await make_tokens(client, **{"oncall-bot": "runner"})
        sid = (await client.request("session.create", name="night"))["session"]["id"]
        assert (await client.request("cell.set", session=sid, cell={"id": "restart-db", "type": "shell", "source": "echo ok"}))["ok"]
        # A whole second later, so a period can start between these rows and the run.
        mark = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=2)
        await sleep((mark - datetime.now(timezone.utc)).total_seconds() + 0.05)
        bot = await Client.connect(rt.ws, token=secrets["oncall-bot"], headers={"X-Forwarded-For": "10.1.7.3"})
        self.addCleanup(bot.close)
        reply = await bot.request("cell.run", session=sid, cell_id="restart-db")
        assert reply["ok"], reply
        refused = await bot.request("cell.set", session=sid, cell={"id": "x", "type": "shell", "source": "rm -rf /"})
        assert refused["error"]["code"] == "forbidden", refused
        # Enough refused requests for three pages of 100.
        for _ in range(230):
            assert (await bot.request("run.cancel", session=sid, run="no-such-run"))["ok"] is False

        def scenario(b: Browser) -> None:
            page = open_page(b, rt, TOKEN, timezone_id=ZONE)
            everything = audit_rows(rt, since="2000-01-01")  # the page's own connection included
            page.click("#audit-link")
            page.locator("#audit-view[data-state=ready]").wait_for(timeout=WAIT_MS)
            assert page.url.endswith("#audit"), page.url
            # The default period (the last day) holds everything so far, 500 rows a page.
            expect_text(page, "#audit-summary", f"^{len(everything)} rows loaded")
            assert page.locator("#audit-more").count() == 0
            run = page.locator("#audit-table tr[data-action='cell.run']")
            expect_count(page, "#audit-table tr[data-action='cell.run']", 1)
            expect_text(page, "#audit-table tr[data-action='cell.run'] [data-field=identity]", r"^oncall-bot \(runner\)$")
            assert run.locator("[data-field=client]").inner_text() == "10.1.7.3"
            target = run.locator("[data-field=target]").inner_text()
            assert f"session={sid}" in target and "cell_id=restart-db" in target, target
            assert run.locator("[data-field=outcome]").inner_text() == "ok"
            # The time is local (ZONE), its title the runtime's UTC.
            row = next(r for r in everything if r["action"] == "cell.run")
            assert run.locator("[data-field=ts]").get_attribute("title") == row["ts"]
            utc = datetime.fromisoformat(row["ts"].replace("Z", "+00:00"))
            assert run.locator("[data-field=ts]").inner_text().startswith(utc.astimezone(ZoneInfo(ZONE)).strftime("%Y-%m-%d %H:%M:%S"))
            forbidden = page.locator("#audit-table tr[data-action='cell.set'][data-outcome=forbidden]")
            assert forbidden.locator("[data-field=client]").inner_text() == "10.1.7.3"
            # No secret or source on the page.
            assert "rm -rf" not in page.content() and secrets["oncall-bot"] not in page.content()

            # Filters in the page: identity and action.
            page.select_option("#audit-identity", "oncall-bot")
            bot_rows = [r for r in everything if r["identity"] == "oncall-bot"]
            expect_text(page, "#audit-summary", f"{len(everything)} rows loaded, {len(bot_rows)} shown")
            page.fill("#audit-action", "cell.")
            expect_count(page, "#audit-table tbody tr", 2)
            page.select_option("#audit-outcome", "failed")
            expect_count(page, "#audit-table tbody tr", 1)
            assert page.locator("#audit-table tbody tr").get_attribute("data-action") == "cell.set"
            page.select_option("#audit-outcome", "")
            page.select_option("#audit-identity", "")
            page.fill("#audit-action", "")

            # The period: until the mark holds the owner's work, not the run; since the mark, the run.
            page.fill("#audit-until", local_field(mark))
            page.click("#audit-apply")
            page.locator("#audit-view[data-state=ready]").wait_for(timeout=WAIT_MS)
            before = [r for r in everything if r["ts"] < mark.strftime("%Y-%m-%dT%H:%M:%S")]
            expect_text(page, "#audit-summary", f"^{len(before)} rows? loaded")
            assert page.locator("#audit-table tr[data-action='session.create']").count() == 1
            assert page.locator("#audit-table tr[data-action='cell.run']").count() == 0
            page.fill("#audit-since", local_field(mark))
            page.fill("#audit-until", "")
            # Paging: 100 a page; "Load more" continues after the last row until a short page.
            page.select_option("#audit-limit", "100")
            page.click("#audit-apply")
            after = [r for r in everything if r["ts"] >= mark.strftime("%Y-%m-%dT%H:%M:%S")]
            assert len(after) > 200, len(after)
            expect_text(page, "#audit-summary", "^100 rows loaded")
            assert page.locator("#audit-table tbody tr").first.get_attribute("data-action") == "connect"
            page.click("#audit-more")
            expect_text(page, "#audit-summary", "^200 rows loaded")
            page.click("#audit-more")
            expect_text(page, "#audit-summary", f"^{len(after)} rows loaded")
            page.locator("#audit-end").wait_for(timeout=WAIT_MS)
            assert page.locator("#audit-more").count() == 0
            shown = page.locator("#audit-table tbody tr").evaluate_all("rows => rows.map(r => Number(r.dataset.auditId))")
            assert shown == [r["id"] for r in after], (shown[:5], [r["id"] for r in after][:5])
            assert page.locator("#audit-table tr[data-action='cell.run']").count() == 1
            assert b.problems == [], b.problems

        await in_browser(scenario)

    async def test_a_viewer_cannot_reach_it(self) -> None:
        rt = await self.runtime()
        client = await self.other_client(rt)
        secrets = await make_tokens(client, vera="viewer", edna="editor")

        def scenario(b: Browser) -> None:
            for name, role in (("vera", "viewer"), ("edna", "editor")):
                asked: list[str] = []
                page = b.page(b.context())
                page.on("request", lambda r: asked.append(r.url))
                page.goto(f"{rt.url}#audit&token={secrets[name]}")
                ready(page)
                assert page.locator("#audit-link").count() == 0
                expect_text(page, "#audit-forbidden", f"owner's to read; your role is {role}")
                assert page.locator("#audit-table").count() == 0
                page.goto(f"{rt.url}#tokens")
                expect_text(page, "#tokens-forbidden", f"owner's to manage; your role is {role}")
                assert page.locator("#token-form").count() == 0
                assert [u for u in asked if "/api/audit" in u] == [], asked
                assert b.problems == [], b.problems
                # And the runtime says no anyway (the browser logs the 403).
                status = page.evaluate("""async (t) => (await fetch('api/audit',
                    {headers: {Authorization: 'Bearer ' + t}})).status""", secrets[name])
                assert status == 403, status
                assert [p for p in b.problems if "403 (Forbidden)" not in p] == [], b.problems
                b.problems.clear()

        await in_browser(scenario)


def heap_holds(page: Any, needle: str) -> bool:
    """Whether the page's JavaScript heap holds `needle`, after a full GC."""
    cdp = page.context.new_cdp_session(page)
    chunks: list[str] = []
    cdp.on("HeapProfiler.addHeapSnapshotChunk", lambda event: chunks.append(event["chunk"]))
    cdp.send("HeapProfiler.enable")
    cdp.send("HeapProfiler.collectGarbage")
    cdp.send("HeapProfiler.takeHeapSnapshot", {"reportProgress": False})
    cdp.detach()
    return needle in "".join(chunks)


class TokensView(BrowserTest):
    async def test_create_copy_and_revoke(self) -> None:
        rt = await self.runtime()
        client = await self.other_client(rt)

        def scenario(b: Browser) -> str:
            context = b.context(permissions=["clipboard-read", "clipboard-write"])
            page = b.page(context)
            page.goto(f"{rt.url}#tokens&token={TOKEN}")
            ready(page)
            page.locator("#no-tokens").wait_for(timeout=WAIT_MS)
            # What is wrong with a request is said, and nothing is created.
            page.fill("#token-name", "alice")
            page.fill("#token-expires", "soon")
            page.click("#token-create")
            expect_text(page, "#token-form-error", "“soon” is not a number of days")
            page.fill("#token-expires", "")
            page.fill("#token-name", "owner")
            page.click("#token-create")
            expect_text(page, "#token-form-error", "owner")  # the runtime's own words
            assert page.locator("#token-secret").count() == 0
            # A runner for alice, for 30 days.
            page.fill("#token-name", "alice")
            page.select_option("#token-role", "runner")
            page.fill("#token-expires", "30")
            page.click("#token-create")
            dialog = page.locator("#token-secret")
            dialog.wait_for(timeout=WAIT_MS)
            expect_text(page, "#token-secret-warning", "shown this once")
            secret = page.locator("#token-secret-value").inner_text()
            assert re.fullmatch(r"spin\.tk[0-9a-f]+\.[A-Za-z0-9_-]{43}", secret), secret
            token_id = dialog.get_attribute("data-token-id")
            assert token_id and token_id in secret
            # the secret is never an attribute's value
            attributes = page.evaluate("""() => [...document.querySelectorAll('*')].flatMap(e =>
                [...e.attributes].map(a => a.value))""")
            assert not [a for a in attributes if secret in a]
            page.click("#copy-secret")
            expect_text(page, "#copy-done", "Copied")
            assert page.evaluate("() => navigator.clipboard.readText()") == secret
            row = page.locator(f"#tokens-table tr[data-token-id='{token_id}']")
            assert heap_holds(page, secret.split(".")[-1])  # the search finds it while it is shown
            page.click("#secret-done")
            expect_count(page, "#token-secret", 0)
            assert row.get_attribute("data-role") == "runner"
            assert row.locator("[data-field=name]").inner_text() == "alice"
            assert row.locator("[data-field=expires]").get_attribute("title")
            # Gone from the page once the dialog is closed: DOM, storage, heap.
            page.evaluate("() => navigator.clipboard.writeText('')")
            assert secret not in page.content()
            assert session_storage(page) == {"spin.token": TOKEN}
            assert page.evaluate("() => localStorage.length") == 0
            assert not heap_holds(page, secret.split(".")[-1])

            # Alice's page works, as alice, a runner.
            alice = open_page(b, rt, secret)
            expect_text(alice, "#you-name", "^alice$")
            expect_text(alice, "#you-role", "^runner$")
            # Revoked from the owner's page (asked first): alice's page goes to the token form.
            row.locator("[data-action=revoke]").click()
            page.locator(f"#revoke-token[data-token-id='{token_id}']").wait_for(timeout=WAIT_MS)
            page.locator("#revoke-token [data-action=cancel]").click()
            expect_count(page, "#revoke-token", 0)
            assert row.count() == 1
            row.locator("[data-action=revoke]").click()
            page.click("#confirm-revoke")
            expect_count(page, "#revoke-token", 0)
            expect_count(page, f"#tokens-table tr[data-token-id='{token_id}']", 0)
            alice.locator("#login").wait_for(timeout=WAIT_MS)
            expect_text(alice, "#login .error", r"refused this token \(token revoked\)")
            assert session_storage(alice) == {}
            assert b.problems == [], b.problems
            return token_id

        token_id = await in_browser(scenario)
        listed = (await client.request("tokens.list"))["tokens"]
        self.assertEqual([t for t in listed if t["id"] == token_id], [])

