"""Real-browser tests: Debian's Chromium driven by Playwright, against a real
runtime (``twistd spin-runtime`` in a child process) on 127.0.0.1.

Playwright's sync API refuses to run inside a running asyncio loop, and trial
runs its tests inside the asyncio reactor's loop; so each browser scenario
runs in a worker thread (:func:`in_browser`), where it may call back into the
reactor with :func:`on_reactor` (another WebSocket client, restarting the
runtime). Chromium is ``/usr/bin/chromium`` (``apt-get install chromium``),
never a browser of Playwright's own (``playwright install`` would need a CDN
this machine cannot reach).

Where Chromium or Playwright is missing, ``require`` skips with the reason,
except under CI (``CI`` set in the environment), where it fails.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from typing import Any, Awaitable, Callable, TypeVar

from twisted.internet import defer, reactor, threads

from . import needs
from .support import TOKEN, DaemonProcess

CHROMIUM = "/usr/bin/chromium"
T = TypeVar("T")

# Headless and quiet: nothing of Chromium's own phones home (the machine
# reaches no network but the package registries anyway), /dev/shm in a
# container is small. Playwright adds --headless and, unless asked for a
# sandbox, --no-sandbox (needed as root).
LAUNCH_ARGS = [
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-sync",
    "--disable-domain-reliability",
    "--metrics-recording-only",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-dev-shm-usage",
    "--disable-gpu",
]


def unavailable() -> str | None:
    """Why no browser test can run here (None: they can)."""
    if not os.path.exists(CHROMIUM):
        return f"{CHROMIUM} not found: apt-get update && apt-get install chromium"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed: pip install -e '.[test]'"
    return None


def require(testcase: Any) -> None:
    needs.require(testcase, unavailable(), "browser tests")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Runtime:
    """A runtime in a child process on a fixed port (so a restart keeps the
    page's URL), with its state in a temp dir that outlives restarts."""

    def __init__(self, testcase: Any, token: str = TOKEN, *extra: str, env: dict[str, str] | None = None) -> None:
        self.token = token
        self.extra = extra
        self.env = env or {}
        self.home = tempfile.mkdtemp(prefix="spin-home-", dir=os.path.abspath("."))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.ws = f"ws://127.0.0.1:{self.port}/ws"
        self.daemon: DaemonProcess | None = None
        testcase.addCleanup(self.stop)

    async def start(self) -> "Runtime":
        self.daemon = DaemonProcess(self.home, "--endpoint", f"tcp:{self.port}:interface=127.0.0.1",
                                    "--kernel-pool", "0", *self.extra, env={**self.env, "SPIN_TOKEN": self.token})
        await self.daemon.ready()
        return self

    async def stop(self) -> None:
        if self.daemon is not None:
            await self.daemon.stop()
            self.daemon = None

    async def restart(self) -> None:
        await self.stop()
        await self.start()


def on_reactor(f: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
    """From a browser thread: run the coroutine function on the reactor, wait for it."""
    return threads.blockingCallFromThread(reactor, lambda: defer.ensureDeferred(f(*args, **kwargs)))


class Browser:
    """One Chromium with every page's console errors, page errors and CSP
    violations recorded (``problems``)."""

    def __init__(self, playwright: Any) -> None:
        self.browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        self.problems: list[str] = []

    def context(self, **options: Any) -> Any:
        context = self.browser.new_context(**options)
        # Injected by the DevTools protocol, so the page's CSP does not apply to it.
        context.add_init_script(
            "document.addEventListener('securitypolicyviolation', e => console.error("
            "'CSP violation: ' + e.violatedDirective + ' ' + e.blockedURI));"
        )
        return context

    def page(self, context: Any = None) -> Any:
        page = (context or self.context()).new_page()
        page.on("console", lambda m: m.type == "error" and self.problems.append(f"console: {m.text}"))
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        return page


def in_browser(scenario: Callable[[Browser], T]) -> defer.Deferred[T]:
    """Run ``scenario(browser)`` in a worker thread with a fresh Chromium."""

    def run() -> T:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as playwright:
            browser = Browser(playwright)
            try:
                return scenario(browser)
            finally:
                browser.browser.close()

    return threads.deferToThread(run)


# The page's first load in a run also waits for Chromium's first start
# (profile, fonts) and a cold runtime: generous, so a busy machine is not a
# failure. Later waits use each module's WAIT_MS.
READY_MS = 45000


def ready(page: Any) -> None:
    """Waits until the page is connected and has listed the sessions
    (``html[data-ui=ready]``, docs/browser-ui.rst)."""
    page.locator("html[data-ui=ready]").wait_for(state="attached", timeout=READY_MS)


def session_storage(page: Any) -> dict[str, str]:
    return json.loads(page.evaluate("() => JSON.stringify(Object.assign({}, sessionStorage))"))


__all__ = ["TOKEN", "Browser", "Runtime", "free_port", "in_browser", "on_reactor", "ready", "require", "session_storage"]
