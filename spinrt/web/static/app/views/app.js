// The page's frame: header (runtime, connection, forget-token) and the views.

import { html } from "../../vendor/preact.js";
import { closeSession, downloadSessionNotebook } from "../notebook_actions.js";
import { createSession } from "../store.js";
import { ConnectionIndicator } from "./connection.js";
import { NotebookList } from "./notebooks.js";
import { SessionPanel } from "./session.js";
import { SessionList } from "./sessions.js";
import { RuntimeStatus } from "./status.js";

export function App({ store, onForget }) {
  const runtime = store.runtime.value;
  const create = async (name) => {
    const session = await createSession(store, name);
    window.location.hash = "#session=" + encodeURIComponent(session.id);
  };
  return html`<header class="top">
      <a class="brand" href="#">spinrt</a>
      ${runtime && html`<span class="muted">${runtime.version}</span>`}
      <span class="spacer"></span>
      <${ConnectionIndicator} state=${store.connection.value} />
      <button id="forget-token" class="quiet" type="button" onClick=${onForget}>Forget token</button>
    </header>
    <main class="columns">
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
        <${SessionPanel} id=${store.selected.value} session=${store.attached.value} error=${store.attachError.value} />
      </div>
      <${RuntimeStatus} runtime=${runtime} status=${store.status.value} error=${store.statusError.value} />
    </main>`;
}
