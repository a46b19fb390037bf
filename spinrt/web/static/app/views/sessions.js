// The list of sessions (session.list) and the form that creates one
// (session.create). A session is opened through the address: #session=<id>.

import { html, useState } from "../../vendor/preact.js";

function when(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
}

function SessionItem({ session, selected }) {
  const clients = session.clients || [];
  return html`<li data-session-id=${session.id} data-state=${session.state} aria-current=${selected ? "true" : undefined}>
    <a href=${"#session=" + encodeURIComponent(session.id)}>${session.name || session.id}</a>
    <span class="meta">
      <span class="state">${session.state}</span>
      <span>${when(session.created)}</span>
      <span title="events">${session.last_seq} events</span>
      ${clients.length > 0 && html`<span class="people">${clients.length} attached</span>`}
    </span>
  </li>`;
}

export function SessionList({ sessions, error, selected, connected, onCreate }) {
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
    <form class="inline" onSubmit=${submit}>
      <input id="new-session-name" name="name" placeholder="Name (optional)" maxlength="200" autocomplete="off" />
      <button id="new-session" type="submit" disabled=${busy || !connected}>New session</button>
    </form>
    ${createError && html`<p class="error" role="alert">${createError}</p>`}
    ${error && html`<p class="error" role="alert">${error}</p>`}
    ${sessions === null
      ? html`<p class="muted">Loading…</p>`
      : sessions.length === 0
        ? html`<p class="muted" id="no-sessions">No sessions yet.</p>`
        : html`<ul class="sessions">${sessions.map((s) => html`<${SessionItem} key=${s.id} session=${s} selected=${s.id === selected} />`)}</ul>`}
  </section>`;
}
