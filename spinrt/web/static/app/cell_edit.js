// One cell's local edits on their way to the session document.
//
// Typing changes a draft; the draft goes to the runtime as `cell.set` after a
// short pause (or at once before a run), always with `base_version`, the
// version the draft was made from (PROTOCOL.md section 10). If a teammate
// changed the cell meanwhile, the runtime answers `conflict` and changes
// nothing: the draft is kept and `conflict` holds both texts until the
// person chooses. So no typing is dropped silently, theirs or ours.

import { signal } from "../vendor/preact.js";

const PAUSE_MS = 600;

function plain(cell) {
  const out = { id: cell.id, type: cell.type, source: cell.source ?? "", options: cell.options || {} };
  if (cell.output_variable) out.output_variable = cell.output_variable;
  return out;
}

export class CellEdit {
  constructor(state, cell) {
    this.state = state;
    this.id = cell.id;
    this.base = cell.version; // the version the draft is made from
    this.draft = null; // the cell as edited here, not yet in the document; null: clean
    this.sending = null; // the promise of the cell.set in flight
    this.timer = null;
    this.conflict = signal(null); // {mine, theirs (null: deleted)}
    this.error = signal(null);
    this.dirty = signal(false);
    this.rev = signal(0); // bumped on every local change, so the cell shows its draft at once
  }

  /** The cell as this page shows it: the draft, else the document's. */
  current(documentCell) {
    return this.draft || documentCell;
  }

  /** A local change of some fields; the source is sent after a pause, the rest at once. */
  change(documentCell, fields, { now = false } = {}) {
    if (!this.draft) this.base = documentCell.version; // a new draft starts from what the page shows
    this.draft = plain({ ...(this.draft || documentCell), ...fields });
    this.dirty.value = true;
    this.rev.value += 1;
    clearTimeout(this.timer);
    if (now) this.flush();
    else this.timer = setTimeout(() => this.flush(), PAUSE_MS);
  }

  /**
   * Sends the draft. Resolves true when the document holds what this page
   * shows (nothing to send, or sent), false on a conflict or an error.
   */
  async flush() {
    clearTimeout(this.timer);
    while (this.sending) await this.sending.catch(() => {});
    if (this.conflict.value) return false;
    if (!this.draft) return true;
    const cell = this.draft;
    this.sending = this.state.client.request("cell.set", { session: this.state.id, cell, base_version: this.base });
    try {
      const reply = await this.sending;
      this.base = reply.version;
      if (this.draft === cell) {
        this.draft = null;
        this.dirty.value = false;
      }
      this.error.value = null;
      return true;
    } catch (error) {
      if (error.code === "conflict") {
        this.conflict.value = { mine: this.draft || cell, theirs: error.details.current ?? null };
      } else if (error.code === "disconnected") {
        // kept: sent again after the next edit or run, with the same base
        this.error.value = "Not saved yet: reconnecting…";
      } else {
        this.error.value = error.message;
      }
      return false;
    } finally {
      this.sending = null;
    }
  }

  /** Ends a conflict: "mine" writes the draft over theirs, "theirs" drops the draft. */
  async resolve(choice) {
    const conflict = this.conflict.value;
    if (!conflict) return;
    this.conflict.value = null;
    const theirs = conflict.theirs;
    if (choice === "theirs") {
      this.draft = null;
      this.dirty.value = false;
      this.rev.value += 1;
      if (theirs) this.base = theirs.version;
      return;
    }
    this.base = theirs ? theirs.version : 0; // 0: re-create a cell deleted meanwhile
    this.draft = plain(conflict.mine);
    await this.flush();
  }

  dispose() {
    clearTimeout(this.timer);
  }
}
