// The page's state as signals, fed by the protocol client. Views read these
// signals and call the actions; nothing here touches the DOM.

import { signal } from "../vendor/preact.js";
import { fetchStatus, SpinClient } from "./client.js";
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
    selected: signal(fragmentValue("session")), // the #session=<id> of the address
    attached: signal(null), // {id, name, state, last_seq, clients} of the selected session
    attachError: signal(null),
  };

  client.addEventListener("state", (e) => (store.connection.value = e.detail));
  client.addEventListener("open", (e) => {
    store.runtime.value = e.detail;
    refreshSessions(store);
    refreshStatus(store);
    // After a reconnect the client has attached again by itself (since the last seq).
    if (store.selected.value && !store.attached.value) select(store, store.selected.value);
  });
  client.addEventListener("message", (e) => onMessage(store, e.detail));
  client.addEventListener("detached", (e) => {
    if (store.attached.value && store.attached.value.id === e.detail.session) {
      store.attached.value = null;
      store.attachError.value = e.detail.error.message;
    }
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

/** Attach to the session of the address (#session=<id>), detaching the previous one. */
export async function select(store, id) {
  const previous = store.attached.value;
  store.selected.value = id;
  store.attachError.value = null;
  if (previous && previous.id !== id) {
    store.attached.value = null;
    await store.client.detach(previous.id);
  }
  if (!id) return;
  try {
    const reply = await store.client.attach(id, store.client.lastSeq(id) ?? 0);
    if (store.selected.value === id) store.attached.value = { ...reply.session, clients: reply.clients || reply.session.clients };
  } catch (error) {
    if (error.code !== "disconnected" && store.selected.value === id) store.attachError.value = error.message;
  }
}

function onMessage(store, message) {
  const current = store.attached.value;
  if (!current || message.session !== current.id) return;
  if (message.event === "presence") {
    store.attached.value = { ...current, clients: message.clients };
  } else if (typeof message.seq === "number") {
    const state = message.event === "session.closed" ? "closed" : current.state;
    store.attached.value = { ...current, last_seq: message.seq, state };
  }
}
