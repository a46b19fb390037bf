"""kubernetes cells against tests/kubernetes_api.py (a stand-in API server that
answers as the Kubernetes API reference documents; each shape cites it):
kubectl-like tables from the server's Table rendering across continue pages,
-o json/yaml/name, the objects as the CellResult read from a python cell,
logs (tail, follow until cancel), watch, events, describe, top, the writes
behind allow_writes, kubeconfig variants (token, client certificate, a CA of
the cluster's own, contexts, exec plugins refused), the pod's service
account, and the errors (401, 403, 404, unknown kind, bad command, missing
connection), the session living on after each."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

from OpenSSL import crypto
from twisted.trial import unittest

from . import tls
from .kubernetes_api import ADMIN_TOKEN, VIEWER_TOKEN, FakeKubernetes, kubeconfig
from .support import Client, eventually, start_runtime, ws_url


class KubernetesTests(unittest.TestCase):
    timeout = 120

    async def setUp(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="k8s-", dir=os.path.abspath("."))
        self.cluster = tls.make_pki(self.dir, "Cluster CA")
        other = tls.make_pki(self.dir, "Runtime CA")  # the runtime trusts only this one
        self.api = FakeKubernetes()
        self.addCleanup(self.api.close_streams)
        _, port = tls.listen_https(self, self.api, self.cluster.server, self.cluster.intermediate)
        self.server = f"https://127.0.0.1:{port}"
        self.ca_pem = self.cluster.root.pem()
        self.kubeconfig = os.path.join(self.dir, "config")
        with open(self.kubeconfig, "w") as f:
            f.write(kubeconfig(self.server, token=ADMIN_TOKEN, ca_pem=self.ca_pem, extra_context=True))
        self.service = await start_runtime(self, environ={
            "REQUESTS_CA_BUNDLE": other.bundle,
            "VIEWER_KUBECONFIG": kubeconfig(self.server, token=VIEWER_TOKEN, ca_pem=self.ca_pem)})
        self.client = await Client.connect(ws_url(self.service))
        self.addCleanup(self.client.close)
        reply = await self.client.request("connections.set", name="prod", type="kubernetes", kubeconfig=self.kubeconfig)
        self.assertTrue(reply["ok"], reply)
        self.sid = (await self.client.request("session.create", name="k8s"))["session"]["id"]

    async def k(self, source: str, variable: str | None = None, **options: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        cell: dict[str, Any] = {"id": "k", "type": "kubernetes", "source": source, "options": options}
        if variable:
            cell["output_variable"] = variable
        finished = await self.client.run(self.sid, cell)
        return finished, self.client.events(run=finished["run"])

    def result(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        (result,) = [e for e in events if e["event"] == "result"]
        return result["data"]

    async def test_get_tables_pages_and_the_variable(self) -> None:
        finished, events = await self.k("get pods -n shop", variable="pods")
        self.assertEqual(finished["status"], "ok", finished)
        text = self.result(events)["text/plain"].splitlines()
        self.assertEqual(text[0].split(), ["NAME", "READY", "STATUS", "RESTARTS", "AGE"])
        self.assertEqual([line.split()[:3] for line in text[1:]], [
            ["batch-1", "0/1", "Error"], ["pending-1", "0/1", "ImagePullBackOff"], ["web-1", "1/1", "Running"],
            ["web-2", "1/1", "Running"], ["worker-1", "0/1", "CrashLoopBackOff"]])
        self.assertIn("<th>STATUS</th>", self.result(events)["text/html"])
        lists = [r for r in self.api.requests if r["path"] == "/api/v1/namespaces/shop/pods"]
        self.assertEqual(len(lists), 3)  # 5 pods, pages of 2: two continue tokens followed
        self.assertEqual([("continue" in r["args"]) for r in lists], [False, True, True])
        self.assertTrue(all("as=Table;v=v1;g=meta.k8s.io" in r["accept"] and r["args"]["includeObject"] == ["Object"]
                            and r["authorization"] == f"Bearer {ADMIN_TOKEN}" for r in lists))
        # The failing pods, from a python cell reading the objects.
        finished = await self.client.run(self.sid, {"id": "py", "type": "python", "source": (
            "failing = [p['metadata']['name'] for p in pods.objects\n"
            "           if not all(c['ready'] for c in p['status']['containerStatuses'])]\n"
            "print(sorted(failing), pods.kind)")})
        self.assertEqual(self.client.output(finished["run"]), "['batch-1', 'pending-1', 'worker-1'] Pod\n")
        # -o wide, a field selector, all namespaces, one object.
        _, events = await self.k("get pods -n shop -o wide --field-selector=status.phase=Failed")
        lines = self.result(events)["text/plain"].splitlines()
        self.assertEqual(lines[0].split(), ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"])
        self.assertEqual(len(lines), 2)
        self.assertIn("batch-1", lines[1])
        _, events = await self.k("get po -A -l app=web")
        self.assertEqual(self.result(events)["text/plain"].splitlines()[0].split()[:2], ["NAMESPACE", "NAME"])
        _, events = await self.k("get pod web-1 -n shop -o json")
        self.assertEqual(self.result(events)["application/json"]["metadata"]["name"], "web-1")
        _, events = await self.k("get pods -n shop -l app=web -o name")
        self.assertEqual(self.result(events)["text/plain"], "pod/web-1\npod/web-2")
        _, events = await self.k("kubectl get deploy/web -o yaml")  # the context's namespace: shop
        self.assertIn("kind: Deployment", self.result(events)["text/plain"])
        _, events = await self.k("get deployments")
        self.assertEqual(self.result(events)["text/plain"].splitlines()[1].split()[:2], ["web", "2/2"])
        _, events = await self.k("get pods -n empty")
        self.assertEqual(self.result(events)["text/plain"], "No resources found in empty namespace.")
        # A custom resource, found through the cluster's discovery documents (a short name, then remembered).
        finished, events = await self.k("get cert", variable="certs")
        self.assertEqual(finished["status"], "ok", finished)
        self.assertEqual(self.result(events)["text/plain"].splitlines()[1].split(), ["web-tls", "1h"])
        self.assertEqual(self.api.requests[-1]["path"], "/apis/cert-manager.io/v1/namespaces/shop/certificates")
        asked = len(self.api.requests)
        await self.k("get certificates.cert-manager.io web-tls -o json")
        self.assertEqual([r["path"] for r in self.api.requests[asked:]],
                         ["/apis", "/apis/cert-manager.io/v1", "/apis/cert-manager.io/v1/namespaces/shop/certificates/web-tls"])

    async def test_errors_and_the_session_lives_on(self) -> None:
        cases = [
            ("get widgets", {}, "unknown_kind", "unknown kind 'widgets': the cluster serves no resource of that name"),
            ("get pods ../../apis", {}, "bad_command", "is not a valid name"),
            ("frobnicate pods", {}, "bad_command", "unknown command 'frobnicate'"),
            ("get pods --colour", {}, "bad_command", "unknown flag '--colour'"),
            ("get pod nope -n shop", {}, "not_found", '404 Not Found: pods "nope" not found'),
            ("scale deployment/web --replicas=3", {}, "writes_not_allowed", "allow_writes: true"),
            ("get pods", {"connection": "missing"}, "unknown_connection", "prod"),
            ("get pods", {"allow_writes": "yes"}, "bad_option", "options.allow_writes must be true or false"),
            ("", {}, "bad_command", "kubectl-like command"),
        ]
        for source, options, code, words in cases:
            finished, _ = await self.k(source, **options)
            self.assertEqual((finished["status"], finished["error"]["code"]), ("error", code), source)
            self.assertIn(words, finished["error"]["evalue"], source)
        # 401 and 403 with the server's own words.
        await self.client.request("connections.set", name="anon", type="kubernetes", url=self.server,
                                  ca=self.ca_pem.decode())
        finished, _ = await self.k("get pods", connection="anon")
        self.assertEqual(finished["error"]["code"], "remote_unauthorized")
        self.assertEqual(finished["error"]["evalue"], "401 Unauthorized: Unauthorized")
        reply = await self.client.request("connections.test", name="anon")
        self.assertEqual(reply["error"]["code"], "remote_unauthorized")
        # A namespace-scoped account passes the test in its own namespace.
        reply = await self.client.request("connections.set", name="viewer-ok", type="kubernetes",
                                          kubeconfig_content="{{runtime_env:VIEWER_KUBECONFIG}}")
        self.assertTrue((await self.client.request("connections.test", name="viewer-ok"))["ok"])
        self.assertEqual(self.api.requests[-1]["path"], "/api/v1/namespaces/shop/pods")
        await self.client.request("connections.delete", name="viewer-ok")
        await self.client.request("connections.set", name="viewer", type="kubernetes",
                                  kubeconfig_content="{{runtime_env:VIEWER_KUBECONFIG}}")
        finished, _ = await self.k("get pods -n kube-system", connection="viewer")
        self.assertEqual(finished["error"]["code"], "remote_forbidden")
        self.assertEqual(finished["error"]["evalue"], (
            '403 Forbidden: pods is forbidden: User "system:serviceaccount:shop:viewer" cannot list resource '
            '"pods" in API group "" in the namespace "kube-system"'))
        # Kubeconfig variants that cannot work, each said plainly.
        exec_config = os.path.join(self.dir, "exec-config")
        with open(exec_config, "w") as f:
            f.write(kubeconfig(self.server, exec_plugin=True))
        await self.client.request("connections.set", name="eks", type="kubernetes", kubeconfig=exec_config)
        finished, _ = await self.k("get pods", connection="eks")
        self.assertEqual(finished["error"]["code"], "bad_connection")
        self.assertIn("exec credential plugin ('aws')", finished["error"]["evalue"])
        await self.client.request("connections.set", name="ctx", type="kubernetes", kubeconfig=self.kubeconfig,
                                  context="staging")
        finished, _ = await self.k("get pods", connection="ctx")
        self.assertIn("no context named 'staging'", finished["error"]["evalue"])
        await self.client.request("connections.set", name="gone", type="kubernetes", kubeconfig="/no/such/config")
        finished, _ = await self.k("get pods", connection="gone")
        self.assertIn("cannot read the kubeconfig /no/such/config", finished["error"]["evalue"])
        # The runtime's CA bundle does not trust the cluster: only the cluster's own CA does.
        await self.client.request("connections.set", name="no-ca", type="kubernetes", url=self.server, token=ADMIN_TOKEN)
        finished, _ = await self.k("get pods", connection="no-ca")
        self.assertEqual(finished["error"]["code"], "tls_error")
        reply = await self.client.request("connections.set", name="bad", type="kubernetes", token="x")
        self.assertIn("need 'url'", reply["error"]["message"])
        reply = await self.client.request("connections.test", name="prod")
        self.assertEqual(reply.get("detail"), f"Kubernetes v1.30.4 at {self.server} (kubeconfig {self.kubeconfig}, "
                                              "context 'prod')", reply)
        # No connection at all (and not in a pod).
        for name in ("prod", "anon", "viewer", "eks", "ctx", "gone", "no-ca"):
            await self.client.request("connections.delete", name=name)
        finished, _ = await self.k("get pods")
        self.assertEqual(finished["error"]["code"], "no_connection")
        finished = await self.client.run(self.sid, {"id": "md", "type": "markdown", "source": "still here"})
        self.assertEqual(finished["status"], "ok")

    async def test_logs_watch_events_describe_top(self) -> None:
        finished, events = await self.k("logs web-1 -n shop --tail 3", variable="logs")
        self.assertEqual(finished["status"], "ok", finished)
        self.assertEqual(self.client.output(finished["run"]), "line 8\nline 9\nline 10\n")
        self.assertEqual(self.service.manager.get(self.sid).variables["logs"]["text"], "line 8\nline 9\nline 10\n")
        finished, _ = await self.k("logs web-1 -c sidecar")
        self.assertEqual(finished["error"]["code"], "http_error")
        self.assertIn("400 Bad Request: container sidecar is not valid for pod web-1", finished["error"]["evalue"])
        # A credential in a log line (a pod that printed its environment) is masked.
        self.api.logs["leaky"] = [f"TOKEN={ADMIN_TOKEN}"]
        self.api.objects["pods/shop/leaky"] = {"metadata": {"name": "leaky", "namespace": "shop", "labels": {}}}
        finished, _ = await self.k("logs leaky")
        self.assertEqual(self.client.output(finished["run"]), "TOKEN=***\n")
        self.assertNotIn(ADMIN_TOKEN, json.dumps(self.client.messages))
        # -f streams until cancelled.
        # (Masking holds back the last few characters of a live stream until
        # more arrives, so each push is followed by a line of padding.)
        def more_lines() -> None:
            for line in ("line 11", "-" * 40):
                self.api.follow_line(line)

        def modified() -> None:
            self.api.emit("MODIFIED", self.api.objects["pods/shop/web-2"])
            for _ in range(4):
                self.api.emit("MODIFIED", self.api.objects["pods/shop/web-1"])

        for source, push in [("logs web-1 -f --tail 1", more_lines), ("get pods -n shop -l app=web -w", modified)]:
            reply = await self.client.request("cell.run", session=self.sid, cell={
                "id": "f", "type": "kubernetes", "source": source})
            run = reply["run"]
            await eventually(lambda: bool(self.api.streams), timeout=10)
            push()
            expected = "line 11" if "logs" in source else "MODIFIED   web-2   Running"
            try:
                await eventually(lambda: expected in self.client.output(run), timeout=10)
            except AssertionError:
                raise AssertionError(f"{expected!r} not in {self.client.events(run=run)} {self.api.requests[-1]}")
            await self.client.request("run.cancel", session=self.sid, run=run)
            finished = await self.client.wait_for(lambda m: m.get("event") == "run.finished" and m["run"] == run)
            self.assertEqual(finished["status"], "cancelled")
            await eventually(lambda: not self.api.streams, timeout=10)  # the connection was closed
        self.assertIn("ADDED   web-1   Running", self.client.output(run))
        # events, describe, top.
        _, events = await self.k("events -n shop")
        lines = self.result(events)["text/plain"].splitlines()
        self.assertEqual(lines[0].split(), ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"])
        self.assertIn("pod/worker-1", lines[2])
        _, events = await self.k("describe pod worker-1")
        text = self.result(events)["text/plain"]
        for words in ("Name:         worker-1", "State:     Waiting (CrashLoopBackOff)", "Restarts:  7",
                      "Warning   BackOff", "Back-off restarting failed container"):
            self.assertIn(words, text)
        _, events = await self.k("top pods")
        self.assertEqual([line.split() for line in self.result(events)["text/plain"].splitlines()],
                         [["NAME", "CPU(cores)", "MEMORY(bytes)"], ["web-1", "250m", "128Mi"], ["web-2", "5m", "64Mi"]])
        self.api.metrics = False
        finished, _ = await self.k("top pods")
        self.assertEqual(finished["error"]["code"], "metrics_unavailable")

    async def test_writes(self) -> None:
        finished, events = await self.k("rollout restart deployment/web", allow_writes=True)
        self.assertEqual(finished["status"], "ok", finished)
        self.assertEqual(self.result(events)["text/plain"], "deployment.apps/web restarted")
        (patch,) = [r for r in self.api.requests if r["method"] == "PATCH"]
        self.assertEqual((patch["path"], patch["content_type"]), (
            "/apis/apps/v1/namespaces/shop/deployments/web", "application/strategic-merge-patch+json"))
        stamp = json.loads(patch["body"])["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
        self.assertRegex(stamp, r"^\d{4}-\d\d-\d\dT")
        finished, _ = await self.k("scale deploy web --replicas=5", allow_writes=True)
        self.assertEqual(self.api.objects["deployments/shop/web"]["spec"]["replicas"], 5)
        finished, events = await self.k("delete pod batch-1 pending-1", allow_writes=True)
        self.assertEqual(self.result(events)["text/plain"], 'pod "batch-1" deleted\npod "pending-1" deleted')
        self.assertNotIn("pods/shop/batch-1", self.api.objects)
        await self.k("cordon node-1", allow_writes=True)
        self.assertTrue(self.api.objects["nodes//node-1"]["spec"]["unschedulable"])
        _, events = await self.k("uncordon node/node-1", allow_writes=True)
        self.assertNotIn("unschedulable", self.api.objects["nodes//node-1"]["spec"])
        self.assertEqual(self.result(events)["text/plain"], "node/node-1 uncordoned")


def issue_client(ca: tls.Issued, common_name: str) -> tls.Issued:
    """A TLS client certificate (extended key usage clientAuth), as a cluster's CA signs a user's."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                                     x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters")]))
            .issuer_name(ca.cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca.key, hashes.SHA256()))
    return tls.Issued(cert, key)


class KubernetesAccessTests(unittest.TestCase):
    """A client certificate from a kubeconfig, and the pod's service account."""

    timeout = 60

    async def test_client_certificate_and_service_account(self) -> None:
        directory = tempfile.mkdtemp(prefix="k8s-", dir=os.path.abspath("."))
        cluster = tls.make_pki(directory, "Cluster CA")
        clients = tls.make_ca("Client CA")
        user = issue_client(clients, "jane")
        api = FakeKubernetes()
        _, port = tls.listen_https(self, api, cluster.server, cluster.intermediate, verify=True,
                                   caCerts=[crypto.X509.from_cryptography(clients.cert)], requireCertificate=True)
        server = f"https://127.0.0.1:{port}"
        sa = os.path.join(directory, "serviceaccount")
        os.makedirs(sa)
        for name, data in (("token", VIEWER_TOKEN), ("ca.crt", cluster.root.pem().decode()), ("namespace", "shop")):
            with open(os.path.join(sa, name), "w") as f:
                f.write(data)
        service = await start_runtime(self, environ={
            "REQUESTS_CA_BUNDLE": "", "KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(port),
            "SPIN_KUBERNETES_SERVICE_ACCOUNT_DIR": sa,
            "CERT_KUBECONFIG": kubeconfig(server, ca_pem=cluster.root.pem(), client=(user.pem(), user.key_pem()))})
        client = await Client.connect(ws_url(service))
        self.addCleanup(client.close)
        sid = (await client.request("session.create", name="k8s"))["session"]["id"]
        # No connection: the pod's service account (the viewer token, namespace shop)... which the
        # server requires a client certificate of, so the handshake fails: a TLS error, said.
        finished = await client.run(sid, {"id": "a", "type": "kubernetes", "source": "get pods"})
        self.assertEqual(finished["error"]["code"], "tls_error", finished)
        reply = await client.request("connections.set", name="cert", type="kubernetes",
                                     kubeconfig_content="{{runtime_env:CERT_KUBECONFIG}}")
        self.assertTrue(reply["ok"], reply)
        finished = await client.run(sid, {"id": "b", "type": "kubernetes", "source": "get pods -n shop"})
        self.assertEqual(finished["status"], "ok", finished)
        reply = await client.request("connections.test", name="cert")
        self.assertTrue(reply["ok"], reply)
        self.assertNotIn(user.key_pem().decode().splitlines()[1], json.dumps(client.messages))

    async def test_service_account(self) -> None:
        directory = tempfile.mkdtemp(prefix="k8s-", dir=os.path.abspath("."))
        cluster = tls.make_pki(directory, "Cluster CA")
        api = FakeKubernetes()
        _, port = tls.listen_https(self, api, cluster.server, cluster.intermediate)
        sa = os.path.join(directory, "serviceaccount")
        os.makedirs(sa)
        for name, data in (("token", ADMIN_TOKEN), ("ca.crt", cluster.root.pem().decode()), ("namespace", "shop")):
            with open(os.path.join(sa, name), "w") as f:
                f.write(data)
        other = tls.make_pki(directory, "Runtime CA")
        service = await start_runtime(self, environ={
            "REQUESTS_CA_BUNDLE": other.bundle, "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(port), "SPIN_KUBERNETES_SERVICE_ACCOUNT_DIR": sa})
        client = await Client.connect(ws_url(service))
        self.addCleanup(client.close)
        sid = (await client.request("session.create", name="k8s"))["session"]["id"]
        finished = await client.run(sid, {"id": "a", "type": "kubernetes", "source": "get pods -l app=web"})
        self.assertEqual(finished["status"], "ok", finished)
        self.assertEqual(api.requests[-1]["path"], "/api/v1/namespaces/shop/pods")  # the account's namespace
        self.assertEqual(api.requests[-1]["authorization"], f"Bearer {ADMIN_TOKEN}")
        self.assertNotIn(ADMIN_TOKEN, json.dumps(client.messages))
