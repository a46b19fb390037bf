"""Templates, output variables and secrets through the real runtime."""

from __future__ import annotations

import os
import stat

from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest

from .support import Client, start_runtime, ws_url


class VariablesAndSecretsTests(unittest.TestCase):
    timeout = 60

    async def setUp(self) -> None:
        self.home = None
        self.service = await start_runtime(self, environ={"TEAM_REGION": "eu-west-1", "ENV_DB_PASS": "env-secret-4242"})
        self.home = self.service.config.home
        self.client = await Client.connect(ws_url(self.service))
        self.addCleanup(self.client.close)
        self.sid = (await self.client.request("session.create", variables={"svc": {"hosts": ["a.example", "b.example"]}}))["session"]["id"]

    async def shell(self, source: str, **cell) -> dict:
        return await self.client.run(self.sid, {"type": "shell", "source": source, **cell})

    async def test_output_variable_feeds_later_templates(self) -> None:
        first = await self.shell("echo hello; echo oops >&2; exit 2", output_variable="r")
        self.assertEqual(first["status"], "error")
        announced = await self.client.wait_for(lambda m: m.get("event") == "variable.set" and m["name"] == "r")
        self.assertEqual(announced["type"], "CellResult")
        listed = await self.client.request("variables.list", session=self.sid)
        self.assertEqual(listed["variables"]["r"]["type"], "CellResult")
        self.assertIn("svc", listed["variables"])
        second = await self.shell("echo '{{r.stdout}}|{{ r.exit_code }}|{{r.status}}|{{svc.hosts.1}}|{{runtime_env:TEAM_REGION}}'")
        self.assertEqual(self.client.output(second["run"]), "hello\n|2|error|b.example|eu-west-1\n")

    async def test_unresolvable_placeholder_fails_before_running(self) -> None:
        marker = os.path.join(self.home, "ran")
        done = await self.shell(f"touch {marker}; echo {{{{missing.value}}}}")
        self.assertEqual((done["status"], done["error"]["code"]), ("error", "template_error"))
        self.assertIn("{{missing.value}}", done["error"]["evalue"])
        self.assertFalse(os.path.exists(marker))
        self.assertEqual(self.client.events(run=done["run"], kind="stream"), [])
        token = await self.shell("echo {{runtime_env:SPIN_TOKEN}}")
        self.assertEqual(token["error"]["code"], "template_error")
        secret = await self.shell("echo {{secret:SPIN_TOKEN}}")
        self.assertEqual(secret["error"]["code"], "template_error")

    async def test_go_templates_pass_through_and_escape_works(self) -> None:
        done = await self.shell("printf '%s\\n' '{{.Names}}' '{{ json . }}' '\\{{svc}}'")
        self.assertEqual(self.client.output(done["run"]), "{{.Names}}\n{{ json . }}\n{{svc}}\n")

    async def test_other_template_languages_reach_the_shell_byte_for_byte(self) -> None:
        # PROTOCOL.md 14; the first line is the reported command.
        go = "{{range .items}}{{.metadata.name}}{{end}}"
        mixed = (
            "{{- range .items -}}\n{{ if .x }}{{ .y }}{{ else if .z }}{{ end }}{{/* {{nope}} */}}\n{{ end -}}"
            " ${{ github.sha }} ${{secrets.X}} {% if a %}{{ .Values.x | default \"y\" }}{% endif %}"
        )
        done = await self.shell(f"echo '{go}'\ncat <<'EOF'\n{mixed}\nEOF\necho {{{{svc.hosts.0}}}} '{{{{ end }}}}'")
        self.assertEqual(done["status"], "ok")
        self.assertEqual(self.client.output(done["run"]), f"{go}\n{mixed}\na.example {{{{ end }}}}\n")
        typo = await self.shell("echo '{{range .items}}{{ hostnme }}{{end}}'")
        self.assertEqual((typo["status"], typo["error"]["code"]), ("error", "template_error"))
        self.assertIn("{{ hostnme }}", typo["error"]["evalue"])

    async def test_shquote_stops_injection(self) -> None:
        marker = os.path.join(self.home, "injected")
        await self.client.request("session.close", session=self.sid)
        evil = f"$(touch {marker}); `touch {marker}` ' \" ;touch {marker}"
        self.sid = (await self.client.request("session.create", variables={"v": evil, "svc": {"hosts": ["a.example", "b.example"]}}))["session"]["id"]
        done = await self.shell("printf '%s' {{v|shquote}}")
        self.assertEqual(self.client.output(done["run"]), evil)
        self.assertFalse(os.path.exists(marker))
        as_json = await self.shell("printf '%s' '{{svc.hosts|json}}'")
        self.assertEqual(self.client.output(as_json["run"]), '["a.example", "b.example"]')

    async def test_secrets_are_masked_everywhere(self) -> None:
        logged: list[str] = []

        def observe(event: dict) -> None:
            logged.append(repr(event))
            logged.append(formatEvent(event) or "")

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        self.assertTrue((await self.client.request("secrets.set", session=self.sid, secrets={"API_KEY": "sk-live-123456"}))["ok"])
        done = await self.shell(
            "echo key={{secret:API_KEY}}; printf 'sk-live-'; sleep 0.2; printf '123456\\n'; "
            "echo env={{secret:ENV_DB_PASS}}; echo $SECRET_FROM_ENV >&2",
            options={"env": {"SECRET_FROM_ENV": "{{secret:API_KEY}}"}}, output_variable="out")
        self.assertEqual(done["status"], "ok")
        self.assertEqual(self.client.output(done["run"]), "key=***\n***\nenv=***\n")
        self.assertEqual(self.client.output(done["run"], "stderr"), "***\n")
        value = await self.shell("echo '{{out.stdout}}'")
        self.assertEqual(self.client.output(value["run"]), "key=***\n***\nenv=***\n\n")
        # Nothing in the stored history or the store file holds the values.
        other = await Client.connect(ws_url(self.service))
        self.addCleanup(other.close)
        await other.request("session.attach", session=self.sid)
        await other.wait_for(lambda m: m.get("seq") == value["seq"])
        history = repr(other.messages)
        self.assertNotIn("sk-live-123456", history)
        self.assertNotIn("env-secret-4242", history)
        failing = await self.shell("ls /nonexistent-{{secret:API_KEY}}")
        self.assertEqual(failing["status"], "error")
        self.assertIn("***", self.client.output(failing["run"], "stderr"))
        listed = await self.shell("env | grep '^EXPORTED='", options={"env": {"EXPORTED": "{{secret:API_KEY}}"}})
        self.assertEqual(self.client.output(listed["run"]), "EXPORTED=***\n")
        self.assertNotIn("sk-live-123456", repr(self.client.messages))
        await self.service.store.drain()
        self.assertEqual([line for line in logged if "sk-live-123456" in line or "env-secret-4242" in line], [])
        for folder, _, files in os.walk(self.home):
            for name in files:
                path = os.path.join(folder, name)
                if not stat.S_ISREG(os.lstat(path).st_mode):
                    continue  # kernel sockets
                with open(path, "rb") as f:
                    data = f.read()
                self.assertNotIn(b"sk-live-123456", data, name)
                self.assertNotIn(b"env-secret-4242", data, name)

    async def test_secret_var_and_unknown_secret(self) -> None:
        await self.client.request("secrets.set", session=self.sid, secrets={"PROD_PW": "prod-password-1"})
        await self.client.request("session.close", session=self.sid)
        self.sid = (await self.client.request("session.create", variables={"which": "PROD_PW"}))["session"]["id"]
        await self.client.request("secrets.set", session=self.sid, secrets={"PROD_PW": "prod-password-1"})
        done = await self.shell("test '{{secret_var:which}}' = prod-password-1 && echo matched")
        self.assertEqual(self.client.output(done["run"]), "matched\n")
        missing = await self.shell("echo {{secret:NOPE}}")
        self.assertEqual(missing["error"]["code"], "template_error")
        self.assertIn("{{secret:NOPE}}", missing["error"]["evalue"])

    async def test_variables_clear_and_survive_restart(self) -> None:
        await self.client.request("secrets.set", session=self.sid, secrets={"PRE_RESTART": "value-before-restart"})
        ok = await self.shell("echo {{secret:PRE_RESTART}}")
        self.assertEqual(self.client.output(ok["run"]), "***\n")
        await self.shell("echo keep", output_variable="kept")
        await self.shell("echo drop", output_variable="dropped")
        await self.client.request("variables.clear", session=self.sid, names=["dropped"])
        listed = await self.client.request("variables.list", session=self.sid)
        self.assertEqual(sorted(listed["variables"]), ["kept", "svc"])
        await self.client.close()
        await self.service.stopService()
        self.service = await start_runtime(self, home=self.home)
        self.client = await Client.connect(ws_url(self.service))
        self.addCleanup(self.client.close)
        await self.client.request("session.attach", session=self.sid)
        listed = await self.client.request("variables.list", session=self.sid)
        self.assertEqual(sorted(listed["variables"]), ["kept", "svc"])
        done = await self.shell("echo '{{kept.stdout}}'")
        self.assertEqual(self.client.output(done["run"]), "keep\n\n")
        await self.client.request("variables.clear", session=self.sid)
        listed = await self.client.request("variables.list", session=self.sid)
        self.assertEqual(listed["variables"], {})
        # Secrets lived in memory only: after the restart a cell needing one fails clearly.
        gone = await self.shell("echo {{secret:PRE_RESTART}}")
        self.assertEqual(gone["error"]["code"], "template_error")
        self.assertIn("secret 'PRE_RESTART' is not set", gone["error"]["evalue"])


class PythonVariablesTests(unittest.TestCase):
    """Variables and secrets shared between the kernel and other cell types."""

    timeout = 120

    async def setUp(self) -> None:
        self.service = await start_runtime(self, "--kernel-pool", "0")
        self.client = await Client.connect(ws_url(self.service))
        self.addCleanup(self.client.close)
        created = await self.client.request("session.create", variables={"region": "eu-west-1"})
        self.sid = created["session"]["id"]

    async def cell(self, kind: str, source: str, **extra) -> dict:
        return await self.client.run(self.sid, {"type": kind, "source": source, **extra}, timeout=90)

    async def test_values_flow_both_ways(self) -> None:
        # Before any kernel exists: the kernel starts with the session's variables.
        await self.cell("shell", "echo hello", output_variable="r")
        done = await self.cell("python", "print(region, r.stdout.strip(), r['exit_code'], type(r).__name__)")
        self.assertEqual(done["status"], "ok", done)
        self.assertEqual(self.client.output(done["run"]), "eu-west-1 hello 0 CellResult\n")
        # With a running kernel: a new output variable lands in its globals at once.
        await self.cell("shell", "echo second; exit 4", output_variable="r2")
        done = await self.cell("python", "print(r2.stdout.strip(), r2.exit_code, r2.status)")
        self.assertEqual(self.client.output(done["run"]), "second 4 error\n")
        # Python globals feed templates of other cell types, without visible code.
        await self.cell("python", "hosts = ['h1', 'h2']\ncfg = {'port': 8080}")
        before = len(self.client.events(self.sid))
        done = await self.cell("shell", "echo {{hosts.1}} {{cfg.port}} {{hosts|json|shquote}}")
        self.assertEqual(self.client.output(done["run"]), 'h2 8080 ["h1", "h2"]\n')
        kinds = {e["event"] for e in self.client.events(self.sid)[before:]}
        self.assertNotIn("display", kinds)
        missing = await self.cell("shell", "echo {{not_defined_anywhere}}")
        self.assertEqual(missing["error"]["code"], "template_error")
        # variables.clear removes from the store and the kernel.
        await self.client.request("variables.clear", session=self.sid, names=["r2"])
        done = await self.cell("python", "print('r2' in globals(), 'r' in globals())")
        self.assertEqual(self.client.output(done["run"]), "False True\n")

    async def test_spin_secrets_in_the_kernel(self) -> None:
        await self.cell("python", "x = 1")  # a kernel is running
        await self.client.request("secrets.set", session=self.sid, secrets={"API_KEY": "sk-kernel-98765"})
        done = await self.cell("python", "k = SpinSecrets.get_secret('API_KEY')\nprint(len(k), k)")
        self.assertEqual(done["status"], "ok", done)
        self.assertEqual(self.client.output(done["run"]), "15 ***\n")
        await self.client.request("kernel.restart", session=self.sid)
        done = await self.cell("python", "print(SpinSecrets.get_secret('API_KEY') == 'sk-kernel-98765')")
        self.assertEqual(self.client.output(done["run"]), "True\n")
        self.assertNotIn("sk-kernel-98765", repr(self.client.messages))


class LinkedChainTests(unittest.TestCase):
    """REST result -> Python -> shell in one linked chain, with no client watching."""

    timeout = 120

    async def setUp(self) -> None:
        from twisted.internet import reactor
        from twisted.web.resource import Resource
        from twisted.web.server import Site

        class Hosts(Resource):
            isLeaf = True

            def render_GET(self, request):  # type: ignore[no-untyped-def]
                request.setHeader(b"content-type", b"application/json")
                return b'{"items": [{"host": "db-1"}, {"host": "db-2"}]}'

        self.api = reactor.listenTCP(0, Site(Hosts()), interface="127.0.0.1")
        self.addCleanup(self.api.stopListening)
        self.service = await start_runtime(self, "--kernel-pool", "0")

    async def test_chain_runs_on_after_the_browser_leaves(self) -> None:
        url = f"http://127.0.0.1:{self.api.getHost().port}/hosts"
        client = await Client.connect(ws_url(self.service))
        sid = (await client.request("session.create"))["session"]["id"]
        reply = await client.request("cells.run", session=sid, cells=[
            {"type": "rest", "options": {"url": url}, "output_variable": "resp"},
            {"type": "python", "source": "hosts = [i['host'] for i in resp.json['items']]\nprint(len(hosts))"},
            {"type": "shell", "source": "echo last={{hosts.1}}"},
        ])
        await client.close()  # the browser goes away at once
        again = await Client.connect(ws_url(self.service))
        self.addCleanup(again.close)
        await again.request("session.attach", session=sid)
        runs = reply["runs"]
        finished = [await again.wait_for(lambda m, r=r: m.get("event") == "run.finished" and m["run"] == r, timeout=90)
                    for r in runs]
        self.assertEqual([f["status"] for f in finished], ["ok", "ok", "ok"], finished)
        self.assertEqual(again.output(runs[1]), "2\n")
        self.assertEqual(again.output(runs[2]), "last=db-2\n")
        # A failure in the middle of a chain skips the rest.
        reply = await again.request("cells.run", session=sid, cells=[
            {"type": "python", "source": "raise ValueError('bad data')"},
            {"type": "shell", "source": "echo never"},
        ])
        first, second = reply["runs"]
        done = await again.wait_for(lambda m: m.get("event") == "run.finished" and m["run"] == second)
        self.assertEqual(done["status"], "skipped")
        failed = await again.wait_for(lambda m: m.get("event") == "run.finished" and m["run"] == first)
        self.assertEqual((failed["status"], failed["error"]["ename"]), ("error", "ValueError"))
