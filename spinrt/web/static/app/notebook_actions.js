// What a person does with notebooks and sessions, as requests: the notebook
// library (PROTOCOL.md section 10), starting a session from a notebook with
// its parameters (section 12), closing and deleting sessions, and a session's notebook
// downloaded or saved to the library. No view state here: the views call
// these and show what they resolve with, or the error's message (the
// runtime's own text where it has one).
//
// Errors are ProtocolErrors (client.js): the reply's code (`conflict`,
// `no_such_notebook`, `bad_request` ...) or one of ours:
//   "exists"      a notebook of that name is in the library (details: name, version, suggestion)
//   "not_json"    an imported file is not JSON
//   "not_notebook" an imported file is JSON but not a notebook object
//   "too_large"   an imported file is larger than the runtime takes in one message

import { signal } from "../vendor/preact.js";
import { fetchSessionNotebook, ProtocolError } from "./client.js";
import { refreshSessions } from "./store.js";

// The runtime closes a connection whose message is over --max-message-size
// (16 MiB unless configured otherwise, which hello does not tell): refuse
// such a file here rather than lose the connection.
export const MAX_IMPORT_BYTES = 16 * 1024 * 1024 - 64 * 1024;

const libraries = new WeakMap();

/** The library as signals, one per store: `notebooks` (notebook.list's
 * list, null until loaded) and `error` (why it could not be listed). */
export function notebookLibrary(store) {
  let library = libraries.get(store);
  if (!library) {
    library = { notebooks: signal(null), error: signal(null) };
    libraries.set(store, library);
  }
  return library;
}

/** Lists the library again; resolves with the list (null when it could not). */
export async function refreshNotebooks(store) {
  const library = notebookLibrary(store);
  try {
    const { notebooks } = await store.client.request("notebook.list");
    library.notebooks.value = notebooks;
    library.error.value = null;
    return notebooks;
  } catch (error) {
    if (error.code !== "disconnected") library.error.value = error.message;
    return null;
  }
}

/** A name as the runtime files it (NFC, one ".ipynb" implied), to compare
 * with the listed names; the runtime itself says what is wrong with a name. */
export function canonicalName(name) {
  const nfc = name.normalize("NFC");
  return nfc.endsWith(".ipynb") && nfc.length > 6 ? nfc.slice(0, -6) : nfc;
}

/** `name (2)`, `name (3)` ...: the first that no listed notebook has. */
export function freeName(name, notebooks) {
  const taken = new Set((notebooks || []).map((n) => n.name));
  const base = canonicalName(name);
  if (!taken.has(base)) return base;
  for (let n = 2; ; n++) {
    const candidate = `${base} (${n})`;
    if (!taken.has(candidate)) return candidate;
  }
}

/** notebook.save writes over a notebook of the same name: look first (the
 * protocol has no "create only" form, so this narrows the race, no more). */
async function ensureFree(store, name) {
  const { notebooks } = await store.client.request("notebook.list");
  notebookLibrary(store).notebooks.value = notebooks;
  const existing = notebooks.find((n) => n.name === canonicalName(name));
  if (existing) {
    throw new ProtocolError("exists", `A notebook named “${existing.name}” exists already.`, {
      name: existing.name,
      version: existing.version,
      suggestion: freeName(name, notebooks),
    });
  }
}

/** A new, empty notebook; resolves with {name, version}. */
export async function createNotebook(store, name) {
  await ensureFree(store, name);
  const { notebook } = await store.client.request("notebook.save", { name, cells: [] });
  await refreshNotebooks(store);
  return notebook;
}

/** notebook.rename with the version the list showed (`conflict` when it changed, or the new name is taken). */
export async function renameNotebook(store, name, newName, version) {
  const params = { name, new_name: newName };
  if (version) params.version = version;
  const { notebook } = await store.client.request("notebook.rename", params);
  await refreshNotebooks(store);
  return notebook;
}

/** notebook.delete with the version the list showed (`conflict` when it changed meanwhile). */
export async function deleteNotebook(store, name, version) {
  const params = { name };
  if (version) params.version = version;
  await store.client.request("notebook.delete", params);
  await refreshNotebooks(store);
}

/** Reads a chosen .ipynb file: resolves with {name (its file name without
 * .ipynb), ipynb (the parsed JSON)}; the runtime checks the rest. */
export async function readNotebookFile(file) {
  if (file.size > MAX_IMPORT_BYTES) {
    const mb = (file.size / 1048576).toFixed(1);
    throw new ProtocolError("too_large", `${file.name} is ${mb} MB: the runtime takes at most 16 MB at once.`);
  }
  const text = await file.text();
  let ipynb;
  try {
    ipynb = JSON.parse(text);
  } catch (error) {
    throw new ProtocolError("not_json", `${file.name} is not a notebook: it is not JSON (${error.message}).`);
  }
  if (ipynb === null || typeof ipynb !== "object" || Array.isArray(ipynb)) {
    throw new ProtocolError("not_notebook", `${file.name} is not a notebook: a notebook is a JSON object with nbformat, metadata and cells.`);
  }
  const stem = file.name.replace(/\.ipynb$/i, "").trim() || "imported";
  return { name: stem, ipynb };
}

/** Imports a notebook (notebook.save with `ipynb`) as `name`. Without
 * `replace` the name must be free ("exists" otherwise, with a suggestion);
 * with `replace` (the version of the notebook to write over) it is
 * replaced, or `conflict` when it changed meanwhile. Resolves with {name, version}. */
export async function importNotebook(store, name, ipynb, replace = null) {
  if (!replace) await ensureFree(store, name);
  const params = { name, ipynb };
  if (replace) params.version = replace;
  const { notebook } = await store.client.request("notebook.save", params);
  await refreshNotebooks(store);
  return notebook;
}

/** notebook.parameters: [{name, kind, label, default, options, error?}]. */
export async function notebookParameters(store, name) {
  return (await store.client.request("notebook.parameters", { name })).parameters;
}

/** The sessions of a notebook that are not closed (session.list's `notebook`). */
export function openSessionsOf(sessions, notebook) {
  return (sessions || []).filter((s) => s.notebook === notebook && s.state !== "closed");
}

/** session.create from a notebook with these variables (and a name, when
 * given); resolves with the session. A `bad_request` about a parameter
 * names it: see parameterOf. */
export async function startSession(store, notebook, variables = {}, name = "") {
  const params = { notebook, variables };
  if (name) params.name = name;
  const { session } = await store.client.request("session.create", params);
  await refreshSessions(store);
  return session;
}

/** The parameter a session.create error is about ("'variables.region' must be ..."), or null. */
export function parameterOf(error) {
  const found = /'variables\.([^'.]+)'/.exec((error && error.message) || "");
  return found ? found[1] : null;
}

/** session.close: cancels its runs and stops its kernel; its history stays readable. */
export async function closeSession(store, sessionId) {
  await store.client.request("session.close", { session: sessionId });
  await refreshSessions(store);
}

/** session.delete (owner): a closed session and all its history, for good
 * (`session_open` for one that is not closed). */
export async function deleteSession(store, sessionId) {
  await store.client.request("session.delete", { session: sessionId });
  await refreshSessions(store);
}

/** Downloads the session's notebook with its outputs (.ipynb): fetched with
 * the token in a header (never in a URL), then saved from a blob. Resolves
 * with the file name used: `filename`, else the runtime's, else <id>.ipynb. */
export async function downloadSessionNotebook(store, sessionId, filename = null) {
  const { blob, filename: offered } = await fetchSessionNotebook(store.client.token, sessionId);
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = filename || offered || `${sessionId}.ipynb`;
  link.hidden = true;
  document.body.append(link);
  try {
    link.click();
  } finally {
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000); // the download has its own copy by then
  }
  return link.download;
}

/** Saves the session's document as the library notebook `notebookName`
 * (notebook.save with `session`). `version`: the version last read; when
 * the notebook changed since, the request fails with `conflict` (the error's
 * details.current is its version now: pass it to write over it anyway).
 * Resolves with the new version. */
export async function saveSessionToNotebook(store, sessionId, notebookName, version = null) {
  const params = { name: notebookName, session: sessionId };
  if (version) params.version = version;
  const { notebook } = await store.client.request("notebook.save", params);
  refreshNotebooks(store);
  return notebook.version;
}
