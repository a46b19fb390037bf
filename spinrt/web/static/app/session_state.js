// One open session as signals: its document (cells in order, each with its
// version), the latest run of every cell with its output, the kernel's
// state, and whether the session is closed. Fed by session.snapshot once,
// then by the session's live events (PROTOCOL.md sections 7 and 10); views
// read the signals and never the events.
//
// Folding follows docs/protocol.rst "Session documents": cell.set removes
// the cell and puts it right after `after` (first when null) with the
// event's seq as its version; cell.moved keeps the version.

import { batch, signal } from "../vendor/preact.js";
import { RunOutput } from "./output/model.js";
import { nextTask } from "./tasks.js";

export const RUNNING_STATES = new Set(["queued", "running"]);

const SLICE_MS = 8; // work per task on incoming events, so frames keep coming
const SLICE_CHARS = 65536; // a long stream text is applied in pieces of this size

/** A run as the views show it. `output` is the run's RunOutput (bounded). */
function newRun(run, fields) {
  return {
    run,
    cell_id: null,
    queued_seq: null, // the seq of its run.queued: a cell whose version is higher changed since
    type: null,
    status: "queued",
    by: null,
    queued: null, // Date.parse of the ts, ms
    started: null,
    finished: null,
    duration_ms: null,
    output: new RunOutput(),
    ...fields,
  };
}

function tsMs(ts) {
  const ms = Date.parse(ts);
  return Number.isNaN(ms) ? null : ms;
}

function placeAfter(cells, cell, after) {
  const rest = cells.filter((c) => c.id !== cell.id);
  if (after === null || after === undefined) return [cell, ...rest];
  const at = rest.findIndex((c) => c.id === after);
  if (at < 0) return [...rest, cell]; // the runtime never names a missing cell; keep it visible anyway
  return [...rest.slice(0, at + 1), cell, ...rest.slice(at + 1)];
}

export class SessionState {
  /** @param client SpinClient; @param id session id */
  constructor(client, id) {
    this.client = client;
    this.id = id;
    this.info = signal(null); // {id, name, notebook, state, ...} from the attach reply
    this.cells = signal([]); // [{id, type, source, options, output_variable?, version}]
    this.runs = signal(new Map()); // cell id -> the cell's latest run (see newRun)
    this.running = signal(null); // the run executing now, or null
    this.kernel = signal(null); // kernel.status state
    this.clients = signal([]); // presence: [{client, name, role}]
    this.loading = signal(true);
    this.error = signal(null);
    this.closed = signal(false);
    this.lastEdit = signal(null); // {cell_id, by} of the latest remote edit, for a hint
    this.byRun = new Map(); // run id -> run, for the runs the page keeps
    this.listeners = new Set(); // cell-level subscribers of document events (editors)
    this.queue = []; // events not applied yet (see receive)
    this.head = 0;
    this.pumping = false;
    this.onMessage = (e) => this.receive(e.detail);
    client.addEventListener("message", this.onMessage);
  }

  /** Loads the snapshot, then attaches from its last_seq (nothing missed,
   * nothing twice). Cut off by a dropped connection, it starts over once the
   * client is connected again. */
  async open() {
    this.loading.value = true;
    this.error.value = null;
    try {
      const snap = await this.client.request("session.snapshot", { session: this.id }, 120000);
      this.load(snap);
      const reply = await this.client.attach(this.id, snap.last_seq);
      batch(() => {
        this.info.value = reply.session;
        this.clients.value = reply.clients || [];
        if (reply.session.state === "closed") this.closed.value = true;
        this.loading.value = false;
      });
    } catch (error) {
      if (error.code === "disconnected") {
        await this.client.detach(this.id); // forget a half-made attachment: the retry starts from a new snapshot
        const retry = () => {
          this.client.removeEventListener("open", retry);
          if (!this.gone) this.open();
        };
        this.client.addEventListener("open", retry);
        return;
      }
      batch(() => {
        this.error.value = error.message;
        this.loading.value = false;
      });
    }
  }

  close() {
    this.gone = true;
    this.client.removeEventListener("message", this.onMessage);
    this.client.detach(this.id);
  }

  load(snap) {
    const runs = new Map();
    this.byRun.clear();
    for (const record of snap.runs) {
      if (record.cell_id === null || record.cell_id === undefined) continue;
      const run = newRun(record.run, {
        cell_id: record.cell_id,
        queued_seq: record.queued_seq ?? null,
        type: record.type,
        status: record.status,
        by: record.by,
        started: tsMs(record.started),
        finished: tsMs(record.finished),
      });
      if (run.started !== null && run.finished !== null) run.duration_ms = run.finished - run.started;
      run.output.load(record.outputs, record.truncated || null);
      runs.set(record.cell_id, run); // runs come in queue order: the latest wins
      this.byRun.set(record.run, run);
    }
    const running = [...runs.values()].find((r) => r.status === "running") || null;
    batch(() => {
      this.cells.value = snap.document.cells;
      this.runs.value = runs;
      this.running.value = running;
    });
  }

  cell(id) {
    return this.cells.value.find((c) => c.id === id) || null;
  }

  /** fn(event) for every document event (cell.set, cell.deleted, cell.moved). */
  subscribe(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** Takes the session's events in order, a slice of work at a time: a
   * burst of output (a cell printing megabytes) is applied in steps of at
   * most SLICE_MS with the browser free to draw in between, so the tab
   * stays responsive however fast the output comes. */
  receive(message) {
    if (message.session !== this.id) return;
    this.queue.push(message);
    if (!this.pumping) {
      this.pumping = true;
      this.pump();
    }
  }

  pump() {
    const until = performance.now() + SLICE_MS;
    const queue = this.queue;
    while (this.head < queue.length) {
      const message = queue[this.head];
      if (message.event === "stream" && typeof message.text === "string" && message.text.length - (message.at || 0) > SLICE_CHARS) {
        const at = message.at || 0;
        let end = at + SLICE_CHARS;
        const code = message.text.charCodeAt(end - 1);
        if (code >= 0xd800 && code <= 0xdbff) end -= 1; // never split a surrogate pair
        message.at = end;
        this.apply({ ...message, text: message.text.slice(at, end) });
      } else {
        this.head += 1;
        this.apply(message.at ? { ...message, text: message.text.slice(message.at) } : message);
      }
      if (performance.now() >= until) {
        nextTask(() => this.pump());
        return;
      }
    }
    queue.length = 0;
    this.head = 0;
    this.pumping = false;
  }

  apply(message) {
    if (message.event === "presence") {
      this.clients.value = message.clients;
      return;
    }
    switch (message.event) {
      case "cell.set": {
        const cell = { ...message.cell, version: message.version };
        this.cells.value = placeAfter(this.cells.value, cell, message.after);
        this.lastEdit.value = { cell_id: cell.id, by: message.by };
        break;
      }
      case "cell.deleted":
        this.cells.value = this.cells.value.filter((c) => c.id !== message.cell_id);
        break;
      case "cell.moved": {
        const cell = this.cell(message.cell_id);
        if (cell) this.cells.value = placeAfter(this.cells.value, cell, message.after);
        break;
      }
      case "run.queued":
        this.queued(message);
        break;
      case "run.started":
        this.update(message.run, (run) => {
          run.status = "running";
          run.started = tsMs(message.ts);
          this.running.value = run;
        });
        break;
      case "run.finished":
        this.update(message.run, (run) => {
          run.status = message.status;
          run.finished = tsMs(message.ts);
          run.duration_ms = message.duration_ms ?? null;
          run.output.apply(message);
          if (this.running.value && this.running.value.run === run.run) this.running.value = null;
        });
        break;
      case "display.update":
        // A display_id names displays in any run of the session (Jupyter's update_display_data).
        for (const run of this.byRun.values()) run.output.apply(message);
        break;
      case "stream":
      case "display":
      case "clear":
      case "result": {
        const run = this.byRun.get(message.run);
        if (run) run.output.apply(message);
        break;
      }
      case "kernel.status":
        this.kernel.value = message.state;
        break;
      case "session.closed":
        this.closed.value = true;
        this.running.value = null;
        break;
      default:
        break;
    }
    if (message.event.startsWith("cell.")) for (const fn of this.listeners) fn(message);
  }

  queued(message) {
    if (typeof message.cell_id !== "string") return; // an ad-hoc cell: not part of the document
    const run = newRun(message.run, {
      cell_id: message.cell_id,
      queued_seq: message.seq,
      type: message.type,
      by: message.by ?? null,
      queued: tsMs(message.ts),
    });
    const runs = new Map(this.runs.value);
    const previous = runs.get(message.cell_id);
    if (previous) this.byRun.delete(previous.run); // the page keeps a cell's latest run only
    runs.set(message.cell_id, run);
    this.byRun.set(message.run, run);
    this.runs.value = runs;
  }

  /** Changes a copy of a run and publishes it: views skip props that are
   * the same object (Preact signals compare props shallowly), so a run is
   * never changed in place. Its RunOutput is shared by the copies. */
  update(runId, change) {
    const old = this.byRun.get(runId);
    if (!old) return;
    const run = { ...old };
    batch(() => {
      change(run);
      this.byRun.set(runId, run);
      const runs = new Map(this.runs.value);
      if (runs.get(run.cell_id) === old) runs.set(run.cell_id, run);
      this.runs.value = runs;
    });
  }
}
