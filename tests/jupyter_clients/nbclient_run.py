"""nbclient executes a notebook on a spin runtime's kernel, through
jupyter_server's gateway kernel manager (no local kernel).

Usage: nbclient_run.py http://HOST:PORT/jupyter TOKEN. Prints one JSON line:
each code cell's outputs (``type:text``) and execution counts.

jupyter_server's GatewayKernelClient opens its WebSocket without the
gateway's auth header (research/jupyter-gateway.md 4.5); the shim below
adds it, as Enterprise Gateway's tests need too.
"""

from __future__ import annotations

import json
import os
import sys

import nbformat
import websocket
from jupyter_server.gateway.gateway_client import GatewayClient
from jupyter_server.gateway.managers import GatewayKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

url, token = sys.argv[1], sys.argv[2]
GatewayClient.instance(url=url, auth_token=token)
_connect = websocket.create_connection


def _with_auth(*args, **kwargs):  # the shim
    kwargs.setdefault("header", [f"Authorization: token {token}"])
    return _connect(*args, **kwargs)


websocket.create_connection = _with_auth

nb = nbformat.v4.new_notebook(cells=[
    nbformat.v4.new_code_cell("print(6 * 7)"),
    nbformat.v4.new_code_cell("'spin'"),
    nbformat.v4.new_code_cell("1 / 0"),
])
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
client = NotebookClient(nb, km=GatewayKernelManager(kernel_name="python3"), timeout=60, allow_errors=True)
try:
    client.execute()
except CellExecutionError as e:
    raise SystemExit(f"execution failed: {e}")


def describe(output):
    if output["output_type"] == "stream":
        return f"stream:{output['text']}"
    if output["output_type"] == "execute_result":
        return f"execute_result:{output['data']['text/plain']}"
    if output["output_type"] == "error":
        return f"error:{output['ename']}"
    return output["output_type"]


print(json.dumps({"outputs": [[describe(o) for o in c.outputs] for c in nb.cells],
                  "counts": [c.execution_count for c in nb.cells]}), flush=True)
# GatewayKernelClient's reader thread is left blocked on its closed socket.
os._exit(0)
