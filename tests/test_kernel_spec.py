"""--kernel-spec NAME: Python kernels from a Jupyter kernelspec, over the real WebSocket.

Each kernelspec lives in a temporary JUPYTER_PATH directory, found as
``jupyter kernelspec list`` finds it; its ``env`` marks the kernels it
starts, so a cell can show which kernel it ran in.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from typing import Any

from twisted.trial import unittest

from spinrt.config import ConfigError, RuntimeConfig

from .support import TOKEN, Client, sleep, start_runtime, ws_url

HIDE_SPINRT = ("import sys; sys.modules['spinrt'] = None; "
               "from ipykernel.kernelapp import launch_new_instance; launch_new_instance()")


class SpecPath(unittest.TestCase):
    """A JUPYTER_PATH of this test's own with kernelspecs in it."""

    def setUp(self) -> None:
        self.jupyter_path = tempfile.mkdtemp(prefix="jupyter-path-", dir=os.path.abspath("."))
        old = os.environ.get("JUPYTER_PATH")
        os.environ["JUPYTER_PATH"] = self.jupyter_path
        self.addCleanup(lambda: os.environ.__setitem__("JUPYTER_PATH", old) if old is not None
                        else os.environ.pop("JUPYTER_PATH", None))

    def write_spec(self, name: str, argv: list[str], language: str = "python", **extra: Any) -> None:
        directory = os.path.join(self.jupyter_path, "kernels", name)
        os.makedirs(directory)
        with open(os.path.join(directory, "kernel.json"), "w") as f:
            json.dump({"argv": argv, "display_name": name, "language": language, **extra}, f)


class ConfigTests(SpecPath):
    def config(self, name: str) -> RuntimeConfig:
        return RuntimeConfig.from_options({"kernel-spec": name}, {"SPIN_TOKEN": TOKEN})

    def test_found(self) -> None:
        self.write_spec("team-py", [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"])
        self.assertEqual(self.config("team-py").kernel_spec, "team-py")

    def test_unknown(self) -> None:
        self.write_spec("team-py", [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"])
        with self.assertRaises(ConfigError) as caught:
            self.config("no-such-spec")
        message = str(caught.exception)
        self.assertIn("--kernel-spec no-such-spec: no such kernelspec", message)
        self.assertIn("team-py", message)  # what there is
        self.assertIn(os.path.join(self.jupyter_path, "kernels"), message)  # where it looked
        self.assertNotIn("\n", message)

    def test_not_python(self) -> None:
        self.write_spec("ir", ["R", "--slave", "-e", "IRkernel::main()", "--args", "{connection_file}"], language="R")
        with self.assertRaises(ConfigError) as caught:
            self.config("ir")
        self.assertEqual(str(caught.exception),
                         "--kernel-spec ir is a R kernel; Python cells need a Python (IPython) kernel")

    def test_unreadable(self) -> None:
        directory = os.path.join(self.jupyter_path, "kernels", "broken")
        os.makedirs(directory)
        with open(os.path.join(directory, "kernel.json"), "w") as f:
            f.write("{not json")
        with self.assertRaises(ConfigError) as caught:
            self.config("broken")
        self.assertIn("--kernel-spec broken: cannot read it", str(caught.exception))

    def test_default_is_the_runtimes_own_python(self) -> None:
        self.assertIsNone(RuntimeConfig.from_options({}, {"SPIN_TOKEN": TOKEN}).kernel_spec)


class SpecKernelChecks(SpecPath):
    """A runtime with --kernel-spec, and the checks every kind of spec kernel must pass."""

    timeout = 120

    spec_env: dict[str, str] = {}
    runtime_env: dict[str, str] = {}

    async def start(self, argv: list[str], **extra: Any) -> tuple[Client, str]:
        self.write_spec("team-py", argv, env={"SPIN_SPEC_MARK": "from-team-py", **self.spec_env}, **extra)
        service = await start_runtime(self, "--kernel-spec", "team-py", environ=self.runtime_env)
        client = await Client.connect(ws_url(service))
        self.addCleanup(client.close)
        reply = await client.request("session.create", name="spec", variables={"n": 21})
        self.assertTrue(reply["ok"], reply)
        return client, reply["session"]["id"]

    async def run_ok(self, client: Client, sid: str, cell: dict[str, Any], timeout: float = 60.0) -> str:
        done = await client.run(sid, cell, timeout)
        self.assertEqual(done["status"], "ok", done)
        return client.output(done["run"])

    async def check_kernel(self, argv: list[str], **extra: Any) -> Client:
        client, sid = await self.start(argv, **extra)
        py = {"type": "python"}
        # The spec's kernel (its env), with the session's variables and the helpers.
        out = await self.run_ok(client, sid, {**py, "source": "import os\nprint(os.environ['SPIN_SPEC_MARK'], n * 2)"})
        self.assertEqual(out, "from-team-py 42\n")
        reply = await client.request("secrets.set", session=sid, secrets={"API_KEY": "s3cret-value-1"})
        self.assertTrue(reply["ok"], reply)
        out = await self.run_ok(client, sid, {**py, "source": "v = SpinSecrets.get_secret('API_KEY')\nprint(len(v), v)"})
        self.assertEqual(out, "14 ***\n")  # the value reached the kernel; its output is masked
        # A kernel global read by a template; an output variable as a CellResult.
        await self.run_ok(client, sid, {**py, "source": "greeting = 'hello'"})
        out = await self.run_ok(client, sid, {"type": "shell", "source": "echo {{greeting}}-{{n}}", "output_variable": "r"})
        self.assertEqual(out, "hello-21\n")
        out = await self.run_ok(client, sid, {**py, "source": "print(type(r).__name__, r.stdout.strip())"})
        self.assertEqual(out, "CellResult hello-21\n")
        listed = await client.request("variables.list", session=sid)
        self.assertEqual(listed["variables"]["r"]["type"], "CellResult")
        self.assertEqual(listed["variables"]["n"]["preview"], "21")
        # Interrupt: a cancelled run stops the cell, the kernel and its state stay.
        reply = await client.request("cell.run", session=sid, cell={**py, "source": "import time\ntime.sleep(120)"})
        run = reply["run"]
        await client.wait_for(lambda m: m.get("event") == "run.started" and m.get("run") == run)
        await sleep(0.5)
        await client.request("run.cancel", session=sid, run=run)
        done = await client.wait_for(lambda m: m.get("event") == "run.finished" and m.get("run") == run, 30)
        self.assertEqual(done["status"], "cancelled", done)
        out = await self.run_ok(client, sid, {**py, "source": "print(greeting)"})
        self.assertEqual(out, "hello\n")
        # Restart: a fresh kernel from the same spec, with the helpers again.
        reply = await client.request("kernel.restart", session=sid, timeout=60)
        self.assertTrue(reply["ok"], reply)
        out = await self.run_ok(client, sid, {**py, "source": (
            "import os\nprint(os.environ['SPIN_SPEC_MARK'], 'greeting' in globals(), "
            "len(SpinSecrets.get_secret('API_KEY')))")})
        self.assertEqual(out, "from-team-py False 14\n")
        return client


class SpecKernelTests(SpecKernelChecks):
    async def test_ipykernel_launcher_spec(self) -> None:
        """The usual kernelspec: `python -m ipykernel_launcher -f {connection_file}`."""
        await self.check_kernel([sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"])

    async def test_kernel_without_spinrt(self) -> None:
        """A kernel whose Python cannot import spinrt gets the runtime's helpers all the same."""
        client = await self.check_kernel([sys.executable, "-c", HIDE_SPINRT, "-f", "{connection_file}"])
        sid = client.events(kind="run.finished")[0]["session"]
        out = await self.run_ok(client, sid, {"type": "python", "source": (
            "import sys\nprint(sys.modules['spinrt.cells.kernel_startup'].__file__)")})
        self.assertEqual(out, "<spin runtime: spinrt.cells.kernel_startup>\n")

    async def test_spec_kernel_that_fails(self) -> None:
        """A spec whose kernel dies at once: the cell fails with a clear error, the runtime stays."""
        client, sid = await self.start([sys.executable, "-c", "raise SystemExit(3)", "-f", "{connection_file}"])
        done = await client.run(sid, {"type": "python", "source": "print(1)"}, 90)
        self.assertEqual(done["status"], "error", done)
        self.assertIn("exited with status 3", done["error"]["evalue"])
        reply = await client.request("ping")
        self.assertTrue(reply["ok"], reply)
