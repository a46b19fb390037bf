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

/** Brings `host`'s children (one <div class="ln"> per line) up to date with
 * `term`: evicted lines leave from the front, changed lines are rendered
 * again, new ones appended. `state` is this host's memory of what it shows. */
export function syncTerminal(host, term, state) {
  if (state.term !== term || state.epoch !== term.epoch) {
    host.textContent = "";
    Object.assign(state, { term, epoch: term.epoch, base: term.base, shown: [], changes: -1 });
  }
  if (state.changes === term.changes) return;
  state.changes = term.changes;
  const shown = state.shown; // [{line, ver}] in the order of host's children
  const drop = Math.min(term.base - state.base, shown.length);
  if (drop > 0) {
    if (drop === shown.length) {
      host.textContent = "";
    } else {
      const range = document.createRange();
      range.setStartBefore(host.firstChild);
      range.setEndBefore(host.childNodes[drop]);
      range.deleteContents();
    }
    shown.splice(0, drop);
  }
  state.base = term.base;
  const lines = term.lines;
  const common = Math.min(shown.length, lines.length);
  const nodes = host.childNodes;
  for (let i = 0; i < common; i++) {
    const line = lines[i];
    const was = shown[i];
    if (was.line !== line || was.ver !== line.ver) {
      nodes[i].innerHTML = lineHtml(line);
      shown[i] = { line, ver: line.ver };
    }
  }
  while (shown.length > lines.length) {
    host.lastChild.remove();
    shown.pop();
  }
  if (lines.length > shown.length) {
    const fragment = document.createDocumentFragment();
    for (let i = shown.length; i < lines.length; i++) {
      const div = document.createElement("div");
      div.className = "ln";
      div.innerHTML = lineHtml(lines[i]);
      fragment.append(div);
      shown.push({ line: lines[i], ver: lines[i].ver });
    }
    host.append(fragment);
  }
}
