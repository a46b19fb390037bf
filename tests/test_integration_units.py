"""The pure parts of the integration plumbing: times, tables, the kubectl-like
command grammar and kubeconfig reading."""

from __future__ import annotations

import base64
import os
import tempfile

import yaml
from twisted.trial import unittest

from spinrt.integrations import k8s_command, tables, times
from spinrt.integrations.base import IntegrationError
from spinrt.integrations.k8s_config import in_cluster, parse_kubeconfig

NOW = 1_796_032_800.0  # 2026-11-30T10:00:00Z


class TimeTests(unittest.TestCase):
    def test_times(self) -> None:
        for value, expected in [("now", NOW), ("now-1h", NOW - 3600), ("now - 1h30m", NOW - 5400),
                                ("now+5m", NOW + 300), ("2026-11-30T10:00:00Z", NOW),
                                ("2026-11-30T11:00:00+01:00", NOW), ("2026-11-30T10:00:00", NOW),
                                (1796032800, NOW), ("1796032800.5", NOW + 0.5), ("now-1.5h", NOW - 5400)]:
            self.assertEqual(times.parse_time(value, "start", NOW), expected, value)
        for value in ("yesterday", "now-", "now-1x", "now*2", "", True, None, [1], float("nan")):
            with self.assertRaises(ValueError) as caught:
                times.parse_time(value, "start", NOW)
            self.assertIn("options.start", str(caught.exception))

    def test_durations_and_steps(self) -> None:
        for value, expected in [("30s", 30), ("5m", 300), ("1h30m", 5400), ("250ms", 0.25), ("1d", 86400),
                                ("2w", 1209600), (15, 15), ("15", 15), ("0.5", 0.5)]:
            self.assertEqual(times.parse_duration(value, "step"), expected, value)
        for value in ("0s", "-5m", "5 minutes", "m", "", False, 0):
            with self.assertRaises(ValueError):
                times.parse_duration(value, "step")
        self.assertEqual(times.auto_step(NOW - 3600, NOW), 14.0)
        self.assertEqual(times.auto_step(NOW - 86400, NOW), 346.0)
        self.assertEqual(times.auto_step(NOW - 10, NOW), 0.04)
        self.assertEqual(times.rfc3339(NOW), "2026-11-30T10:00:00.000Z")


class TableTests(unittest.TestCase):
    def test_text_html_json(self) -> None:
        table = tables.Table(["NAME", "STATUS"], [["web-1", "Running"], ["<script>alert(1)</script>", None],
                                                 ["multi\nline", {"a": 1}]])
        self.assertEqual(table.text().splitlines(), [
            "NAME                        STATUS",
            "web-1                       Running",
            "<script>alert(1)</script>",
            'multi line                  {"a":1}'])
        html = table.html()
        self.assertNotIn("<script>", html)
        self.assertIn("&lt;script&gt;alert(1)&lt;/script&gt;", html)
        bundle = table.bundle("pods")
        self.assertEqual(bundle["application/json"][0], {"NAME": "web-1", "STATUS": "Running"})
        self.assertEqual(tables.Table(["A"], [], empty="nothing").bundle()["text/plain"], "nothing")

    def test_long_tables_are_cut_with_a_note(self) -> None:
        table = tables.Table(["N"], [[i] for i in range(tables.DISPLAY_ROWS + 5)])
        bundle = table.bundle("rows")
        self.assertEqual(len(bundle["application/json"]), tables.DISPLAY_ROWS)
        self.assertTrue(bundle["text/plain"].endswith("… 5 more rows (all of them are in the variable rows)"))
        self.assertEqual(len(table.records()), tables.DISPLAY_ROWS + 5)


class CommandTests(unittest.TestCase):
    def test_forms(self) -> None:
        c = k8s_command.parse("kubectl get pods -n shop -l app=web --field-selector status.phase=Failed -o wide")
        self.assertEqual((c.verb, c.kind.plural, c.namespace, c.selector, c.field_selector, c.output),
                         ("get", "pods", "shop", "app=web", "status.phase=Failed", "wide"))
        c = k8s_command.parse("get deploy/web deployment/api -n shop")
        self.assertEqual((c.kind.plural, c.names, c.namespace), ("deployments", ("web", "api"), "shop"))
        c = k8s_command.parse("logs pod/web-1 -c main --tail=20 --since 5m -f")
        self.assertEqual((c.names, c.container, c.tail, c.since, c.follow), (("web-1",), "main", 20, 300.0, True))
        c = k8s_command.parse("scale deployments.apps/web --replicas 3")
        self.assertEqual((c.kind.plural, c.replicas, c.writes), ("deployments", 3, True))
        c = k8s_command.parse("get pods  # a comment")
        self.assertEqual(c.names, ())
        self.assertEqual(k8s_command.kind_of("HPA").kind, "HorizontalPodAutoscaler")
        self.assertEqual(k8s_command.kind_of("Pod").path("ns", "x"), "/api/v1/namespaces/ns/pods/x")
        self.assertEqual(k8s_command.kind_of("nodes").path("ns", "n1"), "/api/v1/nodes/n1")

    def test_mistakes(self) -> None:
        for source, code, words in [
            ("get pods -n a -A", "bad_command", "not both"),
            ("get pods -n", "bad_command", "-n needs a value"),
            ("logs", "bad_command", "logs needs one pod"),
            ("get pods --tail=x", "bad_command", "--tail must be a whole number"),
            ("logs p --since=soon", "bad_command", "--since must be a duration"),
            ("rollout undo deploy/web", "bad_command", "rollout supports restart"),
            ("rollout restart pods/x", "bad_command", "deployment, statefulset or daemonset"),
            ("delete deploy web", "bad_command", "pods only"),
            ("top services", "bad_command", "top needs pods or nodes"),
            ("get 'unclosed", "bad_command", "cannot split"),
            ("logs web-1 -n ../kube-system", "bad_command", "not a valid namespace"),
            ("get pods a/b", "bad_command", "is not a valid name"),
            ("get deploy/", "bad_command", "name after '/' is missing"),
            ("get pod web-1 -A", "bad_command", "across all namespaces"),
            ("get deploy/web svc/api", "bad_command", "one kind per command"),
        ]:
            with self.assertRaises(IntegrationError) as caught:
                k8s_command.parse(source)
            self.assertEqual(caught.exception.code, code, source)
            self.assertIn(words, caught.exception.message, source)


class KubeconfigTests(unittest.TestCase):
    def setUp(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="kubeconfig-", dir=os.path.abspath("."))

    def config(self, user: dict, cluster: dict | None = None, current: str | None = "c") -> str:
        return yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": current,
            "clusters": [{"name": "k", "cluster": cluster or {"server": "https://k.example:6443"}}],
            "users": [{"name": "u", "user": user}],
            "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}]})

    def test_files_relative_to_the_kubeconfig(self) -> None:
        for name, data in (("token", "file-token-123456\n"), ("client.crt", "CERT"), ("client.key", "KEY-123456"),
                           ("ca.crt", "CA")):
            with open(os.path.join(self.dir, name), "w") as f:
                f.write(data)
        access = parse_kubeconfig(self.config({"tokenFile": "token"}, {"server": "https://k:6443/",
                                                                         "certificate-authority": "ca.crt"}),
                                  None, self.dir, "kubeconfig x")
        self.assertEqual((access.server, access.token, access.ca, access.namespace),
                         ("https://k:6443", "file-token-123456", b"CA", "default"))
        self.assertEqual(access.secrets, frozenset({"file-token-123456"}))
        access = parse_kubeconfig(self.config({"client-certificate": "client.crt", "client-key": "client.key"},
                                              {"server": "https://k", "insecure-skip-tls-verify": True}),
                                  None, self.dir, "kubeconfig x")
        self.assertEqual((access.client, access.insecure, access.secrets), ((b"CERT", b"KEY-123456"), True,
                                                                           frozenset({"KEY-123456"})))
        data = base64.b64encode(b"INLINE").decode()
        access = parse_kubeconfig(self.config({"username": "admin", "password": "pw-123456"},
                                              {"server": "https://k", "certificate-authority-data": data}),
                                  None, self.dir, "kubeconfig x")
        self.assertEqual((access.basic, access.ca), (("admin", "pw-123456"), b"INLINE"))

    def test_refusals(self) -> None:
        for text, context, words in [
            ("{{not yaml", None, "is not valid YAML"),
            ("- a list", None, "is not a kubeconfig"),
            (self.config({}, current=None), None, "has no current-context"),
            (self.config({}), "prod", "no context named 'prod'"),
            (self.config({"exec": {"command": "gke-gcloud-auth-plugin"}}), None, "exec credential plugin"),
            (self.config({"auth-provider": {"name": "oidc"}}), None, "auth-provider ('oidc')"),
            (self.config({"client-certificate-data": "QQ=="}), None, "needs both"),
            (self.config({"tokenFile": "missing"}), None, "cannot read tokenFile"),
            (self.config({}, {"server": "k.example"}), None, "no server URL"),
        ]:
            with self.assertRaises(IntegrationError) as caught:
                parse_kubeconfig(text, context, self.dir, "kubeconfig x")
            self.assertEqual(caught.exception.code, "bad_connection")
            self.assertIn(words, caught.exception.message)

    def test_in_cluster(self) -> None:
        with self.assertRaises(IntegrationError) as caught:
            in_cluster({})
        self.assertEqual(caught.exception.code, "no_connection")
        with self.assertRaises(IntegrationError) as caught:
            in_cluster({"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443",
                        "SPIN_KUBERNETES_SERVICE_ACCOUNT_DIR": self.dir})
        self.assertIn("automountServiceAccountToken", caught.exception.message)
        for name, data in (("token", "sa-token-123456"), ("ca.crt", "CA")):
            with open(os.path.join(self.dir, name), "w") as f:
                f.write(data)
        access = in_cluster({"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443",
                             "SPIN_KUBERNETES_SERVICE_ACCOUNT_DIR": self.dir})
        self.assertEqual((access.server, access.token, access.namespace), ("https://[fd00::1]:443", "sa-token-123456",
                                                                          "default"))
