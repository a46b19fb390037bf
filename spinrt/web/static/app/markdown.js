// Markdown we render in the page itself (markdown cells while not edited):
// marked, then DOMPurify. Besides DOMPurify's defaults (no script, no event
// handlers, no javascript: URLs), forms and style attributes are refused,
// since they let a document imitate the page's own controls, and links open
// in a new tab without access to this one.

import { DOMPurify } from "../vendor/dompurify.js";
import { marked } from "../vendor/marked.js";

const CONFIG = {
  FORBID_TAGS: ["form", "input", "button", "textarea", "select", "option", "style", "iframe", "frame", "object", "embed", "dialog"],
  // id, name and class would let a document borrow (or clobber) the page's own elements and styles
  FORBID_ATTR: ["style", "formaction", "autofocus", "id", "name", "class"],
};

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A" && node.hasAttribute("href")) {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer");
  }
});

/** Sanitised HTML (a string) for a markdown text. */
export function markdownToHtml(text) {
  return DOMPurify.sanitize(marked.parse(String(text), { async: false }), CONFIG);
}
