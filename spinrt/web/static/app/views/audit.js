// The audit trail (#audit; GET api/audit, the owner's: docs/protocol.rst
// "Audit trail"): who did what, from where, and how it ended. It answers
// "who ran this cell last night, from where".
//
// The period (since, until: local times, sent as ISO 8601 UTC) and the page
// size go to the runtime; rows come oldest first, and "Load more" asks for
// the next page after the last row's id (`cursor`) until a page comes back
// short. The identity, action and outcome filters act on the rows loaded so
// far, in the page. Other roles are told the view is the owner's; nothing
// is asked of the runtime for them.
//
// Usage: <${AuditView} store=${store} />

import { html, useEffect, useMemo, useRef, useState } from "../../vendor/preact.js";
import { fetchAudit } from "../client.js";
import { mayRoute, roleOf } from "../roles.js";

export const PAGE_SIZES = [100, 500, 1000];
const DAY_MS = 86400000;

const pad = (n, width = 2) => String(n).padStart(width, "0");

/** A Date as a datetime-local field's value (local time, to the second). */
export function localInput(date) {
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

/** A datetime-local field's value -> ISO 8601 UTC; "" -> null; an Error naming the field otherwise. */
export function isoOf(value, label) {
  if (!value) return null;
  const date = new Date(value); // a date-time without an offset is local time
  if (Number.isNaN(date.getTime())) throw new Error(`${label} is not a date and time.`);
  return date.toISOString();
}

/** An ISO time as local "YYYY-MM-DD HH:MM:SS.mmm". */
function localTime(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  return `${localInput(date).replace("T", " ")}.${pad(date.getMilliseconds(), 3)}`;
}

/** A row's target ({session, cell_id, ...}) as "name=value" pairs. */
function targetText(target) {
  if (!target || typeof target !== "object") return "";
  return Object.entries(target)
    .map(([key, value]) => `${key}=${typeof value === "string" ? value : JSON.stringify(value)}`)
    .join(" ");
}

function Row({ row }) {
  const ok = row.outcome === "ok";
  return html`<tr data-audit-id=${row.id} data-action=${row.action} data-outcome=${row.outcome}>
    <td data-field="ts" title=${row.ts}>${localTime(row.ts)}</td>
    <td data-field="identity">${row.identity || html`<span class="muted">unknown</span>`}${row.role && html` <span class="muted">(${row.role})</span>`}</td>
    <td data-field="client">${row.client || ""}</td>
    <td data-field="action"><code>${row.action}</code></td>
    <td data-field="target" class="audit-target">${targetText(row.target)}</td>
    <td data-field="outcome" class=${ok ? "audit-ok" : "audit-bad"}>${row.outcome}</td>
  </tr>`;
}

function Forbidden({ store }) {
  return html`<main class="admin" id="audit-view" data-state="forbidden">
    <header class="admin-head"><a class="back" href="#" title="All notebooks and sessions">←</a><h2>Audit trail</h2></header>
    <p class="error" role="alert" id="audit-forbidden">The audit trail is the owner's to read; your role is ${roleOf(store) || "not known yet"}.</p>
  </main>`;
}

function Trail({ store }) {
  const [period, setPeriod] = useState(() => ({
    since: localInput(new Date(Date.now() - DAY_MS)),
    until: "",
    limit: PAGE_SIZES[1],
  }));
  const [rows, setRows] = useState([]);
  const [more, setMore] = useState(false);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const [identity, setIdentity] = useState("");
  const [action, setAction] = useState("");
  const [outcome, setOutcome] = useState("");
  const generation = useRef(0); // a newer query makes an older answer stale

  const load = async (query, after) => {
    const mine = ++generation.current;
    setBusy(true);
    setError(null);
    try {
      const since = isoOf(query.since, "Since");
      const until = isoOf(query.until, "Until");
      const page = await fetchAudit(store.client.token, { since, until, limit: query.limit, cursor: after });
      if (mine !== generation.current) return;
      setRows((before) => (after === null ? page : [...before, ...page]));
      setMore(page.length === query.limit);
    } catch (e) {
      if (mine === generation.current) setError(e.message);
    } finally {
      if (mine === generation.current) setBusy(false);
    }
  };

  useEffect(() => {
    load(period, null);
  }, [period]);

  const apply = (event) => {
    event.preventDefault();
    const form = event.currentTarget.elements;
    setRows([]);
    setMore(false);
    setPeriod({ since: form.since.value, until: form.until.value, limit: Number(form.limit.value) });
  };

  const identities = useMemo(() => [...new Set(rows.map((r) => r.identity).filter(Boolean))].sort(), [rows]);
  const needle = action.trim().toLowerCase();
  const shown = rows.filter((r) => (!identity || r.identity === identity)
    && (!needle || String(r.action).toLowerCase().includes(needle))
    && (!outcome || (outcome === "ok" ? r.outcome === "ok" : r.outcome !== "ok")));
  const last = rows.length ? rows[rows.length - 1].id : null;

  return html`<main class="admin" id="audit-view" data-state=${busy ? "loading" : "ready"} aria-busy=${busy ? "true" : "false"}>
    <header class="admin-head"><a class="back" href="#" title="All notebooks and sessions">←</a><h2>Audit trail</h2></header>
    <p class="hint">Every change, refusal, failed login and connection: who, from which address, what, and how it ended. Times are this browser's local time; hover one for UTC.</p>
    <form id="audit-period" class="admin-form" onSubmit=${apply}>
      <label class="field"><span>Since</span>
        <input id="audit-since" name="since" type="datetime-local" step="1" defaultValue=${period.since} /></label>
      <label class="field"><span>Until</span>
        <input id="audit-until" name="until" type="datetime-local" step="1" defaultValue=${period.until} /></label>
      <label class="field"><span>Rows per page</span>
        <select id="audit-limit" name="limit">
          ${PAGE_SIZES.map((n) => html`<option value=${n} selected=${n === period.limit}>${n}</option>`)}
        </select></label>
      <button id="audit-apply" type="submit" disabled=${busy}>Show</button>
    </form>
    <div id="audit-filters" class="admin-form" role="group" aria-label="Filter the rows loaded">
      <label class="field"><span>Identity</span>
        <select id="audit-identity" value=${identity} onChange=${(e) => setIdentity(e.currentTarget.value)}>
          <option value="">everyone</option>
          ${identity && !identities.includes(identity) && html`<option value=${identity}>${identity}</option>`}
          ${identities.map((name) => html`<option value=${name}>${name}</option>`)}
        </select></label>
      <label class="field"><span>Action</span>
        <input id="audit-action" type="search" placeholder="cell.run" value=${action} autocomplete="off"
          onInput=${(e) => setAction(e.currentTarget.value)} /></label>
      <label class="field"><span>Outcome</span>
        <select id="audit-outcome" value=${outcome} onChange=${(e) => setOutcome(e.currentTarget.value)}>
          <option value="">any</option>
          <option value="ok">ok</option>
          <option value="failed">refused or failed</option>
        </select></label>
    </div>
    ${error && html`<p class="error" role="alert" id="audit-error">${error}</p>`}
    <p class="muted" id="audit-summary" role="status">${rows.length === 0 && busy ? "Loading…"
      : `${rows.length} ${rows.length === 1 ? "row" : "rows"} loaded${shown.length !== rows.length ? `, ${shown.length} shown` : ""}.`}</p>
    <div class="table-scroll">
      <table id="audit-table" class="admin-table">
        <thead><tr><th scope="col">Time</th><th scope="col">Identity</th><th scope="col">Client</th>
          <th scope="col">Action</th><th scope="col">Target</th><th scope="col">Outcome</th></tr></thead>
        <tbody>${shown.map((row) => html`<${Row} key=${row.id} row=${row} />`)}</tbody>
      </table>
    </div>
    ${!busy && !error && rows.length === 0 && html`<p class="muted" id="audit-empty">Nothing was recorded in this period.</p>`}
    ${more
      ? html`<button id="audit-more" type="button" class="quiet" disabled=${busy} onClick=${() => load(period, last)}>Load more</button>`
      : rows.length > 0 && !busy && html`<p class="muted" id="audit-end">End of the trail for this period.</p>`}
  </main>`;
}

export function AuditView({ store }) {
  // Before welcome the role is not known: wait rather than refuse.
  if (store.you.value === null) return html`<main class="admin" id="audit-view" data-state="connecting"><p class="muted">Connecting…</p></main>`;
  return mayRoute(store, "api/audit") ? html`<${Trail} store=${store} />` : html`<${Forbidden} store=${store} />`;
}
