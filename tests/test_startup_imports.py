"""What the daemon imports before it can serve: nothing slow that a request may never need."""

from __future__ import annotations

import subprocess
import sys

from twisted.trial import unittest


class StartupImports(unittest.TestCase):
    def test_the_daemon_does_not_import_nbformat_at_start(self) -> None:
        # nbformat brings jsonschema, whose format checkers compile dozens of
        # grammars at import where optional packages are installed: seconds of
        # every start. The runtime uses it only on threads, which import it.
        code = ("import sys, spinrt.tap, spinrt.cli.main; "
                "print(sorted(m for m in ('nbformat', 'jsonschema') if m in sys.modules))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        self.assertEqual(out.returncode, 0, out.stderr[-2000:])
        self.assertEqual(out.stdout.strip(), "[]")
