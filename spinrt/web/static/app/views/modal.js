// A modal dialog: a native <dialog> opened with showModal(), so the page
// behind it is inert and focus starts on its first control (or the one
// marked autofocus). Tab and Shift+Tab wrap around inside it (without this,
// Tab from its last control leaves the page for the browser's own bar).
// Esc, or a click on the backdrop, calls onClose (a press that starts inside,
// say selecting text, and ends on the backdrop does not); focus goes back
// where it was when it closes. Key presses in it go no further, so
// page-wide shortcuts do not act behind it.
//
// Usage: <${Modal} id="x" title="Title" onClose=${fn} attrs=${{"data-step": step}}>...</${Modal}>
//   className   more classes for the <dialog> ("help")
//   closeLabel  a button beside the title (id "<id>-close") that calls onClose

import { html, useEffect, useRef } from "../../vendor/preact.js";

function focusables(root) {
  return [...root.querySelectorAll("button, [href], input, select, textarea, [tabindex]:not([tabindex='-1'])")]
    .filter((el) => !el.disabled && !el.closest("[hidden]"));
}

export function Modal({ id, title, onClose, attrs = {}, className = "", closeLabel = null, children }) {
  const ref = useRef(null);
  const pressedOn = useRef(null);

  useEffect(() => {
    const dialog = ref.current;
    const before = document.activeElement;
    dialog.showModal();
    return () => {
      if (dialog.open) dialog.close();
      if (before && before.isConnected && typeof before.focus === "function") before.focus();
    };
  }, []);

  const onCancel = (event) => {
    event.preventDefault(); // Esc: onClose decides
    onClose();
  };
  const onKeyDown = (event) => {
    event.stopPropagation();
    if (event.key !== "Tab") return;
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
  };
  // The backdrop is the <dialog> element itself; its content fills the box.
  const onMouseDown = (event) => (pressedOn.current = event.target);
  const onClick = (event) => {
    if (event.target === ref.current && pressedOn.current === ref.current) onClose();
    pressedOn.current = null;
  };

  return html`<dialog id=${id} ref=${ref} class=${className ? `modal ${className}` : "modal"} role="dialog" aria-modal="true"
      aria-labelledby=${id + "-title"} onCancel=${onCancel} onKeyDown=${onKeyDown} onMouseDown=${onMouseDown}
      onClick=${onClick} ...${attrs}>
    <div class="modal-body">
      <div class="modal-head">
        <h2 id=${id + "-title"}>${title}</h2>
        ${closeLabel && html`<button id=${id + "-close"} class="quiet small" type="button" onClick=${onClose}>${closeLabel}</button>`}
      </div>
      ${children}
    </div>
  </dialog>`;
}
