"""Roles and the one table of who may do what (PROTOCOL.md section 9).

Pure: no I/O, no Twisted. Every op of ``spinrt.protocol.OPS`` and every
token-protected HTTP route has an entry here; ``tests/test_roles.py`` fails
when one has none, and the runtime refuses an op missing from the table to
every role but ``owner`` (deny by default).

Roles are ordered: each may do everything of the roles below it.

- ``viewer``: read sessions, documents, notebooks, variable previews and
  connection names; status, run output downloads, ``/metrics``.
- ``runner``: run the cells a document or a stored notebook holds as they
  are (``cell_id`` / ``cell_ids`` forms), cancel runs, a session's own
  secrets, sessions from a stored notebook, ``notebook.parameters``.
- ``editor``: change documents and notebooks, run whole cells (which may
  be any code), sessions from scratch, close them, restart kernels.
- ``owner``: the runtime's settings, SSH connections, tokens, the runtime
  secret store, deleting sessions, the audit trail.

An op's role may depend on its form (``cell.run`` with ``cell`` or with
``cell_id``): :data:`OP_ROLES` then maps it to a function of the raw request
object. The role is decided from the raw request, before its parameters are
checked, so a request the role may not make is ``forbidden`` whatever else
is wrong with it.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Union

VIEWER, RUNNER, EDITOR, OWNER = "viewer", "runner", "editor", "owner"
ROLES: tuple[str, ...] = (VIEWER, RUNNER, EDITOR, OWNER)
RANK = {role: rank for rank, role in enumerate(ROLES)}

FORBIDDEN = "forbidden"  # the reply error code (an HTTP route answers 403)

RoleRule = Union[str, Callable[[Mapping[str, Any]], str]]


def _given(message: Mapping[str, Any], name: str) -> bool:
    """Whether a request gives ``name`` (null counts as absent, as the
    parser reads optional parameters)."""
    return message.get(name) is not None


def _run_one(message: Mapping[str, Any]) -> str:
    # A whole cell is arbitrary code: an editor's; a document cell by id: a runner's.
    return EDITOR if _given(message, "cell") else RUNNER


def _run_many(message: Mapping[str, Any]) -> str:
    return EDITOR if _given(message, "cells") else RUNNER


def _create(message: Mapping[str, Any]) -> str:
    # From a stored notebook (its cells as they are): a runner may.
    return RUNNER if _given(message, "notebook") else EDITOR


def _runtime_scope(message: Mapping[str, Any]) -> bool:
    return message.get("scope") == "runtime"


def _secrets_write(message: Mapping[str, Any]) -> str:
    return OWNER if _runtime_scope(message) else RUNNER


OP_ROLES: dict[str, RoleRule] = {
    # viewer
    "hello": VIEWER,
    "ping": VIEWER,
    "session.list": VIEWER,
    "session.attach": VIEWER,
    "session.detach": VIEWER,
    "session.snapshot": VIEWER,
    "session.document": VIEWER,
    "notebook.list": VIEWER,
    "notebook.get": VIEWER,
    "variables.list": VIEWER,
    "connections.list": VIEWER,
    "connections.types": VIEWER,
    "secrets.list": VIEWER,  # names only, in either scope
    # runner (editor for the forms that carry code)
    "cell.run": _run_one,
    "cells.run": _run_many,
    "run.cancel": RUNNER,
    "secrets.set": _secrets_write,
    "secrets.delete": _secrets_write,
    "session.create": _create,
    "notebook.parameters": RUNNER,
    # editor
    "session.close": EDITOR,
    "cell.set": EDITOR,
    "cell.delete": EDITOR,
    "cell.move": EDITOR,
    "notebook.save": EDITOR,
    "notebook.rename": EDITOR,
    "notebook.delete": EDITOR,
    "kernel.restart": EDITOR,
    "variables.clear": EDITOR,
    "connections.test": EDITOR,
    # owner
    "runtime.configure": OWNER,
    "connections.set": OWNER,
    "connections.delete": OWNER,
    "tokens.create": OWNER,
    "tokens.list": OWNER,
    "tokens.revoke": OWNER,
    "session.delete": OWNER,
}

# Token-protected HTTP routes, by their first path segments
# (``/api/sessions/<id>/...`` is ``api/sessions``).
ROUTE_ROLES: dict[str, str] = {
    "api/status": VIEWER,
    "api/sessions": VIEWER,  # run output and session notebook downloads
    "api/audit": OWNER,
    "metrics": VIEWER,
}

# The Jupyter kernels API under /jupyter (spinrt.web.jupyter), by method and
# route template: watching is a viewer's, interrupting a runner's, and
# everything that runs code or changes a kernel an editor's.
JUPYTER_ROUTE_ROLES: dict[str, str] = {
    "GET api": VIEWER,
    "GET api/kernelspecs": VIEWER,
    "GET api/kernelspecs/{name}": VIEWER,
    "GET kernelspecs/{name}/{file}": VIEWER,
    "GET api/kernels": VIEWER,
    "POST api/kernels": EDITOR,
    "GET api/kernels/{id}": VIEWER,
    "DELETE api/kernels/{id}": EDITOR,
    "POST api/kernels/{id}/interrupt": RUNNER,
    "POST api/kernels/{id}/restart": EDITOR,
    "GET api/kernels/{id}/channels": VIEWER,  # the WebSocket: iopub for all; requests by JUPYTER_MESSAGE_ROLES
    "GET api/sessions": VIEWER,
    "POST api/sessions": EDITOR,
    "GET api/sessions/{id}": VIEWER,
    "PATCH api/sessions/{id}": EDITOR,
    "DELETE api/sessions/{id}": EDITOR,
}

# Requests on a kernel's channels WebSocket; any other msg_type is an editor's.
JUPYTER_MESSAGE_ROLES: dict[str, str] = {
    "kernel_info_request": VIEWER,  # clients ask for it on connecting, before anything else
    "interrupt_request": RUNNER,
}


def jupyter_message_role(msg_type: str) -> str:
    """The least role that may send this request on a kernel's channels."""
    return JUPYTER_MESSAGE_ROLES.get(msg_type, EDITOR)


# Ops that read and change nothing: the audit trail does not record them
# when they succeed (every refused request is recorded, whatever its op).
READS: frozenset[str] = frozenset({
    "hello", "ping", "session.list", "session.attach", "session.detach", "session.snapshot",
    "session.document", "notebook.list", "notebook.get", "variables.list", "connections.list",
    "connections.types", "secrets.list", "tokens.list",
})


def is_role(value: Any) -> bool:
    return isinstance(value, str) and value in RANK


def required(op: str, message: Mapping[str, Any]) -> str:
    """The least role that may make this request (``message``: the raw
    request object). An op with no entry is the owner's alone."""
    rule = OP_ROLES.get(op, OWNER)
    return rule if isinstance(rule, str) else rule(message)


def allows(role: str, needed: str) -> bool:
    """Whether ``role`` may do what ``needed`` may (unknown roles: nothing)."""
    return role in RANK and RANK[role] >= RANK[needed]


def refusal(op: str, role: str, needed: str) -> str:
    """The message of a ``forbidden`` reply: what was refused, and why."""
    return f"your role '{role}' may not '{op}' in this form; it needs the role '{needed}' or above"
