// Secrets entry: a name and a password field sending `secrets.set` for the
// session (PROTOCOL.md section 3). The value field is emptied as soon as it
// is read and the value is kept in no state or storage: it exists only in
// the one request. The runtime never echoes it and masks it (`***`) in
// everything the session emits. Listed are the names set from this tab in
// this session (the runtime offers no list of them).
//
// Usage: <${SecretsPanel} client=${client} session=${sessionId} />

import { html, useEffect, useState } from "../../vendor/preact.js";

// The runtime's rule for the NAME of `{{secret:NAME}}` (spinrt/templates.py):
// a secret named otherwise could not be used in a template.
const NAME = /^[A-Za-z_][A-Za-z0-9_.\-]*$/;
// The runtime masks no value shorter than this (spinrt/secret_forms.py MIN_LENGTH).
const MASKED_FROM = 4;

/** null when `name` can be a secret's name, else why not. */
export function secretNameProblem(name) {
  if (!name) return "Give the secret a name.";
  if (!NAME.test(name)) {
    return `'${name}' cannot be a secret's name: it must start with a letter or _ and hold only letters, digits, _, . and - (it is used as {{secret:${name}}}).`;
  }
  return null;
}

export function SecretsPanel({ client, session }) {
  const [names, setNames] = useState([]);
  const [error, setError] = useState(null);
  const [notice, setNotice] = useState(null);
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    setNames([]);
    setError(null);
    setNotice(null);
  }, [session]);

  const submit = async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    const name = form.elements.name.value.trim();
    const problem = secretNameProblem(name);
    if (problem) {
      setError(problem);
      setNotice(null);
      form.elements.name.focus();
      return;
    }
    const field = form.elements.value;
    const value = field.value;
    field.value = "";
    if (!value) {
      setError("Type the secret's value.");
      return;
    }
    const short = value.length < MASKED_FROM;
    setBusy(true);
    setError(null);
    setNotice(null);
    const sent = client.request("secrets.set", { session, secrets: { [name]: value } });
    try {
      await sent;
      setNames((list) => (list.includes(name) ? list : [...list, name].sort()));
      form.elements.name.value = "";
      setNotice(short
        ? `${name} is set, but values shorter than ${MASKED_FROM} characters are not masked in output.`
        : `${name} is set. Use it as {{secret:${name}}}.`);
    } catch (e) {
      setError(e.message);
    } finally {
      setBusy(false);
    }
  };

  return html`<section id="secrets" class="card panel" aria-labelledby="secrets-title">
    <h2 id="secrets-title">Secrets</h2>
    <form class="secrets-form" onSubmit=${submit} autocomplete="off">
      <label for="secret-name">Name</label>
      <input id="secret-name" name="name" autocomplete="off" spellcheck="false" maxlength="200" placeholder="e.g. API_KEY" />
      <label for="secret-value">Value</label>
      <input id="secret-value" name="value" type="password" autocomplete="off" spellcheck="false" />
      <button id="secret-set" type="submit" disabled=${busy}>Set</button>
    </form>
    ${error && html`<p class="error" role="alert">${error}</p>`}
    ${notice && html`<p class="hint" role="status">${notice}</p>`}
    ${names.length > 0 && html`<ul class="secret-names" aria-label="Secrets set from this tab">
      ${names.map((n) => html`<li key=${n} data-secret=${n}><code>${n}</code> <span class="muted">***</span></li>`)}
    </ul>`}
    <p class="hint">Values stay in the runtime's memory for this session only and are shown as *** in every output.</p>
  </section>`;
}
