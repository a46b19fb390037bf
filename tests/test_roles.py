"""Roles (PROTOCOL.md section 9): the table covers every op, and the full ops x roles
matrix over real WebSocket connections to a real runtime: what a role may not do is
``forbidden``, changes nothing and is on the audit trail; what it may do is never refused."""

from __future__ import annotations

import json
import os
from typing import Any, Awaitable, Callable

from cryptography.fernet import Fernet
from twisted.trial import unittest

from spinrt import protocol as proto
from spinrt import roles
from spinrt.web.ops import HANDLERS

from .support import Client, start_runtime, ws_url

V, R, E, O = roles.VIEWER, roles.RUNNER, roles.EDITOR, roles.OWNER


class Fixture:
    """What a request form needs, made by the SPIN_TOKEN owner: an open session
    whose document holds cell ``c1``, a closed session and a stored notebook."""

    count = 0

    def __init__(self, sid: str, closed: str, notebook: str) -> None:
        self.sid, self.closed, self.notebook = sid, closed, notebook

    @classmethod
    async def make(cls, owner: Client) -> "Fixture":
        cls.count += 1
        n = cls.count
        sid = (await owner.request("session.create", name=f"fixture {n}"))["session"]["id"]
        reply = await owner.request("cell.set", session=sid, cell={"id": "c1", "type": "markdown", "source": "# one"})
        assert reply["ok"], reply
        closed = (await owner.request("session.create", name=f"closed {n}"))["session"]["id"]
        assert (await owner.request("session.close", session=closed))["ok"]
        notebook = f"nb-{n}"
        reply = await owner.request("notebook.save", name=notebook,
                                    cells=[{"type": "markdown", "source": "# nb", "id": "m1"}])
        assert reply["ok"], reply
        return cls(sid, closed, notebook)


MD = {"type": "markdown", "source": "# hi"}

# (label, op, the role PROTOCOL.md section 9 gives it, params from a fixture).
# Written out here, not derived from spinrt.roles: the two must agree.
FORMS: list[tuple[str, str, str, Callable[[Fixture], dict[str, Any]]]] = [
    ("hello", "hello", V, lambda f: {}),
    ("ping", "ping", V, lambda f: {}),
    ("session.list", "session.list", V, lambda f: {}),
    ("session.attach", "session.attach", V, lambda f: {"session": f.sid}),
    ("session.detach", "session.detach", V, lambda f: {"session": f.sid}),
    ("session.snapshot", "session.snapshot", V, lambda f: {"session": f.sid}),
    ("session.document", "session.document", V, lambda f: {"session": f.sid}),
    ("notebook.list", "notebook.list", V, lambda f: {}),
    ("notebook.get", "notebook.get", V, lambda f: {"name": f.notebook}),
    ("variables.list", "variables.list", V, lambda f: {"session": f.sid}),
    ("connections.list", "connections.list", V, lambda f: {}),
    ("connections.types", "connections.types", V, lambda f: {}),
    ("secrets.list of a session", "secrets.list", V, lambda f: {"session": f.sid}),
    ("secrets.list of the runtime", "secrets.list", V, lambda f: {"scope": "runtime"}),
    ("cell.run by id", "cell.run", R, lambda f: {"session": f.sid, "cell_id": "c1"}),
    ("cells.run by ids", "cells.run", R, lambda f: {"session": f.sid, "cell_ids": ["c1"]}),
    ("run.cancel", "run.cancel", R, lambda f: {"session": f.sid, "run": "run_none"}),
    ("secrets.set", "secrets.set", R, lambda f: {"session": f.sid, "secrets": {"MATRIX_SECRET": "m-value-1"}}),
    ("secrets.delete of a session", "secrets.delete", R, lambda f: {"session": f.sid, "names": ["MATRIX_SECRET"]}),
    ("session.create from a notebook", "session.create", R, lambda f: {"notebook": f.notebook}),
    ("notebook.parameters", "notebook.parameters", R, lambda f: {"name": f.notebook}),
    ("session.create", "session.create", E, lambda f: {"name": "scratch"}),
    ("session.create with null notebook", "session.create", E, lambda f: {"notebook": None}),
    ("session.close", "session.close", E, lambda f: {"session": f.sid}),
    ("cell.run of a whole cell", "cell.run", E, lambda f: {"session": f.sid, "cell": {"id": "c1", **MD}}),
    ("cells.run of whole cells", "cells.run", E, lambda f: {"session": f.sid, "cells": [{"id": "c9", **MD}]}),
    ("cell.set", "cell.set", E, lambda f: {"session": f.sid, "cell": {"id": "c2", **MD}}),
    ("cell.delete", "cell.delete", E, lambda f: {"session": f.sid, "cell_id": "c1"}),
    ("cell.move", "cell.move", E, lambda f: {"session": f.sid, "cell_id": "c1", "after": None}),
    ("notebook.save", "notebook.save", E, lambda f: {"name": f.notebook + "-new", "cells": []}),
    ("notebook.rename", "notebook.rename", E, lambda f: {"name": f.notebook, "new_name": f.notebook + "-r"}),
    ("notebook.delete", "notebook.delete", E, lambda f: {"name": f.notebook}),
    ("kernel.restart", "kernel.restart", E, lambda f: {"session": f.closed}),  # no kernel started
    ("variables.clear", "variables.clear", E, lambda f: {"session": f.sid}),
    ("connections.test", "connections.test", E, lambda f: {"name": "none"}),
    ("session.delete", "session.delete", O, lambda f: {"session": f.closed}),
    ("secrets.set in the runtime", "secrets.set", O,
     lambda f: {"scope": "runtime", "secrets": {"MATRIX_RUNTIME": "m-value-2"}}),
    ("secrets.delete in the runtime", "secrets.delete", O, lambda f: {"scope": "runtime", "names": ["SHARED"]}),
    ("runtime.configure", "runtime.configure", O, lambda f: {"host_ssh": {"enabled": False}}),
    ("connections.set", "connections.set", O,
     lambda f: {"name": "matrix", "host": "h.example", "username": "u", "private_key": "not a key"}),
    ("connections.delete", "connections.delete", O, lambda f: {"name": "none"}),
    ("connections.set of a typed connection", "connections.set", O,
     lambda f: {"name": "matrix-prom", "type": "prometheus", "url": "http://prom.example:9090", "token": "t-123456"}),
    ("tokens.create", "tokens.create", O, lambda f: {"name": "made-in-matrix", "role": "viewer"}),
    ("tokens.list", "tokens.list", O, lambda f: {}),
    ("tokens.revoke", "tokens.revoke", O, lambda f: {"token": "tk0000000000000000"}),
]


class TableTests(unittest.TestCase):
    def test_every_op_has_a_role(self) -> None:
        missing = sorted(set(proto.OPS) - set(roles.OP_ROLES))
        self.assertEqual(missing, [], "declare the role of these ops in spinrt.roles.OP_ROLES")
        self.assertEqual(set(HANDLERS), set(proto.OPS))
        for op, rule in roles.OP_ROLES.items():
            if isinstance(rule, str):
                self.assertIn(rule, roles.ROLES, op)

    def test_every_op_is_in_the_matrix(self) -> None:
        self.assertEqual(set(proto.OPS) - {op for _, op, _, _ in FORMS}, set(),
                         "add the new op's forms to tests/test_roles.py FORMS")

    def test_the_table_says_what_the_protocol_says(self) -> None:
        fixture = Fixture("ss_x", "ss_y", "nb")
        for label, op, needed, params in FORMS:
            self.assertEqual(roles.required(op, params(fixture)), needed, label)
        # Forms decided by the raw request: the runtime scope of secrets is the owner's.
        self.assertEqual(roles.required("secrets.set", {"scope": "runtime"}), O)
        self.assertEqual(roles.required("secrets.delete", {"session": "s"}), R)
        self.assertEqual(roles.required("secrets.list", {"scope": "runtime"}), V)
        # An op nobody declared is the owner's alone.
        self.assertEqual(roles.required("made.up", {}), O)
        self.assertFalse(roles.allows("root", V))

    def test_reads_are_ops(self) -> None:
        for op in roles.READS:
            self.assertIn(op, roles.OP_ROLES)
            self.assertEqual(roles.required(op, {}) if op != "tokens.list" else V, V, op)

    def test_routes(self) -> None:
        self.assertEqual(roles.ROUTE_ROLES, {"api/status": V, "api/sessions": V, "api/audit": O, "metrics": V})


def fingerprint(service: Any) -> str:
    """Everything a request could change, read from inside the runtime."""
    m = service.manager
    sessions = {sid: [s.state, s.last_seq, sorted(s.variables), sorted(s.secrets), s.document.cells()]
                for sid, s in m.sessions.items()}
    notebooks_dir = service.config.notebooks_dir
    notebooks = sorted((name, os.stat(os.path.join(notebooks_dir, name)).st_mtime_ns)
                       for name in os.listdir(notebooks_dir))
    tokens = [{k: v for k, v in t.items() if k != "last_used"} for t in service.tokens.list()]
    runtime_secrets = {name: service.runtime_secrets[name] for name in service.runtime_secrets}
    ssh = service.cell_services.settings["ssh"]
    typed = service.cell_services.settings["connections"].list()
    return json.dumps([sessions, notebooks, tokens, runtime_secrets, ssh.list_connections(), ssh.status(), typed],
                      sort_keys=True,
                      default=str)


class MatrixTests(unittest.TestCase):
    timeout = 120

    async def setUp(self) -> None:
        self.service = await start_runtime(self, environ={"SPIN_SECRET_KEY": Fernet.generate_key().decode()})
        self.url = ws_url(self.service)
        self.owner = await Client.connect(self.url)
        self.addCleanup(self.owner.close)
        reply = await self.owner.request("secrets.set", scope="runtime", secrets={"SHARED": "shared-value-1"})
        assert reply["ok"], reply
        self.clients: dict[str, Client] = {}
        for role in roles.ROLES:
            reply = await self.owner.request("tokens.create", name=f"{role}-person", role=role)
            assert reply["ok"], reply
            client = await Client.connect(self.url, token=reply["secret"])
            self.addCleanup(client.close)
            welcome = await client.wait_for(lambda m: m.get("event") == "welcome")
            self.assertEqual((welcome["you"]["name"], welcome["you"]["role"]), (f"{role}-person", role))
            self.clients[role] = client

    async def test_every_op_with_every_role(self) -> None:
        shared = await Fixture.make(self.owner)
        refused = allowed = 0
        for label, op, needed, params in FORMS:
            for role, client in self.clients.items():
                if roles.allows(role, needed):
                    fixture = await Fixture.make(self.owner)  # an allowed request may change things
                    reply = await client.request(op, **params(fixture))
                    error = reply.get("error") or {}
                    self.assertNotEqual(error.get("code"), "forbidden", f"{label} as {role}: {reply}")
                    allowed += 1
                else:
                    before = fingerprint(self.service)
                    reply = await client.request(op, **params(shared))
                    self.assertFalse(reply["ok"], f"{label} as {role}")
                    self.assertEqual(reply["error"]["code"], "forbidden", f"{label} as {role}: {reply}")
                    self.assertIn(f"'{needed}'", reply["error"]["message"])
                    self.assertEqual(fingerprint(self.service), before, f"{label} as {role} changed something")
                    refused += 1
        # 4 roles x every form, and each role refused exactly what is above it.
        self.assertEqual(refused + allowed, 4 * len(FORMS))
        expected_refusals = sum(roles.RANK[needed] for _, _, needed, _ in FORMS)
        self.assertEqual(refused, expected_refusals)
        rows = await self.service.audit.page(limit=10_000)
        forbidden = [r for r in rows if r["outcome"] == "forbidden"]
        self.assertEqual(len(forbidden), refused)
        self.assertTrue(all(r["identity"].endswith("-person") and r["token"].startswith("tk") for r in forbidden))
        # No secret value reached the audit trail.
        for value in ("m-value-1", "m-value-2", "shared-value-1"):
            self.assertNotIn(value, json.dumps(rows))

    async def test_the_role_is_checked_before_the_parameters(self) -> None:
        viewer = self.clients[V]
        for op, params in [("cell.run", {"cell": "not a cell"}), ("cell.set", {}),
                           ("tokens.create", {"role": 7}), ("session.create", {"variables": []})]:
            reply = await viewer.request(op, **params)
            self.assertEqual(reply["error"]["code"], "forbidden", (op, reply))
        # A runner may run a cell by id, but not send code in the same request.
        runner = self.clients[R]
        reply = await runner.request("cell.run", session="ss_none", cell_id="c1", cell=MD)
        self.assertEqual(reply["error"]["code"], "forbidden")
        reply = await runner.request("cell.run", session="ss_none", cell_id="c1")
        self.assertEqual(reply["error"]["code"], "no_such_session")
        # Unknown ops stay unknown, whoever asks.
        reply = await viewer.request("made.up")
        self.assertEqual(reply["error"]["code"], "unknown_op")

    async def test_runs_and_edits_name_who_did_them(self) -> None:
        fixture = await Fixture.make(self.owner)
        editor, runner = self.clients[E], self.clients[R]
        self.assertTrue((await runner.request("session.attach", session=fixture.sid))["ok"])
        reply = await editor.request("cell.set", session=fixture.sid, cell={"id": "c3", **MD})
        self.assertTrue(reply["ok"], reply)
        event = await runner.wait_for(lambda m: m.get("event") == "cell.set" and m["cell"]["id"] == "c3")
        self.assertEqual(event["by"], "editor-person")
        reply = await runner.request("cell.run", session=fixture.sid, cell_id="c3")
        queued = await runner.wait_for(lambda m: m.get("event") == "run.queued" and m["run"] == reply["run"])
        self.assertEqual(queued["by"], "runner-person")
        listed = await editor.request("session.list")
        (mine,) = [s for s in listed["sessions"] if s["id"] == fixture.sid]
        self.assertIn({"name": "runner-person", "role": "runner"}, [{k: c[k] for k in ("name", "role")}
                                                                    for c in mine["clients"]])
