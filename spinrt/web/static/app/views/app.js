// The page's frame: header (runtime, who you are, the owner's views,
// connection, forget-token), then the home view (notebooks, sessions, the
// runtime's status), the notebook view of the session the address names
// (#session=<id>), or the owner's audit trail (#audit) or tokens (#tokens).
// What the role may not do is not offered (app/roles.js).

import { html } from "../../vendor/preact.js";
import { createSession } from "../store.js";
import { closeSession, deleteSession, downloadSessionNotebook } from "../notebook_actions.js";
import { may, mayRoute } from "../roles.js";
import { route } from "../route.js";
import { AuditView } from "./audit.js";
import { ConnectionIndicator } from "./connection.js";
import { NotebookView } from "./notebook.js";
import { NotebookList } from "./notebooks.js";
import { SessionList } from "./sessions.js";
import { RuntimeStatus } from "./status.js";
import { TokensView } from "./tokens.js";
import { You } from "./you.js";

function Home({ store }) {
  const create = async (name) => {
    const session = await createSession(store, name);
    window.location.hash = "#session=" + encodeURIComponent(session.id);
  };
  return html`<main class="columns" id="home">
    <div>
      <${NotebookList} store=${store} />
      <${SessionList}
        sessions=${store.sessions.value}
        error=${store.sessionsError.value}
        selected=${store.selected.value}
        connected=${store.connection.value === "open"}
        onCreate=${may(store, "session.create") ? create : null}
        onCloseSession=${may(store, "session.close") ? (id) => closeSession(store, id) : null}
        onDeleteSession=${may(store, "session.delete") ? (id) => deleteSession(store, id) : null}
        onDownloadSession=${(id) => downloadSessionNotebook(store, id)} />
    </div>
    <${RuntimeStatus} runtime=${store.runtime.value} status=${store.status.value} error=${store.statusError.value} />
  </main>`;
}

export function App({ store, onForget }) {
  const runtime = store.runtime.value;
  const state = store.session.value;
  const view = route.value;
  let main;
  if (view === "audit") main = html`<${AuditView} store=${store} />`;
  else if (view === "tokens") main = html`<${TokensView} store=${store} />`;
  else if (state) main = html`<${NotebookView} key=${state.id} store=${store} state=${state} />`;
  else main = html`<${Home} store=${store} />`;
  return html`<header class="top">
      <a class="brand" href="#">spinrt</a>
      ${runtime && html`<span class="muted">${runtime.version}</span>`}
      <nav class="top-nav" aria-label="Administration">
        ${mayRoute(store, "api/audit") && html`<a id="audit-link" href="#audit" aria-current=${view === "audit" ? "page" : undefined}>Audit</a>`}
        ${may(store, "tokens.list") && html`<a id="tokens-link" href="#tokens" aria-current=${view === "tokens" ? "page" : undefined}>Tokens</a>`}
      </nav>
      <span class="spacer"></span>
      <${You} you=${store.you.value} />
      <${ConnectionIndicator} state=${store.connection.value} />
      <button id="forget-token" class="quiet" type="button" onClick=${onForget}>Forget token</button>
    </header>
    ${main}`;
}
