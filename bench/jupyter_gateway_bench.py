"""The Jupyter face's cost: execute round trips and output throughput.

Starts, on 127.0.0.1: the runtime (``twistd spin-runtime``), one
``jupyter server --gateway-url`` pointed at it, and one plain
``jupyter server`` with local kernels. Through each jupyter server's kernel
WebSocket (the same client, websocket-client with TCP_NODELAY and without
its pure-Python UTF-8 check), it runs
``1+1`` ``--n`` times (send until execute_reply and idle are in: median and
p99), and prints ``--mb`` MiB (throughput: send until idle). Also the
runtime's /jupyter WebSocket directly (what VS Code uses). Not run by CI.

    python bench/jupyter_gateway_bench.py [--n 300] [--mb 50]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import requests
import websocket

TOKEN = "bench-token-0123456789"
USER = "bench-user-token-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, headers: dict[str, str], proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited")
        try:
            if requests.get(url, headers=headers, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise SystemExit(f"{what} did not start")


def jupyter_server(root: str, extra: list[str]) -> tuple[subprocess.Popen, str]:
    os.makedirs(root, exist_ok=True)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTER", "SPIN_"))}
    env.update(JUPYTER_CONFIG_DIR=os.path.join(root, "c"), JUPYTER_DATA_DIR=os.path.join(root, "d"),
               JUPYTER_RUNTIME_DIR=os.path.join(root, "r"))
    proc = subprocess.Popen([sys.executable, "-m", "jupyter_server", "--no-browser", f"--port={port}",
                             "--ip=127.0.0.1", "--ServerApp.port_retries=0", f"--IdentityProvider.token={USER}",
                             "--allow-root", f"--ServerApp.root_dir={root}", *extra],
                            env=env, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    wait_http(base + "/api", {"Authorization": f"token {USER}"}, proc, "jupyter server")
    return proc, base


class Kernel:
    def __init__(self, base: str, token: str, name: str = "python3") -> None:
        headers = {"Authorization": f"token {token}"}
        made = requests.post(base + "/api/kernels", headers=headers, json={"name": name}, timeout=60)
        made.raise_for_status()
        self.id = made.json()["id"]
        self.session = uuid.uuid4().hex
        ws_base = base.replace("http://", "ws://")
        self.ws = websocket.create_connection(
            f"{ws_base}/api/kernels/{self.id}/channels?session_id={self.session}",
            header=[f"Authorization: token {token}"],
            sockopt=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
            # Without wsaccel, websocket-client checks each text frame's UTF-8
            # byte by byte in Python (~3 MiB/s here), which capped the
            # throughput figure at ~1 MiB/s; json.loads still rejects bad UTF-8.
            skip_utf8_validation=True)

    def execute(self, code: str) -> int:
        """Send; wait for the reply and idle. Bytes of stream text received."""
        msg_id = uuid.uuid4().hex
        self.ws.send(json.dumps({"header": {"msg_id": msg_id, "msg_type": "execute_request", "session": self.session,
                                            "username": "b", "date": "", "version": "5.4"},
                                 "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
                                 "content": {"code": code, "silent": False, "store_history": True,
                                             "user_expressions": {}, "allow_stdin": False}}))
        replied = idle = False
        text = 0
        while not (replied and idle):
            msg = json.loads(self.ws.recv())
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind = msg["msg_type"]
            if kind == "execute_reply":
                replied = True
            elif kind == "status" and msg["content"]["execution_state"] == "idle":
                idle = True
            elif kind == "stream":
                text += len(msg["content"]["text"])
        return text


def roundtrips(kernel: Kernel, n: int) -> tuple[float, float]:
    for _ in range(20):
        kernel.execute("1+1")
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        kernel.execute("1+1")
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


def throughput(kernel: Kernel, mib: int) -> tuple[float, float, float]:
    """(MiB/s, share of the output that arrived, share of the time this
    client was on the CPU): Jupyter Server's iopub rate limit drops fast
    output from local kernels; the runtime drops none. A client near 100 %
    is what limits the figure."""
    code = f"import sys\nchunk = 'x' * 1023 + '\\n'\nfor _ in range({mib} * 1024):\n    sys.stdout.write(chunk)"
    start, cpu = time.perf_counter(), time.process_time()
    got = kernel.execute(code)
    elapsed = time.perf_counter() - start
    return mib / elapsed, got / (mib * 1024 * 1024), (time.process_time() - cpu) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--mb", type=int, default=50)
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="jgw-bench-")
    port = free_port()
    env = dict(os.environ, SPIN_TOKEN=TOKEN, SPIN_HOME=os.path.join(root, "spin"))
    twistd = [sys.executable, "-c", "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"]
    runtime = subprocess.Popen([*twistd, "--reactor=asyncio", "-n", "--pidfile=", "--logfile", os.path.join(root, "log"),
                                "spin-runtime", "--endpoint", f"tcp:{port}:interface=127.0.0.1", "--kernel-pool", "0"],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs = [runtime]
    try:
        spin = f"http://127.0.0.1:{port}/jupyter"
        wait_http(spin + "/api", {"Authorization": f"token {TOKEN}"}, runtime, "the runtime")
        gateway, gw_base = jupyter_server(os.path.join(root, "gw"),
                                          [f"--gateway-url={spin}", f"--GatewayClient.auth_token={TOKEN}"])
        procs.append(gateway)
        local, local_base = jupyter_server(os.path.join(root, "local"), [])
        procs.append(local)
        paths = {
            "jupyter server, local kernel": Kernel(local_base, USER),
            "jupyter server --gateway-url -> spinrt": Kernel(gw_base, USER),
            "spinrt /jupyter directly": Kernel(spin, TOKEN),
        }
        medians = {}
        print(f"1+1 round trip, {args.n} runs (ms):")
        for name, kernel in paths.items():
            median, p99 = roundtrips(kernel, args.n)
            medians[name] = median
            print(f"  {name:42s} median {median:6.2f}  p99 {p99:6.2f}")
        ratio = medians["jupyter server --gateway-url -> spinrt"] / medians["jupyter server, local kernel"]
        print(f"  gateway / local: {ratio:.2f}x")
        print(f"output throughput, {args.mb} MiB of 1 KiB lines (MiB/s):")
        for name, kernel in paths.items():
            rate, share, busy = throughput(kernel, args.mb)
            print(f"  {name:42s} {rate:7.1f}  ({share:.1%} of the output arrived; this client on the CPU {busy:.0%})")
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
