"""Python cells on real IPython kernels, over the real WebSocket.

Each test keeps its kernel count low (CI has two cores): most runtimes run
with ``--kernel-pool 0``. Processes are found by a marker variable in their
environment (kernels inherit the runtime's), so the process-table checks see
exactly this test's kernels and what their cells started.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import signal
import tempfile
import time
from typing import Any

from twisted.internet.task import LoopingCall
from twisted.trial import unittest

from spinrt.cells import kernel_launcher, python_output
from spinrt.cells import python as python_cells
from spinrt.cells.kernel_startup import CellResult, looks_like_result

from . import tls
from .support import Client, DaemonProcess, eventually, sleep, start_runtime, ws_url

PNG = "iVBORw0KGgo="  # base64 of the PNG signature


def marked(mark: str, exclude: tuple[int, ...] = ()) -> list[int]:
    """Live (non-zombie) processes whose environment carries SPIN_TEST_MARK=mark."""
    needle = f"SPIN_TEST_MARK={mark}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in exclude:
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            if stat[stat.rindex(")") + 2:].split()[0] in ("Z", "X"):
                continue
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    found.append(int(entry))
        except (OSError, ValueError):
            continue
    return sorted(found)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2:].split()[0] not in ("Z", "X")


def states(client: Client, sid: str) -> list[str]:
    return [e["state"] for e in client.events(sid, kind="kernel.status")]


class Harness(unittest.TestCase):
    timeout = 60
    pool = "0"

    async def setUp(self) -> None:
        self.mark = secrets.token_hex(6)
        self.ca = tls.write(tempfile.mkdtemp(dir="."), "ca", tls.make_ca("Python Cells Test CA"))
        self.service = await start_runtime(
            self, "--kernel-pool", self.pool,
            environ={"SPIN_TEST_MARK": self.mark, "REQUESTS_CA_BUNDLE": self.ca},
        )
        self.processor = self.service.processors["python"]
        self.c = await Client.connect(ws_url(self.service))
        self.addCleanup(self.c.close)

    async def session(self) -> str:
        return (await self.c.request("session.create"))["session"]["id"]

    async def py(self, sid: str, source: str, **options: Any) -> dict[str, Any]:
        return await self.c.run(sid, {"id": "c", "type": "python", "source": source, "options": options})

    async def start(self, sid: str, source: str, **options: Any) -> str:
        reply = await self.c.request("cell.run", session=sid,
                                     cell={"type": "python", "source": source, "options": options})
        self.assertTrue(reply["ok"], reply)
        return reply["run"]

    async def finished(self, run: str, timeout: float = 30) -> dict[str, Any]:
        return await self.c.wait_for(lambda m: m.get("event") == "run.finished" and m["run"] == run, timeout)

    async def printed(self, sid: str, source: str) -> str:
        done = await self.py(sid, source)
        self.assertEqual(done["status"], "ok", done)
        return self.c.output(done["run"])


def _is_secret(expression: str, value: str) -> str:
    """Python source that is True when ``expression`` equals ``value``,
    without the value itself in the source: sources are shown in run.queued
    and only secrets set with secrets.set are masked there, while these tests
    hand secrets to the kernel directly."""
    digest = hashlib.sha256(value.encode()).hexdigest()
    return f"(__import__('hashlib').sha256(({expression}).encode()).hexdigest() == {digest!r})"


class PythonCellTests(Harness):
    async def test_state_environment_rich_output_and_errors(self) -> None:
        sid = await self.session()
        first = await self.py(sid, "x = 41\nimport os, sys")
        self.assertEqual(first["status"], "ok")
        self.assertEqual(states(self.c, sid), ["starting", "idle", "busy", "idle"])
        self.assertEqual(await self.printed(sid, "x += 1\nprint(x)"), "42\n")
        where = json.loads(await self.printed(sid, (
            "import json; print(json.dumps([os.getcwd(), os.environ.get('REQUESTS_CA_BUNDLE'),"
            " 'SPIN_TOKEN' in os.environ, CellResult.__name__, SpinSecrets.__name__,"
            " 'SpinSecrets' in get_ipython().run_line_magic('who_ls', '')]))"
        )))
        self.assertEqual(where[0], os.path.realpath(self.service.cell_services.session_dir(sid)))
        self.assertEqual(where[1:], [self.ca, False, "CellResult", "SpinSecrets", False])

        rich = await self.py(sid, (
            "from IPython.display import display, HTML, clear_output\n"
            "h = display(HTML('<b>one</b>'), display_id=True)\n"
            "print('out'); print('err', file=sys.stderr)\n"
            "h.update(HTML('<b>two</b>'))\n"
            "clear_output(wait=True)\n"
            "class Rich:\n"
            "    def _repr_html_(self): return '<i>rich</i>'\n"
            "    def _repr_json_(self): return {'a': [1, 2]}\n"
            "    def _repr_png_(self): return b'\\x89PNG\\r\\n\\x1a\\n'\n"
            "    def __repr__(self): return 'Rich()'\n"
            "Rich()"
        ))
        self.assertEqual(rich["status"], "ok", rich)
        events = [e for e in self.c.events(run=rich["run"]) if e["event"] not in ("run.queued", "run.started", "run.finished")]
        self.assertEqual([e["event"] for e in events], ["display", "stream", "stream", "display.update", "clear", "result"])
        display, out, err, update, clear, result = events
        self.assertEqual(display["data"]["text/html"], "<b>one</b>")
        self.assertEqual(update["display_id"], display["display_id"])
        self.assertEqual(update["data"]["text/html"], "<b>two</b>")
        self.assertEqual((out["name"], out["text"], err["name"], err["text"]), ("stdout", "out\n", "stderr", "err\n"))
        self.assertEqual(clear["wait"], True)
        self.assertEqual(result["data"], {"text/plain": "Rich()", "text/html": "<i>rich</i>",
                                          "image/png": PNG, "application/json": {"a": [1, 2]}})

        # Large output arrives whole, in bounded stream events.
        big = await self.py(sid, "for i in range(300):\n    print(str(i).rjust(9999, '.'))")
        chunks = self.c.events(run=big["run"], kind="stream")
        self.assertEqual("".join(e["text"] for e in chunks),
                         "".join(str(i).rjust(9999, ".") + "\n" for i in range(300)))
        self.assertLessEqual(max(len(e["text"]) for e in chunks), python_output.STREAM_CHUNK)

        error = await self.py(sid, "def f():\n    return 1 / 0\nf()")
        self.assertEqual(error["status"], "error")
        self.assertEqual(error["error"]["code"], "python_error")
        self.assertEqual((error["error"]["ename"], error["error"]["evalue"]), ("ZeroDivisionError", "division by zero"))
        traceback = re.sub(r"\x1b\[[0-9;]*m", "", "".join(error["error"]["traceback"]))
        self.assertIn("----> 2     return 1 / 0", traceback)

        for source in ("input('name? ')", "import getpass; getpass.getpass()"):
            started = time.monotonic()
            asked = await self.py(sid, source)
            self.assertLess(time.monotonic() - started, 5)
            self.assertEqual(asked["status"], "error")
            self.assertEqual(asked["error"]["code"], "stdin_not_supported")
            self.assertIn("input() and getpass() are not available", asked["error"]["evalue"])
        self.assertEqual(await self.printed(sid, "print(x)"), "42\n")  # the kernel is fine

    async def test_late_output_of_a_thread_keeps_its_run(self) -> None:
        sid = await self.session()
        done = await self.py(sid, (
            "import threading, time\n"
            "def later():\n    time.sleep(0.3)\n    print('late', flush=True)\n"
            "threading.Thread(target=later).start()"
        ))
        late = await self.c.wait_for(lambda m: m.get("event") == "stream" and m["text"] == "late\n")
        self.assertEqual(late["run"], done["run"])
        self.assertGreater(late["seq"], done["seq"])

    async def test_a_kernel_that_cannot_start_fails_the_run_clearly(self) -> None:
        self.patch(kernel_launcher, "LAUNCH", "import sys; sys.exit(3)")
        sid = await self.session()
        done = await self.py(sid, "1+1")
        self.assertEqual((done["status"], done["error"]["code"]), ("error", "kernel_start_failed"))
        self.assertIn("exited with status 3", done["error"]["evalue"])
        self.assertEqual(states(self.c, sid), ["starting", "dead"])
        self.assertEqual(marked(self.mark), [])

    async def test_sessions_are_isolated_and_other_cells_start_no_kernel(self) -> None:
        a, b, shell_only = await self.session(), await self.session(), await self.session()
        done = await self.c.run(shell_only, {"type": "shell", "source": "echo hi"})
        self.assertEqual(done["status"], "ok")
        self.assertEqual(marked(self.mark), [])  # pool 0 and no Python cell yet
        pid_a = int(await self.printed(a, "secret_of_a = 1\nimport os; print(os.getpid())"))
        pid_b = int(await self.printed(b, "import os; print(os.getpid())"))
        self.assertNotEqual(pid_a, pid_b)
        self.assertEqual(await self.printed(b, "print('secret_of_a' in globals())"), "False\n")
        self.assertEqual(marked(self.mark), sorted([pid_a, pid_b]))
        self.assertFalse(self.processor.has_kernel(shell_only))
        self.assertTrue(self.processor.has_kernel(a))
        self.assertEqual(states(self.c, shell_only), [])

    async def test_cancel_and_timeout_interrupt_and_keep_state(self) -> None:
        sid = await self.session()
        # Cancelled while its kernel boots: ends at once; the kernel boots on for the next cell.
        early = await self.start(sid, "never = 1")
        await self.c.wait_for(lambda m: m.get("event") == "kernel.status" and m["state"] == "starting")
        await self.c.request("run.cancel", session=sid, run=early)
        self.assertEqual((await self.finished(early, timeout=1))["status"], "cancelled")
        self.assertEqual(await self.printed(sid, "kept = 'yes'\nprint('never' in globals())"), "False\n")
        self.assertEqual(states(self.c, sid).count("starting"), 1)
        run = await self.start(sid, "import time\nprint('sleeping', flush=True)\ntime.sleep(60)")
        queued = await self.start(sid, "kept = 'overwritten'")
        await self.c.wait_for(lambda m: m.get("event") == "stream" and m["run"] == run)
        started = time.monotonic()
        await self.c.request("run.cancel", session=sid, run=queued)
        await self.c.request("run.cancel", session=sid, run=run)
        cancelled = await self.finished(run)
        self.assertLess(time.monotonic() - started, 2)
        self.assertEqual(cancelled["status"], "cancelled")
        self.assertEqual((await self.finished(queued))["status"], "cancelled")
        self.assertEqual(await self.printed(sid, "print(kept)"), "yes\n")

        timed = await self.py(sid, "import time\ntime.sleep(60)", timeout_s=0.5)
        self.assertEqual(timed["status"], "timeout")
        self.assertLess(timed["duration_ms"], 2000)
        self.assertEqual(await self.printed(sid, "print(kept)"), "yes\n")
        self.assertNotIn("restarting", states(self.c, sid))

    async def test_a_kernel_that_ignores_the_interrupt_is_restarted(self) -> None:
        self.patch(python_cells, "INTERRUPT_RESEND", 0.3)
        self.patch(python_cells, "INTERRUPT_GRACE", 0.8)
        sid = await self.session()
        old = int(await self.printed(sid, "kept = 1\nimport os; print(os.getpid())"))
        stubborn = (
            "import time\nprint('stubborn', flush=True)\n"
            "while True:\n    try:\n        time.sleep(60)\n    except KeyboardInterrupt:\n        pass"
        )
        run = await self.start(sid, stubborn, timeout_s=0.5)
        done = await self.finished(run)
        self.assertEqual(done["status"], "timeout")
        self.assertIn("restarting it", self.c.output(run, "stderr"))
        await self.c.wait_for(lambda m: m.get("event") == "kernel.status" and m["state"] == "idle" and m["seq"] > done["seq"])
        self.assertEqual(states(self.c, sid)[-3:], ["busy", "restarting", "idle"])
        self.assertFalse(alive(old))
        self.assertEqual(await self.printed(sid, "print('kept' in globals())"), "False\n")

    async def test_kernel_restart_gives_a_fresh_namespace(self) -> None:
        sid = await self.session()
        old = int(await self.printed(sid, "gone = 1\nimport os; print(os.getpid())"))
        reply = await self.c.request("kernel.restart", session=sid)
        self.assertTrue(reply["ok"], reply)
        self.assertEqual(states(self.c, sid)[-2:], ["restarting", "idle"])
        self.assertFalse(alive(old))
        self.assertEqual(await self.printed(sid, "print('gone' in globals())"), "False\n")

        # Restarting under a running cell ends it; the queued one runs in the new kernel.
        running = await self.start(sid, "import time\nprint('on', flush=True)\ntime.sleep(60)")
        queued = await self.start(sid, "import os; print(os.getpid())")
        await self.c.wait_for(lambda m: m.get("event") == "stream" and m["run"] == running)
        await self.c.request("kernel.restart", session=sid)
        ended = await self.finished(running)
        self.assertEqual((ended["status"], ended["error"]["code"]), ("error", "kernel_restarted"))
        self.assertEqual((await self.finished(queued))["status"], "ok")
        self.assertEqual(len(marked(self.mark)), 1)

    async def test_kernel_death_ends_the_run_and_the_next_cell_gets_a_new_kernel(self) -> None:
        sid = await self.session()
        await self.py(sid, "before = 1")
        dying = await self.start(sid, "import os, time\nprint('last words', flush=True)\ntime.sleep(0.3)\nos._exit(3)")
        queued = await self.start(sid, "print('before' in globals())")
        died = await self.finished(dying)
        self.assertEqual((died["status"], died["error"]["code"]), ("error", "kernel_died"))
        self.assertIn("exited with status 3", died["error"]["evalue"])
        self.assertEqual(self.c.output(dying), "last words\n")
        dead = [e for e in self.c.events(sid, kind="kernel.status") if e["state"] == "dead"]
        self.assertEqual(len(dead), 1)
        self.assertLess(dead[0]["seq"], died["seq"])
        after = await self.finished(queued)
        self.assertEqual(after["status"], "ok")
        self.assertEqual(self.c.output(queued), "False\n")

        # Death while idle (here: SIGKILL from outside, as the OOM killer would).
        pid = int(await self.printed(sid, "import os; print(os.getpid())"))
        os.kill(pid, signal.SIGKILL)
        await self.c.wait_for(lambda m: m.get("event") == "kernel.status" and m["state"] == "dead" and m["seq"] > after["seq"])
        self.assertFalse(self.processor.has_kernel(sid))
        self.assertEqual(await self.printed(sid, "print('back')"), "back\n")

    async def test_session_close_leaves_no_kernel_processes(self) -> None:
        sid = await self.session()
        pids = (await self.printed(sid, (
            "import os, subprocess\nchild = subprocess.Popen(['sleep', '300'])\n"
            "print(os.getpid(), child.pid)"
        ))).split()
        kernel, child = int(pids[0]), int(pids[1])
        self.assertEqual(marked(self.mark), sorted([kernel, child]))
        kernels_dir = os.path.join(self.service.config.home, "var", "kernels")
        self.assertTrue(any(n.endswith(".json") for n in os.listdir(kernels_dir)))
        self.assertEqual(stat_mode(kernels_dir), 0o700)
        reply = await self.c.request("session.close", session=sid)
        self.assertTrue(reply["ok"])
        await eventually(lambda: marked(self.mark) == [], timeout=5)
        self.assertFalse(self.processor.has_kernel(sid))
        self.assertEqual([n for n in os.listdir(kernels_dir) if not n.endswith(".log")], [])

    async def test_variable_and_secret_hooks(self) -> None:
        p = self.processor
        sid = await self.session()
        self.assertFalse(await p.set_variables(sid, {"a": 1}))
        self.assertEqual(await p.get_variables(sid, ["a"]), {})
        self.assertFalse(await p.set_secrets(sid, {"K": "v"}))
        self.assertFalse(p.has_kernel(sid))
        self.assertEqual(marked(self.mark), [])  # nothing was started
        secret = "s3cr3t-" + secrets.token_hex(8)
        shell_result = {"stdout": "hi\n", "stderr": "", "exit_code": 0, "status": "ok"}
        p.set_secret_source(lambda s: {"API_KEY": secret} if s == sid else {})
        p.set_variable_source(lambda s: {"earlier": shell_result} if s == sid else {})
        out = await self.printed(sid, (
            "print(type(earlier).__name__, earlier.stdout.strip(), earlier['exit_code'])\n"
            "print(%s, SpinSecrets.names())\n"
            "print(%s, SpinSecrets.get_secret('NOPE', 7))\n"
        ) % (_is_secret("SpinSecrets.get_secret('API_KEY')", secret),
             _is_secret("SpinSecrets.get_secret('SPIN_TEST_MARK')", self.mark)))
        self.assertEqual(out, "CellResult hi 0\nTrue ['API_KEY']\nTrue 7\n")
        missing = await self.py(sid, "SpinSecrets.get_secret('SPIN_TOKEN')")
        self.assertEqual(missing["error"]["ename"], "SecretNotFound")

        self.assertTrue(await p.set_variables(sid, {"n": 5, "r": {"status_code": 200, "text": "ok", "status": "ok"}}))
        self.assertEqual(await self.printed(sid, "print(n + 1, r.status_code, r['text'], type(r).__name__)"),
                         "6 200 ok CellResult\n")
        await self.py(sid, "lst = [1, 'two', None]\nobj = object()\nnan = float('nan')\n_private = 1")
        got = await p.get_variables(sid, ["n", "r", "lst", "obj", "nan", "undefined", "_private"])
        # NaN comes as the string "NaN" (PROTOCOL.md section 15); obj is not JSON.
        self.assertEqual(got, {"n": 5, "r": {"status_code": 200, "text": "ok", "status": "ok"},
                               "lst": [1, "two", None], "nan": "NaN", "_private": 1})
        everything = await p.get_variables(sid)
        self.assertEqual(set(everything), {"earlier", "n", "r", "lst", "nan"})
        self.assertTrue(await p.clear_variables(sid, ["n", "lst"]))
        self.assertEqual(await p.get_variables(sid, ["n", "lst", "r"]), {"r": got["r"]})

        other = "other-" + secrets.token_hex(8)
        self.assertTrue(await p.set_secrets(sid, {"OTHER": other}))
        self.assertEqual(await self.printed(sid, "print(%s)" % _is_secret("SpinSecrets.get_secret('OTHER')", other)), "True\n")
        # Names that cannot be Python globals are skipped, never sent as code.
        self.assertTrue(await p.set_variables(sid, {"bad name')": 1, "ok": 2}))
        self.assertEqual(await p.get_variables(sid, ["ok", "bad name')"]), {"ok": 2})
        # The values went in by silent executes: no event anywhere carries them.
        frames = json.dumps(self.c.messages)
        self.assertNotIn(secret, frames)
        self.assertNotIn(other, frames)

    async def test_runtime_names_outlive_whatever_clears_the_namespace(self) -> None:
        """SpinSecrets and CellResult stay whatever clears the user's namespace; the user's globals go."""
        p = self.processor
        sid = await self.session()
        secret = "s3cr3t-" + secrets.token_hex(8)
        p.set_secret_source(lambda s: {"X": secret} if s == sid else {})
        check = (
            "print(%s, CellResult({'a': 1}).a,"
            " [n for n in ('SpinSecrets', 'CellResult') if n in get_ipython().run_line_magic('who_ls', '')])"
        ) % _is_secret("SpinSecrets.get_secret('X')", secret)
        works = "True 1 []\n"
        self.assertEqual(await self.printed(sid, check), works)
        # (what clears, whether the user's own global `mine` survives it)
        clearing = [
            ("%reset -f", False),
            ("get_ipython().reset()", False),
            ("%reset_selective -f Spin", True),
            ("%reset_selective -f Cell", True),
            ("%reset_selective -f .", False),
            ("del SpinSecrets", True),
            ("del CellResult", True),
            ("del SpinSecrets, CellResult", True),
            ("%xdel SpinSecrets", True),
            ("globals().clear()", False),
            ("for k in list(globals()):\n    del globals()[k]", False),
        ]
        # Every cell starts with them, so each `del` here finds one to delete.
        for code, kept in clearing:
            self.assertEqual(await self.printed(sid, f"mine = 1\n{code}\n{check}"), works, code)  # same cell
            self.assertEqual(await self.printed(sid, check), works, code)  # and the next one
            self.assertEqual(await self.printed(sid, "print('mine' in globals())"), f"{kept}\n", code)
            gone = await self.py(sid, "mine")
            if kept:
                self.assertEqual(gone["status"], "ok", code)
            else:
                self.assertEqual(gone["error"]["ename"], "NameError", code)

        # A thread a cell leaves running finds them after the cell ended and after a reset.
        self.assertEqual(await self.printed(sid, (
            "import threading, time\nfound = []\n"
            "t = threading.Thread(target=lambda: (time.sleep(0.5), found.append(SpinSecrets.get_secret('X'))))\n"
            "t.start()"
        )), "")
        self.assertEqual(await self.printed(sid, f"t.join(); print(len(found) == 1 and {_is_secret('found[0]', secret)})"), "True\n")

        # The user's own global of that name is theirs: it shadows, %who shows it; del uncovers the runtime's.
        self.assertEqual(await self.printed(sid, (
            "SpinSecrets = 1\nprint(SpinSecrets, 'SpinSecrets' in get_ipython().run_line_magic('who_ls', ''))"
        )), "1 True\n")
        self.assertEqual(await self.printed(sid, "print(SpinSecrets)"), "1\n")  # the next cell keeps the user's
        self.assertEqual(await p.get_variables(sid, ["SpinSecrets"]), {"SpinSecrets": 1})
        self.assertEqual(await self.printed(sid, f"del SpinSecrets\n{check}"), works)
        self.assertEqual(await self.printed(sid, "CellResult = 'mine'\n%reset -f\n" + check), works)

        # After a reset the runtime still reaches the kernel: new secrets, variables, listing, clearing.
        await self.py(sid, "%reset -f")
        other = "other-" + secrets.token_hex(8)
        self.assertTrue(await p.set_secrets(sid, {"NEW": other}))
        self.assertEqual(await self.printed(sid, "print(%s, SpinSecrets.names())" % _is_secret("SpinSecrets.get_secret('NEW')", other)),
                         "True ['NEW', 'X']\n")
        shown = {"status_code": 200, "text": "ok", "status": "ok"}
        self.assertTrue(await p.set_variables(sid, {"r": shown, "n": 5}))
        self.assertEqual(await self.printed(sid, "print(type(r).__name__, isinstance(r, CellResult), r.status_code, n)"),
                         "CellResult True 200 5\n")
        self.assertEqual(await p.get_variables(sid), {"r": shown, "n": 5})
        self.assertTrue(await p.clear_variables(sid))
        self.assertEqual(await p.get_variables(sid), {})
        self.assertEqual(await self.printed(sid, check), works)
        # An output variable of another cell type arrives as a CellResult after a reset too.
        shell = await self.c.run(sid, {"id": "s", "type": "shell", "source": "echo hi", "output_variable": "sh"})
        self.assertEqual(shell["status"], "ok", shell)
        self.assertEqual(await self.printed(sid, "print(type(sh).__name__, sh.stdout.strip(), sh.exit_code)"),
                         "CellResult hi 0\n")
        await self.py(sid, "globals().clear()")
        self.assertTrue(await p.set_variables(sid, {"r": shown}))
        self.assertEqual(await self.printed(sid, "print(type(r).__name__)"), "CellResult\n")
        self.assertEqual(await p.get_variables(sid), {"r": shown})

        # A restarted kernel has them again.
        reply = await self.c.request("kernel.restart", session=sid)
        self.assertTrue(reply["ok"], reply)
        self.assertEqual(await self.printed(sid, check), works)
        self.assertFalse(any(secret in json.dumps(m) or other in json.dumps(m) for m in self.c.messages))

    def test_cell_result_shape(self) -> None:
        r = CellResult({"stdout": "x", "exit_code": 0, "status": "ok"})
        self.assertEqual((r.stdout, r["exit_code"], json.loads(json.dumps(r))), ("x", 0, dict(r)))
        with self.assertRaises(AttributeError):
            r.nope
        self.assertTrue(looks_like_result({"status": "ok", "text": ""}))
        self.assertFalse(looks_like_result({"status": "ok"}))


def stat_mode(path: str) -> int:
    return os.stat(path).st_mode & 0o777


class WarmPoolTests(Harness):
    pool = "2"

    async def test_pool_serves_new_sessions_at_once_and_refills_to_n(self) -> None:
        pool = self.processor.pool
        peak = [0]

        def sample() -> None:
            peak[0] = max(peak[0], len(pool.ready) + pool.starting)

        sampler = LoopingCall(sample)
        sampler.start(0.005)
        self.addCleanup(lambda: sampler.running and sampler.stop())
        await eventually(lambda: len(pool.ready) == 2, timeout=30)
        self.assertEqual(len(marked(self.mark)), 2)
        sid = await self.session()
        started = time.monotonic()
        done = await self.py(sid, "import os; print(os.getcwd())")
        first = time.monotonic() - started
        self.assertEqual(done["status"], "ok")
        self.assertLess(first, 0.4, "the first cell waited for a kernel to boot")
        self.assertEqual(self.c.output(done["run"]).strip(),
                         os.path.realpath(self.service.cell_services.session_dir(sid)))
        await eventually(lambda: len(pool.ready) == 2, timeout=30)
        await sleep(0.2)
        self.assertEqual(len(marked(self.mark)), 3)  # two idle, one the session's
        self.assertEqual(peak[0], 2)

        # A pooled kernel that dies is replaced.
        victim = pool.ready[0].pid
        os.kill(victim, signal.SIGKILL)
        await eventually(lambda: len(pool.ready) == 2 and victim not in [k.pid for k in pool.ready], timeout=30)
        self.assertEqual(peak[0], 2)


class BootingPoolTests(Harness):
    pool = "1"

    async def test_a_new_session_takes_the_kernel_the_pool_is_still_booting(self) -> None:
        pool = self.processor.pool
        self.assertEqual((len(pool.ready), pool.starting), (0, 1))
        sid = await self.session()
        mine = int(await self.printed(sid, "import os; print(os.getpid())"))
        await eventually(lambda: len(pool.ready) == 1, timeout=30)
        refill = pool.ready[0].pid
        self.assertEqual(marked(self.mark), sorted([mine, refill]))
        self.assertLess(start_time(mine), start_time(refill))  # it did not boot its own


def start_time(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    return int(stat[stat.rindex(")") + 2:].split()[19])


class DaemonTests(unittest.TestCase):
    """The real twistd daemon: SIGTERM and kill -9 leave no kernel behind."""

    timeout = 90

    def home(self) -> str:
        return tempfile.mkdtemp(prefix="spin-home-", dir=os.path.abspath("."))

    async def python_session(self, daemon: DaemonProcess) -> tuple[Client, str, int, int]:
        c = await Client.connect(await daemon.ready())
        self.addCleanup(c.close)
        sid = (await c.request("session.create"))["session"]["id"]
        done = await c.run(sid, {"type": "python", "source": (
            "import os, subprocess\nchild = subprocess.Popen(['sleep', '300'])\nprint(os.getpid(), child.pid)")})
        self.assertEqual(done["status"], "ok", done)
        kernel, child = map(int, c.output(done["run"]).split())
        return c, sid, kernel, child

    async def test_sigterm_stops_every_kernel(self) -> None:
        mark = secrets.token_hex(6)
        daemon = DaemonProcess(self.home(), "--kernel-pool", "1", env={"SPIN_TEST_MARK": mark})
        self.addCleanup(daemon.stop)
        c, sid, kernel, child = await self.python_session(daemon)
        await eventually(lambda: len(marked(mark, (daemon.pid,))) == 3, timeout=30)  # + the pool's
        run = (await c.request("cell.run", session=sid, cell={"type": "python", "source": "import time; time.sleep(60)"}))["run"]
        await c.wait_for(lambda m: m.get("event") == "run.started" and m["run"] == run)
        daemon.signal_(signal.SIGTERM)
        finished = await c.wait_for(lambda m: m.get("event") == "run.finished" and m["run"] == run)
        self.assertEqual(finished["status"], "cancelled")
        self.assertEqual(await daemon.ended, 0, daemon.log())
        self.assertEqual(marked(mark), [])

    async def test_kill_9_kernels_die_at_once_and_leftovers_are_reaped_at_next_start(self) -> None:
        home = self.home()
        mark = secrets.token_hex(6)
        daemon = DaemonProcess(home, "--kernel-pool", "1", env={"SPIN_TEST_MARK": mark})
        c, sid, kernel, child = await self.python_session(daemon)
        await eventually(lambda: len(marked(mark, (daemon.pid,))) == 3, timeout=30)
        daemon.signal_(signal.SIGKILL)
        await daemon.ended
        # PR_SET_PDEATHSIG: both kernels go with the runtime...
        await eventually(lambda: marked(mark) == [child], timeout=5)
        self.assertFalse(alive(kernel))
        # ...and the next start reaps what their cells left.
        again = DaemonProcess(home, "--kernel-pool", "0", env={"SPIN_TEST_MARK": "next-" + mark})
        self.addCleanup(again.stop)
        c2 = await Client.connect(await again.ready())  # the reactor runs (and handles SIGTERM)
        self.addCleanup(c2.close)
        self.assertTrue((await c2.request("ping"))["ok"])
        await eventually(lambda: not alive(child), timeout=5)
        self.assertEqual(marked(mark), [])
        self.assertEqual(await again.stop(), 0)
