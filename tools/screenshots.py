"""Screenshots of the browser UI for the README: ``make screenshots``.

    python tools/screenshots.py [--out docs/screenshots]

Starts a runtime (``twistd -n spin-runtime`` in a child process, its state in
a temporary directory), fills it over the protocol with a sample runbook (a
few notebooks in the library; sessions of the first, with markdown and a
table, shell output in ANSI colours, a ``\\r`` progress bar, Python, and an
output variable; a closed session of another), then drives Debian's Chromium
(``/usr/bin/chromium``, through Playwright from the test extras) to save,
at 1280x800 in light and dark (Playwright's ``color_scheme``):

- ``home-<scheme>.png``: the notebooks and the sessions;
- ``notebook-<scheme>.png``: a session's notebook, run from the page with
  *Run all*, with its outputs and the side panels;
- ``help-<scheme>.png``: the keyboard help overlay over the notebook.

When ``pngquant`` or ``optipng`` is installed (``apt-get install pngquant
optipng``) the files are made smaller with them. Not part of CI: run it when
the UI changes and commit the PNGs.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

CHECKOUT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
TWISTD = [sys.executable, "-c", "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"]
SIZE = {"width": 1280, "height": 800}
WAIT_MS = 60_000

ESC = "\\033"
RUNBOOK = [
    {"id": "intro", "type": "markdown", "source": (
        "# Disk check\n\n"
        "Where is the space going on the database hosts? Run each step and "
        "note what you find for the team.\n\n"
        "| Host | Role | Alert at |\n|---|---|---|\n"
        "| db-1 | primary | 80 % |\n| db-2 | replica | 85 % |\n")},
    {"id": "usage", "type": "shell", "output_variable": "disks", "source": (
        f"printf '{ESC}[1mmount   used{ESC}[0m\\n'\n"
        f"printf '{ESC}[32m/       41%%{ESC}[0m\\n'\n"
        f"printf '{ESC}[33m/var    78%%{ESC}[0m\\n'\n"
        f"printf '{ESC}[31m/data   97%%  over the limit{ESC}[0m\\n'")},
    {"id": "worst", "type": "python", "source": (
        "usage = {'/': 41, '/var': 78, '/data': 97}\n"
        "worst = max(usage, key=usage.get)\n"
        "print(f'worst mount: {worst} at {usage[worst]}%')")},
    {"id": "copy", "type": "shell", "source": (
        "for i in 1 2 3 4 5 6 7 8 9 10; do\n"
        "  printf '\\rmoving old logs [%-10s] %3d%%' \"$(printf '%*s' $i '' | tr ' ' '#')\" $((i * 10))\n"
        "  sleep 0.05\n"
        "done\necho")},
    {"id": "next", "type": "markdown", "source": (
        "## Next\n\n- If `/data` is still above **90 %**, page the on-call DBA.\n"
        "- Otherwise close the incident with the figures above.")},
]
OTHER_NOTEBOOKS = {
    "cert-renewal": [{"type": "markdown", "source": "# Certificate renewal"},
                     {"type": "shell", "source": "openssl x509 -noout -enddate -in /etc/ssl/certs/site.pem"}],
    "deploy-rollback": [{"type": "markdown", "source": "# Roll a deploy back"},
                        {"type": "shell", "source": "kubectl rollout undo deployment/api"}],
}

# Runs in the page (imports the UI's own client from the page's static URL):
# fills the runtime, then leaves, so the screenshots show one person attached.
# One session per colour scheme, run from the notebook view itself, so that
# its sidebar sees the kernel start (the runtime tells its state only when it
# changes).
SETUP = """async ({token, runbook, others}) => {
  const base = document.querySelector('link[rel=modulepreload][href$="vendor/preact.js"]').href
      .replace(/vendor\\/preact\\.js$/, '');
  const { SpinClient } = await import(base + 'app/client.js');
  const client = new SpinClient(token);
  const opened = new Promise((resolve) => client.addEventListener('open', resolve, { once: true }));
  client.connect();
  await opened;
  for (const [name, cells] of Object.entries(others)) await client.request('notebook.save', { name, cells });
  await client.request('notebook.save', { name: 'disk-check', cells: runbook });
  const old = (await client.request('session.create', { notebook: 'deploy-rollback', name: 'deploy-rollback, last week' })).session.id;
  await client.request('session.close', { session: old });
  const sessions = [];
  for (const host of ['db-1', 'db-2']) {
    const created = await client.request('session.create', { notebook: 'disk-check', name: 'disk-check on ' + host });
    await client.detach(created.session.id);
    sessions.push(created.session.id);
  }
  client.close();
  return sessions;
}"""


class Runtime:
    """The daemon in a child process, its state in a temporary directory."""

    def __init__(self) -> None:
        self.home = tempfile.mkdtemp(prefix="spin-screenshots-")
        self.token = secrets.token_urlsafe(24)
        env = {k: v for k, v in os.environ.items() if k != "SPIN_TOKEN"}
        env["SPIN_TOKEN"] = self.token
        argv = TWISTD + ["-n", "--pidfile=", "--logfile", os.path.join(self.home, "twistd.log"), "spin-runtime",
                         "--home", self.home, "--endpoint", "tcp:0:interface=127.0.0.1", "--kernel-pool", "1"]
        self.process = subprocess.Popen(argv, env=env, cwd=self.home, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

    def url(self) -> str:
        path = os.path.join(self.home, "var", "runtime.json")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"the runtime exited ({self.process.returncode}); see {self.home}/twistd.log")
            try:
                with open(path) as f:
                    data = json.load(f)
                if data["pid"] == self.process.pid:
                    return f"http://127.0.0.1:{data['listening'][0]['port']}/"
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.05)
        raise SystemExit("the runtime did not start within 60 s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.home, ignore_errors=True)


def shoot(base: str, token: str, out: Path) -> list[Path]:
    from playwright.sync_api import expect, sync_playwright

    saved = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--disable-gpu", "--no-first-run",
                                                                             "--disable-dev-shm-usage"])
        try:
            setup = browser.new_page()
            setup.goto(base)
            sessions = setup.evaluate(SETUP, {"token": token, "runbook": RUNBOOK, "others": OTHER_NOTEBOOKS})
            setup.close()
            for scheme, sid in zip(("light", "dark"), sessions):
                context = browser.new_context(viewport=SIZE, color_scheme=scheme, device_scale_factor=1)
                page = context.new_page()
                page.goto(f"{base}#token={token}")
                page.locator("html[data-ui=ready]").wait_for(state="attached", timeout=WAIT_MS)
                expect(page.locator(f"[data-session-id='{sid}']").first).to_be_visible(timeout=WAIT_MS)
                page.wait_for_timeout(300)  # fonts and the last paint
                saved.append(save(page, out / f"home-{scheme}.png"))

                page.goto(f"{base}#session={sid}")
                for cell in RUNBOOK:
                    page.locator(f"[data-cell-id='{cell['id']}'][data-run-status=idle]").wait_for(timeout=WAIT_MS)
                page.click("#run-all")
                for cell in RUNBOOK:
                    expect(page.locator(f"[data-cell-id='{cell['id']}']")).to_have_attribute(
                        "data-run-status", "ok", timeout=WAIT_MS)
                page.locator("#variables [data-variable=disks]").wait_for(timeout=WAIT_MS)
                page.locator("#kernel[data-state=idle]").wait_for(timeout=WAIT_MS)
                page.mouse.click(1, 1)  # nothing focused or hovered
                page.wait_for_timeout(300)
                saved.append(save(page, out / f"notebook-{scheme}.png"))

                page.click("#help-button")
                page.locator("#help").wait_for(timeout=WAIT_MS)
                page.wait_for_timeout(200)
                saved.append(save(page, out / f"help-{scheme}.png"))
                context.close()
        finally:
            browser.close()
    return saved


def save(page: Any, path: Path) -> Path:
    page.screenshot(path=str(path))
    if shutil.which("pngquant"):  # 256 colours: a third of the size, no visible change for a UI
        subprocess.run(["pngquant", "--force", "--skip-if-larger", "--quality=80-100", "--strip",
                        "--output", str(path), "--", str(path)], check=False)
    if shutil.which("optipng"):
        subprocess.run(["optipng", "-quiet", "-o2", "-strip", "all", str(path)], check=False)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=CHECKOUT / "docs" / "screenshots")
    args = parser.parse_args()
    if not os.path.exists(CHROMIUM):
        raise SystemExit(f"{CHROMIUM} not found: apt-get update && apt-get install chromium")
    args.out.mkdir(parents=True, exist_ok=True)
    runtime = Runtime()
    try:
        for path in shoot(runtime.url(), runtime.token, args.out):
            print(f"{path.relative_to(CHECKOUT) if path.is_relative_to(CHECKOUT) else path}  {path.stat().st_size // 1024} KiB")
    finally:
        runtime.stop()


if __name__ == "__main__":
    main()
