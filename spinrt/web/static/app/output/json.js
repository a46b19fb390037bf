// application/json as a collapsible tree of <details> elements. Children are
// rendered only while their node is open, PAGE at a time, so a large value
// costs DOM only for what is looked at.

import { html, useState } from "../../vendor/preact.js";

const PAGE = 100;
const OPEN_DEPTH = 1; // levels open at first

function Scalar({ value }) {
  if (value === null) return html`<span class="json-null">null</span>`;
  switch (typeof value) {
    case "string": return html`<span class="json-string">${JSON.stringify(value)}</span>`;
    case "number": return html`<span class="json-number">${String(value)}</span>`;
    case "boolean": return html`<span class="json-boolean">${String(value)}</span>`;
    default: return html`<span class="json-null">${String(value)}</span>`;
  }
}

function Key({ name }) {
  if (name === null) return null;
  return html`<span class="json-key">${typeof name === "number" ? name : JSON.stringify(name)}</span>: `;
}

function JsonNode({ name, value, depth }) {
  const [open, setOpen] = useState(depth < OPEN_DEPTH);
  const [shown, setShown] = useState(PAGE);
  if (value === null || typeof value !== "object") {
    return html`<div class="json-leaf"><${Key} name=${name} /><${Scalar} value=${value} /></div>`;
  }
  const isArray = Array.isArray(value);
  const keys = isArray ? null : Object.keys(value);
  const size = isArray ? value.length : keys.length;
  if (size === 0) return html`<div class="json-leaf"><${Key} name=${name} />${isArray ? "[]" : "{}"}</div>`;
  const summary = isArray ? `[…] ${size} item${size === 1 ? "" : "s"}` : `{…} ${size} key${size === 1 ? "" : "s"}`;
  const children = [];
  if (open) {
    const upto = Math.min(size, shown);
    for (let i = 0; i < upto; i++) {
      const key = isArray ? i : keys[i];
      children.push(html`<${JsonNode} key=${key} name=${key} value=${value[key]} depth=${depth + 1} />`);
    }
  }
  return html`<details class="json-node" open=${open} onToggle=${(e) => setOpen(e.currentTarget.open)}>
    <summary><${Key} name=${name} /><span class="json-summary">${summary}</span></summary>
    ${open && html`<div class="json-children">
      ${children}
      ${size > shown && html`<button type="button" class="link" data-action="json-more"
        onClick=${() => setShown(shown + PAGE)}>show ${Math.min(PAGE, size - shown)} more (${size - shown} not shown)</button>`}
    </div>`}
  </details>`;
}

export function JsonTree({ value }) {
  return html`<div class="json-tree"><${JsonNode} name=${null} value=${value} depth=${0} /></div>`;
}
