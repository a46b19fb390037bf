"""Enterprise Gateway's own black-box integration tests (the ``itests`` in
the ``jupyter_enterprise_gateway`` wheel: hello, restart, interrupt, scope)
against a spin runtime.

Usage: GATEWAY_HOST=127.0.0.1:PORT/jupyter eg_itests.py TOKEN. Exits 0 when
every test passed. Their client sends no credentials; the shim below adds
the runtime's token header to its HTTP calls and its kernel WebSocket.
"""

from __future__ import annotations

import sys
import unittest

import requests
import websocket

token = sys.argv[1]
auth = {"Authorization": f"token {token}"}


def _with_auth(call):
    def wrapped(*args, **kwargs):
        kwargs["headers"] = {**(kwargs.get("headers") or {}), **auth}
        return call(*args, **kwargs)
    return wrapped


for name in ("get", "post", "delete"):
    setattr(requests, name, _with_auth(getattr(requests, name)))
_connect = websocket.create_connection
websocket.create_connection = lambda *a, **k: _connect(*a, header=[f"Authorization: token {token}"], **k)

from enterprise_gateway.itests.test_python_kernel import TestPythonKernelLocal  # noqa: E402  (after the shim)

suite = unittest.TestSuite(TestPythonKernelLocal(name) for name in
                           ("test_hello_world", "test_restart", "test_interrupt", "test_scope"))
result = unittest.TextTestRunner(verbosity=2).run(suite)
sys.exit(0 if result.wasSuccessful() and result.testsRun == 4 else 1)
