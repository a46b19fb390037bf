"""The Jupyter kernels API under /jupyter, against a real runtime and real
kernels: REST contract (status codes, models, errors), auth forms, roles,
the channels WebSocket (legacy and v1), one kernel seen from Jupyter and
spin, masking, interrupt, restart, reconnect replay, spin-shell, culling."""

from __future__ import annotations

import re
import uuid
from typing import Any

from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest

from spinrt import roles
from spinrt.web.jupyter import rest

from .jupyter_support import V1, KernelSocket, call
from .support import TOKEN, Client, eventually, sleep, start_runtime, ws_url

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
ACTIVITY = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


async def new_kernel(service: Any, name: str = "python3", **body: Any) -> dict[str, Any]:
    status, model, _ = await call(service, "POST", "/api/kernels", {"name": name, **body})
    assert status == 201, (status, model)
    return model


class Contract(unittest.TestCase):
    timeout = 120

    async def test_rest_surface(self) -> None:
        service = await start_runtime(self)
        status, specs, _ = await call(service, "GET", "/api/kernelspecs")
        self.assertEqual(status, 200)
        self.assertEqual(specs["default"], "python3")
        self.assertEqual(sorted(specs["kernelspecs"]), ["python3", "spin-shell"])
        for name, spec in specs["kernelspecs"].items():
            self.assertEqual(set(spec), {"name", "spec", "resources"})
            self.assertIsInstance(spec["spec"]["argv"], list)
            self.assertTrue(spec["spec"]["display_name"] and spec["spec"]["language"])
            # Every advertised resource is served (jupyter_server 500s on a missing one).
            for url in spec["resources"].values():
                status, svg, headers = await call(service, "GET", url[len("/jupyter"):])
                self.assertEqual((status, headers.getRawHeaders(b"content-type")), (200, [b"image/svg+xml"]))
                self.assertTrue(svg.startswith(b"<svg"))
        self.assertEqual((await call(service, "GET", "/api/kernelspecs/spin-shell"))[1]["spec"]["language"], "bash")
        status, body, _ = await call(service, "GET", "/api/kernelspecs/r")
        self.assertEqual((status, body["reason"]), (404, "Not Found"))
        self.assertEqual((await call(service, "GET", "/kernelspecs/python3/logo-64x64.png"))[0], 404)
        self.assertIn("version", (await call(service, "GET", "/api"))[1])
        self.assertEqual((await call(service, "GET", "/api/kernels"))[1], [])

        status, model, headers = await call(service, "POST", "/api/kernels", b"")  # empty body: the default spec
        self.assertEqual(status, 201)
        self.assertRegex(model["id"], UUID)
        self.assertRegex(model["last_activity"], ACTIVITY)
        self.assertEqual((model["name"], model["execution_state"], model["connections"]), ("python3", "idle", 0))
        self.assertEqual(headers.getRawHeaders(b"location"), [f"/jupyter/api/kernels/{model['id']}".encode()])
        listed = (await call(service, "GET", "/api/kernels"))[1]
        self.assertEqual([k["id"] for k in listed], [model["id"]])
        self.assertEqual((await call(service, "GET", f"/api/kernels/{model['id']}"))[1]["id"], model["id"])

        # The kernel is a spin session, which says so.
        owner = await Client.connect(ws_url(service))
        self.addCleanup(owner.close)
        sessions = (await owner.request("session.list"))["sessions"]
        [backing] = [s for s in sessions if s.get("jupyter_kernel_id") == model["id"]]
        self.assertEqual(backing["state"], "open")

        # Errors are JSON {reason, message}.
        status, body, _ = await call(service, "GET", "/api/kernels/1-2-3-4-5")
        self.assertEqual((status, body["reason"]), (404, "Not Found"))
        self.assertIn("1-2-3-4-5", body["message"])
        self.assertEqual((await call(service, "POST", "/api/kernels", b"{"))[0], 400)
        self.assertEqual((await call(service, "POST", "/api/kernels", b"[]"))[0], 400)
        self.assertEqual((await call(service, "POST", "/api/kernels", {"name": "nope"}))[0], 404)
        status, body, headers = await call(service, "PUT", "/api/kernels")
        self.assertEqual(status, 405)
        self.assertEqual(headers.getRawHeaders(b"allow"), [b"GET, POST"])
        for path in ("/", "/tree", "/api/contents", "/lab"):  # no token asked: "not a Jupyter UI"
            status, body, _ = await call(service, "GET", path, token=None)
            self.assertEqual((status, body["reason"]), (404, "Not Found"))

        self.assertEqual((await call(service, "DELETE", f"/api/kernels/{model['id']}"))[0], 204)
        self.assertEqual((await call(service, "DELETE", f"/api/kernels/{model['id']}"))[0], 204)  # idempotent
        self.assertEqual((await call(service, "GET", f"/api/kernels/{model['id']}"))[0], 404)
        sessions = (await owner.request("session.list"))["sessions"]
        self.assertEqual([s["state"] for s in sessions if s["id"] == backing["id"]], ["closed"])

    async def test_auth_forms(self) -> None:
        service = await start_runtime(self)
        seen: list[str] = []
        observer = lambda event: seen.append(formatEvent(event) or "")  # noqa: E731
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        self.assertEqual((await call(service, "GET", "/api/kernels", token=None))[0], 401)
        self.assertEqual((await call(service, "GET", "/api/kernels", token=""))[0], 401)  # "token " = none
        status, body, _ = await call(service, "GET", "/api/kernels", token="wrong")
        self.assertEqual((status, body["reason"]), (401, "Unauthorized"))
        ok = {"Authorization": f"Bearer {TOKEN}"}
        self.assertEqual((await call(service, "GET", "/api/kernels", token=None, headers=ok))[0], 200)
        self.assertEqual((await call(service, "GET", f"/api/kernels?token={TOKEN}", token=None))[0], 200)
        model = await new_kernel(service)
        with self.assertRaises(ConnectionError):
            await KernelSocket.connect(service, model["id"], token=None)
        with self.assertRaises(ConnectionError):
            await KernelSocket.connect(service, model["id"], token="wrong")
        with self.assertRaises(ConnectionError):  # an unknown kernel: 404 before any upgrade
            await KernelSocket.connect(service, str(uuid.uuid4()))
        sock = await KernelSocket.connect(service, model["id"], query_token=True)
        self.addCleanup(sock.close)
        info = await sock.request("kernel_info_request", {})
        self.assertEqual(info["content"]["language_info"]["name"], "python")
        self.assertIs(info["content"]["debugger"], False)
        await eventually(lambda: any("/jupyter/api/kernels?token=REDACTED" in line for line in seen))
        self.assertFalse([line for line in seen if TOKEN in line])


class TwoViews(unittest.TestCase):
    timeout = 180

    async def test_execute_seen_from_jupyter_and_spin(self) -> None:
        service = await start_runtime(self)
        model = await new_kernel(service, env={"KERNEL_USERNAME": "ann", "FOO": "bar", "KERNEL_WORKING_DIR": "/x"})
        owner = await Client.connect(ws_url(service))
        self.addCleanup(owner.close)
        [backing] = [s for s in (await owner.request("session.list"))["sessions"]
                     if s.get("jupyter_kernel_id") == model["id"]]
        sid = backing["id"]
        self.assertIn("ann", backing["name"])
        self.assertTrue((await owner.request("session.attach", session=sid))["ok"])
        sock = await KernelSocket.connect(service, model["id"])
        self.addCleanup(sock.close)
        other = await KernelSocket.connect(service, model["id"], v1=True)
        self.addCleanup(other.close)
        self.assertEqual((sock.selected, other.selected), (None, V1))

        reply, msg_id = await sock.execute("print(6*7)\n'{{not a template}}'")
        self.assertEqual(reply["content"]["status"], "ok")
        self.assertEqual(sock.stdout(msg_id), "42\n")
        [result] = sock.of(msg_id, "execute_result")
        self.assertEqual(result["content"]["data"]["text/plain"], "'{{not a template}}'")  # verbatim
        count = reply["content"]["execution_count"]
        self.assertEqual(result["content"]["execution_count"], count)
        self.assertEqual(sock.of(msg_id, "execute_input")[0]["content"]["code"], "print(6*7)\n'{{not a template}}'")
        # iopub reaches the other connection (binary v1 frames only), the reply does not.
        await other.wait_for(lambda m: m["parent_header"].get("msg_id") == msg_id and m["msg_type"] == "status"
                             and m["content"]["execution_state"] == "idle")
        self.assertEqual(other.stdout(msg_id), "42\n")
        self.assertEqual(other.of(msg_id, "execute_reply"), [])
        self.assertEqual(other.binary_frames, len(other.messages))
        # The spin view: a run with its source and who ran it.
        queued = await owner.wait_for(lambda m: m.get("event") == "run.queued" and m.get("session") == sid)
        self.assertEqual((queued["source"], queued["by"], queued["type"]),
                         ("print(6*7)\n'{{not a template}}'", "owner", "python"))
        await owner.wait_for(lambda m: m.get("event") == "run.finished" and m.get("run") == queued["run"])
        self.assertEqual(owner.output(queued["run"]), "42\n")

        # A spin run shows on iopub, with its run id as parent; same kernel state.
        finished = await owner.run(sid, {"id": "c1", "type": "python", "source": "x = 5\nprint('from spin')"})
        self.assertEqual(finished["status"], "ok")
        await sock.wait_for(lambda m: m["parent_header"].get("msg_id") == finished["run"]
                            and m["msg_type"] == "status" and m["content"]["execution_state"] == "idle")
        self.assertEqual(sock.stdout(finished["run"]), "from spin\n")
        self.assertEqual(sock.of(finished["run"], "execute_input")[0]["parent_header"]["username"], "owner")
        reply, msg_id = await sock.execute("import os\nprint(x, os.environ.get('SPIN_TOKEN'), os.environ.get('FOO'))")
        self.assertEqual(sock.stdout(msg_id), "5 None None\n")
        self.assertGreater(reply["content"]["execution_count"], count)

        # Secrets are masked in everything a Jupyter client gets, forwarded replies too.
        self.assertTrue((await owner.request("secrets.set", session=sid, secrets={"PW": "hunter2-secret"}))["ok"])
        reply, msg_id = await sock.execute("pw = 'hunter2' + '-secret'\nprint(pw)\npw")
        self.assertEqual(sock.stdout(msg_id), "***\n")
        self.assertEqual(sock.of(msg_id, "execute_result")[0]["content"]["data"]["text/plain"], "'***'")
        inspected = await sock.request("inspect_request", {"code": "pw", "cursor_pos": 2, "detail_level": 0})
        self.assertEqual(inspected["content"]["status"], "ok")
        self.assertNotIn("hunter2-secret", str(inspected["content"]))
        self.assertIn("***", str(inspected["content"]))
        reply, msg_id = await sock.execute("raise ValueError(pw)")
        self.assertEqual((reply["content"]["status"], reply["content"]["ename"]), ("error", "ValueError"))
        self.assertNotIn("hunter2-secret", str(sock.messages))
        [error] = sock.of(msg_id, "error")
        self.assertEqual(error["content"]["evalue"], "***")

    async def test_interrupt_restart_and_control(self) -> None:
        service = await start_runtime(self)
        model = await new_kernel(service)
        kid = model["id"]
        sock = await KernelSocket.connect(service, kid)
        self.addCleanup(sock.close)
        msg_id = sock.send("execute_request", {"code": "import time\nprint('sleeping', flush=True)\ntime.sleep(30)",
                                               "silent": False})
        await sock.wait_for(lambda m: m["parent_header"].get("msg_id") == msg_id and m["msg_type"] == "stream")
        self.assertEqual((await call(service, "GET", f"/api/kernels/{kid}"))[1]["execution_state"], "busy")
        self.assertEqual((await call(service, "POST", f"/api/kernels/{kid}/interrupt", {}))[0], 204)
        reply = await sock.wait_for(lambda m: m["parent_header"].get("msg_id") == msg_id
                                    and m["msg_type"] == "execute_reply", 10)
        self.assertEqual((reply["content"]["status"], reply["content"]["ename"]), ("error", "KeyboardInterrupt"))
        self.assertEqual(len(sock.of(msg_id, "error")), 1)
        # Interrupt on the control channel; a queued request behind the error is aborted.
        first = sock.send("execute_request", {"code": "import time; time.sleep(30)", "silent": False})
        second = sock.send("execute_request", {"code": "print('never')", "silent": False})
        await sock.wait_for(lambda m: m["parent_header"].get("msg_id") == first and m["msg_type"] == "execute_input")
        await sock.request("interrupt_request", {}, channel="control")
        aborted = await sock.wait_for(lambda m: m["parent_header"].get("msg_id") == second
                                      and m["msg_type"] == "execute_reply")
        self.assertEqual(aborted["content"]["status"], "aborted")
        self.assertEqual(sock.stdout(second), "")

        await sock.execute("x = 1")
        status, restarted, _ = await call(service, "POST", f"/api/kernels/{kid}/restart", {})
        self.assertEqual((status, restarted["id"], restarted["execution_state"]), (200, kid, "idle"))
        sock2 = await KernelSocket.connect(service, kid, session_id=sock.session_id)  # as JupyterLab reconnects
        self.addCleanup(sock2.close)
        reply, _ = await sock2.execute("x")
        self.assertEqual((reply["content"]["status"], reply["content"]["ename"]), ("error", "NameError"))
        self.assertEqual(reply["content"]["execution_count"], 1)  # counts restart with the kernel

        # The kernel goes away: status dead, then a close that clients do not retry.
        self.assertEqual((await call(service, "DELETE", f"/api/kernels/{kid}"))[0], 204)
        self.assertEqual(await sock2.closed, 1000)
        dead = [m for m in sock2.messages if m["msg_type"] == "status" and m["content"]["execution_state"] == "dead"]
        self.assertEqual(len(dead), 1)

    async def test_reconnect_replays_what_was_missed(self) -> None:
        service = await start_runtime(self)
        kid = (await new_kernel(service))["id"]
        sock = await KernelSocket.connect(service, kid)
        msg_id = sock.send("execute_request", {"silent": False, "code":
                                               "import time\nfor i in range(5):\n    print(i, flush=True)\n"
                                               "    time.sleep(0.3)"})
        await sock.wait_for(lambda m: m["parent_header"].get("msg_id") == msg_id and m["msg_type"] == "stream")
        await sock.close()
        kernel = service.jupyter.kernels.get(kid)
        await eventually(lambda: kernel.state == "idle", timeout=20)
        before = sock.stdout(msg_id)
        back = await KernelSocket.connect(service, kid, session_id=sock.session_id)
        self.addCleanup(back.close)
        reply = await back.wait_for(lambda m: m["parent_header"].get("msg_id") == msg_id
                                    and m["msg_type"] == "execute_reply")
        self.assertEqual(reply["content"]["status"], "ok")
        self.assertEqual(before + back.stdout(msg_id), "0\n1\n2\n3\n4\n")  # exactly once, in order
        stranger = await KernelSocket.connect(service, kid)  # another session_id: nothing replayed
        self.addCleanup(stranger.close)
        await sleep(0.3)
        self.assertEqual(stranger.of(msg_id), [])

        # Over the replay limit: a visible notice, and still the reply and idle.
        service.jupyter.factory.replay_limit = 4000
        await back.close()
        kernel.cursors[back.session_id] = kernel.session.last_seq
        async def run_big() -> None:
            again = await KernelSocket.connect(service, kid, session_id="other")
            await again.execute("for i in range(3000):\n    print('line', i)")
            await again.close()
        await run_big()
        late = await KernelSocket.connect(service, kid, session_id=back.session_id)
        self.addCleanup(late.close)
        await late.wait_for(lambda m: m["msg_type"] == "status" and m["content"]["execution_state"] == "idle"
                            and m["parent_header"].get("msg_type") == "execute_request")
        await late.wait_for(lambda m: m["msg_type"] == "stream" and "were not replayed" in m["content"]["text"])
        replies = [m for m in late.messages if m["msg_type"] == "execute_reply"]
        self.assertEqual(replies, [])  # the reply belongs to the client that asked
        text = "".join(m["content"]["text"] for m in late.messages if m["msg_type"] == "stream")
        self.assertIn("over the replay limit (4000 bytes)", text)
        self.assertRegex(text, r"\[spin\] \d+ bytes of output were not replayed")
        self.assertLess(len(text), 8000)


class ShellKernel(unittest.TestCase):
    timeout = 120

    async def test_spin_shell(self) -> None:
        service = await start_runtime(self)
        kid = (await new_kernel(service, "spin-shell"))["id"]
        sock = await KernelSocket.connect(service, kid, v1=True)
        self.addCleanup(sock.close)
        info = await sock.request("kernel_info_request", {})
        self.assertEqual((info["content"]["implementation"], info["content"]["language_info"]["name"]),
                         ("spin-shell", "bash"))
        reply, msg_id = await sock.execute("echo hi; echo oops >&2; echo $SPIN_TOKEN")
        self.assertEqual(reply["content"]["status"], "ok")
        self.assertEqual(sock.stdout(msg_id), "hi\n\n")
        self.assertIn("oops", "".join(m["content"]["text"] for m in sock.of(msg_id, "stream")))
        reply, _ = await sock.execute("exit 3")
        self.assertEqual(reply["content"]["status"], "error")
        msg_id = sock.send("execute_request", {"code": "echo start; sleep 30 & wait", "silent": False})
        await sock.wait_for(lambda m: m["parent_header"].get("msg_id") == msg_id and m["msg_type"] == "stream")
        self.assertEqual((await call(service, "POST", f"/api/kernels/{kid}/interrupt"))[0], 204)
        reply = await sock.wait_for(lambda m: m["parent_header"].get("msg_id") == msg_id
                                    and m["msg_type"] == "execute_reply", 10)
        self.assertEqual(reply["content"]["ename"], "KeyboardInterrupt")
        complete = await sock.request("complete_request", {"code": "ec", "cursor_pos": 2})
        self.assertEqual(complete["content"]["matches"], [])


class Roles(unittest.TestCase):
    timeout = 120

    def test_every_route_declared(self) -> None:
        for key in roles.JUPYTER_ROUTE_ROLES:
            method, template = key.split(" ", 1)
            path = template.replace("{id}", "1-2-3-4-5").replace("{name}", "n").replace("{file}", "f")
            self.assertEqual(rest.match(path.split("/"))[0], template, key)
        self.assertEqual(roles.jupyter_message_role("execute_request"), roles.EDITOR)
        self.assertEqual(roles.jupyter_message_role("comm_msg"), roles.EDITOR)

    async def test_matrix(self) -> None:
        service = await start_runtime(self)
        owner = await Client.connect(ws_url(service))
        self.addCleanup(owner.close)
        secrets = {}
        for role in (roles.VIEWER, roles.RUNNER, roles.EDITOR):
            made = await owner.request("tokens.create", name=f"t-{role}", role=role)
            secrets[role] = made["secret"]
        kid = (await new_kernel(service))["id"]
        table = [("GET", "/api/kernels", roles.VIEWER), ("GET", f"/api/kernels/{kid}", roles.VIEWER),
                 ("GET", "/api/kernelspecs", roles.VIEWER), ("GET", "/api/sessions", roles.VIEWER),
                 ("POST", f"/api/kernels/{kid}/interrupt", roles.RUNNER),
                 ("POST", "/api/kernels", roles.EDITOR), ("POST", f"/api/kernels/{kid}/restart", roles.EDITOR)]
        for role, secret in secrets.items():
            for method, path, needed in table:
                status, body, _ = await call(service, method, path, {} if method == "POST" else None, token=secret)
                if roles.allows(role, needed):
                    self.assertIn(status, (200, 201, 204), (role, method, path, body))
                else:
                    self.assertEqual((status, body["reason"]), (403, "Forbidden"), (role, method, path))
                    self.assertIn(needed, body["message"])
        status, _, _ = await call(service, "DELETE", f"/api/kernels/{kid}", token=secrets[roles.RUNNER])
        self.assertEqual(status, 403)
        # On the channels: anyone watches and asks kernel_info; a runner interrupts; an editor executes.
        socks = {}
        for role, secret in secrets.items():
            socks[role] = await KernelSocket.connect(service, kid, token=secret)
            self.addCleanup(socks[role].close)
            info = await socks[role].request("kernel_info_request", {})
            self.assertEqual(info["content"]["status"], "ok")
        for role, sock in socks.items():
            reply, msg_id = await sock.execute("print('hi')")
            if role == roles.EDITOR:
                self.assertEqual((reply["content"]["status"], sock.stdout(msg_id)), ("ok", "hi\n"))
            else:
                self.assertEqual((reply["content"]["status"], reply["content"]["ename"]), ("error", "Forbidden"))
                self.assertEqual(sock.stdout(msg_id), "")
        await socks[roles.VIEWER].wait_for(lambda m: m["msg_type"] == "stream" and m["content"]["text"] == "hi\n")
        viewer_int = await socks[roles.VIEWER].request("interrupt_request", {}, channel="control")
        self.assertEqual(viewer_int["content"]["ename"], "Forbidden")
        runner_int = await socks[roles.RUNNER].request("interrupt_request", {}, channel="control")
        self.assertEqual(runner_int["content"]["status"], "ok")


class Lifecycle(unittest.TestCase):
    timeout = 120

    async def test_sessions_api(self) -> None:
        service = await start_runtime(self)
        body = {"path": "work/t.ipynb", "name": "t.ipynb", "type": "notebook", "kernel": {"name": "spin-shell"}}
        status, made, _ = await call(service, "POST", "/api/sessions", body)
        self.assertEqual(status, 201)
        self.assertEqual((made["path"], made["type"], made["kernel"]["name"]), ("work/t.ipynb", "notebook", "spin-shell"))
        self.assertEqual((await call(service, "POST", "/api/sessions", body))[1]["id"], made["id"])  # same path
        self.assertEqual((await call(service, "POST", "/api/sessions", {"path": "x"}))[0], 400)
        self.assertEqual((await call(service, "POST", "/api/sessions", {"type": "notebook"}))[0], 400)
        status, patched, _ = await call(service, "PATCH", f"/api/sessions/{made['id']}",
                                        {"name": "u.ipynb", "kernel": {"name": "python3"}})
        self.assertEqual((status, patched["name"], patched["kernel"]["name"]), (200, "u.ipynb", "python3"))
        self.assertEqual((await call(service, "GET", f"/api/kernels/{made['kernel']['id']}"))[0], 404)
        self.assertEqual([s["id"] for s in (await call(service, "GET", "/api/sessions"))[1]], [made["id"]])
        self.assertEqual((await call(service, "DELETE", f"/api/sessions/{made['id']}"))[0], 204)
        self.assertEqual((await call(service, "GET", f"/api/kernels/{patched['kernel']['id']}"))[0], 404)
        self.assertEqual((await call(service, "GET", "/api/sessions"))[1], [])
        self.assertEqual((await call(service, "DELETE", f"/api/sessions/{made['id']}"))[0], 404)

    async def test_culling(self) -> None:
        service = await start_runtime(self, "--cull-idle-kernels", "1")
        idle = (await new_kernel(service, "spin-shell"))["id"]
        watched = (await new_kernel(service, "spin-shell"))["id"]
        connected = (await new_kernel(service, "spin-shell"))["id"]
        owner = await Client.connect(ws_url(service))
        self.addCleanup(owner.close)
        sid = service.jupyter.kernels.get(watched).session.id
        self.assertTrue((await owner.request("session.attach", session=sid))["ok"])
        sock = await KernelSocket.connect(service, connected)
        self.addCleanup(sock.close)
        await eventually(lambda: idle not in service.jupyter.kernels.kernels, timeout=10)
        self.assertEqual((await call(service, "GET", f"/api/kernels/{idle}"))[0], 404)
        await sleep(1.5)
        self.assertEqual((await call(service, "GET", f"/api/kernels/{watched}"))[0], 200)
        self.assertEqual((await call(service, "GET", f"/api/kernels/{connected}"))[0], 200)
        await sock.close()
        await eventually(lambda: connected not in service.jupyter.kernels.kernels, timeout=10)
