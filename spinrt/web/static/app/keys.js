// The notebook's command-mode keys (Jupyter's): while no editor or field has
// the focus, single keys act on the selected cell. In an editor, CodeMirror
// handles Shift+Enter, Ctrl/Cmd+Enter and Escape itself (editor.js). The
// list shown to people is app/shortcuts.js.

const DOUBLE_PRESS_MS = 800; // D D: the second D must follow within this

function typing(target) {
  if (!(target instanceof Element)) return false;
  return Boolean(target.closest("input, textarea, select, [contenteditable], .cm-editor, dialog, [role=dialog]"));
}

/**
 * A keydown handler for the document. `act` has: selected() (a cell id or
 * null), step(delta), edit(), run(mode), insert(where), remove(),
 * setType(type), help(), enabled().
 */
export function commandKeys(act) {
  let lastD = 0;
  return (event) => {
    if (!act.enabled() || event.defaultPrevented || typing(event.target)) return;
    const mod = event.ctrlKey || event.metaKey;
    const key = event.key;
    let handled = true;
    if (key === "Enter" && event.shiftKey && !mod) act.run("advance");
    else if (key === "Enter" && mod) act.run("stay");
    else if (event.altKey || mod) handled = false;
    else if (key === "?") act.help();
    else if (key === "Enter") act.edit();
    else if (key === "ArrowUp" || key === "k") act.step(-1);
    else if (key === "ArrowDown" || key === "j") act.step(1);
    else if (key === "a" || key === "A") act.insert("above");
    else if (key === "b" || key === "B") act.insert("below");
    else if (key === "m" || key === "M") act.setType("markdown");
    else if (key === "y" || key === "Y") act.setType("python");
    else if (key === "d" || key === "D") {
      const now = performance.now();
      if (now - lastD < DOUBLE_PRESS_MS) {
        lastD = 0;
        act.remove();
      } else lastD = now;
    } else handled = false;
    if (handled) event.preventDefault();
  };
}
