// Opening a notebook (PROTOCOL.md sections 10 and 12): join a session of it
// that is already open, or start a new one after asking for its parameters.
//
// The dialog (#open-notebook, data-notebook, data-step) goes through:
//   "loading"     the sessions, then the parameters, are being fetched
//   "join"        sessions of this notebook are open: who is in each
//                 (session.list's clients), a Join button for each, or start a new one
//   "parameters"  the notebook declares parameters: views/parameters.js
//   "error"       something failed: the runtime's message, Cancel
// session.create then starts it and the address becomes #session=<id>; a
// notebook without parameters and without open sessions starts at once.
// Starting one is a runner's (app/roles.js): a viewer is offered joining only.
//
// Usage: <${OpenNotebook} store=${store} name=${notebookName} onClose=${fn} />

import { html, useEffect, useRef, useState } from "../../vendor/preact.js";
import { notebookParameters, openSessionsOf, parameterOf, startSession } from "../notebook_actions.js";
import { may, roleOf } from "../roles.js";
import { refreshSessions } from "../store.js";
import { Modal } from "./modal.js";
import { ParameterForm } from "./parameters.js";

function go(sessionId) {
  window.location.hash = "#session=" + encodeURIComponent(sessionId);
}

function People({ clients }) {
  if (!clients || clients.length === 0) return html`<span class="muted">nobody attached</span>`;
  return clients.map((c) => html`<span class="tag" data-client=${c.client}>${c.name}</span>`);
}

function JoinChoice({ name, sessions, onJoin, onStartNew, onCancel }) {
  return html`<p>${sessions.length === 1 ? "A session" : `${sessions.length} sessions`} of “${name}” ${sessions.length === 1 ? "is" : "are"} open: join one${onStartNew ? ", or start a new one" : ""}.</p>
    <ul class="join-list">
      ${sessions.map((s) => html`<li key=${s.id} data-session-id=${s.id}>
        <span class="join-name">${s.name || s.id}</span>
        <span class="join-people" data-field="clients"><${People} clients=${s.clients} /></span>
        <button type="button" data-action="join" onClick=${() => onJoin(s.id)}>Join</button>
      </li>`)}
    </ul>
    <div class="buttons">
      ${onStartNew && html`<button id="start-new-session" type="button" class="quiet" onClick=${onStartNew}>Start a new session</button>`}
      <button type="button" class="quiet" data-action="cancel" onClick=${onCancel}>Cancel</button>
    </div>`;
}

export function OpenNotebook({ store, name, onClose }) {
  const [step, setStep] = useState("loading");
  const [sessions, setSessions] = useState([]);
  const [parameters, setParameters] = useState([]);
  const [error, setError] = useState(null);
  const [fieldErrors, setFieldErrors] = useState({});
  const [busy, setBusy] = useState(false);
  const live = useRef(true);
  useEffect(() => () => (live.current = false), []);
  const canStart = may(store, "session.create", { notebook: name });

  const fail = (e) => {
    if (!live.current) return;
    setError(e.message);
    setStep("error");
  };

  const start = async (variables = {}, sessionName = "") => {
    setBusy(true);
    setError(null);
    setFieldErrors({});
    try {
      const session = await startSession(store, name, variables, sessionName);
      onClose();
      go(session.id);
    } catch (e) {
      if (!live.current) return;
      setBusy(false);
      const parameter = parameterOf(e);
      if (parameter && parameters.some((p) => p.name === parameter)) setFieldErrors({ [parameter]: e.message });
      else if (parameters.length) setError(e.message);
      else fail(e);
    }
  };

  const askParameters = async () => {
    setStep("loading");
    try {
      const declared = await notebookParameters(store, name);
      if (!live.current) return;
      if (declared.length === 0) {
        await start();
        return;
      }
      setParameters(declared);
      setStep("parameters");
    } catch (e) {
      fail(e);
    }
  };

  useEffect(() => {
    (async () => {
      await refreshSessions(store); // who is in which session, as of now
      if (!live.current) return;
      const open = openSessionsOf(store.sessions.value, name);
      if (open.length) {
        setSessions(open);
        setStep("join");
      } else if (canStart) {
        askParameters();
      } else {
        fail(new Error(`No session of “${name}” is open, and your role (${roleOf(store)}) may not start one: a runner, editor or owner can.`));
      }
    })();
  }, [name]);

  const join = (id) => {
    onClose();
    go(id);
  };

  return html`<${Modal} id="open-notebook" title=${"Open “" + name + "”"} onClose=${onClose}
      attrs=${{ "data-notebook": name, "data-step": step, "aria-busy": step === "loading" || busy ? "true" : "false" }}>
    ${step === "loading" && html`<p class="muted">Opening…</p>`}
    ${step === "join" && html`<${JoinChoice} name=${name} sessions=${sessions} onJoin=${join} onStartNew=${canStart ? askParameters : null} onCancel=${onClose} />`}
    ${step === "parameters" && html`
      <p class="muted">This notebook asks for ${parameters.length === 1 ? "a parameter" : "parameters"}.</p>
      ${error && html`<p class="error" role="alert" id="open-notebook-error">${error}</p>`}
      <${ParameterForm} parameters=${parameters} errors=${fieldErrors} busy=${busy} onSubmit=${start} onCancel=${onClose} />`}
    ${step === "error" && html`
      <p class="error" role="alert" id="open-notebook-error">${error}</p>
      <div class="buttons"><button type="button" class="quiet" data-action="cancel" onClick=${onClose}>Close</button></div>`}
  </${Modal}>`;
}
