"""The real daemon (twistd -n spin-runtime) as a child process: start-up errors,
kill -9 recovery, SIGTERM, bounded memory."""

from __future__ import annotations

import os
import signal
import socket
import tempfile

from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial import unittest

from .support import PYTHON, TOKEN, TWISTD, Client, DaemonProcess, eventually, group_alive, sleep


def fresh_home() -> str:
    return tempfile.mkdtemp(prefix="spin-home-", dir=os.path.abspath("."))


class StartupErrorTests(unittest.TestCase):
    timeout = 60

    async def start(self, *args: str, token: str | None = TOKEN, home: str | None = None) -> tuple[int, str]:
        env = {k: v for k, v in os.environ.items() if k != "SPIN_TOKEN"}
        if token is not None:
            env["SPIN_TOKEN"] = token
        argv = TWISTD[1:] + ["-n", "--pidfile=", "spin-runtime", "--home", home or fresh_home(), *args]
        out, err, code = await getProcessOutputAndValue(PYTHON, argv, env=env, path=os.path.abspath("."), reactor=reactor)
        text = (out + err).decode("utf-8", "replace")
        return code, text

    def assertOneClearLine(self, text: str, *needles: str) -> None:
        self.assertNotIn("Traceback", text)
        lines = [line for line in text.splitlines() if "spin-runtime:" in line]
        self.assertEqual(len(lines), 1, text)
        for needle in needles:
            self.assertIn(needle, lines[0])

    async def test_no_token(self) -> None:
        code, text = await self.start(token=None)
        self.assertNotEqual(code, 0)
        self.assertOneClearLine(text, "SPIN_TOKEN")
        code, text = await self.start(token="   ")
        self.assertNotEqual(code, 0)
        self.assertOneClearLine(text, "SPIN_TOKEN")

    async def test_bad_endpoint(self) -> None:
        code, text = await self.start("--endpoint", "nonsense:1234")
        self.assertNotEqual(code, 0)
        self.assertOneClearLine(text, "nonsense:1234")
        code, text = await self.start("--endpoint", "ssl:0:privateKey=/no/such/key.pem:certKey=/no/such/cert.pem")
        self.assertNotEqual(code, 0)
        self.assertOneClearLine(text, "ssl:0")

    async def test_unwritable_home(self) -> None:
        blocker = os.path.join(fresh_home(), "a-file")
        with open(blocker, "w") as f:
            f.write("x")
        code, text = await self.start(home=os.path.join(blocker, "home"))
        self.assertNotEqual(code, 0)
        self.assertOneClearLine(text, "SPIN_HOME", "a-file")

    async def test_port_in_use(self) -> None:
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        self.addCleanup(busy.close)
        port = busy.getsockname()[1]
        code, text = await self.start("--endpoint", f"tcp:{port}:interface=127.0.0.1")
        self.assertNotEqual(code, 0)
        self.assertOneClearLine(text, str(port), "in use")

    async def test_bad_max_message_size(self) -> None:
        code, text = await self.start("--max-message-size", "lots")
        self.assertNotEqual(code, 0)
        self.assertOneClearLine(text, "--max-message-size")

    async def test_bad_trusted_proxy(self) -> None:
        for value, needle in [("nonsense", "not an IP address or CIDR range"),
                              ("10.0.0.0/33", "not an IP address or CIDR range"),
                              ("10.0.0.1/8", "did you mean 10.0.0.0/8"),
                              ("", "not an IP address or CIDR range")]:
            code, text = await self.start("--trusted-proxy", "127.0.0.1/32", "--trusted-proxy", value)
            self.assertNotEqual(code, 0)
            self.assertOneClearLine(text, "--trusted-proxy", repr(value), needle)

    async def test_bad_allow_origin(self) -> None:
        for value in ("app.example.com", "https://app.example.com/ui", "https://*.example.com"):
            code, text = await self.start("--allow-origin", "https://ok.example", "--allow-origin", value)
            self.assertNotEqual(code, 0)
            self.assertOneClearLine(text, "--allow-origin", repr(value), "not an origin")


class CrashAndShutdownTests(unittest.TestCase):
    timeout = 120

    async def test_kill_9_then_restart_keeps_history_and_finishes_runs(self) -> None:
        home = fresh_home()
        daemon = DaemonProcess(home)
        self.addCleanup(daemon.stop)
        url = await daemon.ready()
        self.assertIn(f"listening on {url}", daemon.log())
        c = await Client.connect(url)
        sid = (await c.request("session.create", name="crash"))["session"]["id"]
        await c.run(sid, {"type": "shell", "source": "echo warm-up"})
        run = (await c.request("cell.run", session=sid, cell={"type": "shell", "source": "echo pgid=$$; sleep 60"}))["run"]
        started = await c.wait_for(lambda m: m.get("event") == "stream" and "pgid=" in m["text"])
        pgid = int(started["text"].split("=")[1])
        await sleep(0.3)  # let the group commit land
        seen = [m for m in c.events(sid)]
        daemon.signal_(signal.SIGKILL)
        await daemon.ended
        await c.closed
        self.assertTrue(group_alive(pgid), "the cell should outlive a kill -9 until the next start")

        again = DaemonProcess(home)
        self.addCleanup(again.stop)
        url = await again.ready()
        await eventually(lambda: not group_alive(pgid))
        c2 = await Client.connect(url)
        listed = await c2.request("session.list")
        self.assertEqual([(s["id"], s["name"]) for s in listed["sessions"]], [(sid, "crash")])
        await c2.request("session.attach", session=sid, since=0)
        finished = await c2.wait_for(lambda m: m.get("event") == "run.finished" and m["run"] == run)
        self.assertEqual(finished["status"], "error")
        self.assertEqual(finished["error"]["code"], "runtime_restarted")
        replayed = c2.events(sid)
        self.assertEqual(replayed[: len(seen)], seen)
        self.assertEqual([e["seq"] for e in replayed], list(range(1, len(replayed) + 1)))
        done = await c2.run(sid, {"type": "shell", "source": "echo after"})
        self.assertGreater(done["seq"], finished["seq"])
        self.assertEqual(c2.output(done["run"]), "after\n")
        await c2.close()
        again.signal_(signal.SIGTERM)
        self.assertEqual(await again.ended, 0)

    async def test_sigterm_cancels_runs_kills_groups_flushes_and_exits_0(self) -> None:
        home = fresh_home()
        daemon = DaemonProcess(home)
        self.addCleanup(daemon.stop)
        url = await daemon.ready()
        c = await Client.connect(url)
        sid = (await c.request("session.create"))["session"]["id"]
        script = "(trap '' INT TERM; sleep 60) & echo pgid=$$; wait"
        run = (await c.request("cell.run", session=sid, cell={"type": "shell", "source": script}))["run"]
        queued = (await c.request("cell.run", session=sid, cell={"type": "shell", "source": "echo never"}))["run"]
        started = await c.wait_for(lambda m: m.get("event") == "stream" and "pgid=" in m["text"])
        pgid = int(started["text"].split("=")[1])
        daemon.signal_(signal.SIGTERM)
        finished = await c.wait_for(lambda m: m.get("event") == "run.finished" and m["run"] == run)
        self.assertEqual(finished["status"], "cancelled")
        self.assertEqual(await daemon.ended, 0, f"signal {daemon.signal}: " + daemon.log())
        self.assertFalse(group_alive(pgid), "SIGTERM left the cell's processes behind")
        self.assertFalse(os.path.exists(os.path.join(home, "var", "runtime.json")))

        await c.closed
        again = DaemonProcess(home)
        self.addCleanup(again.stop)
        url = await again.ready()
        c2 = await Client.connect(url)
        await c2.request("session.attach", session=sid)
        for each in (run, queued):
            await c2.wait_for(lambda m: m.get("event") == "run.finished" and m["run"] == each)
        statuses = {e["run"]: e["status"] for e in c2.events(sid, kind="run.finished")}
        self.assertEqual(statuses, {run: "cancelled", queued: "cancelled"})
        await c2.close()
        again.signal_(signal.SIGTERM)
        self.assertEqual(await again.ended, 0)


class MemoryTests(unittest.TestCase):
    timeout = 180

    async def test_100_mb_output_bounded_rss_slow_client_served_later(self) -> None:
        home = fresh_home()
        daemon = DaemonProcess(home)
        self.addCleanup(daemon.stop)
        url = await daemon.ready()
        fast = await Client.connect(url)
        sid = (await fast.request("session.create"))["session"]["id"]
        await fast.run(sid, {"type": "shell", "source": "true"})  # warm up
        slow = await Client.connect(url)
        await slow.request("session.attach", session=sid)
        await sleep(0.2)
        slow.protocol.transport.pauseProducing()  # this client stops reading
        baseline = daemon.rss_kb()
        peak = [baseline]
        sampler = reactor.callLater(0, lambda: None)

        def sample() -> None:
            nonlocal sampler
            peak[0] = max(peak[0], daemon.rss_kb())
            sampler = reactor.callLater(0.05, sample)

        sample()
        total = 100 * 1000 * 1000
        script = f"head -c {total} /dev/zero | tr '\\0' 'x' | fold -w 99"
        done = await fast.run(sid, {"type": "shell", "source": script}, timeout=120)
        sampler.cancel()
        self.assertEqual(done["status"], "ok")
        received = sum(len(m["text"]) for m in fast.events(run=done["run"], kind="stream"))
        self.assertEqual(received, total + total // 99)  # fold adds no final newline
        growth_mb = (peak[0] - baseline) / 1024
        self.assertLess(growth_mb, 150, f"RSS grew by {growth_mb:.0f} MB")
        # The paused client now catches up from the store and misses nothing.
        slow.protocol.transport.resumeProducing()
        await slow.wait_for(lambda m: m.get("event") == "run.finished" and m["run"] == done["run"], timeout=120)
        got = sum(len(m["text"]) for m in slow.events(run=done["run"], kind="stream"))
        self.assertEqual(got, received)
        seqs = [e["seq"] for e in slow.events(sid)]
        self.assertEqual(seqs, list(range(seqs[0], seqs[0] + len(seqs))))
        for client in (fast, slow):
            await client.close()
