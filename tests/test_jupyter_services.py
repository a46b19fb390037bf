"""``@jupyterlab/services`` (what VS Code's Jupyter extension and JupyterLab
use), installed from the npm registry at the versions in
tests/jupyter_clients/services/package-lock.json and run with node, against
the runtime's /jupyter kernels API directly (issue 16).

The packages go to a cache outside the tree, keyed by the lock file's hash,
installed once with ``npm ci --ignore-scripts``. Without node or npm (or the
registry) this skips, and fails under CI (tests/needs.py)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.protocol import ProcessProtocol
from twisted.trial import unittest

from .jupyter_support import call
from .needs import require
from .support import TOKEN, Client, eventually, start_runtime, ws_url

CLIENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "jupyter_clients", "services")
WHAT = "@jupyterlab/services test (node and npm, Debian's nodejs and npm packages)"


class _Process(ProcessProtocol):
    """Collects output; with ``announces``, ``ready`` fires with stdout's
    first line, parsed as JSON."""

    def __init__(self, announces: bool = False) -> None:
        self.announces = announces
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.ready: defer.Deferred[Any] = defer.Deferred()
        self.ended: defer.Deferred[Any] = defer.Deferred()
        self.status: int | None = None

    def outReceived(self, data: bytes) -> None:
        self.stdout += data
        if self.announces and not self.ready.called and b"\n" in self.stdout:
            self.ready.callback(json.loads(self.stdout.split(b"\n", 1)[0]))

    def errReceived(self, data: bytes) -> None:
        self.stderr = (self.stderr + data)[-65536:]

    def processEnded(self, reason: Any) -> None:
        self.status = reason.value.exitCode
        if self.announces and not self.ready.called:
            self.ready.errback(AssertionError(f"node exited early: {self.text()}"))
        self.ended.callback(None)

    def text(self) -> str:
        return (self.stdout + self.stderr).decode("utf-8", "replace")[-4000:]


async def run(argv: list[str], env: dict[str, str], path: str, timeout: float) -> _Process:
    process = _Process()
    transport = reactor.spawnProcess(process, argv[0], argv, env=env, path=path)
    timer = reactor.callLater(timeout, lambda: process.ended.called or transport.signalProcess("KILL"))
    await process.ended
    if timer.active():
        timer.cancel()
    return process


async def installed_modules(testcase: unittest.TestCase) -> str:
    """node_modules with the locked packages (installed on first use); skips
    (fails under CI) without node, npm or the registry."""
    node, npm = shutil.which("node"), shutil.which("npm")
    require(testcase, None if node and npm else "node and npm are not on PATH", WHAT)
    with open(os.path.join(CLIENT, "package-lock.json"), "rb") as f:
        key = hashlib.sha256(f.read()).hexdigest()[:16]
    cache = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "spinrt-tests")
    target = os.path.join(cache, f"jupyterlab-services-{key}")
    modules = os.path.join(target, "node_modules")
    if os.path.exists(os.path.join(modules, "@jupyterlab", "services", "package.json")):
        return modules
    os.makedirs(cache, exist_ok=True)
    # Installed beside the target and renamed: a concurrent or killed run
    # never leaves a half-installed cache behind.
    work = tempfile.mkdtemp(prefix="jupyterlab-services-", dir=cache)
    for name in ("package.json", "package-lock.json"):
        shutil.copy(os.path.join(CLIENT, name), work)
    env = dict(os.environ, npm_config_update_notifier="false")
    done = await run([str(npm), "ci", "--ignore-scripts", "--no-audit", "--no-fund"], env, work, 600)
    if done.status != 0:
        shutil.rmtree(work, ignore_errors=True)
        require(testcase, f"npm ci failed (exit {done.status}): {done.text()[-1500:]}", WHAT)
    try:
        os.rename(work, target)
    except OSError:  # another run got there first
        shutil.rmtree(work, ignore_errors=True)
    return modules


class JupyterLabServices(unittest.TestCase):
    timeout = 900  # a first run installs the packages

    async def test_services_library_executes_cells(self) -> None:
        modules = await installed_modules(self)
        service = await start_runtime(self)
        base = f"http://127.0.0.1:{service.addresses[0]['port']}/jupyter/"
        node = shutil.which("node")
        assert node is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "SPIN_"))}
        env["NODE_PATH"] = modules
        process = _Process(announces=True)
        transport = reactor.spawnProcess(process, node, [node, os.path.join(CLIENT, "run_cell.js"), base, TOKEN],
                                         env=env, path=CLIENT)
        timer = reactor.callLater(240, lambda: process.ended.called or transport.signalProcess("KILL"))
        self.addCleanup(lambda: timer.cancel() if timer.active() else None)

        # Before any cell runs, a spin client attaches to the kernel's session.
        ready = await process.ready
        kid = ready["ready"]
        owner = await Client.connect(ws_url(service))
        self.addCleanup(owner.close)
        [backing] = [s for s in (await owner.request("session.list"))["sessions"]
                     if s.get("jupyter_kernel_id") == kid]
        sid = backing["id"]
        self.assertTrue((await owner.request("session.attach", session=sid))["ok"])
        transport.write(b"go\n")
        await process.ended
        self.assertEqual(process.status, 0, process.text())
        out = json.loads(process.stdout.decode().strip().splitlines()[-1])

        self.assertEqual(out["kernelspecs"], ["python3", "spin-shell"])
        self.assertEqual((out["kernel_id"], out["kernel_name"], out["language"]), (kid, "python3", "python"))
        # A client that offers the v1 binary protocol gets it.
        self.assertEqual(out["selected_protocol"], "v1.kernel.websocket.jupyter.org")
        self.assertEqual(out["cell"], {"stdout": "42\n", "stderr": "warn\n", "results": ["'spinspin'"], "errors": [],
                                       "status": "ok", "execution_count": 1})
        self.assertEqual((out["failing"]["status"], out["failing"]["ename"], out["failing"]["errors"]),
                         ("error", "ZeroDivisionError", ["ZeroDivisionError"]))
        self.assertEqual((out["interrupted"]["stdout"], out["interrupted"]["ename"]), ("zz\n", "KeyboardInterrupt"))
        self.assertEqual(out["after_restart"]["ename"], "NameError")
        self.assertEqual(out["after_shutdown_status"], 404)

        # The spin client saw the runs live: source, who ran them, output.
        queued = owner.events(session=sid, kind="run.queued")
        self.assertEqual([(q["source"].splitlines()[0], q["by"]) for q in queued],
                         [("print(6*7)", "owner"), ("1/0", "owner"), ("import time", "owner"),
                          ("x = 1", "owner"), ("x", "owner")])
        self.assertEqual(owner.output(queued[0]["run"]), "42\n")
        finished = {e["run"]: e["status"] for e in owner.events(session=sid, kind="run.finished")}
        self.assertEqual([finished.get(q["run"]) for q in queued[:2]], ["ok", "error"])
        # Shutting the session down closed the spin session; its history stays.
        await eventually(lambda: service.manager.get(sid).state == "closed", timeout=10)
        self.assertEqual((await call(service, "GET", f"/api/kernels/{kid}"))[0], 404)
        snapshot = await owner.request("session.snapshot", session=sid)
        self.assertEqual(len(snapshot["runs"]), 5)
