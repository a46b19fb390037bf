// The page's frame: header (runtime, connection, forget-token), then either
// the home view (notebooks, sessions, the runtime's status) or the notebook
// view of the session the address names (#session=<id>).

import { html } from "../../vendor/preact.js";
import { createSession } from "../store.js";
import { closeSession, downloadSessionNotebook } from "../notebook_actions.js";
import { ConnectionIndicator } from "./connection.js";
import { NotebookView } from "./notebook.js";
import { NotebookList } from "./notebooks.js";
import { SessionList } from "./sessions.js";
import { RuntimeStatus } from "./status.js";

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
        onCreate=${create}
        onCloseSession=${(id) => closeSession(store, id)}
        onDownloadSession=${(id) => downloadSessionNotebook(store, id)} />
    </div>
    <${RuntimeStatus} runtime=${store.runtime.value} status=${store.status.value} error=${store.statusError.value} />
  </main>`;
}

export function App({ store, onForget }) {
  const runtime = store.runtime.value;
  const state = store.session.value;
  return html`<header class="top">
      <a class="brand" href="#">spinrt</a>
      ${runtime && html`<span class="muted">${runtime.version}</span>`}
      <span class="spacer"></span>
      <${ConnectionIndicator} state=${store.connection.value} />
      <button id="forget-token" class="quiet" type="button" onClick=${onForget}>Forget token</button>
    </header>
    ${state ? html`<${NotebookView} key=${state.id} store=${store} state=${state} />` : html`<${Home} store=${store} />`}`;
}
