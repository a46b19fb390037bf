// Named tokens (#tokens; tokens.list, tokens.create, tokens.revoke, the
// owner's: PROTOCOL.md section 9, docs/teams.rst). Each person or robot gets
// a token of their own with the role they need.
//
// Creating one shows its secret once, in a dialog with a copy button: the
// runtime keeps only its digest. The secret is held in one box object and
// written into the dialog's text by hand, never as a prop or a vnode's
// child: Preact and htm keep the first rendering of a template's static
// parts (and so their ancestors' props) for as long as the page lives.
// Closing the dialog empties the box and the text, so nothing on the page
// holds it any more (tests/test_browser_roles.py searches the heap).
// Revoking (asked first)
// refuses the token from then on and closes its open connections at once.
// Other roles are told the view is the owner's; nothing is asked for them.
//
// Usage: <${TokensView} store=${store} />

import { html, useEffect, useLayoutEffect, useRef, useState } from "../../vendor/preact.js";
import { may, roleOf, ROLES } from "../roles.js";
import { Modal } from "./modal.js";

const ROLE_DOES = {
  viewer: "reads sessions, notebooks and outputs",
  runner: "also runs notebooks and cells as they are written",
  editor: "also writes cells and notebooks (any code)",
  owner: "everything, tokens and the audit trail included",
};

function when(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
}

function expired(token, now = Date.now()) {
  return Boolean(token.expires) && new Date(token.expires).getTime() <= now;
}

/** The expiry field: "" is never; else a number of days (the runtime checks the range). */
export function daysOf(text) {
  const value = text.trim();
  if (!value) return null;
  const days = Number(value.replace(",", "."));
  if (!/^\d*[.,]?\d+$/.test(value) || !Number.isFinite(days)) {
    throw new Error(`“${value}” is not a number of days: give one (e.g. 30 or 0.5), or leave it empty for never.`);
  }
  return days;
}

function CreateForm({ store, connected, onCreated }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const submit = async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    const fields = form.elements;
    const name = fields.name.value.trim();
    setError(null);
    if (!name) {
      setError("Give the token a name: the person or robot it is for.");
      return;
    }
    const params = { name, role: fields.role.value };
    try {
      const days = daysOf(fields.expires.value);
      if (days !== null) params.expires_in_days = days;
    } catch (e) {
      setError(e.message);
      return;
    }
    setBusy(true);
    try {
      const reply = await store.client.request("tokens.create", params);
      const box = { token: reply.token, secret: reply.secret };
      reply.secret = null;
      form.reset();
      onCreated(box);
    } catch (e) {
      setError(e.message);
    } finally {
      setBusy(false);
    }
  };
  return html`<form id="token-form" class="admin-form" onSubmit=${submit} autocomplete="off">
      <label class="field"><span>Name</span>
        <input id="token-name" name="name" maxlength="64" placeholder="alice" spellcheck="false"
          aria-describedby=${error ? "token-form-error" : undefined} /></label>
      <label class="field"><span>Role</span>
        <select id="token-role" name="role">
          ${ROLES.map((role) => html`<option value=${role} title=${ROLE_DOES[role]}>${role}</option>`)}
        </select></label>
      <label class="field"><span>Expires in days</span>
        <input id="token-expires" name="expires" inputmode="decimal" placeholder="never" size="8" /></label>
      <button id="token-create" type="submit" disabled=${busy || !connected}>Create token</button>
    </form>
    ${error && html`<p class="error" role="alert" id="token-form-error">${error}</p>`}
    <p class="hint">A viewer ${ROLE_DOES.viewer}; a runner ${ROLE_DOES.runner}; an editor ${ROLE_DOES.editor}; an owner ${ROLE_DOES.owner}.</p>`;
}

/** The secret, once. `box`: {token, secret} from tokens.create; onClose empties it. */
function SecretDialog({ box, onClose }) {
  const token = box.token;
  const [copied, setCopied] = useState(null); // null | "copied" | "selected"
  const value = useRef(null);
  useLayoutEffect(() => {
    const code = value.current;
    code.textContent = box.secret;
    return () => (code.textContent = "");
  }, [box]);
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(box.secret);
      setCopied("copied");
    } catch {
      // no clipboard here (an http:// page on another host): select it for Ctrl+C
      const range = document.createRange();
      range.selectNodeContents(value.current);
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      setCopied("selected");
    }
  };
  return html`<${Modal} id="token-secret" title=${`Token created for ${token.name}`} onClose=${onClose}
      attrs=${{ "data-token-id": token.id }}>
    <p class="secret-warning" role="alert" id="token-secret-warning"><strong>Copy the secret now: it is shown this once.</strong>${" "}
      The runtime keeps only its digest, so it cannot be shown again; a lost secret is replaced (create another, revoke this one).</p>
    <div class="secret-box"><code id="token-secret-value" ref=${value}></code></div>
    <div class="buttons">
      <button id="copy-secret" type="button" onClick=${copy}>Copy</button>
      <button id="secret-done" type="button" class="quiet" onClick=${onClose}>Done</button>
    </div>
    ${copied === "copied" && html`<p class="hint" role="status" id="copy-done">Copied to the clipboard.</p>`}
    ${copied === "selected" && html`<p class="hint" role="status" id="copy-done">The browser does not allow copying here: it is selected, press Ctrl+C (Cmd+C on a Mac).</p>`}
    <p class="hint">Hand it to ${token.name} over a safe channel. They enter it in this page's token form and appear as
      ${" "}${token.name} (${token.role})${token.expires ? `, until ${when(token.expires)}` : ""}.</p>
  </${Modal}>`;
}

function RevokeDialog({ store, token, onDone, onClose }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const revoke = async () => {
    setBusy(true);
    setError(null);
    try {
      await store.client.request("tokens.revoke", { token: token.id });
      onDone();
    } catch (e) {
      setError(e.message);
      setBusy(false);
    }
  };
  return html`<${Modal} id="revoke-token" title=${`Revoke ${token.name}'s token?`} onClose=${onClose}
      attrs=${{ "data-token-id": token.id }}>
    <p>The token <code>${token.id}</code> (${token.name}, ${token.role}) is refused from now on, and every page and
      client using it is disconnected at once. Runs it started go on. This cannot be undone.</p>
    ${error && html`<p class="error" role="alert" id="revoke-error">${error}</p>`}
    <div class="buttons">
      <button id="confirm-revoke" type="button" class="danger" disabled=${busy} onClick=${revoke}>Revoke</button>
      <button type="button" class="quiet" data-action="cancel" autofocus onClick=${onClose}>Keep it</button>
    </div>
  </${Modal}>`;
}

function TokenRow({ token, onRevoke }) {
  const gone = expired(token);
  return html`<tr data-token-id=${token.id} data-name=${token.name} data-role=${token.role} data-expired=${gone ? "true" : "false"}>
    <td data-field="name">${token.name}</td>
    <td data-field="role"><span class="tag">${token.role}</span></td>
    <td data-field="id"><code>${token.id}</code></td>
    <td data-field="created" title=${token.created}>${when(token.created)}</td>
    <td data-field="expires" title=${token.expires || ""}>${token.expires ? when(token.expires) : html`<span class="muted">never</span>`}
      ${gone && html` <span class="tag expired">expired</span>`}</td>
    <td data-field="last-used" title=${token.last_used || ""}>${token.last_used ? when(token.last_used) : html`<span class="muted">never</span>`}</td>
    <td><button type="button" class="quiet small" data-action="revoke" onClick=${() => onRevoke(token)}>Revoke</button></td>
  </tr>`;
}

function Tokens({ store }) {
  const connected = store.connection.value === "open";
  const [tokens, setTokens] = useState(null);
  const [error, setError] = useState(null);
  const [created, setCreated] = useState(null); // the box {token, secret} while its dialog is open
  const [revoking, setRevoking] = useState(null);

  const refresh = async () => {
    try {
      setTokens((await store.client.request("tokens.list")).tokens);
      setError(null);
    } catch (e) {
      if (e.code !== "disconnected") setError(e.message);
    }
  };
  useEffect(() => {
    if (connected) refresh();
  }, [store, connected]);

  return html`<main class="admin" id="tokens-view" aria-busy=${tokens === null ? "true" : "false"}>
    <header class="admin-head"><a class="back" href="#" title="All notebooks and sessions">←</a><h2>Tokens</h2></header>
    <section class="card" aria-labelledby="token-new-title">
      <h2 id="token-new-title">New token</h2>
      <${CreateForm} store=${store} connected=${connected} onCreated=${(box) => {
        setCreated(box);
        refresh();
      }} />
    </section>
    <section class="card" aria-labelledby="token-list-title">
      <h2 id="token-list-title">Tokens in use</h2>
      ${error && html`<p class="error" role="alert" id="tokens-error">${error}</p>`}
      ${tokens === null
        ? html`<p class="muted">Loading…</p>`
        : tokens.length === 0
          ? html`<p class="muted" id="no-tokens">No named tokens yet: only <code>SPIN_TOKEN</code> opens this runtime.</p>`
          : html`<div class="table-scroll"><table id="tokens-table" class="admin-table">
              <thead><tr><th scope="col">Name</th><th scope="col">Role</th><th scope="col">Id</th><th scope="col">Created</th>
                <th scope="col">Expires</th><th scope="col">Last used</th><th scope="col"><span class="visually-hidden">Actions</span></th></tr></thead>
              <tbody>${tokens.map((t) => html`<${TokenRow} key=${t.id} token=${t} onRevoke=${setRevoking} />`)}</tbody>
            </table></div>`}
      <p class="hint"><code>SPIN_TOKEN</code> (the identity <code>owner</code>) is not listed: it changes in the runtime's
        environment, with a restart. To rotate a token, create a new one for the same name, hand it over, then revoke the old one.</p>
    </section>
    ${created && html`<${SecretDialog} box=${created} onClose=${() => {
      created.secret = null; // whatever still refers to the box, the secret is gone
      setCreated(null);
    }} />`}
    ${revoking && html`<${RevokeDialog} store=${store} token=${revoking} onClose=${() => setRevoking(null)}
      onDone=${() => {
        setRevoking(null);
        refresh();
      }} />`}
  </main>`;
}

export function TokensView({ store }) {
  if (store.you.value === null) return html`<main class="admin" id="tokens-view" data-state="connecting"><p class="muted">Connecting…</p></main>`;
  if (!may(store, "tokens.list")) {
    return html`<main class="admin" id="tokens-view" data-state="forbidden">
      <header class="admin-head"><a class="back" href="#" title="All notebooks and sessions">←</a><h2>Tokens</h2></header>
      <p class="error" role="alert" id="tokens-forbidden">Tokens are the owner's to manage; your role is ${roleOf(store)}.</p>
    </main>`;
  }
  return html`<${Tokens} store=${store} />`;
}
