"""A real ``jupyter server --gateway-url`` pointed at the runtime, driven
through jupyter_server's own REST API and kernel WebSocket as JupyterLab
drives it (research/jupyter-gateway.md, level 2), and nbclient executing a
notebook on the runtime's kernels."""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import time
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.protocol import ProcessProtocol
from twisted.trial import unittest

from .jupyter_support import KernelSocket, call
from .support import TOKEN, Client, eventually, sleep, start_runtime, ws_url

USER_TOKEN = "jupyter-user-token-0123456789"
HERE = os.path.dirname(os.path.abspath(__file__))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Output(ProcessProtocol):
    def __init__(self) -> None:
        self.output = bytearray()
        self.ended: defer.Deferred[Any] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data[-65536:]

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(None)


async def start_jupyter_server(testcase: unittest.TestCase, runtime_port: int) -> str:
    """``jupyter server --gateway-url=http://127.0.0.1:<runtime>/jupyter``; its base URL."""
    port = free_port()
    root = tempfile.mkdtemp(prefix="jsrv-", dir=os.path.abspath("."))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "SPIN_"))}
    env.update(JUPYTER_CONFIG_DIR=os.path.join(root, "config"), JUPYTER_DATA_DIR=os.path.join(root, "data"),
               JUPYTER_RUNTIME_DIR=os.path.join(root, "runtime"), JUPYTER_PLATFORM_DIRS="1")
    argv = [sys.executable, "-m", "jupyter_server", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
            "--ServerApp.port_retries=0", f"--IdentityProvider.token={USER_TOKEN}", "--allow-root",
            f"--ServerApp.root_dir={root}", f"--gateway-url=http://127.0.0.1:{runtime_port}/jupyter",
            f"--GatewayClient.auth_token={TOKEN}"]
    output = _Output()
    process = reactor.spawnProcess(output, sys.executable, argv, env=env, path=root)

    async def stop() -> None:
        if output.ended.called:
            return
        process.signalProcess("TERM")
        timer = reactor.callLater(15, lambda: output.ended.called or process.signalProcess("KILL"))
        await output.ended
        if timer.active():
            timer.cancel()

    testcase.addCleanup(lambda: defer.ensureDeferred(stop()))
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            status, _, _ = await call(None, "GET", "/api", token=USER_TOKEN, url=base)
            if status == 200:
                testcase.server_output = output.output  # type: ignore[attr-defined]
                return base
        except Exception:
            pass
        if output.ended.called or time.monotonic() > deadline:
            raise AssertionError("jupyter server did not start: " + output.output.decode("utf-8", "replace")[-3000:])
        await sleep(0.3)


class ThroughJupyterServer(unittest.TestCase):
    timeout = 300

    async def test_jupyterlab_flow(self) -> None:
        service = await start_runtime(self)
        runtime_port = service.addresses[0]["port"]
        base = await start_jupyter_server(self, runtime_port)

        def js(method: str, path: str, body: Any = None) -> Any:
            return call(None, method, path, body, token=USER_TOKEN, url=base)

        status, specs, _ = await js("GET", "/api/kernelspecs")
        self.assertEqual(status, 200, specs)
        self.assertEqual(specs["default"], "python3")
        self.assertEqual(sorted(specs["kernelspecs"]), ["python3", "spin-shell"])
        status, made, _ = await js("POST", "/api/sessions", {"path": "t.ipynb", "type": "notebook", "name": "t",
                                                             "kernel": {"name": "python3"}})
        self.assertEqual(status, 201, made)
        kid = made["kernel"]["id"]
        self.assertIn(kid, service.jupyter.kernels.kernels)  # the runtime's kernel, by its id
        jport = int(base.rsplit(":", 1)[1])

        sock = await KernelSocket.connect(None, kid, port=jport, prefix="", token=USER_TOKEN)
        self.addCleanup(sock.close)
        self.assertIsNone(sock.selected)  # the proxy speaks the legacy protocol
        info = await sock.request("kernel_info_request", {})
        self.assertEqual(info["content"]["language_info"]["name"], "python")
        reply, msg_id = await sock.execute(
            "from IPython.display import display, HTML\nprint(6*7)\ndisplay(HTML('<b>hi</b>'))\n1+1")
        self.assertEqual(reply["content"]["status"], "ok")
        self.assertEqual(sock.stdout(msg_id), "42\n")
        self.assertEqual(sock.of(msg_id, "display_data")[0]["content"]["data"]["text/html"], "<b>hi</b>")
        self.assertEqual(sock.of(msg_id, "execute_result")[0]["content"]["data"]["text/plain"], "2")

        # A spin client sees the same runs.
        owner = await Client.connect(ws_url(service))
        self.addCleanup(owner.close)
        sid = service.jupyter.kernels.get(kid).session.id
        snapshot = await owner.request("session.snapshot", session=sid)
        self.assertEqual([r["by"] for r in snapshot["runs"]], ["owner"])

        # Interrupt a sleep through jupyter_server.
        msg_id = sock.send("execute_request", {"code": "import time\nprint('zz', flush=True)\ntime.sleep(60)",
                                               "silent": False})
        await sock.wait_for(lambda m: m["parent_header"].get("msg_id") == msg_id and m["msg_type"] == "stream")
        self.assertEqual((await js("POST", f"/api/kernels/{kid}/interrupt", {}))[0], 204)
        reply = await sock.wait_for(lambda m: m["parent_header"].get("msg_id") == msg_id
                                    and m["msg_type"] == "execute_reply", 15)
        self.assertEqual(reply["content"]["ename"], "KeyboardInterrupt")

        # Reconnect with the same session_id after output was produced meanwhile.
        msg_id = sock.send("execute_request", {"silent": False, "code":
                                               "import time\nfor i in range(6):\n    print(i, flush=True)\n"
                                               "    time.sleep(0.4)"})
        await sock.wait_for(lambda m: m["parent_header"].get("msg_id") == msg_id and m["msg_type"] == "stream")
        await sock.close()
        before = sock.stdout(msg_id)
        await eventually(lambda: service.jupyter.kernels.get(kid).state == "idle", timeout=20)
        sock = await KernelSocket.connect(None, kid, port=jport, prefix="", token=USER_TOKEN,
                                          session_id=sock.session_id)
        self.addCleanup(sock.close)
        await sock.wait_for(lambda m: m["parent_header"].get("msg_id") == msg_id
                            and m["msg_type"] == "execute_reply")
        self.assertEqual(before + sock.stdout(msg_id), "".join(f"{i}\n" for i in range(6)))

        # Output over 10 MiB (tornado's frame limit on the proxy) arrives whole, and the socket lives on.
        size = 11 * 1024 * 1024
        reply, msg_id = await sock.execute(f"print('x' * {size})", timeout=120)
        self.assertEqual(reply["content"]["status"], "ok")
        self.assertEqual(len(sock.stdout(msg_id)), size + 1)
        sock.messages.clear()  # 11 MiB of them
        reply, msg_id = await sock.execute("x = 1\nprint('after')")
        self.assertEqual(sock.stdout(msg_id), "after\n")

        # Restart: 200, then the client reconnects its channels (as JupyterLab does).
        status, model, _ = await js("POST", f"/api/kernels/{kid}/restart", {})
        self.assertEqual((status, model["id"]), (200, kid))
        await sock.close()
        sock = await KernelSocket.connect(None, kid, port=jport, prefix="", token=USER_TOKEN,
                                          session_id=sock.session_id)
        self.addCleanup(sock.close)
        reply, _ = await sock.execute("x")
        self.assertEqual(reply["content"]["ename"], "NameError")

        # The spin-shell kernel, through the same proxy.
        status, shell, _ = await js("POST", "/api/sessions", {"path": "s.ipynb", "type": "notebook", "name": "s",
                                                              "kernel": {"name": "spin-shell"}})
        self.assertEqual(status, 201, shell)
        ssock = await KernelSocket.connect(None, shell["kernel"]["id"], port=jport, prefix="", token=USER_TOKEN)
        self.addCleanup(ssock.close)
        reply, msg_id = await ssock.execute("for i in 1 2 3; do echo line $i; done")
        self.assertEqual((reply["content"]["status"], ssock.stdout(msg_id)), ("ok", "line 1\nline 2\nline 3\n"))

        # Deleting the session shuts the kernel down and closes its spin session; history stays.
        self.assertEqual((await js("DELETE", f"/api/sessions/{made['id']}"))[0], 204)
        await eventually(lambda: kid not in service.jupyter.kernels.kernels, timeout=10)
        await eventually(lambda: service.manager.get(sid).state == "closed", timeout=10)
        snapshot = await owner.request("session.snapshot", session=sid)
        self.assertGreaterEqual(len(snapshot["runs"]), 6)
        self.assertEqual((await call(service, "GET", f"/api/kernels/{kid}"))[0], 404)


class NbClient(unittest.TestCase):
    timeout = 300

    async def test_nbclient_executes_a_notebook(self) -> None:
        service = await start_runtime(self)
        script = os.path.join(HERE, "jupyter_clients", "nbclient_run.py")
        env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER")}
        output = _Output()
        process = reactor.spawnProcess(output, sys.executable, [
            sys.executable, script, f"http://127.0.0.1:{service.addresses[0]['port']}/jupyter", TOKEN], env=env)
        timer = reactor.callLater(120, lambda: output.ended.called or process.signalProcess("KILL"))
        await output.ended
        if timer.active():
            timer.cancel()
        text = output.output.decode("utf-8", "replace")
        self.assertTrue(text.strip().endswith("}"), text[-4000:])
        executed = json.loads(text.strip().splitlines()[-1])
        self.assertEqual(executed["outputs"], [["stream:42\n"], ["execute_result:'spin'"], ["error:ZeroDivisionError"]])
        self.assertEqual(executed["counts"], [1, 2, 3])
        self.assertEqual(process.status, 0)
        # The notebook's cells are runs in the kernel's spin session, for anyone to read.
        [kernel] = service.jupyter.kernels.list()
        owner = await Client.connect(ws_url(service))
        self.addCleanup(owner.close)
        snapshot = await owner.request("session.snapshot", session=kernel.session.id)
        self.assertEqual([(r["status"], r["by"]) for r in snapshot["runs"]],
                         [("ok", "owner"), ("ok", "owner"), ("error", "owner")])


class EnterpriseGatewayItests(unittest.TestCase):
    timeout = 300

    async def test_hello_restart_interrupt_scope(self) -> None:
        service = await start_runtime(self)
        script = os.path.join(HERE, "jupyter_clients", "eg_itests.py")
        env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER")}
        env["GATEWAY_HOST"] = f"127.0.0.1:{service.addresses[0]['port']}/jupyter"
        output = _Output()
        process = reactor.spawnProcess(output, sys.executable, [sys.executable, script, TOKEN], env=env)
        timer = reactor.callLater(240, lambda: output.ended.called or process.signalProcess("KILL"))
        await output.ended
        if timer.active():
            timer.cancel()
        text = output.output.decode("utf-8", "replace")
        self.assertEqual(process.status, 0, text[-4000:])
        self.assertIn("Ran 4 tests", text)
