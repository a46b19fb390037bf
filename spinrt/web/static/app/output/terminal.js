// A small terminal line buffer for stream text (stdout and stderr of a run):
// what a terminal would show, so progress bars redraw in place.
//
// Handled: "\n" (a new line, carriage return included, as a tty's onlcr
// does), "\r" (back to the line's start: later text overwrites), "\b", tabs
// (to the next multiple of 8), ESC[nA/B/C/D/E/F/G (cursor moves; up is how
// tqdm redraws several bars), ESC[K (erase in line, modes 0-2), ESC[J and
// ESC[2J (erase below / the whole text), and SGR colours and attributes
// (ESC[...m), kept per stream so a colour on stderr does not bleed into
// stdout. Other escape sequences (OSC titles and links, private modes) and
// other control characters are dropped. A sequence split across chunks is
// completed by the next chunk of that stream. Lines wrap at LINE_CHARS
// characters so that no line (and no overwrite) is unbounded.
//
// Positions count UTF-16 code units, as JavaScript strings do.

export const LINE_CHARS = 16384;
const TAB = 8;
const MAX_CSI = 64; // a longer "sequence" is garbage: its ESC is dropped, the rest shown
const MAX_OSC = 4096;
const CONTROL = /[\x00-\x1f\x7f]/g;
const ASCII = /^[\x00-\x7f]*$/;

/** UTF-8 length of a string, in bytes. */
export function utf8Length(text) {
  if (ASCII.test(text)) return text.length;
  let bytes = text.length;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) continue;
    if (c < 0x800) bytes += 1;
    else if (c >= 0xd800 && c < 0xe000) bytes += 1; // each half of a pair: 2 of its 4 bytes
    else bytes += 2;
  }
  return bytes;
}

/** A line: segments of text with one style each ({s: SGR key, e: stderr, t: text}). */
export class Line {
  constructor() {
    this.segs = [];
    this.len = 0;
    this.ver = 0; // bumped on every change (views compare it)
  }

  text() {
    let out = "";
    for (const seg of this.segs) out += seg.t;
    return out;
  }
}

/** The segments of `segs` covering columns [from, to). */
function slice(segs, from, to) {
  const out = [];
  let pos = 0;
  for (const seg of segs) {
    const end = pos + seg.t.length;
    if (end > from && pos < to) {
      const a = Math.max(from, pos) - pos;
      const b = Math.min(to, end) - pos;
      out.push(a === 0 && b === seg.t.length ? seg : { s: seg.s, e: seg.e, t: seg.t.slice(a, b) });
    }
    if (end >= to) break;
    pos = end;
  }
  return out;
}

// (A segment belongs to one line's array at a time, so it may be extended in place.)
function push(segs, seg) {
  const last = segs[segs.length - 1];
  if (last && last.s === seg.s && last.e === seg.e) last.t += seg.t;
  else if (seg.t) segs.push(seg);
}

function blank(n) {
  return { s: "", e: false, t: " ".repeat(n) };
}

// SGR state, kept as a canonical string of parameters ("1;4;31;48;5;200"):
// attributes first, then foreground, then background. Equal styles give equal
// strings, so segments merge and rendering can cache by it.
const ATTRIBUTES = { 1: "1", 2: "2", 3: "3", 4: "4" };

function parseSgr(key) {
  const state = { attrs: new Set(), fg: "", bg: "" };
  if (!key) return state;
  const parts = key.split(";");
  for (let i = 0; i < parts.length; i++) {
    const p = parts[i];
    if (p in ATTRIBUTES) state.attrs.add(p);
    else if (p === "38" || p === "48") {
      const n = parts[i + 1] === "5" ? 2 : 4;
      state[p === "38" ? "fg" : "bg"] = parts.slice(i, i + 1 + n).join(";");
      i += n;
    } else if (p !== "") state[Number(p) >= 40 && !(Number(p) >= 90 && Number(p) <= 97) ? "bg" : "fg"] = p;
  }
  return state;
}

const sgrCache = new Map();

/** The SGR key after applying the parameters of one ESC[...m to `key`. */
export function applySgr(key, params) {
  const cacheKey = key + "|" + params;
  let out = sgrCache.get(cacheKey);
  if (out === undefined) {
    if (sgrCache.size >= 4096) sgrCache.clear(); // truecolor can make any number of styles
    out = computeSgr(key, params);
    sgrCache.set(cacheKey, out);
  }
  return out;
}

function computeSgr(key, params) {
  const state = parseSgr(key);
  const codes = params === "" ? ["0"] : params.split(/[;:]/);
  for (let i = 0; i < codes.length; i++) {
    const n = codes[i] === "" ? 0 : Number(codes[i]);
    if (n === 0) {
      state.attrs.clear();
      state.fg = state.bg = "";
    } else if (n >= 1 && n <= 4) state.attrs.add(String(n));
    else if (n === 21 || n === 22) {
      state.attrs.delete("1");
      state.attrs.delete("2");
    } else if (n === 23) state.attrs.delete("3");
    else if (n === 24) state.attrs.delete("4");
    else if ((n >= 30 && n <= 37) || (n >= 90 && n <= 97)) state.fg = String(n);
    else if ((n >= 40 && n <= 47) || (n >= 100 && n <= 107)) state.bg = String(n);
    else if (n === 39) state.fg = "";
    else if (n === 49) state.bg = "";
    else if (n === 38 || n === 48) {
      const mode = codes[i + 1];
      const take = mode === "5" ? 2 : mode === "2" ? 4 : 0;
      const values = codes.slice(i + 2, i + 1 + take);
      if (take && values.length === take - 1 && values.every((v) => /^\d{1,3}$/.test(v) && Number(v) <= 255)) {
        state[n === 38 ? "fg" : "bg"] = [n, mode, ...values.map(Number)].join(";");
      }
      i += 1 + Math.max(take - 1, 0);
    }
    // other codes (blink, inverse, fonts...) are not shown
  }
  const out = [...state.attrs].sort();
  if (state.fg) out.push(state.fg);
  if (state.bg) out.push(state.bg);
  return out.join(";");
}

export class Terminal {
  constructor() {
    this.lines = [new Line()];
    this.base = 0; // absolute index of lines[0] (lines before it were evicted)
    this.row = 0; // cursor, an index into lines
    this.col = 0;
    this.chars = 0; // sum of the lines' lengths
    this.sgr = { stdout: "", stderr: "" };
    this.pending = { stdout: "", stderr: "" }; // an escape sequence cut by the chunk's end
    this.changes = 0; // bumped on every change (a view with nothing new to show skips the lines)
    this.epoch = 0; // bumped when every line was replaced (ESC[2J)
  }

  get lineCount() {
    return this.lines.length;
  }

  /** The retained text (for tests and copying), lines joined with "\n". */
  text() {
    return this.lines.map((l) => l.text()).join("\n");
  }

  dirty(index) {
    const line = this.lines[index];
    if (line) line.ver += 1;
    this.changes += 1;
  }

  /** Writes a chunk of one stream ("stdout" or "stderr"). O(chunk). */
  write(name, text) {
    const stream = name === "stderr" ? "stderr" : "stdout";
    if (this.pending[stream]) {
      text = this.pending[stream] + text;
      this.pending[stream] = "";
    }
    const err = stream === "stderr";
    const n = text.length;
    let i = 0;
    while (i < n) {
      CONTROL.lastIndex = i;
      const match = CONTROL.exec(text);
      const j = match ? match.index : n;
      if (j > i) this.put(i === 0 && j === n ? text : text.slice(i, j), this.sgr[stream], err);
      if (j >= n) break;
      const c = text.charCodeAt(j);
      i = j + 1;
      if (c === 10 || c === 11 || c === 12) this.newline();
      else if (c === 13) this.col = 0;
      else if (c === 8) this.col = Math.max(0, this.col - 1);
      else if (c === 9) this.col = Math.min(LINE_CHARS, (Math.floor(this.col / TAB) + 1) * TAB);
      else if (c === 27) {
        const end = this.escape(text, j, stream);
        if (end < 0) {
          this.pending[stream] = text.slice(j);
          break;
        }
        i = end;
      }
    }
  }

  /** Handles the escape sequence at text[j] (an ESC); returns the index after
   * it, or -1 when it is cut by the end of the chunk. */
  escape(text, j, stream) {
    const n = text.length;
    if (j + 1 >= n) return -1;
    const kind = text.charCodeAt(j + 1);
    if (kind === 0x5b) { // "[": CSI parameters, intermediates, one final byte
      let k = j + 2;
      for (; k < n; k++) {
        const c = text.charCodeAt(k);
        if (c >= 0x40 && c <= 0x7e) break;
        if (c < 0x20 || c > 0x3f) return k; // not a sequence after all: drop what came so far
        if (k - j > MAX_CSI) return j + 1;
      }
      if (k >= n) return n - j > MAX_CSI ? j + 1 : -1;
      this.csi(text.slice(j + 2, k), text[k], stream);
      return k + 1;
    }
    if (kind === 0x5d) { // "]": OSC, ended by BEL or ESC \
      for (let k = j + 2; k < n; k++) {
        const c = text.charCodeAt(k);
        if (c === 7) return k + 1;
        if (c === 27) {
          if (k + 1 >= n) break;
          return text[k + 1] === "\\" ? k + 2 : k;
        }
        if (k - j > MAX_OSC) return j + 1;
      }
      return n - j > MAX_OSC ? j + 1 : -1;
    }
    if (kind >= 0x20 && kind <= 0x2f) return j + 2 < n ? j + 3 : -1; // ESC ( B and the like
    return j + 2; // ESC 7, ESC 8, ESC =, ESC c...: nothing to show
  }

  csi(params, final, stream) {
    if (final === "m") {
      if (/^[\d;:]*$/.test(params)) this.sgr[stream] = applySgr(this.sgr[stream], params);
      return;
    }
    if (!/^\d*(;\d*)*$/.test(params)) return; // private modes (ESC[?25l) and the like
    const first = params.split(";")[0];
    const value = first === "" ? 0 : Math.min(Number(first), 1e6);
    const count = Math.max(1, value);
    switch (final) {
      case "A": this.row = Math.max(0, this.row - count); break;
      case "B": this.row = Math.min(this.lines.length - 1, this.row + count); break;
      case "C": this.col = Math.min(LINE_CHARS, this.col + count); break;
      case "D": this.col = Math.max(0, this.col - count); break;
      case "E": this.row = Math.min(this.lines.length - 1, this.row + count); this.col = 0; break;
      case "F": this.row = Math.max(0, this.row - count); this.col = 0; break;
      case "G": this.col = Math.min(LINE_CHARS, count - 1); break;
      case "K": this.eraseLine(value); break;
      case "J": this.eraseDisplay(value); break;
      default: break; // scrolling regions, absolute positions...: not a terminal screen here
    }
  }

  /** Writes text without control characters at the cursor, wrapping at LINE_CHARS. */
  put(text, sgr, err) {
    let start = 0;
    while (start < text.length) {
      if (this.col >= LINE_CHARS) this.newline();
      const room = LINE_CHARS - this.col;
      const part = start === 0 && text.length <= room ? text : text.slice(start, start + room);
      this.writeAt(part, sgr, err);
      start += part.length;
    }
  }

  writeAt(text, sgr, err) {
    const line = this.lines[this.row];
    const { col } = this;
    const before = line.len;
    const seg = { s: sgr, e: err, t: text };
    if (col >= before) {
      if (col > before) push(line.segs, blank(col - before));
      push(line.segs, seg);
      line.len = col + text.length;
    } else if (col === 0 && text.length >= before) {
      line.segs = [seg]; // a redraw of the whole line: the common "\r" progress case
      line.len = text.length;
    } else {
      const end = col + text.length;
      const segs = slice(line.segs, 0, col);
      push(segs, seg);
      if (end < before) for (const rest of slice(line.segs, end, before)) push(segs, rest);
      line.segs = segs;
      line.len = Math.max(before, end);
    }
    this.chars += line.len - before;
    this.col = col + text.length;
    this.dirty(this.row);
  }

  newline() {
    this.row += 1;
    this.col = 0;
    if (this.row === this.lines.length) {
      this.lines.push(new Line());
      this.changes += 1;
    }
  }

  eraseLine(mode) {
    const line = this.lines[this.row];
    const before = line.len;
    if (mode === 0) {
      if (this.col >= before) return;
      line.segs = slice(line.segs, 0, this.col);
      line.len = this.col;
    } else if (mode === 1) {
      const upto = Math.min(this.col + 1, before);
      const segs = [blank(upto)];
      for (const rest of slice(line.segs, upto, before)) push(segs, rest);
      line.segs = upto ? segs : line.segs;
    } else if (mode === 2) {
      line.segs = [];
      line.len = 0;
    } else return;
    this.chars += line.len - before;
    this.dirty(this.row);
  }

  eraseDisplay(mode) {
    if (mode === 0) {
      this.eraseLine(0);
      if (this.row < this.lines.length - 1) {
        for (const line of this.lines.splice(this.row + 1)) this.chars -= line.len;
        this.changes += 1;
      }
    } else if (mode === 2 || mode === 3) {
      this.lines = [new Line()];
      this.row = 0;
      this.col = 0;
      this.chars = 0;
      this.epoch += 1;
      this.dirty(0);
    }
  }

  /** Drops the first `count` lines (never the last one); returns
   * {lines, bytes} dropped, bytes in UTF-8 with a newline each. */
  evictFront(count) {
    count = Math.min(count, this.lines.length - 1);
    if (count <= 0) return { lines: 0, bytes: 0 };
    let bytes = 0;
    const gone = this.lines.splice(0, count);
    for (const line of gone) {
      this.chars -= line.len;
      bytes += utf8Length(line.text()) + 1;
    }
    this.base += count;
    this.row = Math.max(0, this.row - count);
    this.changes += 1;
    return { lines: count, bytes };
  }

  /** Moves lines [k, end) to a new Terminal that carries on with the cursor
   * and the streams' state; this one keeps lines [0, k). */
  splitAt(k) {
    const rest = new Terminal();
    rest.lines = this.lines.splice(k);
    if (rest.lines.length === 0) rest.lines.push(new Line());
    for (const line of rest.lines) {
      rest.chars += line.len;
      this.chars -= line.len;
    }
    rest.base = this.base + k;
    rest.row = Math.max(0, this.row - k);
    rest.col = this.row >= k ? this.col : 0;
    rest.sgr = { ...this.sgr };
    rest.pending = { ...this.pending };
    this.row = Math.max(0, this.lines.length - 1);
    this.pending = { stdout: "", stderr: "" };
    this.changes += 1;
    return rest;
  }
}
