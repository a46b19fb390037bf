"""``/jupyter/api/sessions``: Jupyter Server's session records, for direct clients.

VS Code and ``@jupyterlab/services`` create their kernels through sessions
(a notebook path bound to a kernel); a jupyter_server with
``--gateway-url`` keeps its own and never calls these. The records live in
memory: they name a kernel, and kernels do not outlive the runtime either.
A session whose kernel is gone (deleted, culled, its spin session closed)
is dropped.

Semantics follow jupyter_server's ``services/sessions/handlers.py``: a
create with a ``path`` that already has a session answers that session
(201); the legacy body ``{"notebook": {"path"}}`` is accepted; a missing
``path`` or ``type`` is a 400; PATCH renames, and a new ``kernel.name``
starts a new kernel and shuts the old one down.
"""

from __future__ import annotations

import uuid
from typing import Any, Mapping

from .kernels import JupyterKernel, JupyterKernels, KernelError


class JupyterSessions:
    def __init__(self, kernels: JupyterKernels) -> None:
        self.kernels = kernels
        self.records: dict[str, dict[str, Any]] = {}  # id -> {id, path, name, type, kernel_id}
        kernels.on_gone.append(self._kernel_gone)

    def _kernel_gone(self, kernel: JupyterKernel) -> None:
        for sid in [sid for sid, r in self.records.items() if r["kernel_id"] == kernel.id]:
            del self.records[sid]

    def model(self, record: Mapping[str, Any]) -> dict[str, Any]:
        kernel = self.kernels.kernels.get(record["kernel_id"])
        return {
            "id": record["id"], "path": record["path"], "name": record["name"], "type": record["type"],
            "kernel": kernel.model() if kernel is not None else None,
            "notebook": {"path": record["path"], "name": record["name"]},
        }

    def list(self) -> list[dict[str, Any]]:
        return [self.model(r) for r in self.records.values()]

    def get(self, sid: str) -> dict[str, Any]:
        record = self.records.get(sid)
        if record is None:
            raise KernelError(404, f"Session not found: {sid[:64]}")
        return record

    async def create(self, body: Mapping[str, Any], by: str) -> dict[str, Any]:
        notebook = body.get("notebook") if isinstance(body.get("notebook"), dict) else {}
        path = body.get("path", notebook.get("path"))
        kind = body.get("type") or ("notebook" if notebook else None)
        if not isinstance(path, str) or not path:
            raise KernelError(400, "No path given: 'path' must be a non-empty string")
        if not isinstance(kind, str) or not kind:
            raise KernelError(400, "No type given: 'type' must be a string (notebook, console, file)")
        name = body.get("name") if isinstance(body.get("name"), str) else notebook.get("name", "")
        for record in self.records.values():
            if record["path"] == path:
                return record
        kernel = await self._kernel(body.get("kernel"), by)
        record = {"id": str(uuid.uuid4()), "path": path, "name": name or "", "type": kind, "kernel_id": kernel.id}
        self.records[record["id"]] = record
        return record

    async def _kernel(self, spec: Any, by: str) -> JupyterKernel:
        if spec is not None and not isinstance(spec, dict):
            raise KernelError(400, "'kernel' must be an object with 'name' or 'id'")
        spec = spec or {}
        if spec.get("id"):
            return self.kernels.get(str(spec["id"]))
        return await self.kernels.create({"name": spec.get("name"), "env": spec.get("env")}, by)

    async def patch(self, sid: str, body: Mapping[str, Any], by: str) -> dict[str, Any]:
        record = self.get(sid)
        for field in ("path", "name", "type"):
            value = body.get(field)
            if value is not None:
                if not isinstance(value, str):
                    raise KernelError(400, f"'{field}' must be a string")
                record[field] = value
        spec = body.get("kernel")
        if spec is not None:
            if not isinstance(spec, dict):
                raise KernelError(400, "'kernel' must be an object with 'name' or 'id'")
            old = self.kernels.kernels.get(record["kernel_id"])
            if spec.get("id") and spec["id"] != record["kernel_id"]:
                record["kernel_id"] = self.kernels.get(str(spec["id"])).id
            elif spec.get("name") and (old is None or spec["name"] != old.spec):
                record["kernel_id"] = (await self._kernel({"name": spec["name"]}, by)).id
                if old is not None:
                    await self.kernels.delete(old.id)
            self.records[sid] = record
        return record

    async def delete(self, sid: str) -> None:
        record = self.get(sid)
        del self.records[sid]
        if record["kernel_id"] in self.kernels.kernels:
            await self.kernels.delete(record["kernel_id"])
