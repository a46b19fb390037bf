// Who may do what, as the page sees it (PROTOCOL.md section 9; the runtime's
// table is spinrt/roles.py, and tests/test_browser_roles.py checks that this
// copy says the same for every op and form). Views ask here before they
// offer a control; the runtime checks every request anyway (`forbidden`).
//
//   roleOf(store)             the connection's role: welcome's `you.role` (null until then)
//   may(store, op, params?)   whether that role may send this request
//   mayRoute(store, route)    whether it may GET this HTTP route ("api/audit")
//   atLeast(role, needed)     the order: viewer < runner < editor < owner

export const ROLES = ["viewer", "runner", "editor", "owner"];
export const RANK = Object.freeze(Object.fromEntries(ROLES.map((role, rank) => [role, rank])));

// A parameter counts as given unless it is absent or null (as the runtime reads it).
const given = (params, name) => params[name] !== undefined && params[name] !== null;

// An op whose role depends on the request's form maps to a function of its parameters.
export const OP_ROLES = Object.freeze({
  hello: "viewer",
  ping: "viewer",
  "session.list": "viewer",
  "session.attach": "viewer",
  "session.detach": "viewer",
  "session.snapshot": "viewer",
  "session.document": "viewer",
  "notebook.list": "viewer",
  "notebook.get": "viewer",
  "variables.list": "viewer",
  "connections.list": "viewer",
  "connections.types": "viewer",
  "secrets.list": "viewer",
  // a whole cell is code of one's own (an editor's); a document's cell by id, a runner's
  "cell.run": (p) => (given(p, "cell") ? "editor" : "runner"),
  "cells.run": (p) => (given(p, "cells") ? "editor" : "runner"),
  "run.cancel": "runner",
  "secrets.set": (p) => (p.scope === "runtime" ? "owner" : "runner"),
  "secrets.delete": (p) => (p.scope === "runtime" ? "owner" : "runner"),
  // from a stored notebook, its cells as they are: a runner's; from scratch, an editor's
  "session.create": (p) => (given(p, "notebook") ? "runner" : "editor"),
  "notebook.parameters": "runner",
  "session.close": "editor",
  "cell.set": "editor",
  "cell.delete": "editor",
  "cell.move": "editor",
  "notebook.save": "editor",
  "notebook.rename": "editor",
  "notebook.delete": "editor",
  "kernel.restart": "editor",
  "variables.clear": "editor",
  "connections.test": "editor",
  "runtime.configure": "owner",
  "connections.set": "owner",
  "connections.delete": "owner",
  "tokens.create": "owner",
  "tokens.list": "owner",
  "tokens.revoke": "owner",
  "session.delete": "owner",
});

export const ROUTE_ROLES = Object.freeze({
  "api/status": "viewer",
  "api/sessions": "viewer",
  "api/audit": "owner",
  metrics: "viewer",
});

/** Whether `role` may do what `needed` may (an unknown role: nothing). */
export function atLeast(role, needed) {
  return typeof role === "string" && Object.hasOwn(RANK, role) && RANK[role] >= RANK[needed];
}

/** The least role that may send this request; an op not in the table is the owner's alone. */
export function needed(op, params = {}) {
  const rule = Object.hasOwn(OP_ROLES, op) ? OP_ROLES[op] : "owner";
  return typeof rule === "function" ? rule(params) : rule;
}

/** welcome's `you.role`, or null until the runtime has said (then nothing
 * is offered: deny by default, as the runtime does). */
export function roleOf(store) {
  const you = store.you.value;
  return you && typeof you.role === "string" ? you.role : null;
}

export function may(store, op, params = {}) {
  return atLeast(roleOf(store), needed(op, params));
}

export function mayRoute(store, route) {
  return atLeast(roleOf(store), ROUTE_ROLES[route] || "owner");
}
