"""A stand-in Kubernetes API server (twisted.web) answering as the API
documents; no real API server can be installed here. Each response shape
cites its source:

- [concepts] https://kubernetes.io/docs/reference/using-api/api-concepts/
  "Retrieving large results sets in chunks" (limit, metadata.continue; "the
  server may return fewer than limit items"), "Receiving resources as Tables"
  (Accept: application/json;as=Table;v=v1;g=meta.k8s.io; Table with
  columnDefinitions and rows; includeObject=Object puts the object in each
  row), "Efficient detection of changes" (watch=1: one JSON watch event per
  line, {"type": "ADDED|MODIFIED|DELETED|ERROR", "object": ...}).
- [status] https://kubernetes.io/docs/reference/kubernetes-api/common-definitions/status/
  (kind Status: status, message, reason, details, code) -- the body of 401,
  403 and 404 answers, worded as kube-apiserver words them.
- [pod] https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/pod-v1/
  ("get read log of the specified Pod": GET .../pods/{name}/log, text/plain,
  parameters container, follow, tailLines, sinceSeconds).
- [event] https://kubernetes.io/docs/reference/kubernetes-api/cluster-resources/event-v1/
- [deployment] https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/deployment-v1/
  ("patch partially update the specified Deployment", "replace scale": the
  Scale subresource, autoscaling/v1).
- [node] https://kubernetes.io/docs/reference/kubernetes-api/cluster-resources/node-v1/ (spec.unschedulable)
- [metrics] https://github.com/kubernetes/metrics/blob/master/pkg/apis/metrics/v1beta1/types.go
  (PodMetrics: metadata, timestamp, window, containers[{name, usage{cpu, memory}}])
- [version] https://kubernetes.io/docs/reference/using-api/ -> GET /version (version.Info: major,
  minor, gitVersion, platform)
- [discovery] https://kubernetes.io/docs/concepts/overview/kubernetes-api/ "Discovery API",
  unaggregated: /apis (APIGroupList: groups with preferredVersion.groupVersion) and
  /apis/GROUP/VERSION, /api/v1 (APIResourceList: resources with name, singularName,
  namespaced, kind, shortNames, verbs; subresources named "x/status")
"""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

from twisted.internet import reactor
from twisted.web.server import NOT_DONE_YET, Request

from .fake_api import FakeApi

ADMIN_TOKEN = "k8s-admin-token-0123456789"
VIEWER_TOKEN = "k8s-viewer-token-9876543210"
PAGE = 2  # [concepts]: the server may return fewer than `limit` items; small pages exercise continue
TABLE_ACCEPT = "as=Table"

T0 = "2026-11-30T10:00:00Z"


def _pod(name: str, phase: str, ready: bool, restarts: int, waiting: str | None = None,
         labels: dict[str, str] | None = None, terminated: str | None = None) -> dict[str, Any]:
    state: dict[str, Any] = {"running": {"startedAt": T0}}
    if waiting:
        state = {"waiting": {"reason": waiting, "message": "back-off 5m0s restarting failed container"}}
    if terminated:
        state = {"terminated": {"reason": terminated, "exitCode": 1}}
    return {  # [pod]
        "kind": "Pod", "apiVersion": "v1",
        "metadata": {"name": name, "namespace": "shop", "uid": f"uid-{name}", "resourceVersion": "100",
                     "creationTimestamp": T0, "labels": labels or {"app": name.split("-")[0]}},
        "spec": {"nodeName": "node-1", "containers": [{"name": "main", "image": f"registry.example/{name}:1.0"}]},
        "status": {"phase": phase, "podIP": "10.1.0.7",
                   "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                   "containerStatuses": [{"name": "main", "ready": ready, "restartCount": restarts, "state": state}]},
    }


def initial_objects() -> dict[str, dict[str, Any]]:
    pods = [
        _pod("web-1", "Running", True, 0),
        _pod("web-2", "Running", True, 1),
        _pod("worker-1", "Running", False, 7, waiting="CrashLoopBackOff"),
        _pod("batch-1", "Failed", False, 0, terminated="Error"),
        _pod("pending-1", "Pending", False, 0, waiting="ImagePullBackOff"),
    ]
    deployment = {  # [deployment]
        "kind": "Deployment", "apiVersion": "apps/v1",
        "metadata": {"name": "web", "namespace": "shop", "creationTimestamp": T0, "resourceVersion": "50",
                     "labels": {"app": "web"}},
        "spec": {"replicas": 2, "template": {"metadata": {"labels": {"app": "web"}}}},
        "status": {"replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2},
    }
    node = {"kind": "Node", "apiVersion": "v1", "metadata": {"name": "node-1", "creationTimestamp": T0},
            "spec": {}, "status": {}}  # [node]
    objects = {f"pods/shop/{p['metadata']['name']}": p for p in pods}
    objects["deployments/shop/web"] = deployment
    objects["nodes//node-1"] = node
    objects["certificates/shop/web-tls"] = {  # a custom resource (cert-manager's Certificate)
        "kind": "Certificate", "apiVersion": "cert-manager.io/v1",
        "metadata": {"name": "web-tls", "namespace": "shop", "creationTimestamp": T0, "labels": {}},
        "spec": {"secretName": "web-tls", "dnsNames": ["shop.example"]}, "status": {}}
    return objects


GROUPS = {"kind": "APIGroupList", "apiVersion": "v1", "groups": [  # [discovery]
    {"name": "apps", "versions": [{"groupVersion": "apps/v1", "version": "v1"}],
     "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"}},
    {"name": "cert-manager.io", "versions": [{"groupVersion": "cert-manager.io/v1", "version": "v1"}],
     "preferredVersion": {"groupVersion": "cert-manager.io/v1", "version": "v1"}},
    {"name": "metrics.k8s.io", "versions": [{"groupVersion": "metrics.k8s.io/v1beta1", "version": "v1beta1"}],
     "preferredVersion": {"groupVersion": "metrics.k8s.io/v1beta1", "version": "v1beta1"}},
]}
RESOURCES = {  # [discovery]
    "api/v1": [{"name": "pods", "singularName": "pod", "namespaced": True, "kind": "Pod", "shortNames": ["po"],
                "verbs": ["get", "list", "watch"]},
               {"name": "pods/log", "singularName": "", "namespaced": True, "kind": "Pod", "verbs": ["get"]},
               {"name": "resourcequotas", "singularName": "resourcequota", "namespaced": True,
                "kind": "ResourceQuota", "shortNames": ["quota"], "verbs": ["get", "list"]}],
    "apis/apps/v1": [{"name": "deployments", "singularName": "deployment", "namespaced": True,
                      "kind": "Deployment", "shortNames": ["deploy"], "verbs": ["get", "list", "patch"]}],
    "apis/cert-manager.io/v1": [
        {"name": "certificates", "singularName": "certificate", "namespaced": True, "kind": "Certificate",
         "shortNames": ["cert", "certs"], "verbs": ["get", "list", "watch"]},
        {"name": "certificates/status", "singularName": "", "namespaced": True, "kind": "Certificate",
         "verbs": ["get", "patch"]}],
}


EVENTS = [  # [event]
    {"kind": "Event", "apiVersion": "v1",
     "metadata": {"name": "worker-1.17a", "namespace": "shop"},
     "involvedObject": {"kind": "Pod", "name": "worker-1", "namespace": "shop"},
     "reason": "BackOff", "message": "Back-off restarting failed container main in pod worker-1",
     "type": "Warning", "count": 42, "lastTimestamp": T0},
    {"kind": "Event", "apiVersion": "v1",
     "metadata": {"name": "web-1.17b", "namespace": "shop"},
     "involvedObject": {"kind": "Pod", "name": "web-1", "namespace": "shop"},
     "reason": "Started", "message": "Started container main", "type": "Normal", "count": 1,
     "lastTimestamp": "2026-11-30T09:00:00Z"},
]

# Columns kube-apiserver's table printer gives pods and deployments (as
# `kubectl get pods -v=8` shows them); priority 1 = only with -o wide. [concepts]
POD_COLUMNS = [
    {"name": "Name", "type": "string", "format": "name", "description": "Name must be unique within a namespace.", "priority": 0},
    {"name": "Ready", "type": "string", "format": "", "description": "The aggregate readiness state of this pod for accepting traffic.", "priority": 0},
    {"name": "Status", "type": "string", "format": "", "description": "The aggregate status of the containers in this pod.", "priority": 0},
    {"name": "Restarts", "type": "string", "format": "", "description": "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.", "priority": 0},
    {"name": "Age", "type": "string", "format": "", "description": "CreationTimestamp is a timestamp representing the server time when this object was created.", "priority": 0},
    {"name": "IP", "type": "string", "format": "", "description": "podIP is an IP address allocated to the pod.", "priority": 1},
    {"name": "Node", "type": "string", "format": "", "description": "NodeName indicates in which node this pod is scheduled.", "priority": 1},
]
DEPLOYMENT_COLUMNS = [
    {"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0},
    {"name": "Ready", "type": "string", "format": "", "description": "Number of the pod with ready state", "priority": 0},
    {"name": "Up-to-date", "type": "string", "format": "", "description": "Total number of non-terminated pods targeted by this deployment that have the desired template spec.", "priority": 0},
    {"name": "Available", "type": "string", "format": "", "description": "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.", "priority": 0},
    {"name": "Age", "type": "string", "format": "", "description": "CreationTimestamp", "priority": 0},
]


def _cells(kind: str, obj: dict[str, Any]) -> list[Any]:
    meta, status = obj["metadata"], obj.get("status") or {}
    if kind == "pods":
        cs = status["containerStatuses"][0]
        state = cs["state"]
        shown = (state.get("waiting") or state.get("terminated") or {}).get("reason") or status["phase"]
        return [meta["name"], f"{int(cs['ready'])}/1", shown, cs["restartCount"], "1h", status["podIP"],
                obj["spec"]["nodeName"]]
    if kind == "deployments":
        return [meta["name"], f"{status['readyReplicas']}/{obj['spec']['replicas']}", status["updatedReplicas"],
                status["availableReplicas"], "1h"]
    return [meta["name"], "1h"]


def status(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """[status]"""
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": message, "reason": reason, "code": code}
    if details:
        body["details"] = details
    return body


def _matches(obj: dict[str, Any], labels: str | None, fields: str | None) -> bool:
    for term in filter(None, (labels or "").split(",")):
        key, _, value = term.partition("=")
        if (obj["metadata"].get("labels") or {}).get(key) != value:
            return False
    for term in filter(None, (fields or "").split(",")):
        negate = "!=" in term
        key, _, value = term.partition("!=" if negate else "=")
        found: Any = obj
        for part in key.split("."):
            found = found.get(part) if isinstance(found, dict) else None
        if (str(found) == value) == negate:
            return False
    return True


class FakeKubernetes(FakeApi):
    def __init__(self) -> None:
        super().__init__()
        self.objects = initial_objects()
        self.logs = {"web-1": [f"line {i}" for i in range(1, 11)], "worker-1": ["panic: no database"]}
        self.streams: list[Request] = []  # open watches and log follows
        self.metrics = True

    def route(self, request: Request, seen: dict[str, Any], body: bytes) -> Any:
        path, auth = seen["path"], seen["authorization"]
        args = {k: v[0] for k, v in seen["args"].items()}
        client_cert = request.transport is not None and hasattr(request.transport, "getPeerCertificate") \
            and request.transport.getPeerCertificate() is not None
        if path == "/version":
            return self.json(request, 200, {"major": "1", "minor": "30", "gitVersion": "v1.30.4",
                                             "platform": "linux/amd64"})  # [version]
        if auth == f"Bearer {ADMIN_TOKEN}" or client_cert:
            role = "admin"
        elif auth == f"Bearer {VIEWER_TOKEN}":
            role = "viewer"
        else:
            return self.json(request, 401, status(401, "Unauthorized", "Unauthorized"))
        parts = path.strip("/").split("/")
        method = request.method.decode()
        if role == "viewer" and (method != "GET" or "kube-system" in parts):
            resource = next((p for p in parts if p in ("pods", "deployments", "nodes", "events")), "pods")
            ns = parts[parts.index("namespaces") + 1] if "namespaces" in parts else ""
            verb = {"GET": "list", "PATCH": "patch", "DELETE": "delete"}[method]
            where = f' in the namespace "{ns}"' if ns else " at the cluster scope"
            group = "apps" if resource == "deployments" else ""
            return self.json(request, 403, status(403, "Forbidden", (
                f'{resource} is forbidden: User "system:serviceaccount:shop:viewer" cannot {verb} resource '
                f'"{resource}" in API group "{group}"{where}'), {"kind": resource}))
        return self._route(request, method, parts, args, body)

    def _route(self, request: Request, method: str, parts: list[str], args: dict[str, str], body: bytes) -> Any:
        if parts == ["apis"]:
            return self.json(request, 200, GROUPS)
        if "/".join(parts) in RESOURCES:
            group_version = "/".join(parts[1:]) if parts[0] == "apis" else "v1"
            return self.json(request, 200, {"kind": "APIResourceList", "apiVersion": "v1",
                                            "groupVersion": group_version, "resources": RESOURCES["/".join(parts)]})
        if parts == ["apis", "metrics.k8s.io", "v1beta1"]:  # an aggregated API that is down
            return self.json(request, 503, status(503, "ServiceUnavailable", "the server is currently unable to handle the request"))
        if parts[:4] == ["apis", "metrics.k8s.io", "v1beta1", "namespaces"] and self.metrics:
            return self.json(request, 200, {"kind": "PodMetricsList", "apiVersion": "metrics.k8s.io/v1beta1",
                                             "metadata": {}, "items": [  # [metrics]
                {"metadata": {"name": "web-1", "namespace": "shop"}, "timestamp": T0, "window": "30s",
                 "containers": [{"name": "main", "usage": {"cpu": "250000000n", "memory": "131072Ki"}}]},
                {"metadata": {"name": "web-2", "namespace": "shop"}, "timestamp": T0, "window": "30s",
                 "containers": [{"name": "main", "usage": {"cpu": "5m", "memory": "64Mi"}}]}]})
        if parts[0] == "apis" and parts[1] == "metrics.k8s.io":
            return self.json(request, 404, status(404, "NotFound", "the server could not find the requested resource"))
        # /api/v1/... or /apis/GROUP/VERSION/...
        rest = parts[2:] if parts[0] == "api" else parts[3:]
        namespace = ""
        if rest[:1] == ["namespaces"] and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        if rest == ["namespaces"]:
            return self.json(request, 200, {"kind": "NamespaceList", "apiVersion": "v1", "metadata": {},
                                             "items": [{"metadata": {"name": "shop"}}]})
        kind = rest[0]
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if kind == "events":
            items = [e for e in EVENTS if (not namespace or e["metadata"]["namespace"] == namespace)
                     and _matches(e, None, args.get("fieldSelector"))]
            return self.json(request, 200, {"kind": "EventList", "apiVersion": "v1", "metadata": {}, "items": items})
        if name is None:
            if method != "GET":
                return self.json(request, 405, status(405, "MethodNotAllowed", "the server does not allow this method"))
            if args.get("watch") in ("1", "true"):
                return self._watch(request, kind, namespace, args)
            return self._list(request, kind, namespace, args)
        key = f"{kind}/{namespace}/{name}"
        obj = self.objects.get(key)
        if obj is None:
            return self.json(request, 404, status(404, "NotFound", f'{kind} "{name}" not found',
                                                   {"name": name, "kind": kind}))
        if sub == "log":
            return self._log(request, name, args)
        if method == "GET":
            if TABLE_ACCEPT in (request.getHeader("accept") or ""):
                return self.json(request, 200, self._table(kind, [obj], {}, args))
            return self.json(request, 200, obj)
        if method == "DELETE":
            del self.objects[key]
            gone = copy.deepcopy(obj)
            gone["metadata"]["deletionTimestamp"] = "2026-11-30T11:00:00Z"
            return self.json(request, 200, gone)
        if method == "PATCH":
            patch = json.loads(body)
            if sub == "scale":
                obj["spec"]["replicas"] = patch["spec"]["replicas"]
                return self.json(request, 200, {"kind": "Scale", "apiVersion": "autoscaling/v1",
                                                 "metadata": {"name": name, "namespace": namespace},
                                                 "spec": {"replicas": obj["spec"]["replicas"]},
                                                 "status": {"replicas": obj["status"]["replicas"]}})
            _merge(obj, patch)
            return self.json(request, 200, obj)
        return self.json(request, 405, status(405, "MethodNotAllowed", "the server does not allow this method"))

    def _table(self, kind: str, items: list[dict[str, Any]], metadata: dict[str, Any],
               args: dict[str, str]) -> dict[str, Any]:
        columns = {"pods": POD_COLUMNS, "deployments": DEPLOYMENT_COLUMNS}.get(
            kind, [POD_COLUMNS[0], POD_COLUMNS[4]])
        with_object = args.get("includeObject") == "Object"
        rows = [{"cells": _cells(kind, o), **({"object": o} if with_object else {})} for o in items]
        return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata,
                "columnDefinitions": columns, "rows": rows}

    def _selected(self, kind: str, namespace: str, args: dict[str, str]) -> list[dict[str, Any]]:
        return [o for k, o in sorted(self.objects.items())
                if k.startswith(f"{kind}/") and (not namespace or k.split("/")[1] == namespace)
                and _matches(o, args.get("labelSelector"), args.get("fieldSelector"))]

    def _list(self, request: Request, kind: str, namespace: str, args: dict[str, str]) -> bytes:
        items = self._selected(kind, namespace, args)
        start = int(base64.b64decode(args["continue"]).decode()) if args.get("continue") else 0
        limit = min(int(args.get("limit") or 10**6), PAGE)
        page = items[start:start + limit]
        metadata: dict[str, Any] = {"resourceVersion": "200"}
        if start + limit < len(items):  # [concepts]: continue token and remainingItemCount
            metadata["continue"] = base64.b64encode(str(start + limit).encode()).decode()
            metadata["remainingItemCount"] = len(items) - start - limit
        if TABLE_ACCEPT in (request.getHeader("accept") or ""):
            return self.json(request, 200, self._table(kind, page, metadata, args))
        list_kind = {"pods": "PodList", "deployments": "DeploymentList", "nodes": "NodeList"}.get(kind, "List")
        return self.json(request, 200, {"kind": list_kind, "apiVersion": "v1", "metadata": metadata, "items": page})

    def _stream(self, request: Request, content_type: bytes) -> None:
        request.setHeader(b"content-type", content_type)
        request.setHeader(b"transfer-encoding", b"chunked")
        self.streams.append(request)
        request.notifyFinish().addBoth(lambda _: self.streams.remove(request) if request in self.streams else None)

    def _watch(self, request: Request, kind: str, namespace: str, args: dict[str, str]) -> Any:
        """[concepts] one JSON watch event per line; stays open."""
        self._stream(request, b"application/json")
        for obj in self._selected(kind, namespace, args):
            request.write(json.dumps({"type": "ADDED", "object": obj}).encode() + b"\n")
        return NOT_DONE_YET

    def emit(self, event_type: str, obj: dict[str, Any]) -> None:
        """Send a watch event to every open watch."""
        for request in list(self.streams):
            if request.args.get(b"watch"):
                request.write(json.dumps({"type": event_type, "object": obj}).encode() + b"\n")

    def _log(self, request: Request, name: str, args: dict[str, str]) -> Any:
        """[pod] read log: text/plain; tailLines, follow."""
        lines = self.logs.get(name, [])
        if args.get("container") not in (None, "main"):
            return self.json(request, 400, status(400, "BadRequest", (
                f'container {args["container"]} is not valid for pod {name}')))
        if args.get("tailLines"):
            lines = lines[-int(args["tailLines"]):] if int(args["tailLines"]) else []
        text = "".join(line + "\n" for line in lines).encode()
        if args.get("follow") == "true":
            self._stream(request, b"text/plain")
            request.write(text)
            return NOT_DONE_YET
        request.setHeader(b"content-type", b"text/plain")
        return text

    def follow_line(self, text: str) -> None:
        for request in list(self.streams):
            if not request.args.get(b"watch"):
                request.write(text.encode() + b"\n")

    def close_streams(self) -> None:
        for request in list(self.streams):
            if not request.finished:
                request.finish()


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """RFC 7386 merge (what a strategic merge of these maps amounts to)."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def kubeconfig(server: str, *, token: str | None = None, ca_pem: bytes | None = None,
               client: tuple[bytes, bytes] | None = None, exec_plugin: bool = False,
               namespace: str = "shop", extra_context: bool = False) -> str:
    """A kubeconfig as https://kubernetes.io/docs/reference/config-api/kubeconfig.v1/ describes it."""
    import yaml

    user: dict[str, Any] = {}
    if token:
        user["token"] = token
    if client:
        user["client-certificate-data"] = base64.b64encode(client[0]).decode()
        user["client-key-data"] = base64.b64encode(client[1]).decode()
    if exec_plugin:
        user["exec"] = {"apiVersion": "client.authentication.k8s.io/v1", "command": "aws",
                        "args": ["eks", "get-token", "--cluster-name", "prod"]}
    cluster: dict[str, Any] = {"server": server}
    if ca_pem:
        cluster["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
    contexts = [{"name": "prod", "context": {"cluster": "prod", "user": "me", "namespace": namespace}}]
    if extra_context:
        contexts.append({"name": "other", "context": {"cluster": "nowhere", "user": "me"}})
    config = {"apiVersion": "v1", "kind": "Config", "current-context": "prod",
              "clusters": [{"name": "prod", "cluster": cluster}, {"name": "nowhere", "cluster": {"server": "https://127.0.0.1:1"}}],
              "users": [{"name": "me", "user": user}], "contexts": contexts}
    return yaml.safe_dump(config)


def later(seconds: float, f: Any, *args: Any) -> Any:
    return reactor.callLater(seconds, f, *args)
