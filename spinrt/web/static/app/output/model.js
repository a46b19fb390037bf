// One run's output as the UI shows it: plain JS (no signals), bounded
// whatever the run prints.
//
//   const out = new RunOutput();
//   out.apply(event)            stream, display, display.update, clear (wait),
//                               result, run.started, run.finished (its error)
//   out.load(outputs, truncated)   a run record of session.snapshot
//   const stop = out.subscribe(fn) fn() after every change
//   out.isEmpty, out.items()    what to show, in order
//
// Outputs are kept as Jupyter's output area keeps them: stream text goes to
// the stream item at the end (one terminal for stdout and stderr, as a
// terminal shows them, stderr marked), a display or result starts a new item.
// Bounded: the first `headLines` lines / `headChars` characters of output
// (the head) stay; after that only the last `tailLines` / `tailChars` (the
// tail) are kept, and what falls between is counted in one "gap" item (lines,
// UTF-8 bytes, other outputs). Work per event is O(event).
//
// "Show more" (expand) reads the run's full stream text from the runtime
// (GET /api/sessions/<id>/runs/<run>/output) and builds the output again
// with 4x the limits, up to MAX_LIMITS; displays keep their places in the
// text when this model saw the run from its start.

import { Terminal, utf8Length } from "./terminal.js";

export const LIMITS = Object.freeze({
  headLines: 2000,
  headChars: 256 * 1024,
  tailLines: 2000,
  tailChars: 256 * 1024,
});
export const MAX_LIMITS = Object.freeze({ lines: 32000, chars: 4 * 1024 * 1024 }); // per side
const GROWTH = 4;

let nextId = 0;

function item(kind, fields) {
  return { kind, id: ++nextId, ver: 0, lines: 0, chars: 0, section: "", offset: 0, ...fields };
}

/** Characters a MIME bundle holds (what it costs in memory, roughly). */
function bundleChars(data) {
  let chars = 0;
  if (data && typeof data === "object") {
    for (const value of Object.values(data)) {
      chars += typeof value === "string" ? value.length : JSON.stringify(value ?? null).length;
    }
  }
  return chars;
}

export class RunOutput {
  constructor(limits = LIMITS) {
    this.limits = { ...limits };
    this.listeners = new Set();
    this.running = false;
    this.version = 0;
    this.truncated = null; // a snapshot's {bytes_total, bytes_shown}
    this.exact = true; // seen from the run's start: stream offsets match the runtime's text
    this.streamOffset = 0; // UTF-16 units of stream text so far (both streams, as the runtime's text)
    this.clearOffset = 0; // streamOffset at the last clear
    this.names = new Set(); // stream names seen ("stdout", "stderr")
    this.reset();
  }

  reset() {
    this.head = [];
    this.tail = [];
    this.gap = null;
    this.headFull = false;
    this.totals = { head: { lines: 0, chars: 0 }, tail: { lines: 0, chars: 0 } };
    this.current = null; // the stream item text goes to (the last item), or null
    this.displays = new Map(); // display_id -> items showing it
    this.pendingClear = false;
  }

  /** fn() after every change; returns the unsubscribe function. */
  subscribe(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  changed() {
    this.version += 1;
    for (const fn of [...this.listeners]) fn();
  }

  get isEmpty() {
    return this.head.length === 0 && this.tail.length === 0 && this.gap === null && !this.hiddenBytes;
  }

  /** Bytes a snapshot says it left out that nothing shown accounts for (no
   * gap, no display too large, no cut error): 0 when none. */
  get hiddenBytes() {
    const t = this.truncated;
    if (!t || !(t.bytes_total > t.bytes_shown) || this.gap !== null) return 0;
    const explained = (e) => (e.kind === "display" && e.data === null) || (e.kind === "error" && e.error.truncated === true);
    return this.head.some(explained) || this.tail.some(explained) ? 0 : t.bytes_total - t.bytes_shown;
  }

  /** Head items, then the gap (if any), then tail items. */
  items() {
    return this.gap ? [...this.head, this.gap, ...this.tail] : [...this.head, ...this.tail];
  }

  /** A session event of this run. */
  apply(event) {
    if (!event || typeof event !== "object") return;
    switch (event.event) {
      case "run.queued":
      case "run.started":
        this.running = true;
        return;
      case "stream":
        if (typeof event.text !== "string" || event.text === "") return;
        this.running = true;
        this.beforeOutput();
        this.stream(event.name, event.text);
        break;
      case "display":
        this.running = true;
        this.beforeOutput();
        this.addBundle("display", event.data, event.metadata, event.display_id);
        break;
      case "result":
        this.running = true;
        this.beforeOutput();
        this.addBundle("result", event.data, event.metadata, null, event.variable);
        break;
      case "display.update":
        if (!this.updateDisplay(event)) return; // not one of ours
        break;
      case "clear":
        this.running = true;
        if (event.wait) {
          this.pendingClear = true;
          return;
        }
        this.clear();
        break;
      case "run.finished":
        this.running = false;
        if (event.error && typeof event.error === "object") {
          this.beforeOutput();
          this.addError(event.error);
        }
        break;
      default:
        return;
    }
    this.balance();
    this.changed();
  }

  /** A run record of `session.snapshot` (PROTOCOL.md 10): its `outputs` as
   * they stand and `truncated` ({bytes_total, bytes_shown} or null). */
  load(outputs, truncated = null) {
    this.reset();
    this.running = false;
    this.exact = false; // offsets after a cut are estimates; clears happened out of sight
    this.streamOffset = 0;
    this.clearOffset = 0;
    this.truncated = truncated && typeof truncated === "object" ? truncated : null;
    for (const out of Array.isArray(outputs) ? outputs : []) {
      if (!out || typeof out !== "object") continue;
      switch (out.event) {
        case "stream":
          if (typeof out.text === "string") this.stream(out.name, out.text);
          break;
        case "display":
        case "result":
          this.addBundle(out.event, out.data, out.metadata, out.display_id, out.variable);
          break;
        case "error":
          this.addError(out.error || {});
          break;
        case "cut":
          this.cut(out);
          break;
        default:
          break;
      }
      this.balance();
    }
    this.changed();
  }

  beforeOutput() {
    if (this.pendingClear) this.clear();
  }

  clear() {
    this.clearOffset = this.streamOffset;
    this.reset();
  }

  stream(name, text) {
    const stream = name === "stderr" ? "stderr" : "stdout";
    this.names.add(stream);
    this.streamOffset += text.length;
    let target = this.current;
    if (!target) {
      target = item("stream", { term: new Terminal() });
      this.add(target);
      this.current = target;
    }
    target.term.write(stream, text);
    this.recost(target);
  }

  addBundle(kind, data, metadata, displayId, variable) {
    const entry = item(kind, {
      data: data && typeof data === "object" ? data : {},
      metadata: metadata && typeof metadata === "object" ? metadata : {},
      displayId: typeof displayId === "string" ? displayId : null,
      variable: typeof variable === "string" ? variable : null,
    });
    this.add(entry);
  }

  addError(error) {
    this.add(item("error", { error }));
  }

  /** A snapshot's cut marker: a display left out, or the middle of the text. */
  cut(out) {
    const bytes = Number(out.bytes) || 0;
    if (out.output === "display") {
      this.add(item("display", {
        data: null, metadata: {}, cutBytes: bytes,
        displayId: typeof out.display_id === "string" ? out.display_id : null, variable: null,
      }));
      return;
    }
    this.headFull = true; // what follows is the tail
    this.current = null;
    this.streamOffset += bytes; // an estimate: bytes, not UTF-16 units
    const gap = this.ensureGap();
    gap.bytes += bytes;
    gap.linesKnown = false;
    gap.ver += 1;
  }

  updateDisplay(event) {
    const shown = this.displays.get(event.display_id);
    if (!shown || !shown.length) return false;
    for (const entry of shown) {
      entry.data = event.data && typeof event.data === "object" ? event.data : {};
      entry.metadata = event.metadata && typeof event.metadata === "object" ? event.metadata : {};
      entry.cutBytes = undefined;
      entry.ver += 1;
      this.recost(entry);
    }
    return true;
  }

  // -- bounds ---------------------------------------------------------------

  add(entry) {
    entry.offset = this.streamOffset;
    const section = this.headFull ? "tail" : "head";
    entry.section = section;
    this[section].push(entry);
    if (entry.kind !== "stream") this.current = null;
    if (entry.displayId) {
      const list = this.displays.get(entry.displayId) || [];
      list.push(entry);
      this.displays.set(entry.displayId, list);
    }
    this.recost(entry);
  }

  recost(entry) {
    let lines;
    let chars;
    if (entry.kind === "stream") {
      lines = entry.term.lineCount;
      chars = entry.term.chars;
    } else {
      lines = 1;
      chars = entry.kind === "error" ? JSON.stringify(entry.error).length : bundleChars(entry.data);
    }
    const totals = this.totals[entry.section];
    totals.lines += lines - entry.lines;
    totals.chars += chars - entry.chars;
    entry.lines = lines;
    entry.chars = chars;
  }

  ensureGap() {
    if (!this.gap) this.gap = item("gap", { lines: 0, bytes: 0, outputs: 0, linesKnown: true });
    return this.gap;
  }

  forget(entry) {
    const totals = this.totals[entry.section];
    totals.lines -= entry.lines;
    totals.chars -= entry.chars;
    if (entry.displayId) {
      const list = (this.displays.get(entry.displayId) || []).filter((e) => e !== entry);
      if (list.length) this.displays.set(entry.displayId, list);
      else this.displays.delete(entry.displayId);
    }
    if (this.current === entry) this.current = null;
  }

  /** Keeps head and tail within the limits (O(what moves)). */
  balance() {
    const L = this.limits;
    const head = this.totals.head;
    if (!this.headFull && (head.lines > L.headLines || head.chars > L.headChars)) {
      this.headFull = true;
      const last = this.head[this.head.length - 1];
      if (last && last.kind === "stream") this.splitHead(last);
    }
    const tail = this.totals.tail;
    while ((tail.lines > L.tailLines || tail.chars > L.tailChars) && this.tail.length) {
      const first = this.tail[0];
      if (first.kind === "stream") {
        const term = first.term;
        const excessLines = tail.lines - L.tailLines;
        const excessChars = tail.chars - L.tailChars;
        let count = 0;
        let chars = 0;
        while (count < term.lines.length && (count < excessLines || chars < excessChars)) {
          chars += term.lines[count].len;
          count += 1;
        }
        if (count >= term.lines.length && (this.tail.length > 1 && first !== this.current)) {
          this.tail.shift();
          this.forget(first);
          const gap = this.ensureGap();
          for (const line of term.lines) gap.bytes += utf8Length(line.text()) + 1;
          gap.lines += term.lines.length;
          gap.ver += 1;
          continue;
        }
        const gone = term.evictFront(count);
        if (!gone.lines) break; // one line left, and it is the newest output
        const gap = this.ensureGap();
        gap.lines += gone.lines;
        gap.bytes += gone.bytes;
        gap.ver += 1;
        this.recost(first);
      } else {
        if (this.tail.length === 1) break; // the newest output stays, whatever its size
        this.tail.shift();
        this.forget(first);
        const gap = this.ensureGap();
        gap.outputs += 1;
        gap.bytes += first.chars;
        gap.ver += 1;
      }
    }
  }

  /** The head's last item is a stream over the head's limits: its lines past
   * them go on in the tail, in a new item that carries the cursor. */
  splitHead(entry) {
    const L = this.limits;
    const head = this.totals.head;
    let lines = head.lines - entry.lines;
    let chars = head.chars - entry.chars;
    const term = entry.term;
    let keep = 0;
    while (keep < term.lines.length - 1 && lines + 1 <= L.headLines && chars + term.lines[keep].len <= L.headChars) {
      lines += 1;
      chars += term.lines[keep].len;
      keep += 1;
    }
    const rest = item("stream", { term: term.splitAt(keep), continued: keep > 0 });
    rest.offset = entry.offset;
    if (keep === 0) {
      this.head.pop();
      this.forget(entry);
    } else {
      this.recost(entry);
    }
    rest.section = "tail";
    this.tail.push(rest);
    this.recost(rest);
    if (this.current === entry || this.current === null) this.current = rest;
  }

  // -- show more ------------------------------------------------------------

  /** Whether "show more" can show more: something is hidden, the run is not
   * going on, and the limits can still grow. */
  get canExpand() {
    return (this.gap !== null || this.hiddenBytes > 0) && !this.running && this.limits.headChars < MAX_LIMITS.chars;
  }

  /** Which stream to ask the runtime for: the only one this run used, else
   * null (both, interleaved as they came). */
  get streamFilter() {
    return this.names.size === 1 ? [...this.names][0] : null;
  }

  /** Builds the output again from the run's full stream text (an async
   * iterable of string chunks, as GET .../output gives it) with 4x the
   * limits, keeping the other outputs this model holds in their places.
   * Resolves to false (and changes nothing) if the output changed meanwhile. */
  async expand(chunks) {
    const version = this.version;
    const grow = (value, max) => Math.min(value * GROWTH, max);
    const L = this.limits;
    const next = new RunOutput({
      headLines: grow(L.headLines, MAX_LIMITS.lines),
      headChars: grow(L.headChars, MAX_LIMITS.chars),
      tailLines: grow(L.tailLines, MAX_LIMITS.lines),
      tailChars: grow(L.tailChars, MAX_LIMITS.chars),
    });
    const name = this.streamFilter || "stdout";
    const others = [...this.head, ...this.tail].filter((e) => e.kind !== "stream");
    let index = 0;
    let fed = 0; // UTF-16 units of the full text read so far
    let skip = this.exact ? this.clearOffset : 0; // text a clear took away
    next.streamOffset = skip; // offsets stay those of the full text
    const place = (upto) => {
      while (index < others.length && others[index].offset <= upto) next.copy(others[index++]);
    };
    place(0);
    for await (let chunk of chunks) {
      if (this.version !== version) return false;
      if (skip > 0) {
        const dropped = Math.min(skip, chunk.length);
        skip -= dropped;
        fed += dropped;
        chunk = chunk.slice(dropped);
      }
      while (chunk && index < others.length && others[index].offset < fed + chunk.length) {
        const at = Math.max(0, others[index].offset - fed);
        if (at) next.stream(name, chunk.slice(0, at));
        fed += at;
        chunk = chunk.slice(at);
        place(fed);
        next.balance();
      }
      if (chunk) {
        next.stream(name, chunk);
        fed += chunk.length;
        next.balance();
      }
    }
    if (this.version !== version) return false;
    while (index < others.length) next.copy(others[index++]);
    next.balance();
    for (const key of ["limits", "head", "tail", "gap", "headFull", "totals", "current", "displays"]) this[key] = next[key];
    this.truncated = null;
    this.pendingClear = false;
    this.changed();
    return true;
  }

  copy(entry) {
    const { kind, data, metadata, displayId, variable, error, cutBytes } = entry;
    this.add(item(kind, { data, metadata, displayId, variable, error, cutBytes }));
  }
}
