"""`make run` prints the UI's URL: with a token it generated, in the URL's
fragment; with the user's own SPIN_TOKEN, never (PROTOCOL.md 8).

The recipe runs with BIN pointing at a stand-in twistd that reports what it
was given, so no daemon starts and no venv is (re)built.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

from twisted.internet import utils
from twisted.trial import unittest

CHECKOUT = Path(__file__).resolve().parent.parent


class MakeRun(unittest.TestCase):
    def setUp(self) -> None:
        if shutil.which("make") is None:
            if os.environ.get("CI"):
                self.fail("CI must run the make tests: make not found")
            raise unittest.SkipTest("make not found")
        self.bin = Path(self.mktemp()).resolve()
        self.bin.mkdir(parents=True)
        (self.bin / "python").symlink_to(sys.executable)
        twistd = self.bin / "twistd"
        twistd.write_text('#!/bin/sh\necho "twistd $*"\n[ -n "$SPIN_TOKEN" ] && echo "twistd has a token"\nexit 0\n')
        twistd.chmod(0o755)
        self.home = Path(self.mktemp()).resolve()

    async def run_make(self, args: str | None = None, token: str | None = None) -> str:
        env = {k: v for k, v in os.environ.items() if k not in ("SPIN_TOKEN", "MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
        env["SPIN_HOME"] = str(self.home)
        if token is not None:
            env["SPIN_TOKEN"] = token
        argv = ["-s", "-C", str(CHECKOUT), "-o", f"{self.bin}/twistd", "run", f"BIN={self.bin}"]
        if args is not None:
            argv.append(f"ARGS={args}")
        out, err, code = await utils.getProcessOutputAndValue("make", argv, env=env)
        self.assertEqual(code, 0, err)
        return out.decode()

    async def test_generated_token_in_the_fragment(self) -> None:
        out = await self.run_make()
        token = re.search(r"^SPIN_TOKEN=(\S+)", out, re.M).group(1)
        self.assertGreaterEqual(len(token), 40)
        self.assertIn(f"Open the UI: http://localhost:8888/#token={token}\n", out)
        self.assertIn("twistd -n --pidfile= spin-runtime --endpoint tcp:8888", out)
        self.assertIn("twistd has a token", out)
        # A new one each time.
        again = await self.run_make()
        self.assertNotIn(token, again)

    async def test_port_and_scheme_follow_the_endpoint(self) -> None:
        cases = {
            "--endpoint tcp:9000": "http://localhost:9000/",
            "--endpoint=tcp:port=9001:interface=127.0.0.1": "http://localhost:9001/",
            "--endpoint ssl:8443:privateKey=key.pem:certKey=cert.pem": "https://localhost:8443/",
            "--kernel-pool 0": "http://localhost:8888/",
        }
        for args, url in cases.items():
            out = await self.run_make(args)
            self.assertRegex(out, rf"Open the UI: {re.escape(url)}#token=[A-Za-z0-9_-]+\n", args)

    async def test_own_token_is_never_printed(self) -> None:
        token = "my-own-secret-token-value"
        out = await self.run_make(token=token)
        self.assertNotIn(token, out)
        self.assertIn("Open the UI: http://localhost:8888/  (it asks for your SPIN_TOKEN)", out)
        self.assertNotIn("#token=", out)
        self.assertIn("twistd has a token", out)
