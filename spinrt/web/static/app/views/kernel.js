// The session's Python kernel: its state from `kernel.status` events and a
// "Restart kernel" button (`kernel.restart`, after a confirmation).
//
// The state is "unknown" until an event is seen: the runtime announces the
// kernel's state only when it changes (a kernel starts with the session's
// first Python cell), so a panel mounted after those events has nothing to
// show until the next one. `session.closed` stops the kernel for good.
//
// Usage: <${KernelPanel} client=${client} session=${sessionId} />

import { html, useEffect, useState } from "../../vendor/preact.js";

const LABELS = {
  unknown: "Not known yet (shown at its next change)",
  starting: "Starting…",
  idle: "Idle",
  busy: "Busy",
  restarting: "Restarting…",
  dead: "Dead (the next Python cell starts a new one)",
  closed: "Stopped with the session",
};

export function KernelPanel({ client, session }) {
  const [state, setState] = useState("unknown");
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    setState("unknown");
    setError(null);
    const onMessage = (event) => {
      const m = event.detail;
      if (m.session !== session) return;
      if (m.event === "kernel.status" && typeof m.state === "string") setState(m.state);
      else if (m.event === "session.closed") setState("closed");
    };
    client.addEventListener("message", onMessage);
    return () => client.removeEventListener("message", onMessage);
  }, [client, session]);

  const restart = async () => {
    if (!window.confirm("Restart the Python kernel? Its globals are lost and a Python cell running now fails.")) return;
    setBusy(true);
    setError(null);
    try {
      await client.request("kernel.restart", { session }, 120000); // a kernel may take a while to start
    } catch (e) {
      setError(e.message);
    } finally {
      setBusy(false);
    }
  };

  return html`<section id="kernel" class="card panel" data-state=${state} aria-labelledby="kernel-title">
    <div class="panel-head">
      <h2 id="kernel-title">Python kernel</h2>
      <button id="kernel-restart" class="quiet small" type="button" onClick=${restart}
        disabled=${busy || state === "closed" || state === "restarting"}>Restart kernel</button>
    </div>
    <p class="kernel-state" role="status" aria-live="polite">
      <span class="dot" aria-hidden="true"></span>${LABELS[state] || state}
    </p>
    ${error && html`<p class="error" role="alert">${error}</p>`}
  </section>`;
}
