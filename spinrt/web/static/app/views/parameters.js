// The form that asks for a notebook's parameters before a session starts
// (PROTOCOL.md section 12), from notebook.parameters' answer:
//   input        a text field
//   static       a select of its options
//   code_python  a select of the options its code computed; when the code
//                failed (`error`), a text field with the reason beside it
// Defaults are filled in. `errors` maps a parameter's name to the message
// the runtime gave about it (session.create's bad_request), shown on its
// field; the field is marked invalid and focused.
//
// Usage: <${ParameterForm} parameters=${[...]} errors=${{name: text}} busy=${bool}
//          onSubmit=${(variables, sessionName) => ...} onCancel=${fn} />

import { html, useEffect, useRef } from "../../vendor/preact.js";

const fieldId = (name) => "param-" + name;

function Field({ parameter, error }) {
  const id = fieldId(parameter.name);
  const choices = parameter.kind !== "input" && Array.isArray(parameter.options) ? parameter.options : null;
  const described = [error && id + "-error", parameter.error && id + "-note"].filter(Boolean).join(" ") || undefined;
  const initial = parameter.default ?? "";
  const control = choices
    ? html`<select id=${id} name=${id} aria-invalid=${error ? "true" : undefined} aria-describedby=${described}>
        ${choices.map((option) => html`<option key=${option} value=${option} selected=${option === initial}>${option}</option>`)}
      </select>`
    : html`<input id=${id} name=${id} defaultValue=${initial} autocomplete="off" spellcheck="false"
        aria-invalid=${error ? "true" : undefined} aria-describedby=${described} />`;
  return html`<div class="field" data-parameter=${parameter.name} data-kind=${parameter.kind}>
    <label for=${id}>${parameter.label || parameter.name}</label>
    ${control}
    ${parameter.error && html`<p class="hint" id=${id + "-note"}>Its options could not be computed (${parameter.error}); type a value.</p>`}
    ${error && html`<p class="error" id=${id + "-error"} role="alert">${error}</p>`}
  </div>`;
}

export function ParameterForm({ parameters, errors = {}, busy = false, onSubmit, onCancel }) {
  const form = useRef(null);
  const firstError = parameters.find((p) => errors[p.name]);

  useEffect(() => {
    if (firstError && form.current) form.current.elements[fieldId(firstError.name)].focus();
  }, [firstError && errors[firstError.name]]);

  const submit = (event) => {
    event.preventDefault();
    const elements = event.currentTarget.elements;
    const variables = {};
    for (const parameter of parameters) variables[parameter.name] = elements[fieldId(parameter.name)].value;
    onSubmit(variables, elements["session-name"].value.trim());
  };

  return html`<form id="parameters-form" ref=${form} class="stacked" onSubmit=${submit}>
    ${parameters.map((p) => html`<${Field} key=${p.name} parameter=${p} error=${errors[p.name]} />`)}
    <div class="field">
      <label for="session-name">Session name <span class="muted">(optional)</span></label>
      <input id="session-name" name="session-name" maxlength="200" autocomplete="off" />
    </div>
    <div class="buttons">
      <button id="start-session" type="submit" disabled=${busy}>${busy ? "Starting…" : "Start session"}</button>
      <button class="quiet" type="button" data-action="cancel" onClick=${onCancel}>Cancel</button>
    </div>
  </form>`;
}
