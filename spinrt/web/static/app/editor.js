// A cell's CodeMirror 6 editor: the language follows the cell's type, the
// theme follows the system's light or dark setting, and the notebook's
// editing keys (Shift+Enter, Ctrl/Cmd+Enter, Escape) go to the notebook.

import {
  bracketMatching,
  closeBrackets,
  Compartment,
  EditorState,
  EditorView,
  highlightActiveLine,
  indentWithTab,
  json,
  keymap,
  markdownLanguage,
  minimalSetup,
  oneDark,
  placeholder,
  Prec,
  python,
  shell,
} from "../vendor/codemirror.js";

const shellLanguage = shell(); // the vendor bundle wraps the legacy mode in StreamLanguage

/** The CodeMirror language extension for a cell type (none for plain text). */
export function languageFor(type) {
  switch (type) {
    case "python":
      return python();
    case "shell":
      return shellLanguage;
    case "markdown":
    case "llm":
      return markdownLanguage;
    case "rest":
      return json(); // a REST cell's source is its request body, usually JSON
    default:
      return [];
  }
}

const PLACEHOLDERS = {
  python: "Python code",
  shell: "Shell script",
  markdown: "Markdown",
  rest: "Request body (optional)",
  llm: "Prompt",
};

const darkQuery = window.matchMedia("(prefers-color-scheme: dark)");
const themeFor = () => (darkQuery.matches ? oneDark : []);
const editors = new Set();
darkQuery.addEventListener("change", () => {
  for (const editor of editors) editor.view.dispatch({ effects: editor.theme.reconfigure(themeFor()) });
});

const REMOTE = "spin.remote"; // userEvent of changes that come from the document, not the keyboard

/**
 * Makes an editor in `parent`. Handlers: onChange(text) for the user's own
 * edits, onRun("advance" | "stay"), onEscape(), onFocus().
 * Returns {view, text(), setText(text), setType(type), setReadOnly(bool), focus(), destroy()}.
 */
export function createEditor(parent, { text, type, readOnly = false, label, onChange, onRun, onEscape, onFocus }) {
  const language = new Compartment();
  const theme = new Compartment();
  const editable = new Compartment();
  const hint = new Compartment();
  const keys = Prec.highest(
    keymap.of([
      { key: "Shift-Enter", run: () => (onRun("advance"), true) },
      { key: "Mod-Enter", run: () => (onRun("stay"), true) },
      { key: "Escape", run: () => (onEscape(), true) },
    ]),
  );
  const view = new EditorView({
    parent,
    state: EditorState.create({
      doc: text,
      extensions: [
        keys,
        minimalSetup,
        bracketMatching(),
        closeBrackets(),
        highlightActiveLine(),
        keymap.of([indentWithTab]),
        EditorView.lineWrapping,
        language.of(languageFor(type)),
        theme.of(themeFor()),
        editable.of([EditorState.readOnly.of(readOnly), EditorView.editable.of(!readOnly)]),
        hint.of(placeholder(PLACEHOLDERS[type] || "Source")),
        EditorView.contentAttributes.of({ "aria-label": label || "Cell source" }),
        EditorView.updateListener.of((update) => {
          if (update.focusChanged && update.view.hasFocus) onFocus();
          if (!update.docChanged) return;
          if (update.transactions.some((tr) => tr.isUserEvent(REMOTE))) return;
          onChange(update.state.doc.toString());
        }),
      ],
    }),
  });
  const editor = {
    view,
    theme,
    text: () => view.state.doc.toString(),
    /** Shows the document's text, keeping the cursor where it can be. */
    setText(next) {
      const current = view.state.doc.toString();
      if (next === current) return;
      const head = Math.min(view.state.selection.main.head, next.length);
      view.dispatch({
        changes: { from: 0, to: current.length, insert: next },
        selection: { anchor: head },
        userEvent: REMOTE,
      });
    },
    setType(nextType) {
      view.dispatch({
        effects: [language.reconfigure(languageFor(nextType)), hint.reconfigure(placeholder(PLACEHOLDERS[nextType] || "Source"))],
      });
    },
    setReadOnly(value) {
      view.dispatch({ effects: editable.reconfigure([EditorState.readOnly.of(value), EditorView.editable.of(!value)]) });
    },
    focus() {
      view.focus();
    },
    destroy() {
      editors.delete(editor);
      view.destroy();
    },
  };
  editors.add(editor);
  return editor;
}
