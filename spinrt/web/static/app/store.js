// The page's state as signals, fed by the protocol client. Views read these
// signals and call the actions; nothing here touches the DOM.

import { signal } from "../vendor/preact.js";
import { fetchStatus, SpinClient } from "./client.js";
import { SessionState } from "./session_state.js";
import { fragmentValue } from "./token.js";

const POLL_EVERY_MS = 5000; // no runtime-wide event announces new sessions: ask

export function createStore(token) {
  const client = new SpinClient(token);
  const store = {
    client,
    connection: signal("connecting"),
    runtime: signal(null), // hello's runtime: {version, protocol, cell_types, features}
    status: signal(null), // GET api/status
    statusError: signal(null),
    sessions: signal(null), // session.list's sessions, newest first; null until loaded
    sessionsError: signal(null),
    selected: signal(null), // the #session=<id> of the address
    session: signal(null), // the SessionState of the selected session
    you: signal(null), // welcome's `you`: {client, name, role} (PROTOCOL.md section 9)
  };

  client.addEventListener("state", (e) => (store.connection.value = e.detail));
  let first = true;
  client.addEventListener("open", (e) => {
    store.runtime.value = e.detail;
    refreshSessions(store);
    refreshStatus(store);
    // After a reconnect the client has attached again by itself (since the last seq seen).
    if (first) select(store, fragmentValue("session"));
    first = false;
  });
  client.addEventListener("message", (e) => {
    if (e.detail.event === "welcome" && e.detail.you) store.you.value = e.detail.you;
  });
  client.addEventListener("detached", (e) => {
    const state = store.session.value;
    if (state && state.id === e.detail.session) state.error.value = e.detail.error.message;
  });

  const poll = setInterval(() => {
    if (client.state === "open" && document.visibilityState === "visible") {
      refreshSessions(store);
      refreshStatus(store);
    }
  }, POLL_EVERY_MS);
  window.addEventListener("hashchange", () => select(store, fragmentValue("session")));
  store.stop = () => {
    clearInterval(poll);
    client.close();
  };
  client.connect();
  return store;
}

export async function refreshStatus(store) {
  try {
    store.status.value = await fetchStatus(store.client.token);
    store.statusError.value = null;
  } catch (error) {
    store.statusError.value = error.message;
  }
}

export async function refreshSessions(store) {
  try {
    const reply = await store.client.request("session.list");
    const sessions = [...reply.sessions].sort((a, b) => String(b.created).localeCompare(String(a.created)));
    store.sessions.value = sessions;
    store.sessionsError.value = null;
  } catch (error) {
    if (error.code !== "disconnected") store.sessionsError.value = error.message;
  }
}

export async function createSession(store, name) {
  const params = name ? { name } : {};
  const reply = await store.client.request("session.create", params);
  await refreshSessions(store);
  return reply.session;
}

/** Opens the session of the address (#session=<id>): its snapshot, then
 * its live events; the previous one is detached. */
export function select(store, id) {
  const previous = store.session.value;
  if (previous && previous.id === id) return;
  store.selected.value = id || null;
  if (previous) previous.close();
  store.session.value = null;
  if (!id) return;
  const state = new SessionState(store.client, id);
  store.session.value = state;
  state.open();
}
