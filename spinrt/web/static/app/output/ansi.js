// Terminal lines to HTML: ansi_up (with CSS classes) turns a line's SGR
// colours into spans; bold, faint, italic and underline become our own
// classes, and stderr text is wrapped in `.stderr`. Text is HTML-escaped
// here, so the result is safe for innerHTML.

import { AnsiUp } from "../../vendor/ansi_up.js";
import { Terminal } from "./terminal.js";

const ansi = new AnsiUp();
ansi.use_classes = true; // 256-colour and truecolour still come as style="color:rgb(...)"
const MARK = "\uE000"; // stands for the text while ansi_up builds a style's wrapper
const ATTRIBUTES = { 1: "ansi-bold", 2: "ansi-faint", 3: "ansi-italic", 4: "ansi-underline" };
const wrappers = new Map();

/** [open, close] HTML around text of this SGR key (terminal.js) and stream. */
function wrapper(sgr, err) {
  const key = err ? sgr + "|e" : sgr;
  let found = wrappers.get(key);
  if (found) return found;
  const parts = sgr ? sgr.split(";") : [];
  let n = 0;
  while (n < parts.length && parts[n] in ATTRIBUTES) n++;
  const classes = parts.slice(0, n).map((p) => ATTRIBUTES[p]);
  if (err) classes.push("stderr");
  const colours = parts.slice(n).join(";");
  let [open, close] = colours ? ansi.ansi_to_html(`\x1b[${colours}m${MARK}\x1b[0m`).split(MARK) : ["", ""];
  if (classes.length) {
    open = `<span class="${classes.join(" ")}">${open}`;
    close += "</span>";
  }
  found = [open, close ?? ""];
  if (wrappers.size >= 4096) wrappers.clear();
  wrappers.set(key, found);
  return found;
}

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;" };
export function escapeHtml(text) {
  return text.replace(/[&<>]/g, (c) => ESCAPES[c]);
}

/** A terminal Line as HTML. */
export function lineHtml(line) {
  let out = "";
  for (const seg of line.segs) {
    if (!seg.s && !seg.e) {
      out += escapeHtml(seg.t);
    } else {
      const [open, close] = wrapper(seg.s, seg.e);
      out += open + escapeHtml(seg.t) + close;
    }
  }
  return out;
}

/** Text with ANSI codes and control characters (a traceback, a text/plain
 * repr) as HTML for a <pre>, rendered as a terminal would show it. */
export function textHtml(text, name = "stdout") {
  const term = new Terminal();
  term.write(name, text);
  const lines = term.lines;
  if (lines.length > 1 && lines[lines.length - 1].len === 0) lines.pop();
  return lines.map(lineHtml).join("\n");
}

export const CHUNK_LINES = 100;

/** Brings `host` up to date with `term`: its children are chunks (<div
 * class="chunk">) of CHUNK_LINES lines (<div class="ln">), so that the
 * browser lays out and paints only the chunks in view (content-visibility in
 * output.css). Evicted lines leave from the front, changed lines are rendered
 * again, new ones are appended with one HTML parse per chunk. `state` is this
 * host's memory of what it shows. O(lines changed). */
export function syncTerminal(host, term, state) {
  if (state.term !== term || state.epoch !== term.epoch) {
    host.textContent = "";
    Object.assign(state, { term, epoch: term.epoch, base: term.base, shown: [], changes: -1 });
  }
  if (state.changes === term.changes) return;
  state.changes = term.changes;
  const shown = state.shown; // [{line, ver}], in the order of the lines in host
  let drop = Math.min(term.base - state.base, shown.length);
  state.base = term.base;
  if (drop > 0) {
    shown.splice(0, drop);
    while (drop > 0) {
      const chunk = host.firstElementChild;
      const count = chunk.childElementCount;
      if (drop >= count) {
        chunk.remove();
        drop -= count;
      } else {
        const range = document.createRange();
        range.setStartBefore(chunk.firstChild);
        range.setEndBefore(chunk.children[drop]);
        range.deleteContents();
        drop = 0;
      }
    }
  }
  const lines = term.lines;
  const firstCount = host.firstElementChild ? host.firstElementChild.childElementCount : 0;
  const nodeOf = (i) => {
    if (i < firstCount) return host.firstElementChild.children[i];
    const j = i - firstCount;
    return host.children[1 + Math.floor(j / CHUNK_LINES)].children[j % CHUNK_LINES];
  };
  const common = Math.min(shown.length, lines.length);
  for (let i = 0; i < common; i++) {
    const line = lines[i];
    const was = shown[i];
    if (was.line !== line || was.ver !== line.ver) {
      nodeOf(i).innerHTML = lineHtml(line);
      shown[i] = { line, ver: line.ver };
    }
  }
  while (shown.length > lines.length) {
    const chunk = host.lastElementChild;
    chunk.lastElementChild.remove();
    if (!chunk.childElementCount) chunk.remove();
    shown.pop();
  }
  let i = shown.length;
  while (i < lines.length) {
    let chunk = host.lastElementChild;
    const room = chunk ? CHUNK_LINES - chunk.childElementCount : 0; // only the last chunk has room
    if (!chunk || room <= 0) {
      chunk = document.createElement("div");
      chunk.className = "chunk";
      host.append(chunk);
      continue;
    }
    const upto = Math.min(lines.length, i + room);
    let markup = "";
    for (; i < upto; i++) {
      markup += `<div class="ln">${lineHtml(lines[i])}</div>`;
      shown.push({ line: lines[i], ver: lines[i].ver });
    }
    chunk.insertAdjacentHTML("beforeend", markup);
  }
}
