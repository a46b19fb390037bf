// The session's variables (PROTOCOL.md section 3): `variables.list` when
// mounted and after every (re)connect, live `variable.set` events, and a
// fresh list once a kernel restart is over (`kernel.status` restarting ->
// idle). Previews are shown as text, never as HTML.
//
// `variables.clear` sends no event, and an attach that replays history
// replays old `variable.set` events too; so a burst of events is followed by
// a fresh `variables.list` (REFRESH_AFTER_MS later), which has the last word.
//
// Usage: <${VariablesPanel} client=${client} session=${sessionId} readOnly=${bool} />
// (the client is attached to the session elsewhere; this panel only listens).
// readOnly hides the clear buttons (`variables.clear` needs the editor role).

import { html, useEffect, useRef, useState } from "../../vendor/preact.js";

const REFRESH_AFTER_MS = 300;

export function VariablesPanel({ client, session, readOnly = false }) {
  const [variables, setVariables] = useState(null); // {name: {type, preview}}; null until listed
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const latest = useRef(0); // only the newest list request may set the list

  const list = async () => {
    const ask = ++latest.current;
    try {
      const reply = await client.request("variables.list", { session });
      if (ask !== latest.current) return;
      setVariables(reply.variables || {});
      setError(null);
    } catch (e) {
      if (ask === latest.current && e.code !== "disconnected") setError(e.message);
    }
  };

  useEffect(() => {
    setVariables(null);
    setError(null);
    let kernel = null; // the last kernel.status state seen
    let refresh = null;
    const onOpen = () => list();
    const onMessage = (event) => {
      const m = event.detail;
      if (m.session !== session) return;
      if (m.event === "variable.set") {
        setVariables((v) => ({ ...(v || {}), [m.name]: { type: m.type, preview: m.preview } }));
        clearTimeout(refresh);
        refresh = setTimeout(list, REFRESH_AFTER_MS);
      } else if (m.event === "kernel.status") {
        if (kernel === "restarting" && m.state === "idle") list();
        kernel = m.state;
      }
    };
    client.addEventListener("open", onOpen);
    client.addEventListener("message", onMessage);
    if (client.state === "open") list();
    return () => {
      latest.current += 1; // a reply still on its way belongs to the old session
      clearTimeout(refresh);
      client.removeEventListener("open", onOpen);
      client.removeEventListener("message", onMessage);
    };
  }, [client, session]);

  const clear = async (names) => {
    if (!names && !window.confirm("Clear every variable of this session?")) return;
    setBusy(true);
    try {
      await client.request("variables.clear", names ? { session, names } : { session });
      setError(null);
    } catch (e) {
      setError(e.message);
    } finally {
      setBusy(false);
    }
    await list();
  };

  const names = variables ? Object.keys(variables).sort() : [];
  return html`<section id="variables" class="card panel" aria-labelledby="variables-title">
    <div class="panel-head">
      <h2 id="variables-title">Variables</h2>
      ${!readOnly && html`<button id="variables-clear-all" class="quiet small" type="button"
        disabled=${busy || names.length === 0} onClick=${() => clear(null)}>Clear all</button>`}
    </div>
    ${error && html`<p class="error" role="alert">${error}</p>`}
    ${variables === null
      ? html`<p class="muted">Loading…</p>`
      : names.length === 0
        ? html`<p class="muted" id="no-variables">No variables yet. Give a cell an output variable, or pass variables when the session starts.</p>`
        : html`<ul class="variables">
          ${names.map((name) => html`<li key=${name} data-variable=${name}>
            <span class="variable-name"><code>${name}</code> <span class="variable-type">${variables[name].type}</span></span>
            ${!readOnly && html`<button class="quiet small" type="button" disabled=${busy} aria-label=${"Clear " + name}
              title=${"Clear " + name} onClick=${() => clear([name])}>Clear</button>`}
            <code class="variable-preview">${variables[name].preview}</code>
          </li>`)}
        </ul>`}
  </section>`;
}
