// Who this page is to the runtime: welcome's `you` (PROTOCOL.md section 9),
// the token's name and role, in the page's header. Nothing before the
// runtime has said.
//
// Usage: <${You} you=${store.you.value} />

import { html } from "../../vendor/preact.js";

const MAY = {
  viewer: "reads sessions and notebooks; runs and changes nothing",
  runner: "runs notebooks and cells as they are written; changes nothing",
  editor: "writes and runs notebooks and sessions",
  owner: "everything, and administers the runtime: tokens, the audit trail",
};

export function You({ you }) {
  if (!you || typeof you.name !== "string") return null;
  const role = typeof you.role === "string" ? you.role : "unknown";
  return html`<span id="you" class="you" data-role=${role} title=${`You are ${you.name}, ${role}: ${MAY[role] || "a role this page does not know"}`}>
    <span id="you-name">${you.name}</span>
    <span id="you-role" class="tag">${role}</span>
  </span>`;
}
