// The form asking for a token, when the page has none (or it was refused).
// The field is a password field, cleared once read; the token goes to
// token.js (sessionStorage), never into the DOM.

import { html } from "../../vendor/preact.js";

export function Login({ error, onSubmit }) {
  const submit = (event) => {
    event.preventDefault(); // handled here; the CSP allows no form submission anyway
    const field = event.currentTarget.elements.token;
    const token = field.value.trim();
    field.value = "";
    if (token) onSubmit(token);
  };
  return html`<main class="login">
    <form id="login" class="card" onSubmit=${submit} autocomplete="off">
      <h1>spinrt</h1>
      <p>Enter the runtime's token (<code>SPIN_TOKEN</code>) to open it.</p>
      <label for="token-field">Token</label>
      <input id="token-field" name="token" type="password" autocomplete="off" spellcheck="false" required autofocus />
      ${error && html`<p class="error" role="alert">${error}</p>`}
      <button type="submit">Open</button>
      <p class="hint">It stays in this tab only. <code>make run</code> prints a link that carries it.</p>
    </form>
  </main>`;
}
