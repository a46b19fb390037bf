// One MIME bundle (a display or result) shown by its richest type, in
// Jupyter's order: HTML, markdown, SVG, PNG/JPEG/GIF, JSON, plain text.
//
// - text/html: a sandboxed frame (frame.js);
// - text/markdown: marked then DOMPurify (../markdown.js);
// - images: data: URLs in an <img> (SVG too, base64: its scripts never run
//   in an image);
// - application/json (and */*+json): a collapsible tree (json.js);
// - text/plain: as a terminal shows it (ANSI colours).
// Text over TEXT_CHARS is cut, with a note; the bundle itself is bounded by
// the model's limits.

import { html, useMemo } from "../../vendor/preact.js";
import { markdownToHtml } from "../markdown.js";
import { textHtml } from "./ansi.js";
import { HtmlFrame } from "./frame.js";
import { JsonTree } from "./json.js";

export const MIME_ORDER = [
  "text/html",
  "text/markdown",
  "image/svg+xml",
  "image/png",
  "image/jpeg",
  "image/gif",
  "application/json",
  "text/plain",
];
const JSON_TYPE = /^application\/(?:[\w.+-]+\+)?json$/;
const TEXT_CHARS = 1024 * 1024;

/** The type to show from a bundle, or null when none is known. */
export function pickMime(data) {
  if (!data || typeof data !== "object") return null;
  for (const type of MIME_ORDER) if (data[type] !== undefined && data[type] !== null) return type;
  return Object.keys(data).find((type) => JSON_TYPE.test(type)) || null;
}

/** nbformat allows multi-line strings as lists of lines. */
function asText(value) {
  if (Array.isArray(value)) return value.map(String).join("");
  return typeof value === "string" ? value : JSON.stringify(value);
}

function cutText(text) {
  return text.length > TEXT_CHARS ? [text.slice(0, TEXT_CHARS), text.length - TEXT_CHARS] : [text, 0];
}

function Cut({ chars }) {
  return chars ? html`<div class="output-note">… ${chars.toLocaleString()} more characters not shown</div>` : null;
}

function base64Utf8(text) {
  let binary = "";
  const bytes = new TextEncoder().encode(text);
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

function size(meta) {
  const out = {};
  for (const key of ["width", "height"]) {
    const value = meta && meta[key];
    if (typeof value === "number" && value > 0) out[key] = Math.round(value);
  }
  return out;
}

function Markdown({ text }) {
  const [shown, more] = cutText(text);
  const rendered = useMemo(() => markdownToHtml(shown), [shown]);
  return html`<div class="output-markdown" dangerouslySetInnerHTML=${{ __html: rendered }}></div><${Cut} chars=${more} />`;
}

function Plain({ text }) {
  const [shown, more] = cutText(text);
  const rendered = useMemo(() => textHtml(shown), [shown]);
  return html`<pre class="output-text" dangerouslySetInnerHTML=${{ __html: rendered }}></pre><${Cut} chars=${more} />`;
}

function Image({ type, value, meta }) {
  const src = useMemo(() => (type === "image/svg+xml"
    ? `data:image/svg+xml;base64,${base64Utf8(asText(value))}`
    : `data:${type};base64,${asText(value).replace(/\s+/g, "")}`), [type, value]);
  const { width, height } = size(meta);
  return html`<img class="output-image" src=${src} width=${width} height=${height} alt="" />`;
}

export function MimeBundle({ data, metadata }) {
  const type = pickMime(data);
  if (type === null) {
    const types = Object.keys(data || {});
    return html`<div class="output-note">${types.length ? `Output of type ${types.join(", ")} cannot be shown here.` : "Empty output."}</div>`;
  }
  const value = data[type];
  const meta = (metadata && metadata[type]) || {};
  if (type === "text/html") return html`<${HtmlFrame} source=${asText(value)} />`;
  if (type === "text/markdown") return html`<${Markdown} text=${asText(value)} />`;
  if (type.startsWith("image/")) return html`<${Image} type=${type} value=${value} meta=${meta} />`;
  if (type === "text/plain") return html`<${Plain} text=${asText(value)} />`;
  return html`<${JsonTree} value=${value} />`;
}
