// The keyboard help overlay: a modal dialog listing every entry of
// SHORTCUTS (app/shortcuts.js), with Cmd on macOS and Ctrl elsewhere.
//
// A native <dialog> opened with showModal(): the rest of the page is inert
// while it is open. Tab and Shift+Tab wrap around inside it (without this,
// Tab from its last control leaves the page), Esc or the Close button call
// onClose, and focus goes back where it was when it closes. Key presses in
// it go no further, so the notebook's shortcuts do not act behind it.
//
// Usage: <${HelpOverlay} open=${bool} onClose=${fn} />  (mac: optional, for tests)

import { html, useEffect, useRef } from "../../vendor/preact.js";
import { isMac, keyLabel, keySpoken, SHORTCUTS } from "../shortcuts.js";

const MODES = { edit: "Edit mode", command: "Command mode", "edit and command": "Both modes" };

function Key({ name, mac }) {
  const spoken = keySpoken(name);
  return html`<kbd aria-label=${spoken || undefined}>${keyLabel(name, mac)}</kbd>`;
}

function Keys({ keys, sequence, mac }) {
  return keys.map((key, i) => html`${i > 0 && (sequence ? " " : html`<span class="plus">+</span>`)}<${Key} name=${key} mac=${mac} />`);
}

function focusables(root) {
  return [...root.querySelectorAll("button, [href], input, select, textarea, [tabindex]:not([tabindex='-1'])")]
    .filter((el) => !el.disabled);
}

function Dialog({ onClose, mac }) {
  const ref = useRef(null);
  const closeButton = useRef(null);

  useEffect(() => {
    const dialog = ref.current;
    const before = document.activeElement;
    dialog.showModal();
    closeButton.current.focus();
    return () => {
      if (dialog.open) dialog.close();
      if (before && before.isConnected && typeof before.focus === "function") before.focus();
    };
  }, []);

  const onKeyDown = (event) => {
    event.stopPropagation();
    if (event.key === "Escape") {
      event.preventDefault(); // no native cancel: onClose decides
      onClose();
    } else if (event.key === "Tab") {
      const all = focusables(ref.current);
      if (all.length === 0) return;
      const first = all[0];
      const last = all[all.length - 1];
      if (event.shiftKey && document.activeElement === first) {
        event.preventDefault();
        last.focus();
      } else if (!event.shiftKey && document.activeElement === last) {
        event.preventDefault();
        first.focus();
      }
    }
  };
  // Esc reaches the dialog as "cancel" too when focus is outside its content.
  const onCancel = (event) => {
    event.preventDefault();
    onClose();
  };
  // A click on the backdrop lands on the <dialog> element itself.
  const onClick = (event) => event.target === ref.current && onClose();

  return html`<dialog id="help" ref=${ref} class="help" role="dialog" aria-modal="true"
      aria-labelledby="help-title" onKeyDown=${onKeyDown} onCancel=${onCancel} onClick=${onClick}>
    <div class="help-head">
      <h2 id="help-title">Keyboard shortcuts</h2>
      <button ref=${closeButton} id="help-close" class="quiet small" type="button" onClick=${onClose}>Close</button>
    </div>
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
  </dialog>`;
}

export function HelpOverlay({ open, onClose, mac = isMac() }) {
  return open ? html`<${Dialog} onClose=${onClose} mac=${mac} />` : null;
}
