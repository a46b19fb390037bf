"""Multi-line and encoded secrets through the real runtime: masked in live
events, stored events, variables and the log (shell, REST and Python cells)."""

from __future__ import annotations

import base64
import json
import os
import re
import stat
import sys
import textwrap

from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest

from .support import Client, start_runtime, ws_url

# Random base64 in PEM dress (not a real key): 64-character lines.
BODY = base64.b64encode(os.urandom(900)).decode()
PEM = "-----BEGIN PRIVATE KEY-----\n" + "\n".join(textwrap.wrap(BODY, 64)) + "\n-----END PRIVATE KEY-----\n"
PEM_LINES = PEM.strip().split("\n")
# Quotes, a backslash, a slash, spaces and non-ASCII between long plain runs;
# 48 bytes in UTF-8, so base64 of it ends on a group.
TOKEN = 'alpha7Kq2Zx"bravo9Wm4Tn\\charlie3R/ délta5Vbx'
assert len(TOKEN.encode()) % 3 == 0
SPLIT = 'split() { h=$(( ${#1} / 2 )); printf %s "${1:0:h}"; sleep 0.2; printf "%s\\n" "${1:h}"; }\n'


def needles(secret: str) -> list[str]:
    """Texts whose presence anywhere means (part of) ``secret`` leaked: its
    plain runs of 10+ characters (the same in every encoding but base64) and
    pieces of its base64 encoding."""
    runs = re.findall(r"[A-Za-z0-9]{10,}", secret)
    flat = base64.b64encode(secret.strip().encode()).decode()
    return runs + [flat[i:i + 12] for i in range(0, len(flat) - 16, 24)]


class LeakCheck:
    """Mixin: watch the log from setUp; look everywhere for needles."""

    def watch_log(self) -> None:
        self.logged: list[str] = []

        def observe(event: dict) -> None:
            self.logged.append(repr(event))
            self.logged.append(formatEvent(event) or "")

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    async def assert_nowhere(self, home: str, texts: list[str], *secrets: str) -> None:
        await self.service.store.drain()
        found = [n for s in secrets for n in needles(s)]
        haystacks = [(f"text {i}", t) for i, t in enumerate(texts)] + [("log", "\n".join(self.logged))]
        for folder, _, files in os.walk(home):
            for name in files:
                path = os.path.join(folder, name)
                if stat.S_ISREG(os.lstat(path).st_mode):  # not kernel sockets
                    with open(path, "rb") as f:
                        haystacks.append((path, f.read().decode("latin-1")))
        for where, text in haystacks:
            flat = text.replace("\\n", "").replace("\n", "")  # base64 pieces across wrapped lines
            leaked = [n for n in found if n in text or n in flat]
            self.assertEqual(leaked, [], where)


class ShellAndRestLeakTests(LeakCheck, unittest.TestCase):
    timeout = 60

    async def setUp(self) -> None:
        self.watch_log()
        self.service = await start_runtime(self)
        self.home = self.service.config.home
        self.client = await Client.connect(ws_url(self.service))
        self.addCleanup(self.client.close)
        self.sid = (await self.client.request("session.create"))["session"]["id"]
        await self.client.request("secrets.set", session=self.sid, secrets={"PEM": PEM, "TOKEN": TOKEN})

    async def shell(self, source: str, **cell) -> dict:
        env = {"PEM": "{{secret:PEM}}", "TOKEN": "{{secret:TOKEN}}"}
        return await self.client.run(self.sid, {"type": "shell", "source": source, "options": {"env": env}, **cell})

    async def test_lines_of_a_pem(self) -> None:
        done = await self.shell(
            'printf %s "$PEM" | cat -n\nprintf %s "$PEM" | sed "s/^/> /"\nprintf %s "$PEM" | sed "s/$/\\r/"\n'
            'printf %s "$PEM" | sed "s/^/   /; s/$/  /"\nprintf %s "$PEM" | head -c 20; echo', output_variable="out")
        n = len(PEM_LINES)
        # With CRLF line ends the lines follow each other: the whole value matches.
        expected = ("".join(f"{i:6}\t***\n" for i in range(1, n + 1)) + "> ***\n" * n + "***\r\n"
                    + "   ***  \n" * n + PEM[:20] + "\n")
        self.assertEqual(self.client.output(done["run"]), expected)
        listed = await self.client.request("variables.list", session=self.sid)
        await self.assert_nowhere(self.home, [repr(self.client.messages), repr(listed)], PEM)

    async def test_encodings_whole_and_split_across_chunks(self) -> None:
        python = sys.executable
        encode = (f'{python} -c "import sys, json, shlex, urllib.parse as u; s = sys.argv[2]; '
                  f'print(dict(json=json.dumps(s), quote=u.quote(s), plus=u.quote_plus(s), shlex=shlex.quote(s))[sys.argv[1]], end=\'\')"')
        forms = ['"$(printf %s "$PEM" | base64 -w0)"', '"$(printf %s "$PEM" | base64)"', '"$(printf %q "$PEM")"',
                 '"$(printf %q "$TOKEN")"', '"${TOKEN@Q}"', '"$PEM"', '"$TOKEN"']
        forms += [f'"$({encode} {kind} "${var}")"' for kind in ("json", "quote", "plus", "shlex") for var in ("PEM", "TOKEN")]
        source = SPLIT + "".join(f'printf "%s\\n" {f}\necho 8\\<--\nsplit {f}\necho 8\\<--\n' for f in forms)
        done = await self.shell(source, output_variable="out")
        self.assertEqual(done["status"], "ok", self.client.output(done["run"], "stderr"))
        out = self.client.output(done["run"])
        parts = out.split("8<--\n")
        # Each form printed twice, whole and cut in two chunks: masked alike.
        self.assertEqual(len(parts), 2 * len(forms) + 1, out)
        for form, whole, split in zip(forms, parts[0::2], parts[1::2]):
            self.assertIn("***", whole, form)
            self.assertEqual(whole, split, form)
        listed = await self.client.request("variables.list", session=self.sid)
        await self.assert_nowhere(self.home, [repr(self.client.messages), out, repr(listed)], PEM, TOKEN)

    async def test_rest_response_variable(self) -> None:
        from twisted.web.resource import Resource
        from twisted.web.server import Site
        from twisted.internet import reactor

        class Echo(Resource):
            isLeaf = True

            def render_GET(self, request):  # type: ignore[no-untyped-def]
                if request.path == b"/b64":
                    request.setHeader(b"content-type", b"text/plain")
                    return base64.encodebytes(PEM.encode())
                request.setHeader(b"content-type", b"application/json")
                return json.dumps({"token": TOKEN, "pem": PEM, "both": [TOKEN, PEM]}).encode()

        port = reactor.listenTCP(0, Site(Echo()), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        base = f"http://127.0.0.1:{port.getHost().port}"
        for path, var in (("/json", "resp"), ("/b64", "b64")):
            done = await self.client.run(self.sid, {"type": "rest", "options": {"url": base + path}, "output_variable": var})
            self.assertEqual(done["status"], "ok", done)
        listed = await self.client.request("variables.list", session=self.sid)
        shown = await self.shell("printf '%s\\n' '{{resp.json.token}}' '{{resp.text}}' '{{b64.text}}'")
        text = self.client.output(shown["run"])
        self.assertEqual(text.split("\n")[:2], ["***", '{"token": "***", "pem": "***\\n", "both": ["***", "***\\n"]}'])
        await self.assert_nowhere(self.home, [repr(self.client.messages), repr(listed), text], PEM, TOKEN)


class PythonLeakTests(LeakCheck, unittest.TestCase):
    timeout = 120

    async def setUp(self) -> None:
        self.watch_log()
        self.service = await start_runtime(self, "--kernel-pool", "0")
        self.home = self.service.config.home
        self.client = await Client.connect(ws_url(self.service))
        self.addCleanup(self.client.close)
        self.sid = (await self.client.request("session.create"))["session"]["id"]
        await self.client.request("secrets.set", session=self.sid, secrets={"PEM": PEM, "TOKEN": TOKEN})

    async def test_print_encodings(self) -> None:
        source = textwrap.dedent("""\
            import base64, json, shlex, sys, time, urllib.parse as u
            s = SpinSecrets.get_secret('TOKEN')
            pem = SpinSecrets.get_secret('PEM')
            forms = [json.dumps(s), json.dumps(s, ensure_ascii=False), json.dumps({'k': s}), json.dumps(s).replace('/', '\\\\/'),
                     u.quote(s), u.quote_plus(s), u.quote(s, safe=''), shlex.quote(s), repr(s),
                     base64.b64encode(s.encode()).decode(), json.dumps(pem), repr(pem)]
            for f in forms:
                print(f)
            for f in forms:  # again, each cut in two output chunks
                sys.stdout.write(f[:len(f) // 2]); sys.stdout.flush(); time.sleep(0.2); print(f[len(f) // 2:])
            print(pem)
            {'token': s, 'pem': pem}
            """)
        done = await self.client.run(self.sid, {"type": "python", "source": source}, timeout=90)
        self.assertEqual(done["status"], "ok", done)
        forms = ['"***"', '"***"', '{"k": "***"}', '"***"', "***", "***", "***", "'***'", "'***'", "***",
                 '"***\\n"', "'***\\n'"]
        self.assertEqual(self.client.output(done["run"]), "\n".join(forms * 2) + "\n***\n\n")
        shown = self.client.events(run=done["run"], kind="result")
        self.assertEqual([e["data"]["text/plain"] for e in shown], ["{'token': '***',\n 'pem': '***\\n'}"])
        await self.assert_nowhere(self.home, [repr(self.client.messages)], PEM, TOKEN)
