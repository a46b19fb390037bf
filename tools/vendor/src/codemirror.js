// The CodeMirror 6 family in ONE bundle: two bundles would each carry their
// own @codemirror/state, and CodeMirror refuses extensions from another copy.
// Re-export everything the UI's modules need from here.
export { basicSetup, minimalSetup } from "codemirror";
export {
  EditorView, keymap, placeholder, lineNumbers, highlightActiveLine,
  highlightActiveLineGutter, highlightSpecialChars, drawSelection, ViewPlugin,
  Decoration, WidgetType,
} from "@codemirror/view";
export {
  EditorState, EditorSelection, Compartment, StateEffect, StateField, Prec,
  Transaction, Annotation,
} from "@codemirror/state";
export {
  StreamLanguage, LanguageSupport, syntaxHighlighting, defaultHighlightStyle,
  HighlightStyle, indentUnit, bracketMatching, foldGutter,
} from "@codemirror/language";
export {
  defaultKeymap, history, historyKeymap, indentWithTab, insertNewlineAndIndent,
} from "@codemirror/commands";
export { autocompletion, closeBrackets } from "@codemirror/autocomplete";
export { python } from "@codemirror/lang-python";
export { json } from "@codemirror/lang-json";
// markdownLanguage alone: markdown() would also pull the HTML, CSS and
// JavaScript parsers for embedded code (~190 KB more).
export { markdownLanguage } from "@codemirror/lang-markdown";
export { oneDark } from "@codemirror/theme-one-dark";

import { StreamLanguage } from "@codemirror/language";
import { shell as shellMode } from "@codemirror/legacy-modes/mode/shell";

/** Shell (bash) highlighting: CodeMirror 5's mode, run by StreamLanguage. */
export const shell = () => StreamLanguage.define(shellMode);
