// The runtime's status: hello's runtime (version, protocol, cell types,
// features) and GET api/status (uptime, sessions, runs, outbound TLS, host SSH).

import { html } from "../../vendor/preact.js";

function duration(seconds) {
  const s = Math.floor(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

function Row({ name, label, children }) {
  return html`<div class="row"><dt>${label}</dt><dd data-field=${name}>${children}</dd></div>`;
}

export function RuntimeStatus({ runtime, status, error }) {
  const ssh = status && status.ssh && status.ssh.host_ssh;
  return html`<section id="runtime-status" class="card" aria-labelledby="runtime-status-title">
    <h2 id="runtime-status-title">Runtime</h2>
    ${error && html`<p class="error" role="alert">${error}</p>`}
    <dl>
      <${Row} name="version" label="Version">${runtime ? runtime.version : "…"}<//>
      <${Row} name="protocol" label="Protocol">${runtime ? `spin.v${runtime.protocol}` : "…"}<//>
      <${Row} name="cell-types" label="Cell types">
        ${runtime ? runtime.cell_types.map((t) => html`<span class="tag" data-cell-type=${t}>${t}</span>`) : "…"}
      <//>
      ${status && html`
        <${Row} name="uptime" label="Up for">${duration(status.uptime_s)}<//>
        <${Row} name="runs" label="Runs">${status.runs.running} running, ${status.runs.queued} queued<//>
        <${Row} name="outbound-tls" label="Outbound TLS">${status.outbound_tls === "verified"
          ? `verified (${status.outbound_ca_bundle})` : "not verified (REQUESTS_CA_BUNDLE unset)"}<//>
        ${ssh && html`<${Row} name="host-ssh" label="Host SSH">${ssh.enabled
          ? `${ssh.username}@${ssh.host}:${ssh.port}` : ssh.problem ? `off (${ssh.problem})` : "off"}<//>`}
      `}
    </dl>
  </section>`;
}
