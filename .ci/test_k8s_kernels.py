"""Python kernels as pods through gateway_provisioners' KubernetesProvisioner.

No Kubernetes cluster can be had here, so the runtime talks to a stand-in
API server on 127.0.0.1 that answers the three calls the provisioner and
its launcher make as the Kubernetes API reference documents them, and runs
each pod it is given as a Docker container of the pod's image (the part a
kubelet plays):

- [create] "create a Pod": POST /api/v1/namespaces/{namespace}/pods, body a
  Pod; 201 Created with the Pod (status.phase Pending).
  https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/pod-v1/#create-create-a-pod
- [list] "list or watch objects of kind Pod": GET
  /api/v1/namespaces/{namespace}/pods?labelSelector=...; 200 with a PodList
  (kind, apiVersion, metadata.resourceVersion, items).
  https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/pod-v1/#list-list-or-watch-objects-of-kind-pod
- [delete] "delete a Pod": DELETE /api/v1/namespaces/{namespace}/pods/{name},
  body DeleteOptions; 200 OK with the Pod.
  https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/pod-v1/#delete-delete-a-pod
- [status] anything else, or a wrong token: a Status object (kind Status,
  status Failure, message, reason, code).
  https://kubernetes.io/docs/reference/kubernetes-api/common-definitions/status/
- [podstatus] PodStatus.phase: Pending, Running, Succeeded, Failed; podIP, hostIP.
  https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#pod-phase

Run by .ci/check-image like test_docker_kernels.py, with
GP_USE_INCLUSTER_CONFIG=False (the provisioner then reads KUBECONFIG, which
this test writes) and GP_NAMESPACE=spin-kernels.
"""

from __future__ import annotations

import datetime
import glob
import json
import os
import subprocess
import sys
import tempfile
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


from tests.support import sleep
from tests.test_kernel_spec import SpecKernelChecks

IMAGE = os.environ.get("SPIN_KERNEL_IMAGE", "spinrt-ci/kernel:build")
NAMESPACE = os.environ.get("GP_NAMESPACE", "spin-kernels")
DOCKER = "/usr/bin/docker"
TOKEN = "stand-in-k8s-token-" + uuid.uuid4().hex
POD_LABEL = "spinrt-ci.pod"  # the Docker label naming the pod a container plays


def status(code: int, reason: str, message: str) -> dict[str, Any]:  # [status]
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


def docker(*args: str) -> tuple[int, str]:
    done = subprocess.run([DOCKER, *args], capture_output=True, text=True)
    return done.returncode, done.stdout + done.stderr


class StandInApi:
    """The API server's state; served by Handler in a thread of its own (the
    provisioner's Kubernetes client blocks the runtime's reactor while it waits
    for an answer, so the answer cannot come from that reactor)."""

    def __init__(self, gateway: str) -> None:
        self.gateway = gateway  # hostIP: the Docker host on the bridge
        self.pods: dict[str, dict[str, Any]] = {}  # name -> the Pod as created
        self.calls: list[tuple[str, str]] = []  # (verb, resource) as RBAC names them
        self.lock = threading.Lock()

    def route(self, method: str, path: str, query: dict[str, list[str]], token: str | None,
              body: bytes) -> tuple[int, dict[str, Any]]:
        if token != f"Bearer {TOKEN}":
            return 401, status(401, "Unauthorized", "Unauthorized")
        parts = path.strip("/").split("/")
        if parts[:3] != ["api", "v1", "namespaces"] or len(parts) < 5 or parts[4] != "pods":
            return 404, status(404, "NotFound", "the server could not find the requested resource")
        namespace = parts[3]
        with self.lock:
            if method == "POST" and len(parts) == 5:
                self.calls.append(("create", "pods"))
                return self._create(namespace, json.loads(body))
            if method == "GET" and len(parts) == 5:
                self.calls.append(("list", "pods"))
                selector = (query.get("labelSelector") or [""])[0]
                items = [self._pod(p) for p in self.pods.values()
                         if p["metadata"]["namespace"] == namespace and _matches(p, selector)]
                return 200, {"kind": "PodList", "apiVersion": "v1",  # [list]
                             "metadata": {"resourceVersion": "1"}, "items": items}
            if method == "DELETE" and len(parts) == 6:
                self.calls.append(("delete", "pods"))
                pod = self.pods.get(parts[5])
                if pod is None or pod["metadata"]["namespace"] != namespace:
                    return 404, status(404, "NotFound", f'pods "{parts[5]}" not found')
                shown = self._pod(pod)
                shown["metadata"]["deletionTimestamp"] = _now()
                docker("rm", "-f", _container(pod))
                del self.pods[parts[5]]
                return 200, shown  # [delete]
        return 405, status(405, "MethodNotAllowed", "the server does not allow this method")

    def _create(self, namespace: str, pod: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        name = pod["metadata"]["name"]
        if name in self.pods:
            return 409, status(409, "AlreadyExists", f'pods "{name}" already exists')
        pod["metadata"].update(namespace=namespace, uid=str(uuid.uuid4()), creationTimestamp=_now(),
                               resourceVersion="1")
        container = pod["spec"]["containers"][0]
        security = pod["spec"].get("securityContext") or {}
        with tempfile.NamedTemporaryFile("w", suffix=".env", delete=False) as f:
            for item in container.get("env") or []:
                if "value" in item and "\n" not in str(item["value"]):
                    f.write(f"{item['name']}={item['value']}\n")
        args = ["run", "-d", "--name", _container(pod), "--label", f"{POD_LABEL}={name}", "--env-file", f.name]
        for key, value in (pod["metadata"].get("labels") or {}).items():
            args += ["--label", f"{key}={value}"]
        if "runAsUser" in security:
            args += ["--user", f"{security['runAsUser']}:{security.get('runAsGroup', 0)}"]
        code, out = docker(*args, container["image"])
        os.unlink(f.name)
        if code != 0:
            return 500, status(500, "InternalError", out)
        self.pods[name] = pod
        shown = json.loads(json.dumps(pod))
        shown["status"] = {"phase": "Pending"}
        return 201, shown  # [create]

    def _pod(self, pod: dict[str, Any]) -> dict[str, Any]:
        """The Pod with the status its container shows. [podstatus]"""
        shown = json.loads(json.dumps(pod))
        code, out = docker("inspect", _container(pod))
        if code != 0:
            shown["status"] = {"phase": "Failed", "reason": "ContainerGone"}
            return shown
        [info] = json.loads(out)
        state = info["State"]
        phase = {"running": "Running", "created": "Pending"}.get(state["Status"])
        if phase is None:
            phase = "Succeeded" if state.get("ExitCode") == 0 else "Failed"
        shown["status"] = {"phase": phase, "hostIP": self.gateway,
                           "podIP": info["NetworkSettings"]["IPAddress"] or None}
        return shown


def _matches(pod: dict[str, Any], selector: str) -> bool:
    labels = pod["metadata"].get("labels") or {}
    return all(labels.get(k) == v for k, _, v in (term.partition("=") for term in selector.split(",") if term))


def serve(api: StandInApi) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            url = urlsplit(self.path)
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            code, obj = api.route(self.command, url.path, parse_qs(url.query),
                                  self.headers.get("authorization"), body)
            data = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = _answer

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _container(pod: dict[str, Any]) -> str:
    return "k8s-" + pod["metadata"]["name"]


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class KubernetesKernelTests(SpecKernelChecks):
    timeout = 300
    spec_env = {"KERNEL_USERNAME": "spin", "KERNEL_UID": "10001", "KERNEL_GID": "10001"}
    runtime_env = {"TEAM_API_KEY": "runtime-env-value-7f3a9c"}

    def setUp(self) -> None:
        super().setUp()
        gateway = subprocess.run([DOCKER, "network", "inspect", "bridge", "-f",
                                  "{{(index .IPAM.Config 0).Gateway}}"],
                                 check=True, capture_output=True, text=True).stdout.strip()
        self.api = StandInApi(gateway)
        server = serve(self.api)
        self.addCleanup(server.shutdown)
        config = os.path.join(self.jupyter_path, "kubeconfig")
        with open(config, "w") as f:
            json.dump({"apiVersion": "v1", "kind": "Config", "current-context": "ci",
                       "clusters": [{"name": "stand-in", "cluster": {
                           "server": f"http://127.0.0.1:{server.server_port}"}}],
                       "users": [{"name": "runtime", "user": {"token": TOKEN}}],
                       "contexts": [{"name": "ci", "context": {"cluster": "stand-in", "user": "runtime",
                                                               "namespace": NAMESPACE}}]}, f)
        # The runtime's environment (its kernels', the launcher's) is read at its start.
        old = os.environ.get("KUBECONFIG")
        os.environ["KUBECONFIG"] = config
        self.addCleanup(lambda: os.environ.__setitem__("KUBECONFIG", old) if old is not None
                        else os.environ.pop("KUBECONFIG", None))

    def k8s_spec(self) -> dict[str, Any]:
        """argv and metadata as `jupyter-k8s-spec install --image-name IMAGE` writes them."""
        prefix = os.path.join(self.jupyter_path, "gp")
        subprocess.run([os.path.join(os.path.dirname(sys.executable), "jupyter-k8s-spec"), "install",
                        "--image-name", IMAGE, "--kernel-name", "k8s-py", "--prefix", prefix],
                       check=True, capture_output=True)
        [path] = glob.glob(os.path.join(prefix, "share", "jupyter", "kernels", "k8s-py", "kernel.json"))
        with open(path) as f:
            spec = json.load(f)
        argv = [sys.executable if a == "python" else a for a in spec["argv"]]
        return {"argv": argv, "metadata": spec["metadata"]}

    async def test_kernel_in_a_pod(self) -> None:
        spec = self.k8s_spec()
        client = await self.check_kernel(spec["argv"], metadata=spec["metadata"])
        sid = client.events(kind="run.finished")[0]["session"]
        done = await client.run(sid, {"type": "python", "source": (
            "import os, socket\nprint(os.path.exists('/.dockerenv'), socket.gethostname(), os.getuid())")}, 60)
        self.assertEqual(done["status"], "ok", done)
        dockerenv, _, uid = client.output(done["run"]).split()
        self.assertEqual((dockerenv, uid), ("True", "10001"))
        # One pod now (the restart deleted the first), in the runtime's namespace,
        # with the labels the provisioner selects by.
        [pod] = self.api.pods.values()
        self.assertEqual(pod["metadata"]["namespace"], NAMESPACE)
        self.assertEqual(pod["metadata"]["labels"]["component"], "kernel")
        self.assertEqual(pod["spec"]["containers"][0]["image"], IMAGE)
        # As docs/deployment.rst warns: the launcher copies the kernel environment into the pod spec.
        env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
        self.assertEqual(env.get("TEAM_API_KEY"), "runtime-env-value-7f3a9c")
        self.assertNotIn("SPIN_TOKEN", env)
        # What the runtime's ServiceAccount needs: create, list and delete on pods.
        self.assertEqual(sorted(set(self.api.calls)), [("create", "pods"), ("delete", "pods"), ("list", "pods")])
        reply = await client.request("session.close", session=sid, timeout=60)
        self.assertTrue(reply["ok"], reply)
        for _ in range(60):
            if not self.api.pods:
                break
            await sleep(1)
        self.assertEqual(self.api.pods, {})
        code, out = docker("ps", "-aq", "--filter", f"label={POD_LABEL}")
        self.assertEqual((code, out.strip()), (0, ""))
