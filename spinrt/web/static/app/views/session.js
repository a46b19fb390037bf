// The session opened by the address (#session=<id>): attached live, it shows
// the session's state, its last event and who else is attached (presence).
// The notebook view will take this place.

import { html } from "../../vendor/preact.js";

export function SessionPanel({ id, session, error }) {
  if (!id) return null;
  const clients = (session && session.clients) || [];
  return html`<section id="session-panel" class="card" data-session-id=${id} aria-labelledby="session-title">
    <h2 id="session-title">${session ? session.name || session.id : id}</h2>
    ${error && html`<p class="error" role="alert">${error}</p>`}
    ${session && html`<dl>
      <div class="row"><dt>State</dt><dd data-field="state">${session.state}</dd></div>
      <div class="row"><dt>Last event</dt><dd data-field="last-seq">${session.last_seq}</dd></div>
      <div class="row"><dt>Attached</dt><dd data-field="clients">
        ${clients.map((c) => html`<span class="tag" data-client=${c.client}>${c.name}</span>`)}
      </dd></div>
    </dl>`}
  </section>`;
}
