// The notebook library (notebook.list): every notebook in SPIN_HOME/notebooks
// with its cell count and when it changed. Create one (an empty notebook),
// rename or delete one (with the version the list showed, so a notebook
// someone changed meanwhile is not lost: `conflict`), import an .ipynb
// (views/notebook_import.js), and open one (views/open_notebook.js). Names
// follow PROTOCOL.md section 10; the runtime's own message says what is
// wrong with one. Creating, importing, renaming and deleting are an
// editor's; a viewer or runner sees the library and opens its notebooks'
// sessions (app/roles.js), and is told so.
//
// Usage: <${NotebookList} store=${store} />

import { html, useEffect, useState } from "../../vendor/preact.js";
import { createNotebook, deleteNotebook, notebookLibrary, refreshNotebooks, renameNotebook } from "../notebook_actions.js";
import { may, roleOf } from "../roles.js";
import { useAction } from "./action.js";
import { ImportNotebook } from "./notebook_import.js";
import { OpenNotebook } from "./open_notebook.js";

const POLL_EVERY_MS = 5000; // files may change under the runtime (another tab, a hand edit)

function when(iso) {
  const date = new Date(iso);
  return iso && !Number.isNaN(date.getTime()) ? date.toLocaleString() : "";
}

function cells(count) {
  return count === 1 ? "1 cell" : `${count} cells`;
}

function NewNotebook({ store, connected }) {
  const { busy, error, setError, run } = useAction();
  const submit = async (event) => {
    event.preventDefault();
    const field = event.currentTarget.elements.name;
    const name = field.value.trim();
    if (!name) {
      setError("Give the notebook a name.");
      return;
    }
    const created = await run(() => createNotebook(store, name),
      (e) => (e.code === "exists" ? `${e.message} Choose another name, e.g. “${e.details.suggestion}”.` : e.message));
    if (created) field.value = "";
  };
  return html`<form id="new-notebook" class="inline" onSubmit=${submit}>
      <input id="new-notebook-name" name="name" placeholder="New notebook name" maxlength="200" autocomplete="off"
        aria-label="New notebook name" aria-describedby=${error ? "new-notebook-error" : undefined} />
      <button id="create-notebook" type="submit" disabled=${busy || !connected}>New notebook</button>
    </form>
    ${error && html`<p class="error" role="alert" id="new-notebook-error">${error}</p>`}`;
}

function RenameForm({ notebook, onDone, onCancel }) {
  const submit = (event) => {
    event.preventDefault();
    onDone(event.currentTarget.elements.new_name.value.trim());
  };
  const keys = (event) => event.key === "Escape" && (event.stopPropagation(), onCancel());
  return html`<form class="row-form" data-form="rename" onSubmit=${submit} onKeyDown=${keys}>
    <input name="new_name" class="rename-field" defaultValue=${notebook.name} maxlength="200" autocomplete="off"
      aria-label=${"New name for " + notebook.name} autofocus />
    <button type="submit" class="small" data-action="rename-save">Rename</button>
    <button type="button" class="quiet small" data-action="cancel" onClick=${onCancel}>Cancel</button>
  </form>`;
}

function NotebookItem({ store, notebook, connected, onOpen }) {
  const canRename = may(store, "notebook.rename");
  const canDelete = may(store, "notebook.delete");
  const [mode, setMode] = useState(null); // null | "rename" | "delete"
  const { busy, error, setError, run } = useAction();
  const broken = notebook.cell_count === null || notebook.cell_count === undefined;

  const act = async (work) => {
    const done = await run(async () => (await work(), true), (e) => {
      refreshNotebooks(store); // show it as it is now
      // A conflict with the version we sent unchanged is about the new name (taken).
      const changed = e.code === "conflict" && e.details.current !== notebook.version;
      return changed ? `${e.message} The list now shows it as it is: look again, then retry.` : e.message;
    });
    if (done) setMode(null);
  };
  const rename = (newName) => {
    if (!newName || newName === notebook.name) return setMode(null);
    return act(() => renameNotebook(store, notebook.name, newName, notebook.version));
  };
  const remove = () => act(() => deleteNotebook(store, notebook.name, notebook.version));
  const cancel = () => {
    setMode(null);
    setError(null);
  };

  return html`<li data-notebook=${notebook.name} data-version=${notebook.version || undefined} aria-busy=${busy ? "true" : "false"}>
    <div class="row-main">
      <button type="button" class="link" data-action="open" disabled=${broken || !connected}
        title=${broken ? "This file cannot be opened" : "Open: start a session or join one"}
        onClick=${() => onOpen(notebook.name)}>${notebook.name}</button>
      <span class="meta">
        ${broken
          ? html`<span class="error" data-field="error">${notebook.error || "cannot be read"}</span>`
          : html`<span data-field="cells">${cells(notebook.cell_count)}</span>`}
        <span data-field="modified" title=${notebook.modified || ""}>${when(notebook.modified)}</span>
      </span>
      ${mode === null && (canRename || canDelete) && html`<span class="row-actions">
        ${canRename && html`<button type="button" class="quiet small" data-action="rename" disabled=${!connected} onClick=${() => setMode("rename")}>Rename</button>`}
        ${canDelete && html`<button type="button" class="quiet small" data-action="delete" disabled=${!connected} onClick=${() => setMode("delete")}>Delete</button>`}
      </span>`}
    </div>
    ${mode === "rename" && html`<${RenameForm} notebook=${notebook} onDone=${rename} onCancel=${cancel} />`}
    ${mode === "delete" && html`<div class="confirm" role="alert">
      <p>Delete “${notebook.name}”? The file is removed from the library; sessions made from it keep their cells.</p>
      <button type="button" class="danger small" data-action="confirm-delete" disabled=${busy} onClick=${remove}>Delete</button>
      <button type="button" class="quiet small" data-action="cancel" onClick=${cancel}>Keep it</button>
    </div>`}
    ${error && html`<p class="error" role="alert" data-error>${error}</p>`}
  </li>`;
}

export function NotebookList({ store }) {
  const library = notebookLibrary(store);
  const connected = store.connection.value === "open";
  const [opening, setOpening] = useState(null);

  useEffect(() => {
    if (connected) refreshNotebooks(store);
  }, [store, connected]);
  useEffect(() => {
    const timer = setInterval(() => {
      if (store.client.state === "open" && document.visibilityState === "visible") refreshNotebooks(store);
    }, POLL_EVERY_MS);
    return () => clearInterval(timer);
  }, [store]);

  const notebooks = library.notebooks.value;
  const canWrite = may(store, "notebook.save");
  const role = roleOf(store);
  return html`<section id="notebooks" class="card library" aria-labelledby="notebooks-title">
    <h2 id="notebooks-title">Notebooks</h2>
    ${canWrite && html`<${NewNotebook} store=${store} connected=${connected} />
      <${ImportNotebook} store=${store} connected=${connected} />`}
    ${role && !canWrite && html`<p class="hint" id="notebooks-role">Your role (${role}) ${may(store, "session.create", { notebook: "" })
      ? "starts and joins sessions of these notebooks" : "joins open sessions of these notebooks to watch"}; an editor changes them.</p>`}
    ${library.error.value && html`<p class="error" role="alert" id="notebooks-error">${library.error.value}</p>`}
    ${notebooks === null
      ? html`<p class="muted">Loading…</p>`
      : notebooks.length === 0
        ? html`<p class="muted" id="no-notebooks">No notebooks yet${canWrite ? ": create one or import an .ipynb" : ""}.</p>`
        : html`<ul class="notebooks">${notebooks.map((n) => html`<${NotebookItem} key=${n.name} store=${store}
            notebook=${n} connected=${connected} onOpen=${setOpening} />`)}</ul>`}
    ${opening && html`<${OpenNotebook} store=${store} name=${opening} onClose=${() => setOpening(null)} />`}
  </section>`;
}
