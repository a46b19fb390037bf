// The notebook view of one session: its header (name, who is here, the
// session's actions), its cells, and a sidebar (kernel, variables, secrets).
// Cells are selected and edited Jupyter's way: command mode (keys.js) and
// edit mode (the cell's editor has the focus).

import { html, useEffect, useMemo, useRef, useState } from "../../vendor/preact.js";
import { CellEdit } from "../cell_edit.js";
import { commandKeys } from "../keys.js";
import { downloadSessionNotebook, saveSessionToNotebook } from "../notebook_actions.js";
import { cancelRun, deleteCell, insertCell, moveCell, runCell, runFrom } from "../notebook_ops.js";
import { may, roleOf } from "../roles.js";
import { Cell } from "./cell.js";
import { HelpOverlay } from "./help.js";
import { KernelPanel } from "./kernel.js";
import { SecretsPanel } from "./secrets.js";
import { VariablesPanel } from "./variables.js";

const DEFAULT_TYPE = "python";

function cellElement(id) {
  return document.querySelector(`[data-cell-id="${CSS.escape(id)}"]`);
}

function People({ clients }) {
  return html`<span class="people" id="presence" aria-label="Attached now">
    ${clients.map((c) => html`<span class="tag" data-client=${c.client} title=${c.role ? `${c.name} (${c.role})` : c.name}>${c.name}</span>`)}
  </span>`;
}

function AddCell({ types, onAdd, readOnly }) {
  return html`<div class="add-cell" role="group" aria-label="Add a cell">
    ${types.map((t) => html`<button type="button" class="quiet" data-add-type=${t} disabled=${readOnly}
      onClick=${() => onAdd(t)}>+ ${t}</button>`)}
  </div>`;
}

export function NotebookView({ store, state }) {
  const client = store.client;
  const runtime = store.runtime.value;
  const cellTypes = runtime ? runtime.cell_types : [DEFAULT_TYPE];
  const edits = useMemo(() => new Map(), [state]);
  const [selected, setSelected] = useState(null);
  const [editing, setEditing] = useState(false);
  const [help, setHelp] = useState(false);
  const [connections, setConnections] = useState([]);
  const [notice, setNotice] = useState(null);
  const cells = state.cells.value;
  const runs = state.runs.value;
  const info = state.info.value;
  const closed = state.closed.value;
  // The page offers what the role may do; the runtime decides anyway (forbidden).
  const role = roleOf(store);
  const canEdit = !closed && may(store, "cell.set");
  const canRun = !closed && may(store, "cell.run", { cell_id: "" });
  const keysRef = useRef(null);

  const editOf = (cell) => {
    let edit = edits.get(cell.id);
    if (!edit) {
      edit = new CellEdit(state, cell);
      edits.set(cell.id, edit);
    }
    return edit;
  };
  const act = async (fn) => {
    setNotice(null);
    try {
      return await fn();
    } catch (error) {
      setNotice(error.message);
      return null;
    }
  };
  const neighbour = (id, step) => {
    const ids = state.cells.value.map((c) => c.id);
    const at = ids.indexOf(id);
    return at < 0 ? null : ids[at + step] ?? null;
  };
  // At once when the cell is on the page (a key pressed next must find the
  // focus moved), else once it is drawn.
  const focusCell = (id) => {
    const element = cellElement(id);
    if (element) element.focus();
    else requestAnimationFrame(() => cellElement(id)?.focus());
  };

  const actions = {
    select: (id) => setSelected(id),
    edit: (id) => {
      setSelected(id);
      setEditing(true);
    },
    command: (id) => {
      setSelected(id);
      setEditing(false);
      focusCell(id);
    },
    change: (id, fields, now = false) => {
      const cell = state.cell(id);
      if (cell) editOf(cell).change(cell, fields, { now });
    },
    run: async (id, mode) => {
      const run = act(() => runCell(state, edits.get(id), id));
      if (mode === "advance") {
        const next = neighbour(id, 1);
        if (next) {
          setSelected(next);
          if (!editing) focusCell(next);
        } else {
          const added = await act(() => insertCell(state, id, state.cell(id)?.type === "markdown" ? DEFAULT_TYPE : state.cell(id)?.type || DEFAULT_TYPE));
          if (added) {
            setSelected(added);
            setEditing(true);
          }
        }
      }
      return run;
    },
    runFrom: (id) => act(() => runFrom(state, edits, id)),
    cancel: (runId) => act(() => cancelRun(state, runId)),
    insert: async (id, where) => {
      const after = where === "above" ? neighbour(id, -1) : id;
      const type = DEFAULT_TYPE;
      const added = await act(() => insertCell(state, id === null ? null : after, type));
      if (added) {
        setSelected(added);
        setEditing(true);
      }
    },
    remove: async (id) => {
      const next = neighbour(id, 1) || neighbour(id, -1);
      await act(() => deleteCell(state, id));
      edits.get(id)?.dispose();
      edits.delete(id);
      if (next) {
        setSelected(next);
        setEditing(false);
        focusCell(next);
      }
    },
    move: (id, step) => act(() => moveCell(state, id, step)),
    resolve: (id, choice) => act(() => edits.get(id)?.resolve(choice)),
  };

  // Connections for the shell cell's target: the SSH ones (typed connections
  // of integrations are in the same list, PROTOCOL.md section 13; no type is ssh).
  useEffect(() => {
    client.request("connections.list").then(
      (reply) => setConnections(reply.connections.filter((c) => (c.type || "ssh") === "ssh").map((c) => c.name)),
      () => setConnections([]),
    );
  }, [client]);

  // Something is always selected while there are cells.
  useEffect(() => {
    if (cells.length && !cells.some((c) => c.id === selected)) setSelected(cells[0].id);
  }, [cells, selected]);

  // Command-mode keys, with the current closures.
  keysRef.current = {
    enabled: () => !help && canRun && selected !== null,
    selected: () => selected,
    step: (delta) => {
      const next = neighbour(selected, delta);
      if (next) {
        setSelected(next);
        focusCell(next);
      }
    },
    edit: () => canEdit && actions.edit(selected),
    run: (mode) => actions.run(selected, mode),
    insert: (where) => canEdit && actions.insert(selected, where),
    remove: () => canEdit && actions.remove(selected),
    setType: (type) => canEdit && cellTypes.includes(type) && actions.change(selected, { type }, true),
    help: () => setHelp(true),
  };
  useEffect(() => {
    const onKey = commandKeys({
      enabled: () => keysRef.current.enabled(),
      selected: () => keysRef.current.selected(),
      step: (d) => keysRef.current.step(d),
      edit: () => keysRef.current.edit(),
      run: (m) => keysRef.current.run(m),
      insert: (w) => keysRef.current.insert(w),
      remove: () => keysRef.current.remove(),
      setType: (t) => keysRef.current.setType(t),
      help: () => keysRef.current.help(),
    });
    document.addEventListener("keydown", onKey);
    return () => document.removeEventListener("keydown", onKey);
  }, []);

  // A page left with typing not yet sent: send it now.
  useEffect(() => {
    const flushAll = () => {
      for (const edit of edits.values()) if (edit.draft) edit.flush();
    };
    window.addEventListener("pagehide", flushAll);
    return () => {
      window.removeEventListener("pagehide", flushAll);
      flushAll();
    };
  }, [edits]);

  const title = (info && (info.name || info.notebook)) || state.id;
  const notebook = info ? info.notebook : null;
  const running = state.running.value;
  const filename = `${(notebook || title || "session").replace(/[\\/:*?"<>|\u0000-\u001f]/g, "_")}.ipynb`;
  return html`<div class="notebook-page" id="notebook" data-session-id=${state.id} data-closed=${closed ? "true" : "false"}>
    <header class="notebook-head">
      <a class="back" href="#" title="All notebooks and sessions">←</a>
      <h2 id="notebook-title">${title}</h2>
      ${notebook && notebook !== title && html`<span class="muted">from ${notebook}</span>`}
      ${closed && html`<span class="tag closed" data-field="closed">closed: read only</span>`}
      ${!closed && !canEdit && html`<span class="tag closed" data-field="role">${role}: ${canRun ? "may run, not edit" : "read only"}</span>`}
      <${People} clients=${state.clients.value} />
      <span class="spacer"></span>
      <div class="toolbar" role="toolbar" aria-label="Session">
        <button type="button" id="run-all" disabled=${!canRun || !cells.length} title="Run every cell, stopping at the first error"
          onClick=${() => cells.length && actions.runFrom(cells[0].id)}>Run all</button>
        <button type="button" id="interrupt" disabled=${!running || !canRun} title="Cancel the running cell"
          onClick=${() => running && actions.cancel(running.run)}>Interrupt</button>
        ${notebook && html`<button type="button" id="save-notebook" class="quiet" disabled=${!may(store, "notebook.save")}
          title=${`Save this session's cells to the notebook ${notebook}`}
          onClick=${() => act(async () => {
            for (const edit of edits.values()) if (edit.draft) await edit.flush();
            await saveSessionToNotebook(store, state.id, notebook);
            setNotice(`Saved to ${notebook}.`);
          })}>Save</button>`}
        <button type="button" id="download-ipynb" class="quiet" title="Download the cells and their outputs as .ipynb"
          onClick=${() => act(() => downloadSessionNotebook(store, state.id, filename))}>Download .ipynb</button>
        ${!closed && may(store, "session.close") && html`<button type="button" id="close-session" class="quiet danger" title="Close the session: stop its runs and kernel; its history stays readable"
          onClick=${() => window.confirm("Close this session? Its runs and kernel stop; its history stays readable.") &&
            act(() => client.request("session.close", { session: state.id }))}>Close</button>`}
        <button type="button" id="help-button" class="quiet" title="Keyboard shortcuts (?)" onClick=${() => setHelp(true)}>?</button>
      </div>
    </header>
    ${notice && html`<p class="notice" role="status" id="notebook-notice">${notice}</p>`}
    ${state.error.value && html`<p class="error" role="alert">${state.error.value}</p>`}
    <div class="notebook-columns">
      <div class="cells" id="cells" aria-busy=${state.loading.value ? "true" : "false"}>
        ${state.loading.value && !cells.length && html`<p class="muted">Loading…</p>`}
        ${!state.loading.value && !cells.length && html`<p class="muted" id="no-cells">No cells yet: add one.</p>`}
        ${cells.map((cell, i) => html`<${Cell} key=${cell.id} cell=${cell} eager=${i === 0} run=${runs.get(cell.id)} edit=${editOf(cell)}
          selected=${cell.id === selected} editing=${editing} cellTypes=${cellTypes} connections=${connections}
          session=${state.id} token=${client.token} readOnly=${!canEdit} canRun=${canRun} actions=${actions} />`)}
        ${canEdit && html`<${AddCell} types=${cellTypes} readOnly=${!canEdit} onAdd=${async (type) => {
          const last = cells.length ? cells[cells.length - 1].id : null;
          const added = await act(() => insertCell(state, last, type));
          if (added) {
            setSelected(added);
            setEditing(true);
          }
        }} />`}
      </div>
      <aside class="sidebar">
        ${!closed && may(store, "kernel.restart") && html`<${KernelPanel} client=${client} session=${state.id} />`}
        <${VariablesPanel} client=${client} session=${state.id} />
        ${!closed && may(store, "secrets.set", { session: state.id }) && html`<${SecretsPanel} client=${client} session=${state.id} />`}
      </aside>
    </div>
    <${HelpOverlay} open=${help} onClose=${() => setHelp(false)} />
  </div>`;
}
