"""``spin run``: real notebooks, run end to end on an embedded runtime and on one the test starts."""

from __future__ import annotations

import fcntl
import io
import json
import os
import re
import shutil
import signal
import sys
from typing import Any

import nbformat
from twisted.internet import defer, reactor
from twisted.internet.protocol import Factory, ProcessProtocol
from twisted.trial import unittest

from spinrt.cli.main import UsageError, cli, parse_duration, parse_params

from .support import TOKEN, eventually, group_alive, start_runtime, ws_url

HERE = os.path.dirname(os.path.abspath(__file__))
NOTEBOOKS = os.path.join(HERE, "notebooks")
REPO = os.path.dirname(HERE)


def fixture(name: str) -> str:
    return os.path.join(NOTEBOOKS, name + ".ipynb")


def base_environ(**extra: str) -> dict[str, str]:
    """The test's environment without anything that would change spin's defaults."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("SPIN_TOKEN", "SPIN_HOME", "MAX_DURATION", "REQUESTS_CA_BUNDLE")}
    env.update(extra)
    return env


class Result:
    def __init__(self, code: int, out: str, err: str, output: str | None) -> None:
        self.code = code
        self.out = out
        self.err = err
        self.output = output

    def json(self) -> dict[str, Any]:
        return json.loads(self.out)

    def notebook(self) -> nbformat.NotebookNode:
        assert self.output is not None
        nb = nbformat.read(self.output, as_version=4)
        nbformat.validate(nb)  # what JupyterLab and nbconvert need
        return nb


class CliMixin:
    def setUp(self) -> None:
        self.dir = os.path.abspath(self.mktemp())  # type: ignore[attr-defined]
        os.makedirs(self.dir)

    async def spin(self, *argv: str, environ: dict[str, str] | None = None, output: bool = True) -> Result:
        out_path = os.path.join(self.dir, f"out-{len(os.listdir(self.dir))}.ipynb") if output else None
        args = list(argv) + (["-o", out_path] if out_path else [])
        stdout, stderr = io.StringIO(), io.StringIO()
        code = await cli(args, reactor, environ=environ or base_environ(), stdout=stdout, stderr=stderr)
        written = out_path if out_path and os.path.exists(out_path) else None
        return Result(code, stdout.getvalue(), stderr.getvalue(), written)


def texts(cell: Any, name: str = "stdout") -> str:
    return "".join(o.text for o in cell.outputs if o.output_type == "stream" and o.name == name)


class EmbeddedTests(CliMixin, unittest.TestCase):
    """The default: an in-process runtime, no server, no token."""

    timeout = 60

    async def test_shell_and_markdown_logs(self) -> None:
        home = os.path.join(self.dir, "home")
        r = await self.spin("run", fixture("shell"), "-p", "service=api", "--home", home)
        self.assertEqual(r.code, 0, r.err + r.out)
        self.assertEqual(r.err, "")
        # Cell headers, live output, a progress line per cell, the summary.
        self.assertIn("on an embedded runtime", r.out)
        self.assertIn("==> [1/3] markdown: # Deploy {{service}}", r.out)
        self.assertIn("==> [2/3] shell: echo start {{service}}", r.out)
        self.assertIn("start api\nno newline\n<== [2/3] ok in ", r.out)
        self.assertRegex(r.out, r"<== \[3/3\] ok in \d+\.\d\d s \(3/3 done\)")
        self.assertRegex(r.out, r"=== summary: 3 ok in \d+\.\d\d s")
        self.assertIn("executed notebook written to", r.out)
        nb = r.notebook()
        markdown, first, second = nb.cells
        self.assertEqual(markdown.source, "# Deploy api")
        self.assertEqual(markdown.metadata.spin.source, "# Deploy {{service}}")
        self.assertEqual(texts(first), "start api\nno newline")
        self.assertEqual(first.execution_count, 1)
        # The embedded runtime's token never reaches a cell.
        self.assertEqual(texts(second), "exit code was 0\ntoken=\n")
        self.assertEqual(second.metadata.spin.run["status"], "ok")
        # The given home keeps the history; the runtime is gone.
        self.assertTrue(os.path.exists(os.path.join(home, "var", "spin.sqlite3")))
        self.assertFalse(os.path.exists(os.path.join(home, "var", "runtime.json")))

    async def test_rerun_executed_notebook_uses_the_templates(self) -> None:
        first = await self.spin("run", fixture("shell"), "-p", "service=api")
        again = await self.spin("run", first.output, "-p", "service=db")
        self.assertEqual(again.code, 0, again.err)
        self.assertEqual(again.notebook().cells[0].source, "# Deploy db")

    async def test_python_shell_markdown_json(self) -> None:
        r = await self.spin("run", fixture("mixed"), "-p", "service=api", "-p", "region=eu-1", "--format", "json")
        self.assertEqual(r.code, 0, r.err)
        doc = r.json()
        self.assertEqual(doc["exit_code"], 0)
        self.assertEqual(doc["reason"], "")
        self.assertEqual(doc["runtime"]["mode"], "embedded")
        self.assertEqual(doc["counts"], {"ok": 4})
        cells = doc["cells"]
        self.assertEqual([c["type"] for c in cells], ["markdown", "shell", "python", "markdown"])
        self.assertEqual([c["index"] for c in cells], [0, 1, 2, 4])  # the raw cell is not run
        self.assertEqual(cells[1]["outputs"], [
            {"output_type": "stream", "name": "stdout", "text": "hello from api\n"},
            {"output_type": "stream", "name": "stderr", "text": "to-stderr\n"},
        ])
        self.assertEqual(cells[1]["variables"]["greeting"]["type"], "CellResult")
        self.assertIsInstance(cells[2]["duration_ms"], int)
        kinds = [o["output_type"] for o in cells[2]["outputs"]]
        self.assertEqual(kinds, ["stream", "display_data", "execute_result"])
        self.assertEqual(cells[2]["outputs"][0]["text"], "python sees api eu-1\n")
        self.assertEqual(cells[2]["outputs"][1]["data"]["text/html"], "<b>bold</b>")
        self.assertEqual(cells[2]["outputs"][2]["data"]["text/plain"], "42")
        self.assertEqual(cells[3]["outputs"][0]["data"]["text/markdown"], 'Shell said: "hello from api\\n"')
        nb = r.notebook()
        self.assertEqual(nb.cells[2].outputs[2].execution_count, 2)
        self.assertEqual(nb.cells[3].source, "raw cells are not run")
        self.assertNotIn("spin", nb.cells[3].metadata)

    async def test_failing_cell_stops_the_rest(self) -> None:
        r = await self.spin("run", fixture("failing"))
        self.assertEqual(r.code, 1)
        self.assertEqual(r.err.count("\n"), 1)
        self.assertIn("cell 2 (shell: echo about to fail; exit 3) error", r.err)
        self.assertIn("status 3", r.err)
        self.assertIn("<== [2/4] error in", r.out)
        self.assertIn("--- [3/4] shell: echo never printed skipped", r.out)
        self.assertIn("=== summary: 1 ok, 1 error, 2 skipped", r.out)
        self.assertNotIn("never printed\n", r.out.split("==> [2/4]")[1].split("---")[0])
        cells = r.notebook().cells
        self.assertEqual(texts(cells[1]), "about to fail\n")
        error = cells[1].outputs[-1]
        self.assertEqual((error.output_type, error.ename), ("error", "ShellError"))
        self.assertTrue(error.traceback)
        self.assertEqual(cells[2].outputs, [])
        self.assertIsNone(cells[2].execution_count)
        self.assertEqual(cells[2].metadata.spin.run["status"], "skipped")
        self.assertEqual(cells[3].source, "never rendered")

    async def test_python_error(self) -> None:
        r = await self.spin("run", fixture("python_error"), "--format", "json")
        self.assertEqual(r.code, 1)
        self.assertIn("cell 2 (python: raise ValueError('boom ' + str(x))) error: ValueError: boom 1", r.err)
        cells = r.json()["cells"]
        self.assertEqual([c["status"] for c in cells], ["ok", "error", "skipped"])
        self.assertEqual(cells[1]["error"]["ename"], "ValueError")
        nb = r.notebook()
        error = nb.cells[1].outputs[-1]
        self.assertEqual((error.output_type, error.ename, error.evalue), ("error", "ValueError", "boom 1"))
        self.assertTrue(any("ValueError" in line for line in error.traceback))

    async def test_max_duration_cancels_and_writes_partial_output(self) -> None:
        started = reactor.seconds()
        r = await self.spin("run", fixture("slow"), "--max-duration", "1s")
        self.assertLess(reactor.seconds() - started, 10)
        self.assertEqual(r.code, 3, r.err)
        self.assertIn("spin: max duration 1s exceeded while cell 2 (shell) ran; 1 cell not run", r.err)
        pgid = int(re.search(r"pid=(\d+)", r.out).group(1))
        self.assertFalse(group_alive(pgid))  # the cell's processes were really stopped
        cells = r.notebook().cells
        self.assertEqual(texts(cells[0]), "started\n")
        self.assertIn("sleeping", texts(cells[1]))
        self.assertNotIn("woke", texts(cells[1]))
        self.assertEqual(cells[1].outputs[-1].ename, "Cancelled")
        self.assertIn("--max-duration 1s", cells[1].outputs[-1].evalue)
        self.assertEqual(cells[2].metadata.spin.run["status"], "skipped")

    async def test_max_duration_from_environment(self) -> None:
        r = await self.spin("run", fixture("slow"), "--format", "json", environ=base_environ(MAX_DURATION="0.5"))
        self.assertEqual(r.code, 3)
        doc = r.json()
        self.assertEqual([c["status"] for c in doc["cells"]], ["ok", "cancelled", "skipped"])
        self.assertIn("max duration 0.5 exceeded", doc["reason"])

    async def test_cell_timeout_is_a_cell_failure(self) -> None:
        r = await self.spin("run", fixture("cell_timeout"))
        self.assertEqual(r.code, 1)
        self.assertIn("cell 1 (shell: sleep 30) timeout: Timeout: the run exceeded its timeout of 0.5 s", r.err)
        self.assertEqual(r.notebook().cells[0].outputs[-1].ename, "Timeout")

    async def test_missing_parameter(self) -> None:
        r = await self.spin("run", fixture("shell"))
        self.assertEqual(r.code, 1)
        self.assertIn("{{service}}", r.err)
        self.assertIn("-p NAME=VALUE", r.err)
        cells = r.notebook().cells
        self.assertEqual(cells[0].source, "# Deploy {{service}}")
        self.assertEqual(cells[0].metadata.spin.run["status"], "error")
        self.assertEqual(cells[1].metadata.spin.run["status"], "skipped")

    async def test_secrets_are_masked_everywhere(self) -> None:
        env = base_environ(DB_PASSWORD="hunter2-very-secret")
        for fmt in ("logs", "json"):
            r = await self.spin("run", fixture("secret"), "--secret", "DB_PASSWORD", "--format", fmt, environ=env)
            self.assertEqual(r.code, 0, r.err)
            with open(r.output) as f:
                written = f.read()
            for text in (r.out, r.err, written):
                self.assertNotIn("hunter2", text)
            self.assertIn("the password is ***", r.out if fmt == "logs" else written)
        r = await self.spin("run", fixture("secret"), "--secret", "NOT_SET_ANYWHERE")
        self.assertEqual((r.code, r.output), (2, None))
        self.assertEqual(r.err, "spin: --secret NOT_SET_ANYWHERE: NOT_SET_ANYWHERE is not set in the environment\n")

    async def test_unreadable_notebooks(self) -> None:
        r = await self.spin("run", fixture("malformed"))
        self.assertEqual((r.code, r.output, r.out), (2, None, ""))
        self.assertIn("is not a readable notebook: Notebook does not appear to be JSON", r.err)
        r = await self.spin("run", os.path.join(self.dir, "missing.ipynb"))
        self.assertEqual(r.code, 2)
        self.assertIn("cannot read", r.err)
        self.assertIn("No such file", r.err)
        invalid = os.path.join(self.dir, "invalid.ipynb")
        with open(invalid, "w") as f:
            json.dump({"nbformat": 4, "nbformat_minor": 5, "metadata": {},
                       "cells": [{"cell_type": "code", "source": "1", "metadata": {}, "id": "a"}]}, f)
        r = await self.spin("run", invalid, "--format", "json")
        self.assertEqual(r.code, 2)
        self.assertIn("is not a valid notebook (at cells/0)", r.err)
        self.assertEqual(r.json()["exit_code"], 2)
        bad_meta = os.path.join(self.dir, "bad-meta.ipynb")
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x", metadata={"spin": {"options": [1]}})])
        nbformat.write(nb, bad_meta)
        r = await self.spin("run", bad_meta)
        self.assertEqual(r.code, 2)
        self.assertEqual(r.err, "spin: cell 1: metadata.spin.options must be an object\n")

    async def test_unknown_cell_type(self) -> None:
        r = await self.spin("run", fixture("unknown_type"))
        self.assertEqual(r.code, 2)
        self.assertIn("cell 2 (notebook cell 2) has unknown cell type 'sql'; this runtime has: ", r.err)
        self.assertIn("shell", r.err)
        self.assertNotIn("==>", r.out)  # nothing ran
        nb = r.notebook()  # still written, for the CI job's artifacts
        self.assertEqual(nb.cells[0].outputs, [])

    async def test_home_in_use_by_another_run(self) -> None:
        home = os.path.join(self.dir, "home")
        os.makedirs(os.path.join(home, "var"))
        fd = os.open(os.path.join(home, "var", "spin-run.lock"), os.O_RDWR | os.O_CREAT)
        self.addCleanup(os.close, fd)
        fcntl.flock(fd, fcntl.LOCK_EX)
        r = await self.spin("run", fixture("failing"), environ=base_environ(SPIN_HOME=home))
        self.assertEqual(r.code, 2)
        self.assertIn(f"SPIN_HOME {home} is in use by another `spin run`", r.err)


class RemoteTests(CliMixin, unittest.TestCase):
    """``--url``: a runtime the test starts, over the real WebSocket."""

    timeout = 60

    async def test_against_a_running_runtime(self) -> None:
        service = await start_runtime(self)
        url = ws_url(service)
        r = await self.spin("run", fixture("mixed"), "--url", url, "-p", "service=api", "-p", "region=eu",
                            "--format", "json", environ=base_environ(SPIN_TOKEN=TOKEN))
        self.assertEqual(r.code, 0, r.err)
        doc = r.json()
        self.assertEqual(doc["runtime"], {"mode": "remote", "url": url, "version": service.runtime_info["version"]})
        self.assertEqual(doc["counts"], {"ok": 4})
        self.assertEqual(r.notebook().cells[1].outputs[0].text, "hello from api\n")
        # The run's session was closed on the runtime (its kernel and processes stopped).
        (session,) = service.manager.sessions.values()
        self.assertEqual(session.state, "closed")
        self.assertEqual(session.name, "spin run mixed.ipynb")
        self.assertNotIn(TOKEN, r.out + r.err)

    async def test_token_file_and_failures(self) -> None:
        service = await start_runtime(self)
        token_file = os.path.join(self.dir, "token")
        with open(token_file, "w") as f:
            f.write(TOKEN + "\n")
        r = await self.spin("run", fixture("failing"), "--url", ws_url(service), "--token-file", token_file)
        self.assertEqual(r.code, 1)
        self.assertIn("--- [4/4] markdown: never rendered skipped", r.out)
        self.assertEqual(len(r.notebook().cells[1].outputs), 2)

    async def test_wrong_or_missing_token(self) -> None:
        service = await start_runtime(self)
        wrong = "wrong-token-that-must-not-be-printed"
        r = await self.spin("run", fixture("shell"), "--url", ws_url(service), environ=base_environ(SPIN_TOKEN=wrong))
        self.assertEqual(r.code, 4)
        self.assertEqual(r.err, "spin: the runtime refused the token (HTTP 401): check SPIN_TOKEN or --token-file\n")
        self.assertNotIn(wrong, r.out + r.err)
        self.assertEqual(r.notebook().cells[1].outputs, [])  # nothing ran; still written
        r = await self.spin("run", fixture("shell"), "--url", ws_url(service))
        self.assertEqual(r.code, 2)
        self.assertIn("--url needs the runtime's token: export SPIN_TOKEN or pass --token-file", r.err)

    async def test_unreachable_runtime(self) -> None:
        port = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
        number = port.getHost().port
        await port.stopListening()
        r = await self.spin("run", fixture("shell"), "--url", f"ws://127.0.0.1:{number}/ws?token=x", "--format",
                            "json", environ=base_environ(SPIN_TOKEN=TOKEN))
        self.assertEqual(r.code, 4)
        self.assertIn(f"cannot reach the runtime at ws://127.0.0.1:{number}/ws: ", r.err)
        self.assertIn("refused", r.err)
        self.assertNotIn("token=x", r.err)
        self.assertEqual(r.json()["exit_code"], 4)

    async def test_runtime_lost_mid_run(self) -> None:
        service = await start_runtime(self)
        running = self.spin("run", fixture("slow"), "--url", ws_url(service), environ=base_environ(SPIN_TOKEN=TOKEN))
        pending = defer.Deferred.fromCoroutine(running)
        await eventually(lambda: any(s.current is not None and s.current.cell.source.startswith("echo sleeping")
                                     for s in service.manager.sessions.values()))
        for conn in list(service.factory.connections):
            conn.transport.abortConnection()
        r = await pending
        self.assertEqual(r.code, 4)
        self.assertIn("lost the connection to the runtime", r.err)
        cells = r.notebook().cells
        self.assertEqual(texts(cells[0]), "started\n")
        self.assertEqual(cells[1].metadata.spin.run["status"], "not_finished")


class UsageTests(CliMixin, unittest.TestCase):
    def test_durations(self) -> None:
        for text, seconds in [("90s", 90), ("10m", 600), ("1h", 3600), ("45", 45), ("1h30m", 5400),
                              ("0.5", 0.5), (" 2M ", 120), ("1h 2", 3602)]:
            self.assertEqual(parse_duration(text), seconds, text)
        for text in ("", "10x", "m", "-5", "0", "0s", "1h-", "10m1h", "1.5.2"):
            with self.assertRaises(UsageError, msg=text):
                parse_duration(text)

    def test_params(self) -> None:
        self.assertEqual(parse_params(["n=3", "xs=[1, 2]", "s=hello", "q=\"7\"", "e=", "eq=a=b"]),
                         {"n": 3, "xs": [1, 2], "s": "hello", "q": "7", "e": "", "eq": "a=b"})
        for bad in ("noequals", "1x=2", "=3"):
            with self.assertRaises(UsageError):
                parse_params([bad])

    async def test_bad_command_lines(self) -> None:
        nb = fixture("shell")
        cases = [
            ([], "a command is required"),
            (["run"], "the following arguments are required: NOTEBOOK"),
            (["run", nb, "--max-duration", "soon"], "is not a duration"),
            (["run", nb, "-p", "1x=2"], "NAME an identifier"),
            (["run", nb, "--format", "xml"], "invalid choice: 'xml'"),
            (["run", nb, "--url", "http://127.0.0.1:1/ws"], "--url: invalid WebSocket URL"),
            (["run", nb, "--token-file", "/dev/null"], "--token-file and --ca-file need --url"),
            (["run", nb, "--url", "ws://127.0.0.1:1/ws", "--home", "/tmp"], "--home is for the embedded runtime"),
            (["run", nb, "-o", "/nonexistent-dir/out.ipynb"], "its directory does not exist"),
            (["run", nb, "--url", "wss://localhost:1/ws", "--ca-file", "/nonexistent.pem"], "--ca-file /nonexistent.pem does not exist"),
            (["run", nb, "--url", "wss://localhost:1/ws", "--ca-file", nb], "holds no usable CA certificates"),
        ]
        for argv, message in cases:
            stdout, stderr = io.StringIO(), io.StringIO()
            code = await cli(argv, reactor, environ=base_environ(SPIN_TOKEN=TOKEN), stdout=stdout, stderr=stderr)
            self.assertEqual(code, 2, argv)
            self.assertIn(message, stderr.getvalue(), argv)
            self.assertEqual(stdout.getvalue(), "", argv)


class _Collect(ProcessProtocol):
    def __init__(self) -> None:
        self.out = bytearray()
        self.err = bytearray()
        self.ended: defer.Deferred[int | None] = defer.Deferred()
        self.pid = 0

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(reason.value.exitCode)


def _spawn(argv: list[str], env: dict[str, str]) -> _Collect:
    collect = _Collect()
    collect.pid = reactor.spawnProcess(collect, argv[0], argv, env=env, path=REPO).pid
    return collect


def _reap(proc: _Collect) -> defer.Deferred[int | None] | None:
    """A failed test must not leave the child running."""
    if proc.ended.called:
        return None
    os.kill(proc.pid, signal.SIGKILL)
    return proc.ended


class EntrypointTests(CliMixin, unittest.TestCase):
    """The image's entrypoint running the installed ``spin`` script, as a container would."""

    timeout = 60

    def _env(self, **extra: str) -> dict[str, str]:
        bindir = os.path.dirname(sys.executable)  # where pip put the console script
        return base_environ(PATH=bindir + os.pathsep + os.environ.get("PATH", ""), **extra)

    async def test_oneshot_runs_the_spin_script_and_stops_cleanly_on_sigterm(self) -> None:
        output = os.path.join(self.dir, "executed.ipynb")
        env = self._env(RUNTIME_MODE="oneshot", NOTEBOOK=fixture("slow"), MAX_DURATION="1m",
                        OUTPUT_NOTEBOOK=output)
        self.assertIsNotNone(shutil.which("spin", path=env["PATH"]), "the spin console script is not installed")
        proc = _spawn(["/bin/sh", os.path.join(REPO, "docker", "oneshot.sh"), "twistd", "-n", "spin-runtime"], env)
        self.addCleanup(_reap, proc)
        await eventually(lambda: re.search(rb"pid=(\d+)\n", proc.out) is not None or proc.ended.called, timeout=30)
        self.assertFalse(proc.ended.called, (proc.out + proc.err).decode())
        pgid = int(re.search(rb"pid=(\d+)\n", proc.out).group(1))
        self.assertTrue(group_alive(pgid))
        # docker stop: SIGTERM to the entrypoint, which exec'd spin.
        os.kill(proc.pid, signal.SIGTERM)
        code = await proc.ended
        out, err = proc.out.decode(), proc.err.decode()
        self.assertEqual(code, 128 + signal.SIGTERM, out + err)
        self.assertIn("==> [2/3] shell: echo sleeping pid=$$", out)
        self.assertIn("=== summary: 1 ok, 1 cancelled, 1 skipped", out)
        self.assertTrue(err.endswith("spin: interrupted by SIGTERM\n"), err)
        self.assertFalse(group_alive(pgid))  # no orphaned cell processes
        nb = nbformat.read(output, as_version=4)
        nbformat.validate(nb)
        self.assertEqual(nb.cells[1].outputs[-1].evalue, "interrupted by SIGTERM")

    async def test_entrypoint_modes(self) -> None:
        proc = _spawn(["/bin/sh", os.path.join(REPO, "docker", "oneshot.sh"), "echo", "daemon", "command"],
                      self._env())
        self.assertEqual(await proc.ended, 0)
        self.assertEqual(proc.out, b"daemon command\n")
        proc = _spawn(["/bin/sh", os.path.join(REPO, "docker", "oneshot.sh"), "true"], self._env(RUNTIME_MODE="oneshot"))
        self.assertEqual(await proc.ended, 2)
        self.assertIn(b"NOTEBOOK", proc.err)
        proc = _spawn(["/bin/sh", os.path.join(REPO, "docker", "oneshot.sh"), "true"], self._env(RUNTIME_MODE="batch"))
        self.assertEqual(await proc.ended, 2)
        self.assertIn(b"RUNTIME_MODE", proc.err)


class TlsTests(CliMixin, unittest.TestCase):
    """wss://: the runtime's certificate is always verified before the token is sent."""

    timeout = 60

    async def test_wss_verified_with_ca_file(self) -> None:
        from . import tls
        from .test_https import ssl_endpoint, tls_port

        pki = tls.make_pki(self.dir)
        service = await start_runtime(self, "--endpoint", ssl_endpoint(pki))
        url = f"wss://localhost:{tls_port(service)}/ws"
        env = base_environ(SPIN_TOKEN=TOKEN)
        r = await self.spin("run", fixture("failing"), "--url", url, "--ca-file", pki.bundle, environ=env)
        self.assertEqual(r.code, 1, r.err)
        self.assertIn(f"on {url}", r.out)
        r = await self.spin("run", fixture("failing"), "--url", url, environ=base_environ(SPIN_TOKEN=TOKEN, REQUESTS_CA_BUNDLE=pki.bundle))
        self.assertEqual(r.code, 1, r.err)
        # Not trusted by the system's CAs: refused before any token is sent.
        r = await self.spin("run", fixture("failing"), "--url", url, environ=env)
        self.assertEqual(r.code, 4)
        self.assertEqual(r.err, f"spin: TLS with the runtime at {url} failed (certificate verify failed)\n")
        self.assertEqual(service.factory.throttle.retry_after("127.0.0.1"), 0)
