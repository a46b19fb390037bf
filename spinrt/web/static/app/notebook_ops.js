// What a person does to a session's document, as requests (PROTOCOL.md
// section 10). Nothing here changes the page: every change comes back as an
// event of the session's log and SessionState folds it, for this page and
// every other one attached.

/** A new cell id: 8 hex digits, like Jupyter's (nbformat 4.5) cell ids. */
export function newCellId(existing) {
  for (;;) {
    const id = crypto.randomUUID().slice(0, 8);
    if (!existing.some((c) => c.id === id)) return id;
  }
}

/** Inserts an empty cell after `after` (a cell id, or null for the top); resolves with its id. */
export async function insertCell(state, after, type) {
  const id = newCellId(state.cells.value);
  const cell = { id, type, source: "", options: {} };
  await state.client.request("cell.set", { session: state.id, cell, after, base_version: 0 });
  return id;
}

export function deleteCell(state, cellId) {
  return state.client.request("cell.delete", { session: state.id, cell_id: cellId });
}

/** Moves a cell one place up (-1) or down (+1); resolves false at either end. */
export async function moveCell(state, cellId, step) {
  const ids = state.cells.value.map((c) => c.id);
  const at = ids.indexOf(cellId);
  const to = at + step;
  if (at < 0 || to < 0 || to >= ids.length) return false;
  const rest = ids.filter((id) => id !== cellId);
  const after = to === 0 ? null : rest[to - 1];
  await state.client.request("cell.move", { session: state.id, cell_id: cellId, after });
  return true;
}

/** Runs one cell as this page shows it: its edits go to the document first. */
export async function runCell(state, edit, cellId) {
  if (edit && !(await edit.flush())) return null; // a conflict or an error is shown on the cell
  const reply = await state.client.request("cell.run", { session: state.id, cell_id: cellId });
  return reply.run;
}

/** Runs this cell and every one below it as a linked chain that stops at the first failure. */
export async function runFrom(state, edits, cellId) {
  const ids = state.cells.value.map((c) => c.id);
  const chain = ids.slice(Math.max(0, ids.indexOf(cellId)));
  for (const id of chain) {
    const edit = edits.get(id);
    if (edit && !(await edit.flush())) return null;
  }
  // markdown cells run too: their templates are expanded by the runtime
  const reply = await state.client.request("cells.run", { session: state.id, cell_ids: chain, stop_on_error: true });
  return reply.runs;
}

export function cancelRun(state, runId) {
  return state.client.request("run.cancel", { session: state.id, run: runId });
}

export function restartKernel(state) {
  return state.client.request("kernel.restart", { session: state.id });
}
