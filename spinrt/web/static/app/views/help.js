// The keyboard help overlay: a modal dialog (views/modal.js: the page behind
// it inert, Tab kept inside, Esc, Close or a click beside it close it, focus
// goes back) listing every entry of SHORTCUTS (app/shortcuts.js), with Cmd
// on macOS and Ctrl elsewhere.
//
// Usage: <${HelpOverlay} open=${bool} onClose=${fn} />  (mac: optional, for tests)

import { html } from "../../vendor/preact.js";
import { isMac, keyLabel, keySpoken, SHORTCUTS } from "../shortcuts.js";
import { Modal } from "./modal.js";

const MODES = { edit: "Edit mode", command: "Command mode", "edit and command": "Both modes" };

function Key({ name, mac }) {
  const spoken = keySpoken(name);
  return html`<kbd aria-label=${spoken || undefined}>${keyLabel(name, mac)}</kbd>`;
}

function Keys({ keys, sequence, mac }) {
  return keys.map((key, i) => html`${i > 0 && (sequence ? " " : html`<span class="plus">+</span>`)}<${Key} name=${key} mac=${mac} />`);
}

function Dialog({ onClose, mac }) {
  return html`<${Modal} id="help" title="Keyboard shortcuts" className="help" closeLabel="Close" onClose=${onClose}>
    <div class="help-body" tabindex="0" aria-label="Shortcuts">
      <table>
        <thead><tr><th scope="col">Keys</th><th scope="col">Does</th><th scope="col">In</th></tr></thead>
        <tbody>
          ${SHORTCUTS.map((s) => html`<tr key=${s.id} data-shortcut=${s.id}>
            <td class="keys"><${Keys} keys=${s.keys} sequence=${s.sequence} mac=${mac} />${s.alt && html` or <${Keys} keys=${s.alt} mac=${mac} />`}</td>
            <td>${s.does}</td>
            <td class="muted">${MODES[s.mode] || s.mode}</td>
          </tr>`)}
        </tbody>
      </table>
    </div>
    <p class="hint">Esc closes this list.</p>
  </${Modal}>`;
}

export function HelpOverlay({ open, onClose, mac = isMac() }) {
  return open ? html`<${Dialog} onClose=${onClose} mac=${mac} />` : null;
}
