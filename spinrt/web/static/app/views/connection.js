// The connection indicator: one element whose data-state follows the client
// ("connecting", "open", "reconnecting", "unauthorized", "closed").

import { html } from "../../vendor/preact.js";

const LABELS = {
  connecting: "Connecting…",
  open: "Connected",
  reconnecting: "Reconnecting…",
  unauthorized: "Token refused",
  closed: "Disconnected",
};

export function ConnectionIndicator({ state }) {
  return html`<span id="connection" class="connection" data-state=${state} role="status" aria-live="polite">
    <span class="dot" aria-hidden="true"></span>${LABELS[state] || state}
  </span>`;
}
