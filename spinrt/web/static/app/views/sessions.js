// The list of sessions (session.list) and the form that creates one
// (session.create). A session is opened through the address: #session=<id>.
// Each shows its state, the notebook it was made from, who is attached
// (names from `clients`), a download of its notebook with its outputs
// (.ipynb) and, while it is open, a Close action (asked twice:
// session.close cancels its runs and stops its kernel). Closed sessions
// stay listed and can be opened: their history stays readable; the owner
// may delete one for good (asked twice: session.delete). What the role may
// not do is not offered: the caller leaves out its callback (app/roles.js).

import { html, useState } from "../../vendor/preact.js";
import { useAction } from "./action.js";

function when(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
}

function CloseAction({ session, onClose }) {
  const [asking, setAsking] = useState(false);
  const { busy, error, run } = useAction();
  const close = async () => {
    if (await run(async () => (await onClose(session.id), true))) setAsking(false);
  };
  if (!asking) {
    return html`<button type="button" class="quiet small" data-action="close" onClick=${() => setAsking(true)}>Close</button>`;
  }
  return html`<div class="confirm" role="alert">
    <p>Close “${session.name || session.id}”? Its queued and running cells are cancelled and its kernel stops; its history stays readable.</p>
    <button type="button" class="danger small" data-action="confirm-close" disabled=${busy} onClick=${close}>Close session</button>
    <button type="button" class="quiet small" data-action="cancel" onClick=${() => setAsking(false)}>Keep it open</button>
    ${error && html`<p class="error" data-error>${error}</p>`}
  </div>`;
}

function DeleteAction({ session, onDelete }) {
  const [asking, setAsking] = useState(false);
  const { busy, error, run } = useAction();
  if (!asking) {
    return html`<button type="button" class="quiet small" data-action="delete" onClick=${() => setAsking(true)}>Delete</button>`;
  }
  return html`<div class="confirm" role="alert">
    <p>Delete “${session.name || session.id}” for good? Its history, outputs, variables and working directory are removed; this cannot be undone.</p>
    <button type="button" class="danger small" data-action="confirm-delete" disabled=${busy}
      onClick=${() => run(() => onDelete(session.id))}>Delete session</button>
    <button type="button" class="quiet small" data-action="cancel" onClick=${() => setAsking(false)}>Keep it</button>
    ${error && html`<p class="error" data-error>${error}</p>`}
  </div>`;
}

function DownloadAction({ session, onDownload }) {
  const { busy, error, run } = useAction();
  return html`<button type="button" class="quiet small" data-action="download" disabled=${busy}
      title="The session's notebook with its outputs, as .ipynb" onClick=${() => run(() => onDownload(session.id))}>
      ${busy ? "Preparing…" : "Download .ipynb"}</button>
    ${error && html`<p class="error" data-error>${error}</p>`}`;
}

function SessionItem({ session, selected, onCloseSession, onDeleteSession, onDownloadSession }) {
  const clients = session.clients || [];
  return html`<li data-session-id=${session.id} data-state=${session.state} data-notebook=${session.notebook || undefined}
      aria-current=${selected ? "true" : undefined}>
    <a href=${"#session=" + encodeURIComponent(session.id)}>${session.name || session.id}</a>
    <span class="meta">
      <span class="state">${session.state}</span>
      ${session.notebook && html`<span data-field="notebook" title="The notebook it was started from">${session.notebook}</span>`}
      <span>${when(session.created)}</span>
      <span title="events">${session.last_seq} events</span>
      <span class="people" data-field="clients">${clients.length === 0
        ? html`<span class="muted">nobody attached</span>`
        : clients.map((c) => html`<span class="tag" data-client=${c.client}>${c.name}</span>`)}</span>
    </span>
    <span class="row-actions">
      ${onDownloadSession && html`<${DownloadAction} session=${session} onDownload=${onDownloadSession} />`}
      ${onCloseSession && session.state !== "closed" && html`<${CloseAction} session=${session} onClose=${onCloseSession} />`}
      ${onDeleteSession && session.state === "closed" && html`<${DeleteAction} session=${session} onDelete=${onDeleteSession} />`}
    </span>
  </li>`;
}

/** `onCreate(name)`, `onCloseSession(id)`, `onDeleteSession(id)` and
 * `onDownloadSession(id)` (optional; promises) create a session, close or
 * delete one and download its notebook; without them those actions are not shown. */
export function SessionList({ sessions, error, selected, connected, onCreate, onCloseSession, onDeleteSession, onDownloadSession }) {
  const [busy, setBusy] = useState(false);
  const [createError, setCreateError] = useState(null);
  const submit = async (event) => {
    event.preventDefault();
    const field = event.currentTarget.elements.name;
    setBusy(true);
    setCreateError(null);
    try {
      await onCreate(field.value.trim());
      field.value = "";
    } catch (e) {
      setCreateError(e.message);
    } finally {
      setBusy(false);
    }
  };
  return html`<section id="sessions" class="card" aria-labelledby="sessions-title">
    <h2 id="sessions-title">Sessions</h2>
    ${onCreate && html`<form class="inline" onSubmit=${submit}>
      <input id="new-session-name" name="name" placeholder="Name (optional)" maxlength="200" autocomplete="off" />
      <button id="new-session" type="submit" disabled=${busy || !connected}>New session</button>
    </form>`}
    ${createError && html`<p class="error" role="alert">${createError}</p>`}
    ${error && html`<p class="error" role="alert">${error}</p>`}
    ${sessions === null
      ? html`<p class="muted">Loading…</p>`
      : sessions.length === 0
        ? html`<p class="muted" id="no-sessions">No sessions yet.</p>`
        : html`<ul class="sessions">${sessions.map((s) => html`<${SessionItem} key=${s.id} session=${s} selected=${s.id === selected}
            onCloseSession=${connected ? onCloseSession : null} onDeleteSession=${connected ? onDeleteSession : null}
            onDownloadSession=${onDownloadSession} />`)}</ul>`}
  </section>`;
}
