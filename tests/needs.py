"""Tests that need something of the machine (sshd, Chromium, root for a tmpfs)."""

from __future__ import annotations

import os
from typing import Any


def require(testcase: Any, reason: str | None, what: str) -> None:
    """Go on when ``reason`` is None; else skip with it, or under CI (``CI``
    set in the environment, where nothing may be skipped) fail, naming ``what``."""
    if reason is None:
        return
    if os.environ.get("CI"):
        testcase.fail(f"CI must run the {what}: {reason}")
    from twisted.trial.unittest import SkipTest

    raise SkipTest(reason)
