// A modal dialog: a native <dialog> opened with showModal(), so the page
// behind it is inert and focus starts on its first control (or the one
// marked autofocus). Esc, or a click on the backdrop, calls onClose; focus
// goes back where it was when it closes. Key presses in it go no further,
// so page-wide shortcuts do not act behind it.
//
// Usage: <${Modal} id="x" title="Title" onClose=${fn} attrs=${{"data-step": step}}>...</${Modal}>

import { html, useEffect, useRef } from "../../vendor/preact.js";

export function Modal({ id, title, onClose, attrs = {}, children }) {
  const ref = useRef(null);

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
  const onKeyDown = (event) => event.stopPropagation();
  const onClick = (event) => event.target === ref.current && onClose(); // the backdrop

  return html`<dialog id=${id} ref=${ref} class="modal" aria-labelledby=${id + "-title"}
      onCancel=${onCancel} onKeyDown=${onKeyDown} onClick=${onClick} ...${attrs}>
    <div class="modal-body">
      <h2 id=${id + "-title"}>${title}</h2>
      ${children}
    </div>
  </dialog>`;
}
