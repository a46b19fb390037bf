// A cell's options as a small form for the built-in types (PROTOCOL.md
// section 5): the shell's target, a REST request's method, URL and headers,
// an LLM's model. Every type, add-on types included, also has its options as
// JSON. A field is applied when it changes (on blur or Enter), never while
// one types. Text fields are uncontrolled (defaultValue): a teammate's change
// shows in a field nobody is typing in, and never overwrites typing.

import { html, useState } from "../../vendor/preact.js";

const METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

/** "Name: value" lines -> {Name: value}; blank lines are skipped. Throws on a line without a colon. */
export function parseHeaders(text) {
  const headers = {};
  for (const [n, line] of text.split("\n").entries()) {
    if (!line.trim()) continue;
    const colon = line.indexOf(":");
    if (colon <= 0) throw new Error(`Header line ${n + 1} is not "Name: value".`);
    headers[line.slice(0, colon).trim()] = line.slice(colon + 1).trim();
  }
  return headers;
}

export function formatHeaders(headers) {
  if (!headers || typeof headers !== "object") return "";
  return Object.entries(headers).map(([k, v]) => `${k}: ${v}`).join("\n");
}

function without(options, key) {
  const { [key]: _, ...rest } = options;
  return rest;
}

function Field({ label, children }) {
  return html`<label class="option"><span>${label}</span>${children}</label>`;
}

function TextOption({ name, label, options, set, placeholder = "", wide = false }) {
  const commit = (e) => {
    const value = e.currentTarget.value.trim();
    if (value === (options[name] ?? "")) return;
    set(value ? { ...options, [name]: value } : without(options, name));
  };
  return html`<${Field} label=${label}>
    <input class=${wide ? "wide" : ""} data-option=${name} defaultValue=${options[name] ?? ""} placeholder=${placeholder}
      spellcheck="false" onChange=${commit} onKeyDown=${(e) => e.key === "Enter" && e.currentTarget.blur()} />
  <//>`;
}

function TimeoutOption({ options, set }) {
  const commit = (e) => {
    const text = e.currentTarget.value.trim();
    const value = Number(text);
    if (!text) set(without(options, "timeout_s"));
    else if (Number.isFinite(value) && value > 0) set({ ...options, timeout_s: value });
  };
  return html`<${Field} label="Timeout (s)">
    <input class="narrow" type="number" min="0" step="any" data-option="timeout_s" defaultValue=${options.timeout_s ?? ""} onChange=${commit} />
  <//>`;
}

function ShellOptions({ options, set, connections }) {
  const target = options.target || "local";
  const names = connections || [];
  const known = target === "local" || target === "host" || names.includes(target);
  return html`
    <${Field} label="Target">
      <select data-option="target" value=${target}
        onChange=${(e) => set(e.currentTarget.value === "local" ? without(options, "target") : { ...options, target: e.currentTarget.value })}>
        <option value="local">local (the runtime)</option>
        <option value="host">host (the runtime's host over SSH)</option>
        ${names.map((n) => html`<option value=${n}>${n}</option>`)}
        ${!known && html`<option value=${target}>${target} (not defined)</option>`}
      </select>
    <//>
    <${TextOption} name="cwd" label="Directory" options=${options} set=${set} placeholder="default" />
    <${TimeoutOption} options=${options} set=${set} />`;
}

function RestOptions({ options, set }) {
  const [error, setError] = useState(null);
  const commitHeaders = (e) => {
    try {
      const headers = parseHeaders(e.currentTarget.value);
      setError(null);
      set(Object.keys(headers).length ? { ...options, headers } : without(options, "headers"));
    } catch (err) {
      setError(err.message);
    }
  };
  return html`
    <${Field} label="Method">
      <select data-option="method" value=${(options.method || "GET").toUpperCase()}
        onChange=${(e) => set({ ...options, method: e.currentTarget.value })}>
        ${METHODS.map((m) => html`<option value=${m}>${m}</option>`)}
      </select>
    <//>
    <${TextOption} name="url" label="URL" options=${options} set=${set} placeholder="https://…" wide=${true} />
    <${Field} label="Headers">
      <textarea data-option="headers" rows="2" spellcheck="false" placeholder="Name: value"
        defaultValue=${formatHeaders(options.headers)} onChange=${commitHeaders}></textarea>
    <//>
    ${error && html`<p class="error" role="alert">${error}</p>`}
    <${TimeoutOption} options=${options} set=${set} />`;
}

function LlmOptions({ options, set }) {
  return html`<${TextOption} name="model" label="Model" options=${options} set=${set} placeholder="default" />
    <${TimeoutOption} options=${options} set=${set} />`;
}

/** All options as a JSON object: the form of add-on types, and the full view of the others. */
function JsonOptions({ options, set, open }) {
  const [error, setError] = useState(null);
  const text = JSON.stringify(options, null, 2);
  const commit = (e) => {
    let value;
    try {
      value = JSON.parse(e.currentTarget.value || "{}");
    } catch (err) {
      setError(`Not JSON: ${err.message}`);
      return;
    }
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      setError("The options must be a JSON object.");
      return;
    }
    setError(null);
    set(value);
  };
  return html`<details class="json-options" open=${open}>
    <summary>Options (JSON)</summary>
    <textarea data-option="json" rows=${Math.min(12, text.split("\n").length + 1)} spellcheck="false" defaultValue=${text} onChange=${commit}></textarea>
    ${error && html`<p class="error" role="alert">${error}</p>`}
  </details>`;
}

const FORMS = { shell: ShellOptions, rest: RestOptions, llm: LlmOptions, python: TimeoutOption };

export function CellOptions({ type, options, set, connections, readOnly }) {
  if (type === "markdown") return null;
  const Form = FORMS[type];
  return html`<fieldset class="cell-options" disabled=${readOnly}>
    ${Form && html`<div class="option-row"><${Form} options=${options || {}} set=${set} connections=${connections} /></div>`}
    <${JsonOptions} options=${options || {}} set=${set} open=${!Form} />
  </fieldset>`;
}
