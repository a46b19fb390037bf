"""``kubernetes`` cells: kubectl-like commands against the Kubernetes REST API.

Source: one command (:mod:`.k8s_command`). Options: ``connection``,
``timeout_s``, ``allow_writes`` (``rollout restart``, ``scale``, ``delete
pod``, ``cordon``/``uncordon`` are refused without it). Access: kubeconfig,
direct URL and token, or the pod's service account (:mod:`.k8s_config`).

The client is treq through :mod:`.http` (the runtime's TLS policy, the
cluster's CA, client certificates), not a Kubernetes client library: the
asynchronous ones run on aiohttp with their own TLS stack and blocking
kubeconfig loading, which would bypass the runtime's outbound policy.

``get`` asks the server for its Table rendering (``Accept:
application/json;as=Table;v=v1;g=meta.k8s.io``, with ``includeObject=Object``
so the objects come along) exactly as kubectl does, so the columns are
kubectl's for every kind; lists are read in pages of 500 following
``metadata.continue``. References: https://kubernetes.io/docs/reference/using-api/api-concepts/
("Retrieving large results sets in chunks", "Receiving resources as Tables",
"Efficient detection of changes" for watches) and the API reference of each
kind. Outputs: tables (text, HTML, JSON), or the objects with ``-o
json|yaml|name``; the CellResult holds the objects (``items``).
"""

from __future__ import annotations

import json
from typing import Any

import attrs

from ..cells.base import Outcome
from .base import Field, Integration, IntegrationError
from .cell import IntegrationRun
from .connections import Connection, masked
from .http import HttpApi, agents_of, authorization, for_test, status_error
from .http_integration import check_url, literal
from .k8s_command import Command, Kind, parse
from .k8s_config import ClusterAccess, access_for
from .k8s_discovery import discover
from .k8s_text import age, cpu_cores, describe_text, memory_bytes
from .tables import Table
from .times import rfc3339

TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
PAGE = 500
MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"


class Kubernetes(Integration):
    name = "kubernetes"
    description = "A Kubernetes cluster (kubeconfig, API URL and token, or the runtime pod's service account)"
    fields = (
        Field("kubeconfig", "Path of a kubeconfig file on the runtime's machine"),
        Field("kubeconfig_content", "A kubeconfig's text; give it as a reference: {{secret:NAME}}",
              secret=True, kind="text"),
        Field("context", "The kubeconfig context to use (default: its current-context)"),
        Field("url", "API server URL, when there is no kubeconfig (e.g. https://10.0.0.1:6443)"),
        Field("token", "Bearer token for url (a service account token)", secret=True),
        Field("ca", "CA certificate of the API server for url: PEM text or a path", kind="text"),
        Field("namespace", "Default namespace of cells (default: the context's, else 'default')"),
    )
    options = {"allow_writes": "allow rollout restart, scale, delete pod, cordon and uncordon (default false)"}

    def __init__(self) -> None:
        self._discovered: dict[tuple[str, str], Kind] = {}

    def check(self, fields: Any) -> None:
        if fields.get("kubeconfig") and fields.get("kubeconfig_content"):
            raise IntegrationError("bad_request", "give 'kubeconfig' (a path) or 'kubeconfig_content', not both")
        direct = [f for f in ("url", "token", "ca") if fields.get(f)]
        if direct and (fields.get("kubeconfig") or fields.get("kubeconfig_content")):
            raise IntegrationError("bad_request", f"{', '.join(direct)} go without a kubeconfig: the kubeconfig says them")
        if (fields.get("token") or fields.get("ca")) and not fields.get("url"):
            raise IntegrationError("bad_request", "'token' and 'ca' need 'url' (the API server)")
        if literal(fields.get("url")):
            check_url(fields["url"], "'url'")

    def fallback_connection(self, services: Any) -> Connection | None:
        """No connection named and no default: the pod's service account, when in a pod."""
        if services.environ.get("KUBERNETES_SERVICE_HOST"):
            return Connection("in-cluster", self.name, {})
        return None

    async def client(self, services: Any, connection: Connection, run: IntegrationRun | None = None
                     ) -> tuple[HttpApi, ClusterAccess]:
        in_pod = connection.name == "in-cluster" and not connection.fields
        access = await access_for(services, None if in_pod else connection)
        if run is not None and access.secrets:
            await run.ctx.mask_values(access.secrets)  # read from files: masked before any output
        headers = authorization(access.token, access.basic)
        agent = agents_of(services).agent(access.ca, access.client, access.source, insecure=access.insecure)
        api = HttpApi(services, access.server, headers=headers, agent=agent, what=access.source)
        if run is not None:
            run.track(api)
        return api, access

    async def test(self, connection: Connection, services: Any) -> str:
        api, access = await self.client(services, connection)
        try:
            version = await api.get_json("/version")
            # /version is open to everyone; a read in the connection's own namespace
            # proves the credentials (a namespace-scoped account may not list namespaces).
            await api.get_json(f"/api/v1/namespaces/{access.namespace}/pods", params=[("limit", "1")])
        except IntegrationError as e:
            failed = for_test(e)
            failed.message = await masked(services, access.secrets, failed.message)  # read from a kubeconfig
            raise failed from None
        return f"Kubernetes {version.get('gitVersion', '?')} at {access.server} ({access.source})"

    async def execute(self, run: IntegrationRun) -> Outcome:
        command = parse(run.cell.source)
        allow = run.option("allow_writes", (bool,), False)
        if command.writes and not allow:
            raise IntegrationError("writes_not_allowed", f"'{command.verb}' changes the cluster: set the cell option "
                                                         "allow_writes: true to run it")
        api, access = await self.client(run.services, run.connection, run)
        if command.kind is not None and not command.kind.group:
            command = attrs.evolve(command, kind=await discover(api, command.kind.kind, self._discovered))
        namespace = None if command.all_namespaces else (command.namespace or access.namespace)
        handler = getattr(self, "_" + command.verb)
        value = await handler(run, api, command, namespace)
        value.update(command=run.cell.source.strip(), namespace=namespace)
        return Outcome(status="ok", value=value)

    # -- reads --------------------------------------------------------------------------

    async def _list(self, api: HttpApi, kind: Kind, namespace: str | None, command: Command,
                    accept: str | None, extra: list[tuple[str, str]] | None = None) -> list[dict[str, Any]]:
        """Every page of a list (Table or JSON pages, as asked)."""
        pages: list[dict[str, Any]] = []
        token = ""
        params = [("limit", str(PAGE))] + (extra or [])
        if command.selector:
            params.append(("labelSelector", command.selector))
        if command.field_selector:
            params.append(("fieldSelector", command.field_selector))
        if accept == TABLE:
            params.append(("includeObject", "Object"))
        while True:
            page = await api.get_json(kind.path(namespace), params=params + ([("continue", token)] if token else []),
                                      headers={"Accept": accept} if accept else None)
            pages.append(page)
            token = (page.get("metadata") or {}).get("continue") or ""
            if not token:
                return pages

    async def _get(self, run: IntegrationRun, api: HttpApi, command: Command, namespace: str | None) -> dict[str, Any]:
        kind = command.kind
        assert kind is not None
        structured = command.output in ("json", "yaml", "name")
        accept = None if structured else TABLE
        if command.names:
            ns = namespace or "default"
            pages = [await api.get_json(kind.path(ns, name), headers={"Accept": accept} if accept else None)
                     for name in command.names]
        else:
            pages = await self._list(api, kind, namespace, command, accept)
        if structured:
            items = [o for p in pages for o in (p.get("items") if "items" in p else [p])]
            self._structured(run, kind, items, command.output, single=bool(command.names) and len(items) == 1)
        else:
            items = self._table(run, kind, pages, command, namespace)
        if command.watch:
            version = (pages[-1].get("metadata") or {}).get("resourceVersion") if pages else None
            await self._watch(run, api, kind, namespace, command, version)
        return {"kind": kind.kind, "objects": items}

    def _table(self, run: IntegrationRun, kind: Kind, pages: list[dict[str, Any]], command: Command,
               namespace: str | None) -> list[dict[str, Any]]:
        definitions = (pages[0].get("columnDefinitions") or []) if pages else []
        if pages and pages[0].get("kind") != "Table":
            raise IntegrationError("bad_response", "the API server did not answer with a Table "
                                                   "(Accept: application/json;as=Table;v=v1;g=meta.k8s.io)")
        wanted = [i for i, d in enumerate(definitions) if command.output == "wide" or not d.get("priority")]
        columns = [definitions[i]["name"].upper() for i in wanted]
        rows, items = [], []
        for page in pages:
            for row in page.get("rows") or []:
                cells = row.get("cells") or []
                obj = row.get("object") or {}
                items.append(obj)
                shown = [cells[i] if i < len(cells) else "" for i in wanted]
                if namespace is None and kind.namespaced:
                    shown.insert(0, (obj.get("metadata") or {}).get("namespace", ""))
                rows.append(shown)
        if namespace is None and kind.namespaced:
            columns.insert(0, "NAMESPACE")
        where = f" in {namespace} namespace" if namespace and kind.namespaced else ""
        run.table(Table(columns, rows, empty=f"No resources found{where}."))
        return items

    def _structured(self, run: IntegrationRun, kind: Kind, items: list[dict[str, Any]], output: str | None,
                    single: bool) -> None:
        document: Any = items[0] if single else {"apiVersion": "v1", "kind": "List", "objects": items}
        if output == "name":
            group = kind.group.split("/")[2] if kind.group.startswith("/apis/") else ""
            prefix = f"{kind.kind.lower()}.{group}" if group else kind.kind.lower()
            text = "\n".join(f"{prefix}/{(o.get('metadata') or {}).get('name')}" for o in items)
            run.show({"text/plain": text})
        elif output == "yaml":
            import yaml

            run.show({"text/plain": yaml.safe_dump(document, sort_keys=False, allow_unicode=True)})
        else:
            run.show({"application/json": document, "text/plain": json.dumps(document, indent=4, ensure_ascii=False)})

    async def _watch(self, run: IntegrationRun, api: HttpApi, kind: Kind, namespace: str | None,
                     command: Command, version: str | None) -> None:
        """``-w``: change events as lines until the run is cancelled or times out."""
        params = [("watch", "1"), ("allowWatchBookmarks", "false")]
        if version:
            params.append(("resourceVersion", version))
        if command.selector:
            params.append(("labelSelector", command.selector))
        fields = [command.field_selector] if command.field_selector else []
        if command.names:
            fields.append(f"metadata.name={command.names[0]}")
        if fields:
            params.append(("fieldSelector", ",".join(fields)))

        def line(text: str) -> None:
            if not text.strip():
                return
            try:
                event = json.loads(text)
                meta = event["object"].get("metadata") or {}
            except (ValueError, KeyError, TypeError, AttributeError):
                run.warn(f"an unreadable watch event: {text[:200]}")
                return
            if event.get("type") == "ERROR":
                run.warn(f"watch error: {event['object'].get('message')}")
                return
            status = (event["object"].get("status") or {}).get("phase") or ""
            where = f"{meta.get('namespace')}/" if namespace is None and meta.get("namespace") else ""
            run.ctx.stream("stdout", f"{event.get('type')}   {where}{meta.get('name')}   {status}".rstrip() + "\n")

        await api.lines("GET", kind.path(namespace), line, params=params)

    async def _describe(self, run: IntegrationRun, api: HttpApi, command: Command, namespace: str | None
                        ) -> dict[str, Any]:
        kind = command.kind
        assert kind is not None
        if command.names:
            items = [await api.get_json(kind.path(namespace or "default", n)) for n in command.names]
        else:
            items = [o for p in await self._list(api, kind, namespace, command, None) for o in p.get("items") or []]
        now = run.reactor.seconds()
        blocks = []
        for obj in items:
            meta = obj.get("metadata") or {}
            events: list[dict[str, Any]] = []
            if kind.plural != "events":
                selector = f"involvedObject.name={meta.get('name')},involvedObject.kind={kind.kind}"
                ns = meta.get("namespace")
                path = f"/api/v1/namespaces/{ns}/events" if ns else "/api/v1/events"
                events = (await api.get_json(path, params=[("fieldSelector", selector)])).get("items") or []
            blocks.append(describe_text(kind, obj, events, now))
        text = "\n\n".join(blocks) or "No resources found."
        run.show({"text/plain": text})
        return {"kind": kind.kind, "objects": items}

    async def _logs(self, run: IntegrationRun, api: HttpApi, command: Command, namespace: str | None
                    ) -> dict[str, Any]:
        path = command.kind.path(namespace or "default", command.names[0]) + "/log"  # type: ignore[union-attr]
        params = []
        if command.container:
            params.append(("container", command.container))
        if command.tail is not None:
            params.append(("tailLines", str(command.tail)))
        if command.since is not None:
            params.append(("sinceSeconds", str(max(1, int(command.since)))))
        if command.follow:
            params.append(("follow", "true"))
            await api.lines("GET", path, lambda text: run.ctx.stream("stdout", text + "\n"), params=params)
            return {"text": ""}
        reply = await api.call("GET", path, params=params)
        if not 200 <= reply.status < 300:
            raise status_error(reply)
        if reply.text:
            run.ctx.stream("stdout", reply.text)
        return {"text": reply.text, "pod": command.names[0], "container": command.container}

    async def _events(self, run: IntegrationRun, api: HttpApi, command: Command, namespace: str | None
                      ) -> dict[str, Any]:
        extra = []
        if command.for_object:
            kind_word, _, name = command.for_object.partition("/")
            from .k8s_command import kind_of

            extra.append(("fieldSelector", f"involvedObject.kind={kind_of(kind_word).kind},involvedObject.name={name}"))
        pages = await self._list(api, command.kind, namespace, command, None, extra)  # type: ignore[arg-type]
        items = [o for p in pages for o in p.get("items") or []]
        items.sort(key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
        now = run.reactor.seconds()
        columns = (["NAMESPACE"] if namespace is None else []) + ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
        rows = []
        for e in items:
            involved = e.get("involvedObject") or {}
            row = [age(e.get("lastTimestamp") or e.get("eventTime"), now), e.get("type"), e.get("reason"),
                   f"{str(involved.get('kind', '')).lower()}/{involved.get('name', '')}", e.get("message")]
            rows.append(([(e.get("metadata") or {}).get("namespace")] if namespace is None else []) + row)
        where = f" in {namespace} namespace" if namespace else ""
        run.table(Table(columns, rows, empty=f"No events found{where}."))
        return {"kind": "Event", "objects": items}

    async def _top(self, run: IntegrationRun, api: HttpApi, command: Command, namespace: str | None
                   ) -> dict[str, Any]:
        kind = command.kind
        assert kind is not None
        base = "/apis/metrics.k8s.io/v1beta1"
        path = f"{base}/nodes" if kind.plural == "nodes" else (
            f"{base}/namespaces/{namespace}/pods" if namespace else f"{base}/pods")
        params = [("labelSelector", command.selector)] if command.selector else []
        try:
            data = await api.get_json(path, params=params)
        except IntegrationError as e:
            if e.status == 404:
                raise IntegrationError("metrics_unavailable", f"{e.message}: the metrics API (metrics.k8s.io, "
                                                              "served by metrics-server) is not available") from None
            raise
        items = [i for i in data.get("items") or []
                 if not command.names or (i.get("metadata") or {}).get("name") in command.names]
        rows = []
        for item in items:
            usages = [c.get("usage") or {} for c in item.get("containers") or []] or [item.get("usage") or {}]
            cpu = sum(cpu_cores(u.get("cpu", "0")) for u in usages)
            memory = sum(memory_bytes(u.get("memory", "0")) for u in usages)
            meta = item.get("metadata") or {}
            row = [meta.get("name"), f"{round(cpu * 1000)}m", f"{round(memory / 2**20)}Mi"]
            rows.append(([meta.get("namespace")] if namespace is None and kind.plural == "pods" else []) + row)
        columns = (["NAMESPACE"] if namespace is None and kind.plural == "pods" else []) + ["NAME", "CPU(cores)", "MEMORY(bytes)"]
        run.table(Table(columns, rows, empty="No metrics found."))
        return {"kind": kind.kind + "Metrics", "objects": items}

    # -- writes -------------------------------------------------------------------------

    async def _patch(self, api: HttpApi, path: str, patch: dict[str, Any], content_type: str) -> Any:
        reply = await api.call("PATCH", path, data=json.dumps(patch).encode(), headers={"Content-Type": content_type})
        if not 200 <= reply.status < 300:
            raise status_error(reply)
        return reply.json()

    def _label(self, kind: Kind, name: str) -> str:
        group = kind.group.split("/")[2] if kind.group.startswith("/apis/") else ""
        return f"{kind.kind.lower()}.{group}/{name}" if group else f"{kind.kind.lower()}/{name}"

    async def _rollout(self, run: IntegrationRun, api: HttpApi, command: Command, namespace: str | None
                       ) -> dict[str, Any]:
        kind, objects, lines = command.kind, [], []
        assert kind is not None
        stamp = rfc3339(run.reactor.seconds())
        for name in command.names:
            # What kubectl rollout restart sends: a new pod template annotation.
            patch = {"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": stamp}}}}}
            objects.append(await self._patch(api, kind.path(namespace or "default", name), patch, STRATEGIC))
            lines.append(f"{self._label(kind, name)} restarted")
        run.show({"text/plain": "\n".join(lines)})
        return {"objects": objects}

    async def _scale(self, run: IntegrationRun, api: HttpApi, command: Command, namespace: str | None
                     ) -> dict[str, Any]:
        kind, name = command.kind, command.names[0]
        assert kind is not None
        path = kind.path(namespace or "default", name) + "/scale"
        scale = await self._patch(api, path, {"spec": {"replicas": command.replicas}}, MERGE)
        run.show({"text/plain": f"{self._label(kind, name)} scaled"})
        return {"objects": [scale]}

    async def _delete(self, run: IntegrationRun, api: HttpApi, command: Command, namespace: str | None
                      ) -> dict[str, Any]:
        kind, objects, lines = command.kind, [], []
        assert kind is not None
        for name in command.names:
            reply = await api.call("DELETE", kind.path(namespace or "default", name))
            if not 200 <= reply.status < 300:
                raise status_error(reply)
            objects.append(reply.json())
            lines.append(f'pod "{name}" deleted')
        run.show({"text/plain": "\n".join(lines)})
        return {"objects": objects}

    async def _node_schedulable(self, run: IntegrationRun, api: HttpApi, name: str, cordon: bool) -> dict[str, Any]:
        node = await self._patch(api, f"/api/v1/nodes/{name}", {"spec": {"unschedulable": cordon or None}}, MERGE)
        run.show({"text/plain": f"node/{name} {'cordoned' if cordon else 'uncordoned'}"})
        return {"objects": [node]}

    async def _cordon(self, run: IntegrationRun, api: HttpApi, command: Command, namespace: str | None
                      ) -> dict[str, Any]:
        return await self._node_schedulable(run, api, command.names[0], True)

    async def _uncordon(self, run: IntegrationRun, api: HttpApi, command: Command, namespace: str | None
                        ) -> dict[str, Any]:
        return await self._node_schedulable(run, api, command.names[0], False)


kubernetes = Kubernetes()
