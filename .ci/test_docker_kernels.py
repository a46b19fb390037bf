"""Python kernels in Docker containers through gateway_provisioners' DockerProvisioner.

Run by .ci/check-image (it needs the engine and the kernel image built from
docker/kernel/Dockerfile there), from the repository root, in a venv that
has the project and ``gateway_provisioners[docker]``:

    SPIN_KERNEL_IMAGE=spinrt-ci/kernel:build python -m twisted.trial --reactor=asyncio .ci/test_docker_kernels.py

The runtime runs here with ``--kernel-spec`` naming a kernelspec that
``jupyter-docker-spec install`` wrote; each kernel is a container of the
kernel image. The same checks as for a local kernelspec (tests/test_kernel_spec.py)
run against it: the spec's env, session variables, secrets, templates,
output variables, cancel (an interrupt through the provisioner) and restart;
then the container must be gone once the session is closed.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from typing import Any

from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue

from tests.support import sleep
from tests.test_kernel_spec import SpecKernelChecks

IMAGE = os.environ.get("SPIN_KERNEL_IMAGE", "spinrt-ci/kernel:build")
DOCKER = "/usr/bin/docker"


async def kernel_containers() -> list[dict[str, Any]]:
    """Containers gateway_provisioners started (its labels), running or not."""
    out, err, code = await getProcessOutputAndValue(
        DOCKER, ["ps", "-a", "--filter", "label=app=gateway-provisioners", "--format", "{{json .}}"],
        env=dict(os.environ), reactor=reactor)
    assert code == 0, err
    return [json.loads(line) for line in out.decode().splitlines() if line.strip()]


class DockerKernelTests(SpecKernelChecks):
    timeout = 300
    # Who the kernel runs as: the kernel image's user (gateway_provisioners
    # refuses root, and takes the name from KERNEL_USERNAME).
    spec_env = {"KERNEL_USERNAME": "spin", "KERNEL_UID": "10001", "KERNEL_GID": "10001"}
    # A value in the runtime's environment, which kernels get: never in `docker logs`.
    runtime_env = {"TEAM_API_KEY": "runtime-env-value-7f3a9c"}

    def docker_spec(self) -> dict[str, Any]:
        """argv and metadata as `jupyter-docker-spec install --image-name IMAGE` writes them."""
        prefix = os.path.join(self.jupyter_path, "gp")
        subprocess.run([os.path.join(os.path.dirname(sys.executable), "jupyter-docker-spec"), "install",
                        "--image-name", IMAGE, "--kernel-name", "docker-py", "--prefix", prefix],
                       check=True, capture_output=True)
        [path] = glob.glob(os.path.join(prefix, "share", "jupyter", "kernels", "docker-py", "kernel.json"))
        with open(path) as f:
            spec = json.load(f)
        argv = [sys.executable if a == "python" else a for a in spec["argv"]]
        return {"argv": argv, "metadata": spec["metadata"]}

    async def test_kernel_in_a_container(self) -> None:
        spec = self.docker_spec()
        before = {c["ID"] for c in await kernel_containers()}
        client = await self.check_kernel(spec["argv"], metadata=spec["metadata"])
        sid = client.events(kind="run.finished")[0]["session"]
        # The cell ran in the container: Docker's marker file, the container's hostname.
        done = await client.run(sid, {"type": "python", "source": (
            "import os, socket\nprint(os.path.exists('/.dockerenv'), socket.gethostname(), os.getuid())")}, 60)
        self.assertEqual(done["status"], "ok", done)
        dockerenv, hostname, uid = client.output(done["run"]).split()
        self.assertEqual((dockerenv, uid), ("True", "10001"))
        mine = [c for c in await kernel_containers() if c["ID"] not in before]
        running = [c for c in mine if c["State"] == "running"]
        self.assertEqual(len(running), 1, mine)  # the restart replaced the first one
        self.assertEqual(running[0]["Names"], hostname)
        self.assertEqual(running[0]["Image"], IMAGE)
        out = await self.run_ok(client, sid, {"type": "python", "source": "import os\nprint(len(os.environ['TEAM_API_KEY']))"})
        self.assertEqual(out, "24\n")
        out_log, err_log, code = await getProcessOutputAndValue(
            DOCKER, ["logs", running[0]["ID"]], env=dict(os.environ), reactor=reactor)
        self.assertEqual(code, 0)
        self.assertNotIn(b"runtime-env-value-7f3a9c", out_log + err_log)
        # Closing the session stops the kernel: its container is removed.
        reply = await client.request("session.close", session=sid, timeout=60)
        self.assertTrue(reply["ok"], reply)

        for _ in range(60):
            if not [c for c in await kernel_containers() if c["ID"] not in before]:
                break
            await sleep(1)
        self.assertEqual([c for c in await kernel_containers() if c["ID"] not in before], [])
